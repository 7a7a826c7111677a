"""Export trained SSTNet weights to ONNX for deployment. Writes into --out:

  frame.onnx   images N×3×H×W -> features N×3c×H/8×W/8, what a streaming caller keeps per frame
  detect.onnx  features_0 ... features_{T-1} (the last T frames' features, oldest first) -> output N×(5+C)×H/8×W/8
  window.onnx  window N×3×T×H×W -> output, the released computation in one graph

Each carries its metadata (model, input size, classes, letterbox and normalisation constants, decoding, commit).
frame/detect compute the fast computation; --computation picks window.onnx's (default: released). Every graph is
checked on ONNX Runtime against PyTorch on random frames before anything is written. Needs onnx, onnxscript and
onnxruntime (requirements-dev.txt). --half (float16 graphs) is for GPUs: it needs a CUDA device and is checked
there when onnxruntime has a CUDA provider. --int8 (for CPUs) quantizes the checked float32 graphs statically,
with activation ranges calibrated on real windows of a DAUB-layout folder (--calibration); the head's final
predictions stay float (--float-modules); weights are 7-bit, exact on every CPU (--weight-bits).

Examples:
    python export_onnx.py --weights logs/best_epoch_weights.pth --out onnx/
    python vid_map_coco.py --onnx onnx/ --data-root /data/DAUB
    python export_onnx.py --weights weights/sstnet_nano_ir.pth --out onnx_int8/ --int8 --calibration /data/DAUB
"""
from __future__ import annotations

import argparse
from pathlib import Path

from utils.deploy.onnx_format import DEFAULT_OPSET, MIN_OPSET
from utils.deploy.onnx_int8 import (CALIBRATION_METHODS, DEFAULT_CALIBRATION_FRAMES, DEFAULT_FLOAT_MODULES,
                                   DEFAULT_PERCENTILE, DEFAULT_WEIGHT_BITS, WEIGHT_BITS)
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
    parser.add_argument("--int8", action="store_true",
                        help="int8 graphs for CPUs (static QDQ quantization; needs --calibration)")
    parser.add_argument("--calibration", type=Path, nargs="+", default=None, metavar="DIR",
                        help="--int8: DAUB-layout folders whose frames calibrate the activation ranges, an equal "
                             "share from each (frames like those the model will see: its training data, say)")
    parser.add_argument("--calibration-split", default="train",
                        help="--int8: the split of --calibration read (annotations/instances_<split>2017.json)")
    parser.add_argument("--calibration-frames", type=int, default=DEFAULT_CALIBRATION_FRAMES,
                        help="--int8: key frames, spread evenly over the split, whose windows calibrate")
    parser.add_argument("--calibration-method", choices=CALIBRATION_METHODS, default=None,
                        help="--int8: how each activation's range is set from the calibration windows: its min/max, "
                             "or clipped at --calibration-percentile of its values (default: minmax)")
    parser.add_argument("--calibration-percentile", type=float, default=None,
                        help=f"--int8 --calibration-method percentile: the percentile of each activation's values "
                             f"its range keeps (default: {DEFAULT_PERCENTILE:g})")
    parser.add_argument("--weight-bits", type=int, choices=WEIGHT_BITS, default=None,
                        help=f"--int8: bits of the quantized weights. 7 computes exactly on every CPU; 8 is exact "
                             f"only on CPUs with VNNI (and measured no better there): on x86 CPUs without it (AVX2, "
                             f"AVX-512 without avx512_vnni) the int8 kernels saturate and lose accuracy "
                             f"(default: {DEFAULT_WEIGHT_BITS})")
    parser.add_argument("--float-modules", nargs="*", default=list(DEFAULT_FLOAT_MODULES), metavar="MODULE",
                        help="--int8: modules of the model (path prefixes, as in the state dict, after 'model.') "
                             "kept in float; none: quantize everything (default: the head's final predictions)")
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
    from utils.deploy.onnx_int8 import Quantization
    from utils.infer.engine import build_model
    from utils.runtime.device import apply_threads, select_device
    from utils.runtime.fileio import check_output
    from utils.runtime.memory import check_memory
    from utils.runtime.model_options import resolve_spec
    from utils.sidecar import weights_inputs

    if args.int8 != (args.calibration is not None):
        raise SSTNetError("--int8 needs --calibration (a DAUB-layout folder of real frames), and --calibration is "
                          "only for --int8")
    if args.int8 and args.half:
        raise SSTNetError("--int8 and --half: choose one precision (int8 for CPUs, float16 for GPUs)")
    if not args.int8 and (args.calibration_method or args.calibration_percentile is not None
                          or args.weight_bits is not None):
        raise SSTNetError("--calibration-method, --calibration-percentile and --weight-bits are only for --int8")
    if args.calibration_percentile is not None and args.calibration_method != "percentile":
        raise SSTNetError("--calibration-percentile is only for --calibration-method percentile")
    float_modules = tuple("model." + name.removeprefix("model.") for name in args.float_modules if name != "none")
    quantization = Quantization(float_modules, args.calibration_method or "minmax",
                                DEFAULT_PERCENTILE if args.calibration_percentile is None
                                else args.calibration_percentile, args.weight_bits or DEFAULT_WEIGHT_BITS)
    if args.calibration_frames < 1:
        raise SSTNetError(f"--calibration-frames {args.calibration_frames}: must be at least 1")
    for folder in args.calibration or []:
        if not folder.is_dir():
            raise SSTNetError(f"--calibration {folder}: not a folder (a DAUB-layout folder is expected)")
    check_output(args.out, "--out", folder=True, inputs=weights_inputs("--weights", args.weights) +
                 [("--calibration", folder) for folder in args.calibration or []])
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
    calibration = None
    if args.int8:
        from utils.infer.calibration import calibration_windows
        calibration = calibration_windows(model, spec, args.calibration, args.calibration_split,
                                          args.calibration_frames)
    written = export_graphs(model, spec, trained.num_classes, trained.labels, args.out, args.opset,
                            args.dynamic_batch, args.half, window_computation=spec.computation,
                            calibration=calibration, quantization=quantization)
    for item in written:
        if args.int8:
            check = f"int8 within {item.difference:.1e} of float32 on the calibration windows (max relative)"
        elif item.difference is None:
            check = "not checked: onnxruntime has no CUDA provider"
        else:
            check = f"ONNX Runtime within {item.difference:.1e} of PyTorch (max relative)"
        print(f"wrote {item.path} ({check})")
    precision = "int8" if args.int8 else "float16" if args.half else "float32"
    print(f"phi {spec.phi}, T {spec.num_frame}, input {spec.input_size}, {trained.num_classes} class(es), "
          f"{'dynamic batch' if args.dynamic_batch else 'batch 1'}, {precision}"
          + (f", calibrated on {calibration.source} ({quantization.describe()}), {quantization.weight_bits}-bit weights"
             if calibration else ""))
    return 0


if __name__ == "__main__":
    run_cli(main)
