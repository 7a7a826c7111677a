"""The typed configuration of a training run: what the training command line parses into, once, and all the trainer
reads. Every group validates itself, so a run built from the command line, from a resumed checkpoint or from code
is checked the same way, before anything is written.

A configuration also has a flat form, one ``{flag destination: value}`` dict of plain types, which ``args.json`` and
resume checkpoints store (the form earlier versions stored, so their checkpoints still resume).
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from ..data.augment import AugmentConfig, augment_from_flags
from ..errors import SSTNetError
from ..runtime.cli import check_number

# The learning-rate schedules and the step schedule's number of steps; a test checks them against nets.training
# (LR_DECAYS, STEP_DECAY_STEPS), which imports torch.
LR_DECAY_CHOICES = ("cos", "step")
STEP_DECAY_STEPS = 10
OPTIMIZERS = ("sgd", "adam")
SELECTION_CHOICES = ("auto", "mAP50", "val_loss", "last")


def _choice(flag: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SSTNetError(f"{flag} {value!r}: expected one of {', '.join(choices)}")


@dataclass(frozen=True)
class ModelFlags:
    """The model options as written; None means left out (filled from ``--pretrained`` weights, else the published
    defaults, when the trainer resolves its :class:`~utils.model_spec.ModelSpec`)."""

    phi: str | None = None
    num_frame: int | None = None
    input_size: str | int | None = None
    lstm_hidden: int | None = None
    computation: str | None = None
    device: str = "auto"
    amp: str = "none"
    threads: int | None = None
    frame_step: int | None = None


@dataclass(frozen=True)
class DataConfig:
    """Where the frames come from and how many an epoch draws."""

    data_root: str | None = None
    train_ann: str = "annotations/instances_train2017.json"
    val_ann: str = "annotations/instances_test2017.json"
    val_root: str | None = None
    train_txt: str | None = None
    val_txt: str | None = None
    mix_data: tuple[str, ...] = ()
    dataset_repeats: tuple[int, ...] | None = None
    dataset_zoom: tuple[float, ...] | None = None
    dataset_scale: tuple[float, ...] | None = None
    all_frames: bool = False
    num_classes: int | None = None
    epoch_fraction: float = 0.2
    epoch_steps: int | None = None
    val_fraction: float = 1.0
    workers: int = 0

    def __post_init__(self) -> None:
        check_number("--workers", self.workers, 0)
        check_number("--num-classes", self.num_classes, 1)
        check_number("--epoch-fraction", self.epoch_fraction, 0, 1, low_open=True)
        check_number("--epoch-steps", self.epoch_steps, 1)
        check_number("--val-fraction", self.val_fraction, 0, 1, low_open=True)
        roots = [("--mix-data", root) for root in self.mix_data]
        if self.data_root:
            roots.insert(0, ("--data-root", self.data_root))
        seen: dict[str, str] = {}
        for flag, root in roots:
            real = os.path.realpath(root)
            if real in seen:
                raise SSTNetError(f"{flag} {root}: the same folder as {seen[real]}; each training set is listed once "
                                  "(weigh one more with --dataset-repeats)")
            seen[real] = f"{flag} {root}"
        self._check_per_dataset("--dataset-repeats", self.dataset_repeats, "count(s)", 1)
        self._check_per_dataset("--dataset-zoom", self.dataset_zoom, "factor(s)", 0.25, 8)
        self._check_scale_ranges()

    def _check_scale_ranges(self) -> None:
        """--dataset-scale: a MIN MAX pair per training set, each in the range --scale accepts."""
        if self.dataset_scale is None:
            return
        expected = 2 * (1 + len(self.mix_data))
        if len(self.dataset_scale) != expected:
            raise SSTNetError(f"--dataset-scale: give {expected} numbers, a MIN MAX pair for --data-root and one per "
                              f"--mix-data root, got {len(self.dataset_scale)}")
        for low, high in self.scale_ranges:
            check_number("--dataset-scale", low, 0.1, 10)
            check_number("--dataset-scale", high, 0.1, 10)
            if low > high:
                raise SSTNetError(f"--dataset-scale {low:g} {high:g}: MIN is greater than MAX")

    def _check_per_dataset(self, flag: str, values: tuple | None, what: str, low: float,
                           high: float = math.inf) -> None:
        """A per-training-set option: one value for --data-root and one per --mix-data root, each in range."""
        if values is None:
            return
        expected = 1 + len(self.mix_data)
        if len(values) != expected:
            raise SSTNetError(f"{flag}: give {expected} {what}, one for --data-root and one per --mix-data root, got "
                              f"{len(values)}")
        for value in values:
            check_number(flag, value, low, high)

    @property
    def repeats(self) -> tuple[int, ...]:
        """How many times each training set is listed: --data-root's, then each --mix-data root's."""
        return self.dataset_repeats or (1,) * (1 + len(self.mix_data))

    @property
    def zooms(self) -> tuple[float, ...]:
        """The zoom of each training set's samples: --data-root's, then each --mix-data root's."""
        return self.dataset_zoom or (1.0,) * (1 + len(self.mix_data))

    @property
    def scale_ranges(self) -> tuple[tuple[float, float], ...] | None:
        """Each training set's augmentation zoom range (--dataset-scale), or None: --scale for every set."""
        if self.dataset_scale is None:
            return None
        values = self.dataset_scale
        return tuple((float(values[i]), float(values[i + 1])) for i in range(0, len(values), 2))


@dataclass(frozen=True)
class OptimConfig:
    """The optimiser, its schedule, the weight EMA and the seed of every random draw."""

    epochs: int = 100
    batch_size: int = 4
    freeze_epochs: int = 0
    freeze_batch_size: int | None = None
    lr: float = 0.01
    min_lr_ratio: float = 0.01
    lr_decay: str = "cos"
    scale_lr: bool = True
    optimizer: str = "sgd"
    momentum: float = 0.937
    weight_decay: float = 5e-4
    train_all_params: bool = False
    ema_decay: float = 0.9999
    ema_tau: float = 2000
    l1_loss_epochs: int = 0
    seed: int = 2023

    def __post_init__(self) -> None:
        check_number("--epochs", self.epochs, 1)
        check_number("--batch-size", self.batch_size, 1)
        check_number("--seed", self.seed, 0)
        check_number("--lr", self.lr, 0, low_open=True)
        check_number("--min-lr-ratio", self.min_lr_ratio, 0, 1, low_open=True)
        check_number("--momentum", self.momentum, 0, 1, high_open=True)
        check_number("--weight-decay", self.weight_decay, 0)
        check_number("--ema-decay", self.ema_decay, 0, 1, high_open=True)
        check_number("--ema-tau", self.ema_tau, 0, low_open=True)
        check_number("--freeze-epochs", self.freeze_epochs, 0, self.epochs)
        check_number("--l1-loss-epochs", self.l1_loss_epochs, 0, self.epochs)
        check_number("--freeze-batch-size", self.freeze_batch_size, 1)
        _choice("--lr-decay", self.lr_decay, LR_DECAY_CHOICES)
        _choice("--optimizer", self.optimizer, OPTIMIZERS)
        if self.lr_decay == "step" and self.epochs < STEP_DECAY_STEPS:
            raise SSTNetError(f"--lr-decay step: needs --epochs of at least {STEP_DECAY_STEPS} (the rate drops every "
                              f"epochs/{STEP_DECAY_STEPS} epochs), got {self.epochs}")


@dataclass(frozen=True)
class StartConfig:
    """Where the weights start: an earlier run to resume exactly, or weights to load before training."""

    resume: str | None = None
    pretrained: str | None = None
    prior_prob: float = 0.0

    def __post_init__(self) -> None:
        check_number("--prior-prob", self.prior_prob, 0, 1, high_open=True)


@dataclass(frozen=True)
class RunConfig:
    """The run folder, what is saved and evaluated when, and how the run executes."""

    save_dir: str = "logs"
    exist_ok: bool = False
    save_period: int = 10
    eval_period: int = 5
    select_by: str = "auto"
    eval_conf: float = 0.001
    eval_nms: float = 0.65
    channels_last: bool = False
    sync_bn: bool = False
    debug: bool = False

    def __post_init__(self) -> None:
        check_number("--save-period", self.save_period, 1)
        check_number("--eval-period", self.eval_period, 0)
        check_number("--eval-conf", self.eval_conf, 0, 1)
        check_number("--eval-nms", self.eval_nms, 0, 1)
        _choice("--select-by", self.select_by, SELECTION_CHOICES)
        if self.select_by == "mAP50" and self.eval_period == 0:
            raise SSTNetError("--select-by mAP50: needs --eval-period > 0 (with 0 no epoch computes a val mAP50)")


GROUPS = {"model": ModelFlags, "data": DataConfig, "augment": AugmentConfig, "optim": OptimConfig,
          "start": StartConfig, "run": RunConfig}
# Flat values that JSON turns into lists and the dataclasses hold as tuples.
_TUPLES = {"mix_data", "dataset_repeats", "dataset_zoom", "dataset_scale", "scale", "hsv"}


def _plain(name: str, value: Any) -> Any:
    """A flat value as its group holds it: paths as strings, lists as tuples, no --mix-data as ()."""
    if name == "mix_data" and value is None:
        return ()
    if name in _TUPLES and value is not None:
        return tuple(os.fspath(item) if isinstance(item, os.PathLike) else item for item in value)
    return os.fspath(value) if isinstance(value, os.PathLike) else value


@dataclass(frozen=True)
class TrainConfig:
    """One training run, as parsed once from the command line (or restored from a checkpoint)."""

    model: ModelFlags = field(default_factory=ModelFlags)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    start: StartConfig = field(default_factory=StartConfig)
    run: RunConfig = field(default_factory=RunConfig)
    given: frozenset[str] = frozenset()
    """The flag destinations written on the command line (a resumed run takes the others from its checkpoint)."""

    def flat(self) -> dict[str, Any]:
        """Every option as ``{flag destination: plain value}`` (args.json, checkpoints)."""
        values: dict[str, Any] = {}
        for name in GROUPS:
            for key, value in dataclasses.asdict(getattr(self, name)).items():
                values[key] = list(value) if isinstance(value, tuple) else value
        return values

    @classmethod
    def from_flat(cls, values: Mapping[str, Any], given: frozenset[str] | set[str] = frozenset()) -> TrainConfig:
        """A configuration from flat values (keys a group lacks are ignored; missing ones take their defaults);
        invalid values are refused, naming the flag."""
        groups = {}
        for name, kind in GROUPS.items():
            if kind is AugmentConfig:
                groups[name] = augment_from_flags(values)
                continue
            chosen = {item.name: _plain(item.name, values[item.name]) for item in fields(kind) if item.name in values}
            groups[name] = kind(**chosen)
        return cls(**groups, given=frozenset(given))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with flat options changed (``data_root=...``, ``phi=...``), validated again."""
        return TrainConfig.from_flat({**self.flat(), **changes}, self.given)
