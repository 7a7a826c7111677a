"""Export trained SSTNet weights to ONNX for deployment. Writes into --out:

  frame.onnx   images N×3×H×W -> features N×3c×H/8×W/8, what a streaming caller keeps per frame
  detect.onnx  features_0 ... features_{T-1} (the last T frames' features, oldest first) -> output N×(5+C)×H/8×W/8
  window.onnx  window N×3×T×H×W -> output, the released computation in one graph

Each carries its metadata (model, input size, classes, letterbox and normalisation constants, decoding, commit).
frame/detect compute the fast computation; --computation picks window.onnx's (default: released). Every graph is
checked on ONNX Runtime against PyTorch on random frames before anything is written. Needs onnx, onnxscript and
onnxruntime (requirements-dev.txt). --half (float16 graphs) is for GPUs: it needs a CUDA device and is checked
there when onnxruntime has a CUDA provider.

Examples:
    python export_onnx.py --weights logs/best_epoch_weights.pth --out onnx/
    python vid_map_coco.py --onnx onnx/ --data-root /data/DAUB
"""
from __future__ import annotations

import argparse
from pathlib import Path

from utils.deploy.onnx_format import DEFAULT_OPSET, MIN_OPSET
from utils.runtime.cli import make_parser
from utils.runtime.entry import run_cli
from utils.runtime.model_options import add_model_arguments


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(__doc__)
    parser.add_argument("--weights", required=True,
                        help="trained weights; the model they hold is read from their sidecar <weights>.json, or "
                             "from their tensor shapes")
    parser.add_argument("--out", type=Path, required=True, help="folder the three graphs are written into")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset, at least {MIN_OPSET} (default: {DEFAULT_OPSET})")
    parser.add_argument("--dynamic-batch", action="store_true",
                        help="graphs take any batch N (default: N = 1, the engine then calls them once per frame)")
    parser.add_argument("--half", action="store_true", help="float16 graphs, for GPUs (needs a CUDA device)")
    add_model_arguments(parser)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from utils.errors import SSTNetError

    if args.amp != "none":
        raise SSTNetError(f"--amp {args.amp}: the graphs are float32, or float16 with --half")

    from nets.weights import read_trained_weights
    from utils.deploy.onnx_export import check_opset, export_graphs
    from utils.infer.engine import build_model
    from utils.runtime.device import apply_threads, select_device
    from utils.runtime.fileio import check_output
    from utils.runtime.memory import check_memory
    from utils.runtime.model_options import resolve_spec
    from utils.sidecar import weights_inputs

    check_output(args.out, "--out", folder=True, inputs=weights_inputs("--weights", args.weights))
    check_opset(args.opset)
    trained, state = read_trained_weights(args.weights)
    spec = resolve_spec(args, trained, engine="window")  # --computation: window.onnx's, released unless given
    apply_threads(spec.threads)
    device = select_device(spec.device)
    if args.half and device.type != "cuda":
        raise SSTNetError("--half: float16 graphs are for GPUs and are exported and checked on one; no CUDA device "
                          "here (export float32 on the CPU)")
    # Tracing runs the window graph once: bounded before the model is built.
    check_memory(spec, 1, False, device, trained.num_classes, frames_at_once=spec.num_frame)
    model = build_model(spec, trained.num_classes, state, device, str(args.weights))
    written = export_graphs(model, spec, trained.num_classes, trained.labels, args.out, args.opset,
                            args.dynamic_batch, args.half, window_computation=spec.computation)
    for item in written:
        check = ("not checked: onnxruntime has no CUDA provider" if item.difference is None else
                 f"ONNX Runtime within {item.difference:.1e} of PyTorch (max relative)")
        print(f"wrote {item.path} ({check})")
    print(f"phi {spec.phi}, T {spec.num_frame}, input {spec.input_size}, {trained.num_classes} class(es), "
          f"{'dynamic batch' if args.dynamic_batch else 'batch 1'}, {'float16' if args.half else 'float32'}")
    return 0


if __name__ == "__main__":
    run_cli(main)
