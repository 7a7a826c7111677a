"""Detector-only weights: trained SSTNet weights without the training-only motion branch, optionally in float16.

The motion branch (cross-slice ConvLSTM and its mappings) only shapes the backbone during training; inference never
runs it, yet it can hold most of the parameters (the demo's model, phi nano at 256 px: 8.5 of 10.9 million). The
detector-only file is what to ship: evaluation, prediction, ONNX export and ``--pretrained`` take it like full
weights (a training started from it begins the motion branch afresh). Its sidecar is the input's, plus where the
copy came from and the precision kept.

Examples:
    python strip_weights.py --weights logs/best_epoch_weights.pth --out model_detector.pth
    python strip_weights.py --weights logs/last_epoch_weights.pth --out start.pth --half   # half the size again
"""
from __future__ import annotations

import argparse
from pathlib import Path

from utils.errors import SSTNetError
from utils.runtime.cli import make_parser
from utils.runtime.entry import run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(__doc__)
    parser.add_argument("--weights", type=Path, required=True,
                        help="trained weights of this project (with their sidecar <weights>.json)")
    parser.add_argument("--out", type=Path, required=True, help="the detector-only weights file to write")
    parser.add_argument("--half", action="store_true",
                        help="store floating tensors in float16 (loaded back into float32 models as they are)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    import torch

    from nets.weights import detector_state, read_trained_weights, weights_record
    from utils.runtime.fileio import check_output
    from utils.sidecar import sidecar_path, weights_inputs
    from utils.train.run_files import save_weights

    inputs = weights_inputs("--weights", args.weights)
    check_output(args.out, "--out", inputs=inputs)
    check_output(sidecar_path(args.out), "--out (its sidecar)", inputs=inputs)
    trained, state = read_trained_weights(args.weights)
    sidecar, _ = weights_record(args.weights)
    if sidecar is None:
        raise SSTNetError(f"--weights {args.weights}: has no sidecar {sidecar_path(args.weights)}; the detector-only "
                          "copy keeps the sidecar's description of the model, so it needs this project's weights")
    dtype = torch.float16 if args.half else None
    detector = detector_state(state, dtype)
    sidecar["detector_only"] = {"from": str(args.weights), "dtype": "float16" if args.half else "as trained"}
    save_weights(detector, args.out, sidecar)
    kept = sum(value.numel() for value in detector.values())
    total = sum(value.numel() for value in state.values())
    print(f"{args.out}: {kept:,} of {total:,} parameters and buffers, {args.out.stat().st_size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    run_cli(main)
