"""Parameters and GFLOPs of SSTNet per part: the backbone (CSPDarknet and top-down path), the motion-coupling neck,
the head and the training-only motion branch, at a given input size and frame count.

GFLOPs are for one sample (a multiply-add counts 2): inference of one T-frame window as released (every frame through
the backbone), and a training forward (the motion branch too; the loss and backward not included). Below the table:
the streaming engine's cost per new frame. The counting is benchmarks/bench.py's (utils/runtime/complexity.py).

Examples:
    python summary.py                                        # the released model: phi s, 5 frames, 512
    python summary.py --weights logs/best_epoch_weights.pth  # the model the weights hold (sidecar or shapes)
    python summary.py --phi nano --input-size 256 --num-frame 3 --json summary.json
"""
from __future__ import annotations

import argparse
from pathlib import Path

from utils.errors import SSTNetError
from utils.runtime.cli import make_parser
from utils.runtime.entry import run_cli
from utils.runtime.model_options import add_model_arguments, resolve_spec


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(__doc__)
    parser.add_argument("--weights", default=None,
                        help="trained weights whose model to count (the model flags then default to theirs)")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="classes of the head (default: the weights', else 1)")
    add_model_arguments(parser)
    parser.add_argument("--json", type=Path, default=None, metavar="FILE",
                        help="also write the figures (raw FLOP and parameter counts) to this JSON file")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.num_classes is not None and args.num_classes < 1:
        raise SSTNetError(f"--num-classes {args.num_classes}: must be at least 1")
    from nets import Network
    from nets.weights import MODEL_PARTS, load_weights, read_trained_weights
    from utils.runtime.complexity import (OTHER, parameters_by_part, stream_frame_flops, training_forward_flops,
                                          window_flops)
    from utils.runtime.device import apply_threads, select_device
    from utils.runtime.fileio import write_json
    from utils.runtime.memory import check_memory

    trained, state = read_trained_weights(args.weights) if args.weights else (None, None)
    if trained is not None and args.num_classes is not None and args.num_classes != trained.num_classes:
        raise SSTNetError(f"--num-classes {args.num_classes}: {trained.origin} holds a model with "
                          f"{trained.num_classes} classes; leave the flag out or pass {trained.num_classes}")
    spec = resolve_spec(args, trained)
    apply_threads(spec.threads)
    device = select_device(spec.device)
    num_classes = trained.num_classes if trained is not None else args.num_classes or 1
    # The counts need the whole model, motion branch included: one window's forward, bounded before it is built.
    check_memory(spec, 1, False, device, num_classes, frames_at_once=spec.num_frame)
    model = Network(num_classes, spec.num_frame, spec.phi, lstm_hidden=spec.lstm_hidden,
                    computation=spec.computation)
    if trained is not None:
        load_weights(model, state, mode="strict", name=str(args.weights))  # the weights must fit this model
    model = model.to(device).eval()

    parameters = parameters_by_part(model)
    inference = window_flops(model, spec.input_shape, spec.num_frame)
    training = training_forward_flops(model, spec.input_shape, spec.num_frame)
    streaming = stream_frame_flops(model, spec.input_shape, spec.num_frame)
    parts = list(MODEL_PARTS) + ([OTHER] if inference.by_part[OTHER] or training.by_part[OTHER] else [])

    height, width = spec.input_shape
    print(f"SSTNet phi {spec.phi}, {spec.num_frame} frames, input {height}x{width}, {model.num_classes} "
          f"class{'es' if model.num_classes > 1 else ''}, motion branch width {spec.lstm_hidden}, "
          f"{spec.computation} computation")
    print(f"{'part':<14}{'parameters':>14}{'GFLOPs inference':>20}{'GFLOPs training forward':>27}")
    for part in parts:
        print(f"{part:<14}{parameters.get(part, 0):>14,}{inference.by_part[part] / 1e9:>20.3f}"
              f"{training.by_part[part] / 1e9:>27.3f}")
    print(f"{'total':<14}{sum(parameters.values()):>14,}{inference.gflops:>20.3f}{training.gflops:>27.3f}")
    print(f"streaming engine: {streaming.gflops:.3f} GFLOPs per new frame (one backbone pass; the neck and head run on "
          "the cached window)")
    if args.json is not None:
        write_json(args.json, {
            "model": {**spec.architecture(), "num_classes": model.num_classes, "computation": spec.computation},
            "parameters": {**parameters, "total": sum(parameters.values())},
            "flops": {"inference_window": {**{part: inference.by_part[part] for part in parts},
                                           "total": inference.total},
                      "training_forward": {**{part: training.by_part[part] for part in parts},
                                           "total": training.total},
                      "stream_per_frame": {"total": streaming.total}}}, indent=2)
    return 0


if __name__ == "__main__":
    run_cli(main)
