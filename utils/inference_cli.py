"""Command-line options shared by the scripts that run a trained model (vid_map_coco.py, vid_predict.py).

Importing this module stays light (no torch) so that ``--help`` and argument errors answer at once.
"""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from utils.errors import SSTNetError
from utils.train_cli import AMP_CHOICES, COMPUTATION_CHOICES, PHI_CHOICES

if TYPE_CHECKING:
    import torch

    from utils.inference import DetectSettings

def add_detector_arguments(parser: argparse.ArgumentParser, conf: float, nms: float,
                           engine_flags: tuple[str, ...] = ("--engine",)) -> None:
    """Model, engine and device options; ``conf``/``nms`` are the script's defaults (spec §7 differs per script).

    ``engine_flags`` names the stream/window choice: vid_map_coco.py calls it ``--mode`` (``--engine`` too),
    vid_predict.py ``--engine``, as its ``--mode`` picks what to do.
    """
    parser.add_argument("--conf", type=float, default=conf, help=f"confidence threshold (default: {conf})")
    parser.add_argument("--nms", type=float, default=nms, help=f"NMS IoU threshold (default: {nms})")
    parser.add_argument("--input-size", default="512", help="input side S (multiple of 32) or HxW (default: 512)")
    parser.add_argument("--num-frame", type=int, default=5, help="frames per window T (default: 5)")
    parser.add_argument("--phi", default="s", choices=PHI_CHOICES, help="YOLOX size (default: s)")
    parser.add_argument(*engine_flags, dest="engine", default="stream", choices=("stream", "window"),
                        help="stream: one backbone pass per frame (default); window: as released, every window "
                             "through the backbone (T passes per frame); both give the same detections")
    parser.add_argument("--computation", default="fast", choices=COMPUTATION_CHOICES,
                        help="fast: the same function with fewer operations; released: the authors' operations "
                             "(default: fast)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--amp", default="none", choices=AMP_CHOICES, help="mixed precision (default: none)")
    parser.add_argument("--batch-size", type=int, default=8, help="frames per forward pass (default: 8)")
    parser.add_argument("--workers", type=int, default=2, help="frame-decoding worker processes (default: 2)")


def detector_settings(args: argparse.Namespace) -> tuple[torch.device, DetectSettings]:
    """Check the options of :func:`add_detector_arguments` and turn them into a device and engine settings."""
    from utils.device import check_amp, select_device
    from utils.inference import DetectSettings
    from utils.preprocess import parse_input_shape

    if args.num_frame < 2:
        raise SSTNetError(f"--num-frame {args.num_frame}: SSTNet needs at least 2 frames per window")
    if args.batch_size < 1:
        raise SSTNetError(f"--batch-size {args.batch_size}: must be at least 1")
    if args.workers < 0:
        raise SSTNetError(f"--workers {args.workers}: must be at least 0")
    if not 0.0 <= args.conf <= 1.0:
        raise SSTNetError(f"--conf {args.conf}: must lie in [0, 1]")
    if not 0.0 <= args.nms <= 1.0:
        raise SSTNetError(f"--nms {args.nms}: must lie in [0, 1]")
    input_shape = parse_input_shape(args.input_size)
    device = select_device(args.device)
    amp_dtype = check_amp(args.amp, device)
    return device, DetectSettings(input_shape, args.num_frame, args.conf, args.nms, args.engine, args.batch_size,
                                  args.workers, amp_dtype)
