"""Command line of the training scripts; train_daub.py and train_irdst.py differ only in their dataset defaults."""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import SSTNetError
from .cli import check_number, given_flags, make_parser
from .model_spec import WORKERS_HELP, add_model_arguments, resolve_workers

if TYPE_CHECKING:
    from .augment import AugmentConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
# The learning-rate schedules and the step schedule's number of steps; a test checks them against nets.training
# (LR_DECAYS, STEP_DECAY_STEPS), which imports torch.
LR_DECAY_CHOICES = ("cos", "step")
STEP_DECAY_STEPS = 10


@dataclass(frozen=True)
class DatasetDefaults:
    """What a training script trains on when no ``--data-root`` is given: the bundled synthetic dataset."""

    name: str
    layout: str
    synthetic_root: Path


DAUB = DatasetDefaults("DAUB", "daub", REPO_ROOT / "datasets" / "synthetic_daub")
IRDST = DatasetDefaults("IRDST", "irdst", REPO_ROOT / "datasets" / "synthetic_irdst")


def ensure_synthetic_dataset(defaults: DatasetDefaults, progress: bool = True) -> Path:
    """The bundled synthetic dataset of ``defaults``, generated (default seed) the first time it is needed."""
    root = defaults.synthetic_root
    if not (root / "annotations" / "instances_test2017.json").exists():
        from .synthetic import SyntheticConfig, generate_dataset
        print(f"generating the bundled synthetic {defaults.layout} dataset in {root} (first use)")
        generate_dataset(root, SyntheticConfig(layout=defaults.layout), progress=progress)
    return root


def build_parser(defaults: DatasetDefaults) -> argparse.ArgumentParser:
    parser = make_parser(f"Train SSTNet on {defaults.name}-layout data. Defaults reproduce the published recipe "
                         "(spec §8); without --data-root the bundled synthetic dataset is used.")
    data = parser.add_argument_group("data")
    data.add_argument("--data-root", type=Path, default=None,
                      help=f"dataset folder in {defaults.name} layout (default: "
                           f"{defaults.synthetic_root.relative_to(REPO_ROOT)}, generated on first use)")
    data.add_argument("--train-ann", default="annotations/instances_train2017.json",
                      help="training COCO json, relative to --data-root unless absolute")
    data.add_argument("--val-ann", default="annotations/instances_test2017.json",
                      help="validation COCO json, relative to --val-root unless absolute")
    data.add_argument("--val-root", default=None,
                      help="dataset folder of the validation split (default: --data-root); e.g. held-out scenes of "
                           "another dataset, so that a test split is never used to pick the best weights")
    data.add_argument("--train-txt", default=None, help="training index txt instead of --train-ann "
                                                        "(relative frame paths are under --data-root)")
    data.add_argument("--val-txt", default=None, help="validation index txt instead of --val-ann")
    data.add_argument("--mix-data", nargs="+", default=None, metavar="ROOT",
                      help="more datasets (same layout) whose training split (--train-ann under each) is mixed into "
                           "every epoch, e.g. synthetic sequences next to a few real clips")
    data.add_argument("--dataset-repeats", type=int, nargs="+", default=None, metavar="N",
                      help="how many times each training set's frames are listed, --data-root's first, then each "
                           "--mix-data root's (default: 1 each), e.g. to let a few real clips weigh as much as a large "
                           "imported dataset; each listing draws its own augmentation")
    data.add_argument("--all-frames", action="store_true",
                      help="also train and validate on the frames the annotation files list without boxes (no target "
                           "in view: negatives), as vid_map_coco.py --all-frames scores them (default: annotated "
                           "frames only, as the release)")
    data.add_argument("--num-classes", type=int, default=None,
                      help="classes of index-txt data (default: largest class index + 1)")
    augment = parser.add_argument_group(
        "augmentation", "drawn once per sample and applied alike to its T frames (sensor noise excepted); all off by "
                        "default, as the release trains")
    augment.add_argument("--augment", action="store_true",
                         help="the release's unused helper: --flip-lr 0.5 --hsv 0.1 0.7 0.4 (flags given "
                              "explicitly take precedence)")
    augment.add_argument("--flip-lr", type=float, default=None, help="probability of a left-right mirror (default: 0)")
    augment.add_argument("--flip-ud", type=float, default=0.0, help="probability of an up-down mirror")
    augment.add_argument("--translate", type=float, default=0.0,
                         help="largest shift as a fraction of the input side; boxes are kept inside")
    augment.add_argument("--scale", type=float, nargs=2, default=(1.0, 1.0), metavar=("MIN", "MAX"),
                         help="zoom range about the centre")
    augment.add_argument("--hsv", type=float, nargs=3, default=None, metavar=("H", "S", "V"),
                         help="HSV gains drawn in [1-g, 1+g] (default: 0 0 0)")
    augment.add_argument("--contrast", type=float, default=0.0, help="contrast gain drawn in [1-c, 1+c]")
    augment.add_argument("--brightness", type=float, default=0.0, help="brightness offset drawn in [-b, b] × 255")
    augment.add_argument("--gamma", type=float, default=0.0, help="gamma drawn log-uniformly in [1/(1+g), 1+g]")
    augment.add_argument("--noise", type=float, default=0.0,
                         help="largest std (grey levels) of Gaussian sensor noise, fresh in every frame")
    data.add_argument("--epoch-fraction", type=float, default=0.2,
                      help="fraction of the training frames drawn at random for each epoch (release: a fifth)")
    data.add_argument("--val-fraction", type=float, default=1.0,
                      help="fraction of the validation frames used for the validation loss")
    data.add_argument("--workers", type=int, default=None, help=WORKERS_HELP)

    add_model_arguments(parser)
    start = parser.add_argument_group("initialisation")
    start.add_argument("--pretrained", default=None,
                       help="weights loaded by key and shape before training (e.g. the official YOLOX-s COCO "
                            "checkpoint for the backbone, or an earlier run's weights: model flags left out then take "
                            "their values)")
    start.add_argument("--prior-prob", type=float, default=0.0,
                       help="initialise the objectness/class biases to -log((1-p)/p) as YOLOX does, after "
                            "--pretrained is loaded (0: keep the release's initialisation)")

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--epochs", type=int, default=100, help="training epochs")
    optim.add_argument("--batch-size", type=int, default=4, help="total batch over all processes")
    optim.add_argument("--freeze-epochs", type=int, default=0, metavar="N",
                       help="freeze training as released: the first N epochs train with the backbone frozen (its "
                            "BatchNorm statistics too) at --freeze-batch-size, then everything at --batch-size with "
                            "the learning rate rescaled for it; the optimizer and schedule carry on (0: off)")
    optim.add_argument("--freeze-batch-size", type=int, default=None, metavar="B",
                       help="total batch of the frozen epochs (default: --batch-size)")
    optim.add_argument("--lr", type=float, default=0.01, help="base learning rate for a batch of 64")
    optim.add_argument("--min-lr-ratio", type=float, default=0.01, help="final learning rate as a fraction of --lr")
    optim.add_argument("--lr-decay", default="cos", choices=LR_DECAY_CHOICES,
                       help="cos: quadratic warm-up then cosine to the final rate (release default); step: the "
                            "release's step schedule, the rate multiplied by (final/base)^(1/9) every epochs/10 epochs "
                            "(needs --epochs >= 10)")
    optim.add_argument("--scale-lr", action=argparse.BooleanOptionalAction, default=True,
                       help="scale --lr by batch/64 and clip to the release's bounds")
    optim.add_argument("--optimizer", default="sgd", choices=("sgd", "adam"),
                       help="optimizer (SGD with Nesterov momentum, or Adam)")
    optim.add_argument("--momentum", type=float, default=0.937, help="SGD momentum / Adam beta1")
    optim.add_argument("--weight-decay", type=float, default=5e-4, help="weight decay on conv/linear weights")
    optim.add_argument("--train-all-params", action="store_true",
                       help="also train the parameters the release leaves out of its optimizer (the neck's frame "
                            "weights, the attention input projections)")
    optim.add_argument("--ema-decay", type=float, default=0.9999,
                       help="the weight EMA's final averaging factor; the EMA gives the saved and evaluated weights")
    optim.add_argument("--ema-tau", type=float, default=2000,
                       help="steps over which the EMA's factor ramps up to --ema-decay (the release's 2000 leaves "
                            "short runs nearly unaveraged: a 600-step run ends at 0.26)")
    optim.add_argument("--seed", type=int, default=2023,
                       help="seed of every random draw (weights, epoch subsets, augmentation)")

    run = parser.add_argument_group("run")
    run.add_argument("--channels-last", action="store_true", help="channels-last memory format (GPU speed-up)")
    run.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across processes under torchrun")
    run.add_argument("--save-dir", default="logs", help="run folder for weights, logs and plots")
    run.add_argument("--exist-ok", action="store_true", help="allow a --save-dir that already holds a run")
    run.add_argument("--save-period", type=int, default=10, help="also keep epNNN-*.pth every this many epochs")
    run.add_argument("--eval-period", type=int, default=5,
                     help="COCO evaluation of the validation set every this many epochs (0: never; best weights "
                          "then follow the validation loss unless --select-by says otherwise)")
    run.add_argument("--select-by", choices=("auto", "mAP50", "val_loss", "last"), default="auto",
                     help="which epoch best_epoch_weights.pth holds: the highest val mAP50, the lowest val loss or "
                          "the last epoch (auto, the release's rule: mAP50 when --eval-period > 0, else val_loss)")
    run.add_argument("--eval-conf", type=float, default=0.001, help="confidence threshold of that evaluation")
    run.add_argument("--eval-nms", type=float, default=0.65, help="NMS IoU threshold of that evaluation")
    run.add_argument("--resume", default=None,
                     help="resume checkpoint (RUN/last_checkpoint.pth) to continue exactly where it stopped")
    run.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Reject values argparse cannot (out of range, NaN, infinite), with the flag named; fill --workers left out."""
    resolve_workers(args)
    for flag, value, minimum in (("--epochs", args.epochs, 1), ("--batch-size", args.batch_size, 1),
                                 ("--save-period", args.save_period, 1), ("--eval-period", args.eval_period, 0),
                                 ("--workers", args.workers, 0), ("--seed", args.seed, 0)):
        check_number(flag, value, minimum)
    check_number("--num-classes", args.num_classes, 1)
    check_number("--lr", args.lr, 0, low_open=True)
    check_number("--min-lr-ratio", args.min_lr_ratio, 0, 1, low_open=True)
    check_number("--momentum", args.momentum, 0, 1, high_open=True)
    check_number("--weight-decay", args.weight_decay, 0)
    check_number("--epoch-fraction", args.epoch_fraction, 0, 1, low_open=True)
    check_number("--val-fraction", args.val_fraction, 0, 1, low_open=True)
    check_number("--prior-prob", args.prior_prob, 0, 1, high_open=True)
    check_number("--ema-decay", args.ema_decay, 0, 1, high_open=True)
    check_number("--ema-tau", args.ema_tau, 0, low_open=True)
    check_number("--eval-conf", args.eval_conf, 0, 1)
    check_number("--eval-nms", args.eval_nms, 0, 1)
    check_number("--freeze-epochs", args.freeze_epochs, 0, args.epochs)
    check_number("--freeze-batch-size", args.freeze_batch_size, 1)
    if args.lr_decay == "step" and args.epochs < STEP_DECAY_STEPS:
        raise SSTNetError(f"--lr-decay step: needs --epochs of at least {STEP_DECAY_STEPS} (the rate drops every "
                          f"epochs/{STEP_DECAY_STEPS} epochs), got {args.epochs}")
    repeats = getattr(args, "dataset_repeats", None)
    if repeats is not None:
        expected = 1 + len(args.mix_data or [])
        if len(repeats) != expected:
            raise SSTNetError(f"--dataset-repeats: give {expected} count(s), one for --data-root and one per "
                              f"--mix-data root, got {len(repeats)}")
        for count in repeats:
            check_number("--dataset-repeats", count, 1)
    if args.select_by == "mAP50" and args.eval_period == 0:
        raise SSTNetError("--select-by mAP50: needs --eval-period > 0 (with 0 no epoch computes a val mAP50)")


def augment_config(args: argparse.Namespace) -> "AugmentConfig":
    """The augmentation of a run: the explicit knobs, with ``--augment`` filling the release's flip and HSV jitter."""
    from .augment import RELEASE_AUGMENT, AugmentConfig

    preset = RELEASE_AUGMENT if getattr(args, "augment", False) else AugmentConfig()
    flip_lr = getattr(args, "flip_lr", None)
    hsv = getattr(args, "hsv", None)
    return AugmentConfig(flip_lr=preset.flip_lr if flip_lr is None else flip_lr,
                         flip_ud=getattr(args, "flip_ud", 0.0), translate=getattr(args, "translate", 0.0),
                         scale=tuple(getattr(args, "scale", (1.0, 1.0))),
                         hsv=preset.hsv if hsv is None else tuple(hsv), contrast=getattr(args, "contrast", 0.0),
                         brightness=getattr(args, "brightness", 0.0), gamma=getattr(args, "gamma", 0.0),
                         noise=getattr(args, "noise", 0.0))


def parse_args(argv: list[str] | None, defaults: DatasetDefaults) -> argparse.Namespace:
    """Parsed arguments, plus ``given``: the destinations of the flags written on the command line (a resumed run
    takes everything else from its checkpoint)."""
    parser = build_parser(defaults)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.given = sorted(given_flags(parser, argv))
    check_args(args)
    augment_config(args)  # reject bad augmentation values before the long part
    return args


def main(argv: list[str] | None, defaults: DatasetDefaults) -> int:
    """Parse, prepare the data, train."""
    args = parse_args(argv, defaults)
    if args.resume is None and args.data_root is None:
        args.data_root = ensure_synthetic_dataset(defaults)
    from .trainer import Trainer  # after argument checks: importing torch and the model takes a while
    trainer = Trainer(args)
    best = trainer.fit()
    if trainer.dist.is_main:
        print(f"done: best epoch {best.epoch} ({best.describe()}); weights in {trainer.run_dir}")
    return 0
