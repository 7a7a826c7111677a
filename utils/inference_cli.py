"""Command-line options shared by the scripts that run a trained model (vid_map_coco.py, vid_predict.py) and the
step that turns them into a ready detector: weights read, model spec resolved, device chosen, engine set up.

Importing this module stays light (no torch) so that ``--help`` and argument errors answer at once.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING

from utils.cli import check_number
from utils.errors import SSTNetError
from utils.model_spec import ENGINE_CHOICES, ModelSpec, add_model_arguments, resolve_spec

if TYPE_CHECKING:
    import torch

    from nets import Network
    from utils.inference import DetectSettings
    from utils.model_spec import TrainedModel


def add_detector_arguments(parser: argparse.ArgumentParser, conf: float, nms: float,
                           engine_aliases: tuple[str, ...] = (), weights_required: bool = True) -> None:
    """Weights, thresholds, engine, preprocessing and batching, then the shared model options; ``conf``/``nms`` are the
    script's defaults (spec §7 differs per script). ``engine_aliases``: older spellings of ``--engine`` still accepted.
    ``weights_required=False``: the script checks ``--weights`` itself (it has another way to get detections)."""
    parser.add_argument("--weights", required=weights_required,
                        help="trained weights (a plain or wrapped state dict); the model they hold is read from their "
                             "sidecar <weights>.json, or from their tensor shapes")
    engine = parser.add_argument_group("engine")
    engine.add_argument("--conf", type=float, default=conf, help=f"confidence threshold (default: {conf})")
    engine.add_argument("--nms", type=float, default=nms, help=f"NMS IoU threshold (default: {nms})")
    engine.add_argument("--engine", *engine_aliases, dest="engine", default="stream", choices=ENGINE_CHOICES,
                        help="stream: one backbone pass per frame (default); window: the released computation, every "
                             "window through the backbone (T passes per frame); both give the same detections")
    engine.add_argument("--no-letterbox", dest="letterbox", action="store_false",
                        help="resize frames to the input size without keeping their aspect ratio (the release's "
                             "letterbox_image=False); boxes are mapped back exactly (default: letterbox, as in "
                             "training)")
    engine.add_argument("--batch-size", type=int, default=8, help="frames per forward pass (default: 8)")
    engine.add_argument("--workers", type=int, default=2, help="frame-decoding worker processes (default: 2)")
    add_model_arguments(parser)


@dataclass
class Detector:
    """A trained model ready to run: the model, its resolved spec, what its weights said, the engine settings."""

    model: Network
    spec: ModelSpec
    trained: TrainedModel
    settings: DetectSettings
    device: torch.device


def check_detector_arguments(args: argparse.Namespace) -> None:
    """Range checks of the engine options, before anything slow."""
    check_number("--batch-size", args.batch_size, 1)
    check_number("--workers", args.workers, 0)
    check_number("--conf", args.conf, 0, 1)
    check_number("--nms", args.nms, 0, 1)


def load_detector(args: argparse.Namespace, num_classes: int | None = None, source: str = "--weights") -> Detector:
    """Read ``--weights``, resolve the model spec against them, build the eval-mode model on the chosen device.

    ``num_classes`` (from the annotations, when known) must agree with the weights.
    """
    from nets.weights import read_trained_weights
    from utils.device import apply_threads, check_amp, select_device
    from utils.inference import DetectSettings, build_model
    from utils.memory import check_memory

    check_detector_arguments(args)
    trained, state = read_trained_weights(args.weights)
    if num_classes is not None and trained.num_classes != num_classes:
        raise SSTNetError(f"{source} {args.weights}: trained for {trained.num_classes} classes, but the annotations "
                          f"have {num_classes}")
    spec = resolve_spec(args, trained, engine=args.engine)
    apply_threads(spec.threads, args.workers)
    device = select_device(spec.device)
    amp_dtype = check_amp(spec.amp, device)
    check_memory(spec, args.batch_size, False, device, trained.num_classes,
                 frames_at_once=spec.num_frame if args.engine == "window" else 1)
    model = build_model(spec, trained.num_classes, state, device, str(args.weights))
    settings = DetectSettings(spec.input_shape, spec.num_frame, args.conf, args.nms, args.engine, args.batch_size,
                              args.workers, amp_dtype, args.letterbox)
    return Detector(model, spec, trained, settings, device)
