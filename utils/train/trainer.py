"""The training loop behind train_daub.py and train_irdst.py: the published recipe (docs/design.md, Training recipe) on
CPU, one GPU or many (DDP).

The trainer receives one :class:`~utils.train.config.TrainConfig` and sets a run up in named steps — restore (resume
state or ``--pretrained`` model flags), device, data, model, optimiser — then :meth:`Trainer.fit` runs the epochs.
"""
from __future__ import annotations

import dataclasses
import gc
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from nets import Network, YOLOLoss, load_weights
from nets.training import (ModelEMA, build_optimizer, init_weights, lr_at_epoch, scaled_lrs, set_optimizer_lr,
                           set_requires_grad)
from nets.weights import read_trained_weights

from ..data.annotations import CocoGroundTruth, FrameRecord, category_names, read_coco, read_index, records_to_coco
from ..data.dataset import (Batch, SequenceDataset, resolve_dataset_root, sequence_collate,
                            worker_ignores_interrupts)
from ..data.images import NonFiniteFrames
from ..errors import SSTNetError
from ..infer.engine import DetectSettings
from ..infer.evaluation import evaluate
from ..runtime.device import apply_threads, autocast, check_amp, select_device
from ..runtime.fileio import check_output, ensure_dir, write_json
from ..runtime.memory import check_memory
from ..runtime.model_options import resolve_spec
from ..runtime.provenance import project_commit
from ..runtime.signals import StopRequest
from ..sidecar import sidecar_record, weights_inputs
from .distributed import EpochSubsetSampler, all_reduce_sum, barrier, cleanup, init_distributed, process_device
from .folder_lock import RunFolderLock
from .history import RunLogger
from .config import DataConfig, ModelFlags, TrainConfig
from .run_files import RESUME_NAME, load_resume, save_resume, save_weights

# Flags a resumed run takes from its command line when written there: where and how fast it runs, how long, what
# it records, and where its data now lives. Everything else comes from the checkpoint, so the run continues exactly
# as it started, and writing another value on the command line is refused.
RESUME_OVERRIDES = ("device", "amp", "threads", "workers", "debug", "epochs", "eval_period", "save_period",
                    "save_dir", "exist_ok", "data_root")


class TrainingDiverged(SSTNetError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class Phase:
    """How an epoch trains: with the backbone frozen or not, and at which total batch size (freeze training)."""

    frozen: bool
    batch_size: int


# What best_epoch_weights.pth holds under each --select-by criterion, as the run's log says it.
SELECTION_WORDS = {"mAP50": "highest val mAP50", "val_loss": "lowest val loss", "last": "the last epoch"}


def selection_criterion(select_by: str, eval_period: int) -> str:
    """``--select-by`` resolved: ``auto`` is the release's rule, val mAP50 when it is computed, else val loss."""
    if select_by != "auto":
        return select_by
    return "mAP50" if eval_period > 0 else "val_loss"


@dataclass
class BestRecord:
    """The best epoch so far under ``criterion`` (``mAP50``: higher is better; ``val_loss``: lower is better;
    ``last``: its value is the epoch number, so every epoch replaces the one before)."""

    criterion: str
    value: float = math.nan
    epoch: int = 0

    def improves(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if math.isnan(self.value):
            return True
        return value < self.value if self.criterion == "val_loss" else value > self.value

    def describe(self) -> str:
        if self.criterion == "last":
            return SELECTION_WORDS["last"]
        return f"{self.criterion} {self.value:.4g}"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every random generator's state in tensors and plain lists, so checkpoints load with ``weights_only``."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_split(data: DataConfig, root: Path, split: str) -> CocoGroundTruth:
    """The ground truth of ``split`` (train / val) from its index txt when given, else from its COCO json."""
    txt = getattr(data, f"{split}_txt")
    if txt:
        records = read_index(txt, root)
        return records_to_coco(records, data.num_classes)
    ann = Path(getattr(data, f"{split}_ann"))
    return read_coco(ann if ann.is_absolute() else root / ann, root)


def split_records(ground_truth: CocoGroundTruth, all_frames: bool) -> list[FrameRecord]:
    """The frames a split trains or validates on: the annotated ones (``all_frames``: every listed frame)."""
    return ground_truth.records + (ground_truth.unannotated if all_frames else [])


class TrainingFrames(NamedTuple):
    """The training frames with, per frame, its dataset's zoom and augmentation zoom range (None: --scale)."""

    records: list[FrameRecord]
    zooms: list[float]
    scales: list[tuple[float, float] | None]


def training_records(data: DataConfig, train_gt: CocoGroundTruth) -> TrainingFrames:
    """The training frames: the main training set's, then those of the ``--mix-data`` datasets (their
    ``--train-ann``, which must name the same classes in the same order), each listed ``--dataset-repeats`` times;
    and each frame's zoom and augmentation zoom range, its dataset's ``--dataset-zoom`` and ``--dataset-scale``."""
    parts = [split_records(train_gt, data.all_frames)]
    ann = Path(data.train_ann)
    for root in data.mix_data:
        root = resolve_dataset_root(root)
        ground_truth = read_coco(ann if ann.is_absolute() else root / ann, root)
        if category_names(ground_truth) != category_names(train_gt):
            raise SSTNetError(f"--mix-data {root}: its classes {category_names(ground_truth)} differ from the training "
                              f"set's {category_names(train_gt)}")
        parts.append(split_records(ground_truth, data.all_frames))
    scales = data.scale_ranges or (None,) * len(parts)
    listed = [(part, zoom, scale) for part, count, zoom, scale in zip(parts, data.repeats, data.zooms, scales)
              for _ in range(count)]
    return TrainingFrames([record for part, _, _ in listed for record in part],
                          [zoom for part, zoom, _ in listed for _ in part],
                          [scale for part, _, scale in listed for _ in part])


def restore_config(config: TrainConfig, saved: dict) -> TrainConfig:
    """A resumed run's configuration: its own options from its checkpoint (``saved``, flat), with the options a
    resume may change taken from the command line (``config.given``). The run writes into the folder holding the
    checkpoint (or ``--save-dir`` when written), never into the folder recorded in the checkpoint: a copied run must
    not write into its original. Validated before anything is written."""
    given = set(config.given) - {"resume"}
    fixed = sorted(given - set(RESUME_OVERRIDES))
    if fixed:
        described = ", ".join(f"--{name.replace('_', '-')} (the run's: {saved.get(name)})" for name in fixed)
        raise SSTNetError(f"--resume {config.start.resume}: {described} cannot change when resuming; leave "
                          f"{'them' if len(fixed) > 1 else 'it'} out, or start a new run from the weights with "
                          "--pretrained")
    current = config.flat()
    # Options added since the checkpoint was written keep their defaults.
    values = {**current, **saved, "resume": config.start.resume,
              "save_dir": str(Path(config.start.resume).parent)}
    for name in given:
        values[name] = current[name]
    try:
        return TrainConfig.from_flat(values, given)
    except SSTNetError as exc:
        raise SSTNetError(f"--resume {config.start.resume}: {exc}") from None


class Trainer:
    """A training run set up from one :class:`TrainConfig` in named steps; :meth:`fit` trains."""

    def __init__(self, config: TrainConfig) -> None:
        self.resume_state = None
        self.pretrained_state = None
        self.config = self.restore(config)
        self.setup_device()
        self.setup_data()
        self.build_model()
        self.build_optimizer()
        self.logger = RunLogger(self.run_dir, self.rows) if self.dist.is_main else None
        self.stop = StopRequest(self.log)
        self.nonfinite = NonFiniteFrames()

    # ------------------------------------------------------------------ set-up steps
    def restore(self, config: TrainConfig) -> TrainConfig:
        """Step 1: a resumed run's configuration from its checkpoint; a new run's model flags left out filled from
        ``--pretrained`` weights that say what they are (else the defaults). Returns the configuration with concrete
        model flags (saved in args.json and checkpoints) and sets :attr:`spec`."""
        if config.start.resume:
            self.resume_state = load_resume(config.start.resume)
            config = restore_config(config, self.resume_state["args"])
            trained = None
        else:
            trained = None
            if config.start.pretrained:
                trained, self.pretrained_state = read_trained_weights(config.start.pretrained, any_weights=True)
        spec = resolve_spec(config.model, trained, flags_win=True)
        if config.data.data_root is None:
            raise SSTNetError("--data-root: no dataset given")
        self.spec = spec
        return dataclasses.replace(config, model=ModelFlags(
            phi=spec.phi, num_frame=spec.num_frame, input_size=spec.input_size, lstm_hidden=spec.lstm_hidden,
            computation=spec.computation, device=config.model.device, amp=config.model.amp,
            threads=config.model.threads, frame_step=spec.frame_step))

    def setup_device(self) -> None:
        """Step 2: threads, device, processes (DDP), the run folder's lock, mixed precision and the seeds."""
        config = self.config
        apply_threads(self.spec.threads, config.data.workers)
        device = select_device(self.spec.device)
        self.dist = init_distributed(device)
        self.run_dir = Path(config.run.save_dir)
        data = config.data
        inputs = [("--data-root", data.data_root), ("--val-root", data.val_root), ("--train-txt", data.train_txt),
                  ("--val-txt", data.val_txt), *(("--mix-data", root) for root in data.mix_data),
                  *weights_inputs("--pretrained", config.start.pretrained)]
        check_output(self.run_dir, "--save-dir", folder=True, inputs=inputs)
        # Before anything reads or writes the run folder: a second process on it stops here.
        self.lock = RunFolderLock(ensure_dir(self.run_dir)).acquire() if self.dist.is_main else None
        self.device = process_device(device, self.dist)
        self.amp_dtype = check_amp(self.spec.amp, self.device)
        self.input_shape = self.spec.input_shape
        if config.optim.batch_size % self.dist.world_size:
            raise SSTNetError(f"--batch-size {config.optim.batch_size}: must be divisible by the "
                              f"{self.dist.world_size} processes (it is the total batch over all of them)")
        seed_everything(config.optim.seed)
        torch.backends.cudnn.deterministic = True  # as released: repeatable runs over a little speed

    def setup_data(self) -> None:
        """Step 3: the training and validation ground truth and datasets."""
        data = self.config.data
        self.root = resolve_dataset_root(data.data_root)
        self.train_gt = load_split(data, self.root, "train")
        frames = training_records(data, self.train_gt)
        # One augmentation per --dataset-scale range, shared by that dataset's frames.
        augments = {scale: dataclasses.replace(self.config.augment, scale=scale) for scale in set(frames.scales)
                    if scale is not None}
        self.val_gt = load_split(data, resolve_dataset_root(data.val_root) if data.val_root else self.root, "val")
        self.num_classes = len(self.train_gt.category_ids)
        self.train_set = SequenceDataset(frames.records, self.input_shape, self.spec.num_frame,
                                         augment=[augments.get(scale, self.config.augment) for scale in frames.scales],
                                         seed=self.config.optim.seed, source="training set",
                                         frame_step=self.spec.frame_step, zooms=frames.zooms)
        self.val_set = SequenceDataset(split_records(self.val_gt, data.all_frames), self.input_shape,
                                       self.spec.num_frame, source="validation set", frame_step=self.spec.frame_step)

    def build_model(self) -> None:
        """Step 4: the memory check, the model (initialised, ``--pretrained`` loaded, prior set), the loss, the weight
        EMA and the DDP wrapper."""
        config = self.config
        check_memory(self.spec, config.optim.batch_size // self.dist.world_size, True, self.device, note=self.log)
        model = Network(self.num_classes, self.spec.num_frame, self.spec.phi, lstm_hidden=self.spec.lstm_hidden,
                        computation=self.spec.computation)
        init_weights(model)
        if config.start.pretrained and self.resume_state is None:
            state = self.pretrained_state if self.pretrained_state is not None else config.start.pretrained
            report = load_weights(model, state, mode="partial", name=str(config.start.pretrained))
            self.log(report.summary())
        if config.start.prior_prob > 0:  # after the load: the prior, not the checkpoint's biases, starts the head
            model.head.initialize_biases(config.start.prior_prob)
        model.to(self.device)
        if config.run.channels_last:
            model.to(memory_format=torch.channels_last)
        if config.run.sync_bn and self.dist.enabled:
            if self.device.type != "cuda":
                raise SSTNetError(f"--sync-bn: SyncBatchNorm needs CUDA devices, this run is on {self.device.type}; "
                                  "drop --sync-bn")
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        self.loss_fn = YOLOLoss(self.num_classes, strides=(8,))
        self.ema = ModelEMA(self.model, decay=config.optim.ema_decay, tau=config.optim.ema_tau)
        self.train_model = self._wrap_for_ddp(self.model)

    def build_optimizer(self) -> None:
        """Step 5: learning rates, optimizer, loss scaler and samplers; then a resumed run's states, or a new run's
        check of its folder; then the freeze-training phase of the first epoch to train."""
        optim = self.config.optim
        self.lr, self.min_lr = self.scaled_lrs(optim.batch_size)
        self.optimizer = build_optimizer(self.model, optim.optimizer, lr=self.lr, momentum=optim.momentum,
                                         weight_decay=optim.weight_decay, include_all_params=optim.train_all_params)
        self.scaler = torch.amp.GradScaler("cuda") if self.spec.amp == "fp16" else None
        self.train_sampler, self.val_sampler = self.samplers(optim.batch_size)
        self.phase = Phase(False, optim.batch_size)
        self.start_epoch = 0
        self.best = BestRecord(selection_criterion(self.config.run.select_by, self.config.run.eval_period))
        self.rows: list[dict] = []
        if self.resume_state is not None:
            self.rows = self._load_resume_state(self.resume_state)
        elif self.dist.is_main:
            self._check_run_dir()
        self._start_freeze_training()

    def _wrap_for_ddp(self, model: Network) -> torch.nn.Module:
        if not self.dist.enabled:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        # The attention and motion gates of the released 1-slice branch never reach the loss (docs/design.md,
        # Motion branch).
        return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)

    def _check_run_dir(self) -> None:
        if (self.run_dir / "results.csv").exists() and not self.config.run.exist_ok:
            checkpoint = self.run_dir / RESUME_NAME
            resume = (f"continue it with --resume {checkpoint}" if checkpoint.exists() else
                      "it holds no checkpoint to resume")
            raise SSTNetError(f"--save-dir {self.run_dir}: already holds a run (results.csv); choose another folder, "
                              f"{resume}, or pass --exist-ok to overwrite it")

    def _load_resume_state(self, state: dict) -> list[dict]:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = int(state["epoch"])
        if self.config.optim.epochs < self.start_epoch:
            raise SSTNetError(f"--epochs {self.config.optim.epochs}: the run already completed {self.start_epoch} "
                              "epochs")
        self.best = BestRecord(**state["best"])
        set_rng_state(state["rng"])
        self.log(f"resumed {self.config.start.resume} after epoch {self.start_epoch}")
        return list(state["rows"])

    def log(self, message: str) -> None:
        if self.dist.is_main:
            tqdm.write(message)

    # ------------------------------------------------------------------ freeze training
    def scaled_lrs(self, batch_size: int) -> tuple[float, float]:
        """Base and minimum learning rates for a total batch of ``batch_size`` (scaled by batch/64 and bounded, unless
        ``--no-scale-lr``)."""
        optim = self.config.optim
        if not optim.scale_lr:
            return optim.lr, optim.lr * optim.min_lr_ratio
        return scaled_lrs(optim.lr, optim.lr * optim.min_lr_ratio, batch_size, optim.optimizer)

    def samplers(self, batch_size: int) -> tuple[EpochSubsetSampler, EpochSubsetSampler]:
        """The training and validation samplers for a total batch of ``batch_size``."""
        data, seed = self.config.data, self.config.optim.seed
        return (EpochSubsetSampler(len(self.train_set), batch_size, data.epoch_fraction, seed, shuffle=True,
                                   info=self.dist, name="training set", steps=data.epoch_steps),
                EpochSubsetSampler(len(self.val_set), batch_size, data.val_fraction, seed, shuffle=False,
                                   info=self.dist, name="validation set"))

    def phase_at(self, epoch: int) -> Phase:
        """The phase of (0-based) ``epoch``: the first ``--freeze-epochs`` train the frozen backbone at
        ``--freeze-batch-size``, the rest everything at ``--batch-size``."""
        optim = self.config.optim
        if epoch < optim.freeze_epochs:
            return Phase(True, optim.freeze_batch_size or optim.batch_size)
        return Phase(False, optim.batch_size)

    def enter_phase(self, phase: Phase) -> None:
        """Train as ``phase`` says from now on, as the release switches: the backbone's parameters frozen or not, the
        learning rates rescaled for the phase's batch, samplers (hence DataLoaders) of that batch. The optimizer, its
        state and the schedule carry on."""
        set_requires_grad(self.model.backbone, not phase.frozen)
        self.lr, self.min_lr = self.scaled_lrs(phase.batch_size)
        self.train_sampler, self.val_sampler = self.samplers(phase.batch_size)
        self.phase = phase

    def _start_freeze_training(self) -> None:
        """Enter the phase of the first epoch to train. Called after the DDP wrapper is built: DDP only synchronises
        the gradients of parameters that required them when it was built, so the backbone must be trainable then."""
        optim = self.config.optim
        if not optim.freeze_epochs:
            return
        first = self.phase_at(0)
        if first.batch_size % self.dist.world_size:
            raise SSTNetError(f"--freeze-batch-size {first.batch_size}: must be divisible by the "
                              f"{self.dist.world_size} processes (it is the total batch over all of them)")
        self.samplers(first.batch_size)  # a batch the data cannot fill stops the run now, not at the switch
        self.enter_phase(self.phase_at(self.start_epoch))
        if self.phase.frozen:
            epochs = f"{optim.freeze_epochs} epoch{'s' if optim.freeze_epochs > 1 else ''}"
            self.log(f"backbone frozen for {epochs} at batch {first.batch_size} (lr {self.lr:.3g} → "
                     f"{self.min_lr:.3g}), then batch {optim.batch_size}")

    def train_mode(self) -> None:
        """Training mode, except a frozen backbone: its BatchNorm layers keep their running statistics."""
        self.train_model.train()
        if self.phase.frozen:
            self.model.backbone.eval()

    # ------------------------------------------------------------------ epochs
    def loader(self, dataset: SequenceDataset, sampler: EpochSubsetSampler) -> DataLoader:
        return DataLoader(dataset, batch_size=self.phase.batch_size // self.dist.world_size, sampler=sampler,
                          num_workers=self.config.data.workers, collate_fn=sequence_collate, drop_last=True,
                          pin_memory=self.device.type == "cuda", worker_init_fn=worker_ignores_interrupts)

    def _to_device(self, images: torch.Tensor, targets: list[torch.Tensor]):
        images = images.to(self.device, non_blocking=True)
        if self.config.run.channels_last:
            images = images.contiguous(memory_format=torch.channels_last_3d)
        return images, [target.to(self.device) for target in targets]

    def train_step(self, batch: Batch, epoch: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimisation step on ``batch`` (forward, loss, backward, optimizer, EMA); returns the total and motion
        losses. ``epoch`` and ``step`` only name the step if the loss diverges."""
        self.nonfinite.add(batch.nonfinite)
        images, targets = self._to_device(batch.images, batch.targets)
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, self.amp_dtype):
            outputs, motion_loss = self.train_model(images)
        outputs = [output.float() for output in outputs]
        # Checked before the loss: SimOTA's cost cannot even be computed on non-finite predictions.
        finite = all(bool(torch.isfinite(output).all()) for output in outputs)
        loss = self.loss_fn(outputs, targets) + motion_loss.float() if finite else None
        if loss is None or not torch.isfinite(loss):
            value = "nan" if loss is None else loss.item()
            raise TrainingDiverged(f"loss became {value} at epoch {epoch + 1}, step {step + 1}; "
                                   "lower --lr or check the data (no weights were saved from this epoch)")
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.ema.update(self.train_model)
        return loss, motion_loss

    def train_one_epoch(self, epoch: int, lr: float) -> tuple[float, float]:
        """One pass over this epoch's subset; returns the mean total loss and mean motion loss."""
        self.train_mode()
        self.train_sampler.set_epoch(epoch)
        self.train_set.set_epoch(epoch)
        loader = self.loader(self.train_set, self.train_sampler)
        totals = torch.zeros(3, dtype=torch.float64)
        bar = tqdm(loader, desc=f"Epoch {epoch + 1}/{self.config.optim.epochs}", disable=not self.dist.is_main,
                   dynamic_ncols=True, unit="step")
        for step, batch in enumerate(bar):
            loss, motion_loss = self.train_step(batch, epoch, step)
            totals += torch.tensor([loss.item(), motion_loss.item(), 1.0], dtype=torch.float64)
            bar.set_postfix(loss=f"{totals[0] / totals[2]:.3f}", motion=f"{totals[1] / totals[2]:.4f}", lr=f"{lr:.2e}")
            self.stop.check()
        totals = all_reduce_sum(totals, self.dist)
        return float(totals[0] / totals[2]), float(totals[1] / totals[2])

    @torch.no_grad()
    def validation_loss(self, epoch: int) -> float:
        """Mean detection loss of the EMA model on the validation frames, as released."""
        model = self.ema.ema
        model.eval()
        totals = torch.zeros(2, dtype=torch.float64)
        loader = self.loader(self.val_set, self.val_sampler)
        for batch in tqdm(loader, desc="  val loss", disable=not self.dist.is_main, dynamic_ncols=True,
                          unit="step", leave=False):
            self.nonfinite.add(batch.nonfinite)
            images, targets = self._to_device(batch.images, batch.targets)
            with autocast(self.device, self.amp_dtype):
                outputs = model(images)
            totals += torch.tensor([self.loss_fn([output.float() for output in outputs], targets).item(), 1.0],
                                   dtype=torch.float64)
            self.stop.check()
        totals = all_reduce_sum(totals, self.dist)
        return float(totals[0] / totals[1])

    def evaluate(self) -> dict:
        """COCO evaluation of the EMA model on the validation set, through the vid_map_coco.py engine."""
        config = self.config
        settings = DetectSettings(self.input_shape, self.spec.num_frame, conf=config.run.eval_conf,
                                  nms=config.run.eval_nms, batch_size=config.optim.batch_size,
                                  workers=config.data.workers, amp_dtype=self.amp_dtype,
                                  frame_step=self.spec.frame_step)
        result, _ = evaluate(self.ema.ema, self.val_gt, settings, all_frames=config.data.all_frames)
        self.log("  " + result.line())
        return {"mAP50": 100 * result.map50, "precision": 100 * result.precision, "recall": 100 * result.recall,
                "f1": 100 * result.f1}

    def sidecar(self, epoch: int) -> dict:
        """What the weights of ``epoch`` are: the model spec, classes, training data (with the zoom each training set
        was shown at: the input size that suits a dataset's targets follows from it) and code they came from."""
        data = self.config.data
        mixed = [str(Path(root).resolve()) for root in data.mix_data]
        return sidecar_record(self.spec, self.num_classes, category_names(self.train_gt),
                              {"data_root": str(Path(data.data_root).resolve()), "mix_data": mixed,
                               "dataset_zoom": list(data.zooms),
                               "dataset_scale": [list(scale) for scale in data.scale_ranges or ()],
                               "epoch": epoch + 1, "commit": project_commit()})

    def save(self, epoch: int, row: dict) -> None:
        """Weights (EMA, plain state dicts, each with its sidecar) and the resume checkpoint of a completed epoch."""
        weights = self.ema.ema.state_dict()
        sidecar = self.sidecar(epoch)
        run, epochs = self.config.run, self.config.optim.epochs
        if (epoch + 1) % run.save_period == 0 or epoch + 1 == epochs:
            name = f"ep{epoch + 1:03d}-loss{row['loss']:.3f}-val_loss{row['val_loss']:.3f}.pth"
            save_weights(weights, self.run_dir / name, sidecar)
        value = epoch + 1 if self.best.criterion == "last" else row.get(self.best.criterion, math.nan)
        if self.best.improves(value):
            self.best = BestRecord(self.best.criterion, value, epoch + 1)
            save_weights(weights, self.run_dir / "best_epoch_weights.pth", sidecar)
            self.log(f"  best_epoch_weights.pth <- epoch {epoch + 1} ({self.best.describe()})")
        save_weights(weights, self.run_dir / "last_epoch_weights.pth", sidecar)
        save_resume({"model": self.model.state_dict(), "ema": self.ema.state_dict(),
                     "optimizer": self.optimizer.state_dict(),
                     "scaler": self.scaler.state_dict() if self.scaler is not None else {},
                     "epoch": epoch + 1, "best": vars(self.best), "rows": self.logger.rows, "rng": rng_state(),
                     "args": self.config.flat()}, self.run_dir / RESUME_NAME)

    def _switch_phase(self, epoch: int) -> None:
        """Unfreeze at the first epoch after ``--freeze-epochs``."""
        phase = self.phase_at(epoch)
        if phase != self.phase:
            self.enter_phase(phase)
            self.log(f"epoch {epoch + 1}: backbone unfrozen; batch {phase.batch_size} "
                     f"({self.train_sampler.steps} steps per epoch), lr {self.lr:.3g} → {self.min_lr:.3g}")

    def _switch_loss(self, epoch: int) -> None:
        """Add the L1 box term from the first of the last ``--l1-loss-epochs`` epochs on."""
        optim = self.config.optim
        use_l1 = epoch >= optim.epochs - optim.l1_loss_epochs
        if use_l1 != self.loss_fn.use_l1:
            self.loss_fn.use_l1 = use_l1
            self.log(f"epoch {epoch + 1}: L1 box term added to the loss")

    def fit(self, until_epoch: int | None = None) -> BestRecord:
        """Train from the start (or the resumed) epoch to ``--epochs`` (or ``until_epoch``); returns the best."""
        config = self.config
        epochs = config.optim.epochs
        last = min(epochs, until_epoch) if until_epoch is not None else epochs
        if self.dist.is_main:
            write_json(self.run_dir / "args.json", config.flat(), indent=2)
            self.log(f"training {len(self.train_set)} frames ({self.train_sampler.steps} steps of "
                     f"{self.phase.batch_size} per epoch), validating on {len(self.val_set)}; "
                     f"lr {self.lr:.3g} → {self.min_lr:.3g}; "
                     f"best weights: {SELECTION_WORDS[self.best.criterion]}; "
                     f"run folder {self.run_dir}")
        epoch = self.start_epoch
        try:
            with self.stop.installed():
                for epoch in range(self.start_epoch, last):
                    self.stop.check()
                    started = time.time()
                    self._switch_phase(epoch)
                    self._switch_loss(epoch)
                    lr = lr_at_epoch(epoch, epochs, self.lr, self.min_lr, config.optim.lr_decay)
                    set_optimizer_lr(self.optimizer, lr)
                    loss, motion = self.train_one_epoch(epoch, lr)
                    val_loss = self.validation_loss(epoch)
                    if not math.isfinite(val_loss):
                        raise TrainingDiverged(f"validation loss became {val_loss} at epoch {epoch + 1}; "
                                               "no weights were saved from this epoch")
                    row = {"epoch": epoch + 1, "lr": lr, "loss": loss, "motion_loss": motion, "val_loss": val_loss}
                    eval_period = config.run.eval_period
                    if self.dist.is_main and eval_period > 0 and ((epoch + 1) % eval_period == 0
                                                                  or epoch + 1 == epochs):
                        row.update(self.evaluate())
                    if self.dist.is_main:
                        # Weights and checkpoint first, results after: results.csv never lists an epoch that has
                        # no checkpoint, whenever the run stops.
                        self.save(epoch, self.logger.add(row))
                        self.logger.write()
                        self.log(f"epoch {epoch + 1}: loss {loss:.4f} (motion {motion:.4f}), val loss {val_loss:.4f}, "
                                 f"{time.time() - started:.0f} s")
                    barrier(self.dist)
        except KeyboardInterrupt:
            checkpoint = self.run_dir / RESUME_NAME
            where = (f"continue with --resume {checkpoint}" if checkpoint.exists()
                     else "no epoch was complete, nothing to resume")
            self.log(f"interrupted during epoch {epoch + 1}; {where}")
            raise
        finally:
            if self.nonfinite.message():
                self.log(self.nonfinite.message())
            if self.logger is not None:
                self.logger.close()
            if self.lock is not None:
                self.lock.release()
            self._leave_process_group()
        return self.best

    def _leave_process_group(self) -> None:
        """Under DDP, drop the wrapper before the process group goes: its reducer holds the group and pending work,
        and leaving them to interpreter exit can abort a rank after a finished run (seen once in CI: SIGABRT,
        "terminate called without an active exception", exit code 1 for a run that had saved everything)."""
        if self.dist.enabled:
            self.train_model = self.model
            gc.collect()
        cleanup(self.dist)
