"""Command line of the training scripts, parsed once into a :class:`~utils.train.config.TrainConfig`; train_daub.py
and train_irdst.py differ only in their dataset defaults."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..data.augment import add_augment_arguments
from ..data.bundled import REPO_ROOT, DatasetDefaults, ensure_synthetic_dataset
from ..runtime.cli import given_flags, make_parser
from ..runtime.model_options import WORKERS_HELP, add_model_arguments, resolve_workers
from .config import LR_DECAY_CHOICES, OPTIMIZERS, SELECTION_CHOICES, TrainConfig


def build_parser(defaults: DatasetDefaults) -> argparse.ArgumentParser:
    parser = make_parser(f"Train SSTNet on {defaults.name}-layout data. Defaults reproduce the published recipe "
                         "(docs/design.md, Training recipe); without --data-root the bundled synthetic dataset is "
                         "used.")
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
    data.add_argument("--dataset-zoom", type=float, nargs="+", default=None, metavar="F",
                      help="a zoom about each training set's frames, --data-root's first, then each --mix-data "
                           "root's (default: 1 each), applied before the augmentation's --scale and cropped to the "
                           "input (boxes kept inside), e.g. 2 to show one dataset's 3-5 px targets at the size of "
                           "another's 8-10 px ones; score that dataset at twice its frame size (--input-size)")
    data.add_argument("--dataset-scale", type=float, nargs="+", default=None, metavar="MIN MAX",
                      help="the augmentation's zoom range per training set instead of --scale, a MIN MAX pair for "
                           "--data-root, then one per --mix-data root, e.g. a wide range for a dataset with targets of "
                           "many sizes and a narrow one for a dataset shown at one size by --dataset-zoom")
    data.add_argument("--all-frames", action="store_true",
                      help="also train and validate on the frames the annotation files list without boxes (no target "
                           "in view: negatives), as vid_map_coco.py --all-frames scores them (default: annotated "
                           "frames only, as the release)")
    data.add_argument("--num-classes", type=int, default=None,
                      help="classes of index-txt data (default: largest class index + 1)")
    add_augment_arguments(parser)
    epoch_size = data.add_mutually_exclusive_group()
    epoch_size.add_argument("--epoch-fraction", type=float, default=0.2,
                            help="fraction of the training frames drawn at random for each epoch (release: a fifth)")
    epoch_size.add_argument("--epoch-steps", type=int, default=None, metavar="N",
                            help="batches per epoch, drawn at random from the training frames, instead of "
                                 "--epoch-fraction: the epoch keeps its length when --dataset-repeats or --mix-data "
                                 "change how many frames there are")
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
    optim.add_argument("--optimizer", default="sgd", choices=OPTIMIZERS,
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
    optim.add_argument("--l1-loss-epochs", type=int, default=0, metavar="N",
                       help="add YOLOX's L1 term on the raw box offsets (centre in cells, log size in strides) to the "
                            "loss in the last N epochs, validation loss included (0: the published loss, IoU term "
                            "only)")
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
    run.add_argument("--select-by", choices=SELECTION_CHOICES, default="auto",
                     help="which epoch best_epoch_weights.pth holds: the highest val mAP50, the lowest val loss or "
                          "the last epoch (auto, the release's rule: mAP50 when --eval-period > 0, else val_loss)")
    run.add_argument("--eval-conf", type=float, default=0.001, help="confidence threshold of that evaluation")
    run.add_argument("--eval-nms", type=float, default=0.65, help="NMS IoU threshold of that evaluation")
    run.add_argument("--resume", default=None,
                     help="resume checkpoint (RUN/last_checkpoint.pth) to continue exactly where it stopped")
    run.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def parse_config(argv: list[str] | None, defaults: DatasetDefaults) -> TrainConfig:
    """The training command line parsed and validated into one :class:`TrainConfig` (with ``given``: the flags written
    on the command line, which a resumed run takes from there rather than from its checkpoint)."""
    parser = build_parser(defaults)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    resolve_workers(args)
    return TrainConfig.from_flat(vars(args), given_flags(parser, argv))


def main(argv: list[str] | None, defaults: DatasetDefaults) -> int:
    """Parse, prepare the data, train."""
    config = parse_config(argv, defaults)
    if config.start.resume is None and config.data.data_root is None:
        config = config.replace(data_root=str(ensure_synthetic_dataset(defaults)))
    from .trainer import Trainer  # after argument checks: importing torch and the model takes a while
    trainer = Trainer(config)
    best = trainer.fit()
    if trainer.dist.is_main:
        print(f"done: best epoch {best.epoch} ({best.describe()}); weights in {trainer.run_dir}")
    return 0
