"""Command-line options shared by the scripts that run a trained model (vid_map_coco.py, vid_predict.py) and the
step that turns them into a ready detector: weights read (or exported ONNX graphs opened), model spec resolved,
device chosen, engine set up.

Importing this module stays light (no torch) so that ``--help`` and argument errors answer at once.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from utils.errors import SSTNetError
from utils.model_spec import COMPILE_MODES, ENGINE_CHOICES, ModelSpec, format_input_shape, parse_input_shape
from utils.runtime.cli import check_number
from utils.runtime.cpus import default_threads
from utils.runtime.model_options import WORKERS_HELP, add_model_arguments, resolve_spec, resolve_workers

if TYPE_CHECKING:
    import torch

    from nets import Network
    from utils.infer.engine import DetectSettings, InferenceBackend
    from utils.model_spec import TrainedModel


def add_detector_arguments(parser: argparse.ArgumentParser, conf: float, nms: float,
                           engine_aliases: tuple[str, ...] = (), several_sizes: str | None = None) -> None:
    """Weights (or exported graphs), thresholds, engine, preprocessing and batching, then the shared model options;
    ``conf``/``nms`` are the script's defaults (the release's differ per script). ``engine_aliases``: older spellings of
    ``--engine`` still accepted. ``several_sizes``: ``--input-size`` takes several sizes, with this help."""
    parser.add_argument("--weights", default=None,
                        help="trained weights (a plain or wrapped state dict); the model they hold is read from their "
                             "sidecar <weights>.json, or from their tensor shapes (this or --onnx)")
    parser.add_argument("--onnx", type=Path, default=None, metavar="DIR",
                        help="run the graphs export_onnx.py wrote into DIR on ONNX Runtime instead of PyTorch weights "
                             "(this or --weights); the model comes from their metadata")
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
    engine.add_argument("--compile", default="off", choices=("off", *COMPILE_MODES),
                        help="run the model through torch.compile in this mode; reduce-overhead (CUDA graphs) is the "
                             "GPU fast path for long runs (H200, bf16, streaming at 512: 0.96 ms per frame against 6.6 "
                             "eager, readme/benchmarks.md), but compiling costs 15-40 s at the start and again for "
                             "each new batch shape, so it pays off after thousands of frames (default: off)")
    engine.add_argument("--batch-size", type=int, default=8, help="frames per forward pass (default: 8)")
    engine.add_argument("--workers", type=int, default=None, help=WORKERS_HELP)
    add_model_arguments(parser, several_sizes)


@dataclass
class Detector:
    """A trained model ready to run: the backend the engine calls, the PyTorch model behind it (None on ONNX
    Runtime), the resolved spec, what the weights (or graphs) said, the engine settings."""

    backend: InferenceBackend
    model: Network | None
    spec: ModelSpec
    trained: TrainedModel
    settings: DetectSettings
    device: torch.device


def check_detector_arguments(args: argparse.Namespace) -> None:
    """Which model to run and range checks of the engine options, before anything slow."""
    if (args.weights is None) == (args.onnx is None):
        raise SSTNetError("--weights / --onnx: give exactly one, trained weights (--weights W.pth) or the folder of "
                          "exported graphs (--onnx DIR)")
    if args.onnx is not None and args.amp != "none":
        raise SSTNetError(f"--amp {args.amp}: the ONNX graphs fix their precision (export_onnx.py --half writes "
                          f"float16 graphs)")
    if args.onnx is not None and args.compile != "off":
        raise SSTNetError(f"--compile {args.compile}: torch.compile applies to --weights; ONNX Runtime optimises the "
                          "graphs of --onnx itself")
    check_number("--batch-size", args.batch_size, 1)
    resolve_workers(args)
    check_number("--workers", args.workers, 0)
    check_number("--conf", args.conf, 0, 1)
    check_number("--nms", args.nms, 0, 1)


def load_detector(args: argparse.Namespace, num_classes: int | None = None, source: str = "--weights",
                  engines: Sequence[str] | None = None) -> Detector:
    """Read ``--weights``, resolve the model spec against them, build the eval-mode model on the chosen device (or,
    with ``--onnx``, open the exported graphs of ``engines``, default ``--engine``'s, on ONNX Runtime).

    ``num_classes`` (from the annotations, when known) must agree with the weights.
    """
    from nets.weights import read_trained_weights
    from utils.infer.engine import DetectSettings, TorchBackend, build_model
    from utils.runtime.device import apply_threads, check_amp, select_device
    from utils.runtime.memory import check_memory

    check_detector_arguments(args)
    if args.onnx is not None:
        return load_onnx_detector(args, num_classes, engines or (args.engine,))
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
                              args.workers, amp_dtype, args.letterbox, spec.frame_step)
    # Mixed precision runs channels-last: the layout bf16/fp16 convolutions want (TorchBackend).
    backend = TorchBackend(model, amp_dtype, channels_last=amp_dtype is not None,
                           compile_mode=None if args.compile == "off" else args.compile)
    return Detector(backend, model, spec, trained, settings, device)


def load_onnx_detector(args: argparse.Namespace, num_classes: int | None, engines: Sequence[str]) -> Detector:
    """Open the graphs of ``--onnx`` for ``engines`` and take the model spec from their metadata; flags that
    contradict it (model, input size, computation, classes) are errors."""
    from utils.deploy.onnx_backend import OnnxBackend
    from utils.infer.engine import DetectSettings
    from utils.runtime.device import apply_threads

    flags = resolve_spec(args, engine=args.engine)  # the flags alone, checked before the graphs are opened
    threads = flags.threads if flags.threads is not None else default_threads(args.workers)
    apply_threads(threads, args.workers)
    backend = OnnxBackend(args.onnx, engines, flags.device, threads)
    info, where = backend.info, f"--onnx {args.onnx}"
    if num_classes is not None and info.num_classes != num_classes:
        raise SSTNetError(f"{where}: exported for {info.num_classes} classes, but the annotations have {num_classes}")
    if args.input_size is not None and parse_input_shape(args.input_size) != info.input_shape:
        raise SSTNetError(f"--input-size {args.input_size}: the graphs in {args.onnx} take "
                          f"{format_input_shape(info.input_shape)} (export again with --input-size {args.input_size})")
    computation = backend.computation(args.engine)
    if args.computation is not None and args.computation != computation:
        raise SSTNetError(f"--computation {args.computation}: the {args.engine} graphs in {args.onnx} compute the "
                          f"{computation} computation")
    trained = info.trained_model(str(args.onnx))
    spec = dataclasses.replace(resolve_spec(args, trained, engine=args.engine), computation=computation)
    settings = DetectSettings(spec.input_shape, spec.num_frame, args.conf, args.nms, args.engine, args.batch_size,
                              args.workers, None, args.letterbox, spec.frame_step)
    return Detector(backend, None, spec, trained, settings, backend.device)
