"""Benchmark: the released computation against ours, on one machine in one run.

Measures (fixed seeds, warm-up, median of repeats):
1. inference per frame at batch 1: the released computation (every window through the backbone T times) against
   our streaming engine, with detections checked identical in the same run;
2. evaluation throughput of the vid_map_coco.py engine at batch 1 and 8, and frame decoding + letterboxing;
3. one training step (forward, loss, backward, optimizer step): released against ours, with loss and every
   gradient checked equal (<= 1e-5 relative);
4. parameters, GFLOPs per sample (torch.utils.flop_counter) and peak memory;
5. on the CPU, when onnx, onnxscript and onnxruntime import: the streaming engine on the exported graphs
   (export_onnx.py's frame.onnx and detect.onnx, CPU execution provider, as many intra-op threads as PyTorch's),
   with its raw outputs checked against PyTorch's in the same run, in float32 and in int8 (calibrated on the
   benchmark data's frames; its detections compared with float32's);
6. on the CPU, the distance to the limit: GFLOP/s attained on the model's dominant convolution (and the GEMM of the
   same work) in float32, bf16 where native and int8 (benchmarks/peak.py), and each engine's per-frame GFLOP/s as
   a fraction of it;
7. with --variants, at the largest size: streaming per frame and the training step under --amp with the
   channels-last layout off and on, then with torch.compile in each --compile mode in the faster layout (raw outputs
   compared with float32 eager's).
Writes a table to stdout, readme/benchmarks.md and readme/benchmarks.json (keyed by device name and --amp).

    python benchmarks/bench.py [--device cpu|cuda] [--input-size 256 512] [--quick] [--no-onnx] [--out FILE]
    python benchmarks/bench.py --device cuda --amp bf16 --train-batch 4 --variants --compile default reduce-overhead
"""
from __future__ import annotations

import argparse
import copy
import datetime
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from utils.model_spec import COMPILE_MODES, INPUT_MULTIPLE  # noqa: E402
from utils.runtime.cli import check_number, make_parser  # noqa: E402
from utils.runtime.device import apply_threads, check_amp, select_device  # noqa: E402
from utils.runtime.entry import run_cli  # noqa: E402
from utils.runtime.model_options import add_model_arguments, resolve_spec  # noqa: E402

from benchmarks.measure import (SHIPPED_WEIGHTS, benchmark_data, check_training, device_name,  # noqa: E402
                                flop_counts, make_model, measure_evaluation, measure_inference, measure_variants,
                                measure_video, onnx_runtime_version, peak_memory_mb, shipped_model, time_training)
from benchmarks.peak import attainable, ceiling_convs  # noqa: E402
from benchmarks.report import markdown, write_report  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(__doc__)
    add_model_arguments(parser, several_sizes=f"input sides to measure, each a multiple of {INPUT_MULTIPLE} or HxW "
                                              "(default: 256 and 512; --quick: 256)",
                        computation=False, from_weights=False)
    parser.add_argument("--quick", action="store_true",
                        help="S = 256 only (unless --input-size), fewer repeats (about a minute on a 2-core CPU)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per figure (default: 5; --quick: 3)")
    parser.add_argument("--frames", type=int, default=None,
                        help="frames per inference walk (default: 20; --quick: 10)")
    parser.add_argument("--train-batch", type=int, default=2, help="batch of the training step (default: 2)")
    parser.add_argument("--no-onnx", action="store_true",
                        help="leave out the ONNX Runtime rows (default: measured on the CPU when onnx, onnxscript and "
                             "onnxruntime import)")
    parser.add_argument("--variants", action="store_true",
                        help="also time streaming and the training step at the largest size with channels-last off "
                             "and on, then compiled in each --compile mode")
    parser.add_argument("--compile", nargs="+", default=[], choices=COMPILE_MODES, metavar="MODE",
                        help=f"torch.compile modes for --variants, of {', '.join(COMPILE_MODES)} (default: none; "
                             "compiling takes minutes on a CPU)")
    parser.add_argument("--data", type=Path, default=None,
                        help="dataset root with annotations/instances_test2017.json (default: ../shared/data/daub_real "
                             "when present, else a generated synthetic set)")
    parser.add_argument("--out", type=Path, default=REPO / "readme" / "benchmarks.json",
                        help="JSON results, merged by device name and --amp (default: readme/benchmarks.json)")
    parser.add_argument("--markdown", type=Path, default=REPO / "readme" / "benchmarks.md",
                        help="markdown table (default: readme/benchmarks.md)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for flag, value in (("--repeats", args.repeats), ("--frames", args.frames), ("--train-batch", args.train_batch)):
        check_number(flag, value, 1)
    sizes = args.input_size or (["256"] if args.quick else ["256", "512"])
    specs = [resolve_spec(args, input_size=size) for size in sizes]
    apply_threads(specs[0].threads)
    device = select_device(specs[0].device)
    amp_dtype = check_amp(specs[0].amp, device)
    repeats = args.repeats or (3 if args.quick else 5)
    frames = args.frames or (10 if args.quick else 20)
    with tempfile.TemporaryDirectory(prefix="sstnet_bench_") as work:
        return run_benchmark(args, device, amp_dtype, specs, repeats, frames, benchmark_data(args.data, Path(work)),
                             argv)


def run_benchmark(args, device, amp_dtype, specs, repeats, frames, root, argv) -> int:
    released = make_model(specs[0], device, root)
    models = {"released": released.set_computation("released"),
              "fast": copy.deepcopy(released).set_computation("fast")}
    started = time.time()
    onnx_version = onnx_runtime_version() if device.type == "cpu" and not args.no_onnx else None
    int8 = onnx_version is not None
    inference, checks = measure_inference(models, device, specs, root, frames, repeats, args.amp, amp_dtype, int8)
    print(f"inference done ({time.time() - started:.0f} s)", flush=True)
    limits = None
    if device.type == "cpu":
        limits = {}
        for spec in specs:
            dominant, *others = ceiling_convs(models["fast"], spec.input_shape)
            # The GEMM is reported for the dominant convolution only; the others bound the convolutions' ceiling.
            others = [{"op": shape.describe(), **attainable(shape, repeats, int8, gemm=False)} for shape in others]
            limits[spec.input_size] = {"op": dominant.describe(), **attainable(dominant, repeats, int8),
                                       "others": others}
    pipeline, pipeline_spec = shipped_model(device)
    evaluation = measure_evaluation(pipeline, device, pipeline_spec, root, 4 * frames, max(1, repeats // 2), int8=int8)
    evaluation["size"] = pipeline_spec.input_size
    evaluation["model"] = f"{SHIPPED_WEIGHTS.name} (phi {pipeline_spec.phi}, frame step {pipeline_spec.frame_step})"
    evaluation["video"] = measure_video(pipeline, device, pipeline_spec, root, 4 * frames, max(1, repeats // 2))
    gflops = {spec.input_size: flop_counts(models, device, spec) for spec in specs}
    train_specs = specs if device.type == "cuda" or not args.quick else specs[:1]
    train_step = {spec.input_size: time_training(models, device, spec, args.train_batch, repeats, args.amp, amp_dtype)
                  for spec in train_specs}
    # Peak memory of the timed work above; the float64 equality checks below need more.
    peak_mem_mb = peak_memory_mb(device)
    checks += [check_training(models, device, spec, args.train_batch) for spec in train_specs]
    print(f"training done ({time.time() - started:.0f} s)", flush=True)
    variants = None
    if args.variants:
        largest = max(specs, key=lambda spec: spec.input_shape[0] * spec.input_shape[1])
        rows, variant_checks = measure_variants(models["fast"], device, largest, root, frames, repeats, amp_dtype,
                                                args.train_batch, args.compile)
        variants = {"size": largest.input_size, "amp": args.amp, "train_batch": args.train_batch, "rows": rows}
        checks += variant_checks
    entry = {"device": device_name(device), "amp": args.amp, "torch": torch.__version__,
             "date": datetime.date.today().isoformat(), "onnxruntime": onnx_version,
             "command": "python benchmarks/bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
             "data": str(root), "repeats": repeats, "train_batch": args.train_batch,
             "model": {"phi": specs[0].phi, "num_frame": specs[0].num_frame, "lstm_hidden": specs[0].lstm_hidden},
             "inference": inference, "train_step": train_step, "evaluation": evaluation,
             "params": sum(p.numel() for p in models["fast"].parameters()),
             "gflops": gflops, "peak_mem_mb": peak_mem_mb, "variants": variants, "limits": limits,
             "checks": checks}
    print(markdown(entry))
    write_report(entry, args.out, args.markdown)
    print(f"wrote {args.out} and {args.markdown} ({time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    run_cli(main)
