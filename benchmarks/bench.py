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
   with its raw outputs checked against PyTorch's in the same run;
6. with --variants, at the largest size: streaming per frame and the training step under --amp with the
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
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nets import Network, YOLOLoss  # noqa: E402
from nets.training import init_weights  # noqa: E402
from utils.annotations import read_coco  # noqa: E402
from utils.cli import check_number, make_parser  # noqa: E402
from utils.complexity import count_flops, stream_frame_flops, window_flops  # noqa: E402
from utils.device import apply_threads, autocast, check_amp, select_device, synchronize  # noqa: E402
from utils.errors import SSTNetError, run_cli  # noqa: E402
from utils.fileio import write_json, write_text  # noqa: E402
from utils.model_spec import COMPILE_MODES, ModelSpec, add_model_arguments, resolve_spec  # noqa: E402
from utils.inference import (DetectSettings, FrameBatch, SequenceDetector, TorchBackend, frame_batches,  # noqa: E402
                             plan_sequence_walk, postprocess)
from utils.sequence import window_numbers  # noqa: E402
from utils.synthetic import SyntheticConfig, generate_dataset  # noqa: E402

DAUB_REAL = REPO.parent / "shared" / "data" / "daub_real"
# Each engine with the computation it is measured in: the released one as released, streaming as ours.
ENGINES = (("window", "released"), ("stream", "fast"))
# The names the report gives the two models.
REPORT_NAMES = {"released": "released", "fast": "ours"}


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(__doc__)
    add_model_arguments(parser, several_sizes=True, computation=False, from_weights=False)
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


def timed(function, device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``function()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        function()
    synchronize(device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def make_model(spec: ModelSpec, device: torch.device, root: Path) -> Network:
    """A model whose output depends on its input, as a trained one does: initialised as training starts, then
    its BatchNorm statistics measured on real windows (with untouched running statistics the signal of an
    untrained deep net fades and every frame gives the same output, which would make the equality checks empty)."""
    torch.manual_seed(0)
    model = Network(1, spec.num_frame, spec.phi, lstm_hidden=spec.lstm_hidden)
    init_weights(model)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the calibration batches
    frames = torch.cat([batch.images for batch in inference_batches(root, spec, 10)])
    windows = torch.stack([frames[window_numbers(k, 0, spec.num_frame)] for k in range(len(frames))]).transpose(1, 2)
    model.train()
    with torch.no_grad():
        model(windows)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 0.03
    return model.to(device).eval()


def benchmark_data(root: Path | None, work: Path) -> Path:
    if root is not None:
        return root
    if (DAUB_REAL / "annotations" / "instances_test2017.json").exists():
        return DAUB_REAL
    generate_dataset(work, SyntheticConfig(train_sequences=1, test_sequences=1, frames_per_sequence=40),
                     progress=False)
    return work


def inference_batches(root: Path, spec: ModelSpec, frames: int) -> list[FrameBatch]:
    """The first ``frames`` key frames of the first test sequence, decoded once, batch 1, in walk order."""
    ground_truth = read_coco(root / "annotations" / "instances_test2017.json", root)
    records = ground_truth.records + ground_truth.unannotated
    first_sequence = records[0].path.parent
    records = sorted((r for r in records if r.path.parent == first_sequence), key=lambda r: int(r.path.stem))[:frames]
    return list(frame_batches(plan_sequence_walk(records, spec.num_frame), spec.input_shape, 1, 0))


def walk(model, batches: list[FrameBatch], mode: str, amp_dtype, num_frame: int | None = None) -> list:
    """The engine's raw outputs over ``batches`` with ``model`` (a Network, or a backend with ``num_frame``)."""
    detector = SequenceDetector(model, num_frame or model.num_frame, mode, amp_dtype)
    outputs = []
    for batch in batches:
        outputs.extend(detector.process(batch))
    return outputs


def matching_boxes(a: np.ndarray, b: np.ndarray, iou: float = 0.9, score: float = 0.02) -> int:
    """How many detection rows of ``a`` have one in ``b`` of the same class, overlapping it by IoU >= ``iou`` and
    scoring within ``score`` of it: equality up to a low precision's rounding."""
    if not len(a) or not len(b):
        return 0
    top, left = np.maximum(a[:, None, 0], b[None, :, 0]), np.maximum(a[:, None, 1], b[None, :, 1])
    bottom, right = np.minimum(a[:, None, 2], b[None, :, 2]), np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(bottom - top, 0, None) * np.clip(right - left, 0, None)
    area = lambda rows: (rows[:, 2] - rows[:, 0]) * (rows[:, 3] - rows[:, 1])  # noqa: E731
    overlap = inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)
    same = ((overlap >= iou) & (a[:, None, 6] == b[None, :, 6])
            & (np.abs(a[:, None, 4] * a[:, None, 5] - b[None, :, 4] * b[None, :, 5]) <= score))
    return int(same.any(axis=1).sum())


def matching_rows(a: np.ndarray, b: np.ndarray) -> int:
    """How many detection rows of ``a`` have an equal row (to float32 rounding) in ``b``."""
    if not len(a) or not len(b):
        return 0
    close = np.isclose(a[:, None, :], b[None, :, :], rtol=1e-4, atol=1e-2).all(axis=2)
    return int(close.any(axis=1).sum())


def onnx_runtime_version() -> str | None:
    """onnxruntime's version when the graphs can be exported and run here (requirements-dev.txt), else None."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError:
        return None
    return onnxruntime.__version__


def measure_onnx(model: Network, spec: ModelSpec, batches: list[FrameBatch], reference: list, repeats: int,
                 settings: DetectSettings) -> tuple[float, str]:
    """ms per frame of the streaming engine on the exported frame/detect graphs (ONNX Runtime, CPU provider, as many
    intra-op threads as PyTorch), and a check line: raw outputs and detections against PyTorch's ``reference``."""
    from utils.onnx_backend import OnnxBackend
    from utils.onnx_export import export_graphs, max_relative_difference

    with tempfile.TemporaryDirectory(prefix="sstnet_bench_onnx_") as folder:
        export_graphs(model, spec, model.num_classes, ["target"], folder, graphs=("frame", "detect"))
        backend = OnnxBackend(folder, ("stream",), "cpu", torch.get_num_threads())
        outputs = walk(backend, batches, "stream", None, model.num_frame)
        error = max(max_relative_difference(ours.output, theirs.output) for ours, theirs in zip(outputs, reference))
        if not error <= 1e-4:
            raise SSTNetError(f"ONNX Runtime's streaming outputs differ from PyTorch's at {spec.input_size} by "
                              f"{error:.1e} (max relative)")
        ours, theirs = postprocess(outputs, settings), postprocess(reference, settings)
        agreeing = sum(matching_rows(a, b) for a, b in zip(ours, theirs))
        seconds = timed(lambda: walk(backend, batches, "stream", None, model.num_frame), torch.device("cpu"), repeats)
    check = (f"S={spec.input_size}: ONNX Runtime streaming raw outputs within {error:.1e} (max relative) of PyTorch's "
             f"in float32; {agreeing} of {sum(len(d) for d in theirs)} detections over {len(batches)} frames agree")
    return 1000 * seconds / len(batches), check


def measure_inference(models: dict, device: torch.device, specs: list[ModelSpec], root: Path, frames: int,
                      repeats: int, amp: str, amp_dtype, onnx: bool = False) -> tuple[dict, list[str]]:
    """ms per frame: window (released computation, released engine) and stream (ours); ``onnx``: stream on ONNX
    Runtime too."""
    results, checks = {}, []
    for spec in specs:
        size = spec.input_size
        batches = inference_batches(root, spec, frames)
        batches = [FrameBatch(b.images.to(device), b.refs, b.shapes) for b in batches]
        row = {}
        settings = DetectSettings(spec.input_shape, spec.num_frame, conf=0.001, nms=0.65)
        with torch.no_grad():
            # Compared in float64, where the fused SiLU's different rounding cannot hide a difference (in float32,
            # boxes scoring within rounding of the 0.001 threshold can fall on either side; reported below).
            exact = {mode: walk(copy.deepcopy(models[computation]).double(), batches[:5], mode, None)
                     for mode, computation in ENGINES}
            error = max(relative_error(s.output, w.output) for s, w in zip(exact["stream"], exact["window"]))
            detections = {mode: postprocess(items, settings) for mode, items in exact.items()}
            same = all(len(a) == len(b) and np.allclose(a, b, rtol=1e-6, atol=1e-4)
                       for a, b in zip(detections["stream"], detections["window"]))
            count = sum(len(d) for d in detections["stream"])
            if not error <= 1e-9 or not same or count == 0:
                raise SSTNetError(f"streaming differs from the released computation at {size}: raw relative error "
                                  f"{error:.2e}, {count} detections, identical: {same}")
            single = {mode: postprocess(walk(models[computation], batches, mode, None), settings)
                      for mode, computation in ENGINES}
            agreeing = sum(matching_rows(a, b) for a, b in zip(single["stream"], single["window"]))
            total = sum(len(d) for d in single["window"])
            checks.append(f"S={size}: in float64 streaming raw outputs are within {error:.1e} (relative) of the "
                          f"released computation and all {count} detections of {len(detections['stream'])} frames are "
                          f"identical; in float32 {agreeing} of {total} detections over {len(batches)} frames agree")
            for mode, computation in ENGINES:
                seconds = timed(lambda: walk(models[computation], batches, mode, None), device, repeats)
                row[mode] = 1000 * seconds / len(batches)
            if onnx:
                reference = walk(models["fast"], batches, "stream", None)
                row["stream_onnx"], check = measure_onnx(models["fast"], spec, batches, reference, repeats, settings)
                checks.append(check)
            if amp != "none":
                # As the scripts run --amp: autocast, the model and frames channels-last (utils.inference).
                for mode, computation in ENGINES:
                    backend = TorchBackend(copy.deepcopy(models[computation]), amp_dtype, channels_last=True)
                    seconds = timed(lambda: walk(backend, batches, mode, None, spec.num_frame), device, repeats)
                    row[f"{mode}_{amp}"] = 1000 * seconds / len(batches)
                    if mode == "stream":
                        mixed = postprocess(walk(backend, batches, mode, None, spec.num_frame), settings)
                agreeing = sum(matching_boxes(a, b) for a, b in zip(mixed, single["stream"]))
                checks.append(f"S={size}: streaming under {amp} autocast finds {sum(len(d) for d in mixed)} "
                              f"detections, {agreeing} of them matching a float32 one (same class, IoU >= 0.9, score "
                              f"within 0.02) over {len(batches)} frames (float32: "
                              f"{sum(len(d) for d in single['stream'])})")
        results[size] = row
    return results, checks


def measure_evaluation(model: Network, device: torch.device, spec: ModelSpec, root: Path, frames: int,
                       repeats: int) -> dict:
    """Frames/s of the vid_map_coco.py engine (decoding in the workers, detection, post-processing)."""
    from utils.inference import detect_plan

    ground_truth = read_coco(root / "annotations" / "instances_test2017.json", root)
    plan = plan_sequence_walk(ground_truth.records[:frames], spec.num_frame)
    keys = sum(ref.is_key for ref in plan)
    result = {}
    for batch_size in (1, 8):
        settings = DetectSettings(spec.input_shape, spec.num_frame, batch_size=batch_size, workers=2)
        seconds = timed(lambda: list(detect_plan(model, plan, settings, progress=False)), device, repeats)
        result[f"batch{batch_size}"] = keys / seconds
    seconds = timed(lambda: [None for _ in frame_batches(plan, spec.input_shape, 8, 2)], device, repeats)
    result["decode_letterbox"] = len(plan) / seconds
    return result


def training_inputs(spec: ModelSpec, batch: int, device: torch.device):
    generator = torch.Generator().manual_seed(3)
    height, width = spec.input_shape
    images = torch.randn(batch, 3, spec.num_frame, height, width, generator=generator).to(device)
    targets = [torch.tensor([[width / 2 + 13 * b, height / 3, 8.0, 8.0, 0.0]], device=device) for b in range(batch)]
    return images, targets


def training_step(model: torch.nn.Module, images, targets, loss_fn, optimizer, amp_dtype=None,
                  scaler=None) -> torch.Tensor:
    """One step as utils/trainer.py takes it: the forward under autocast, the loss in float32, fp16's loss scaling."""
    optimizer.zero_grad(set_to_none=True)
    with autocast(images.device, amp_dtype):
        outputs, motion_loss = model(images)
    loss = loss_fn([output.float() for output in outputs], targets) + motion_loss.float()
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss.detach()


def loss_and_gradients(model: Network, images, targets, loss_fn) -> tuple[torch.Tensor, dict]:
    """One training-mode forward and backward with the attention's dropout off (it never reaches the loss)."""
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.MultiheadAttention):
            module.eval()
    model.zero_grad(set_to_none=True)
    outputs, motion_loss = model(images)
    loss = loss_fn(outputs, targets) + motion_loss
    loss.backward()
    return loss.detach(), {key: p.grad.detach().clone() for key, p in model.named_parameters() if p.grad is not None}


def check_training(models: dict, device: torch.device, spec: ModelSpec, batch: int) -> str:
    """Check one training step's loss and gradients equal between the two computations.

    Checked in float64, where rounding cannot hide a different function: in float32 the fused SiLU and the
    reordered sums round differently and BatchNorm's backward amplifies that to about 1e-4 in some BatchNorm
    gradients (reported as well).
    """
    images, targets = training_inputs(spec, batch, device)
    loss_fn = YOLOLoss(1)
    results = {}
    for precision, dtype in (("float64", torch.float64), ("float32", torch.float32)):
        runs = {name: loss_and_gradients(copy.deepcopy(model).to(dtype), images.to(dtype), targets, loss_fn)
                for name, model in models.items()}
        (loss_r, grads_r), (loss_f, grads_f) = runs["released"], runs["fast"]
        if grads_r.keys() != grads_f.keys():
            raise SSTNetError("training step: the two computations give gradients to different parameters")
        results[precision] = (relative_error(loss_f, loss_r),
                              max(relative_error(grads_f[k], grads_r[k]) for k in grads_r if grads_r[k].norm() > 1e-12))
    loss_error, grad_error = results["float64"]
    if not (loss_error <= 1e-5 and grad_error <= 1e-5):
        raise SSTNetError(f"training step at {spec.input_size}: loss differs by {loss_error:.2e}, "
                          f"gradients by {grad_error:.2e}")
    return (f"training step S={spec.input_size} B={batch}: in float64 the loss is within {loss_error:.1e} "
            f"and every gradient within {grad_error:.1e} (relative) of the released computation; in float32 "
            f"{results['float32'][0]:.1e} and {results['float32'][1]:.1e}")


def time_step(model: torch.nn.Module, device: torch.device, spec: ModelSpec, batch: int, repeats: int,
              amp_dtype=None, channels_last: bool = False, compile_mode: str | None = None) -> float:
    """Seconds per training step of ``model`` (left as it was: a copy is trained) under ``amp_dtype``."""
    model = copy.deepcopy(model).train()
    images, targets = training_inputs(spec, batch, device)
    if channels_last:  # as train_daub.py --channels-last lays out the model and the T-frame windows
        model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last_3d)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-9)  # a real step that barely moves the weights
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    runner = torch.compile(model, mode=compile_mode) if compile_mode else model
    loss_fn = YOLOLoss(1)
    return timed(lambda: training_step(runner, images, targets, loss_fn, optimizer, amp_dtype, scaler), device,
                 repeats, warmup=3 if compile_mode else 1)


def time_training(models: dict, device: torch.device, spec: ModelSpec, batch: int, repeats: int, amp: str,
                  amp_dtype) -> dict:
    """Seconds per training step (forward, loss, backward, optimizer step), released against ours; with --amp, ours
    under it too."""
    result = {REPORT_NAMES[name]: time_step(model, device, spec, batch, repeats) for name, model in models.items()}
    if amp_dtype is not None:
        result[f"ours_{amp}"] = time_step(models["fast"], device, spec, batch, repeats, amp_dtype)
    return result


def measure_variants(model: Network, device: torch.device, spec: ModelSpec, root: Path, frames: int, repeats: int,
                     amp_dtype, train_batch: int, compile_modes: list[str]) -> tuple[list[dict], list[str]]:
    """Streaming ms per frame and training-step seconds of ours under ``amp_dtype``: eager with channels-last off
    and on, then compiled in each mode in the faster of the two layouts (each compilation takes minutes). Each
    engine's raw outputs are compared with float32 eager's, so a compiled engine can be told apart from rounding."""
    batches = [FrameBatch(b.images.to(device), b.refs, b.shapes) for b in inference_batches(root, spec, frames)]
    with torch.no_grad():
        reference = walk(TorchBackend(copy.deepcopy(model)), batches, "stream", None, spec.num_frame)
    precision = "float32" if amp_dtype is None else str(amp_dtype).removeprefix("torch.")
    rows, checks = [], []

    def measure(channels_last: bool, mode: str | None) -> None:
        backend = TorchBackend(copy.deepcopy(model), amp_dtype, channels_last=channels_last, compile_mode=mode)
        with torch.no_grad():
            error = max(relative_error(o.output, r.output)
                        for o, r in zip(walk(backend, batches, "stream", None, spec.num_frame), reference))
            stream = timed(lambda: walk(backend, batches, "stream", None, spec.num_frame), device, repeats)
        # CUDA graphs would hold a training step's activations for replay: only the forward-only modes are trained.
        step = (None if mode == "reduce-overhead" else
                time_step(model, device, spec, train_batch, repeats, amp_dtype, channels_last, mode))
        rows.append({"channels_last": channels_last, "compile": mode or "off",
                     "stream_ms": 1000 * stream / len(batches), "train_step_s": step})
        layout = "on" if channels_last else "off"
        checks.append(f"S={spec.input_size}: streaming in {precision}, channels-last {layout}, torch.compile "
                      f"{mode or 'off'}: raw outputs within {error:.1e} (relative) of float32 eager's")
        print(f"variant {rows[-1]}", flush=True)

    for channels_last in (False, True):
        measure(channels_last, None)
    faster_layout = min(rows, key=lambda row: row["stream_ms"])["channels_last"]
    for mode in compile_modes:
        try:
            measure(faster_layout, mode)
        except Exception as error:  # a mode that does not compile here is a finding, not the end of the run
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            rows.append({"channels_last": faster_layout, "compile": mode, "failed": reason})
            checks.append(f"S={spec.input_size}: torch.compile {mode} failed: {reason}")
            print(f"variant compile={mode} failed: {reason}", flush=True)
    return rows, checks


def flop_counts(models: dict, device: torch.device, spec: ModelSpec) -> dict:
    """GFLOPs per sample (utils.complexity, as summary.py counts them): eval window (released), streaming per frame
    (ours), training step forward+backward."""
    counts = {"window_released": window_flops(models["released"], spec.input_shape, spec.num_frame).gflops,
              "stream_per_frame": stream_frame_flops(models["fast"], spec.input_shape, spec.num_frame).gflops}
    images, targets = training_inputs(spec, 1, device)
    for name, model in models.items():
        model.train()

        def step() -> None:
            outputs, motion_loss = model(images)
            (YOLOLoss(1)(outputs, targets) + motion_loss).backward()

        counts[f"train_step_{REPORT_NAMES[name]}"] = count_flops(step).gflops
        model.zero_grad(set_to_none=True)
        model.eval()
    return counts


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def entry_key(entry: dict) -> str:
    """The report's key: the device, and the --amp of the run (each run times float32 too)."""
    amp = entry.get("amp", "none")
    return entry["device"] if amp == "none" else f"{entry['device']}, --amp {amp}"


def markdown(entry: dict) -> str:
    lines = [f"# Benchmark: {entry_key(entry)}", "",
             f"torch {entry['torch']}, {entry['date']}, command `{entry['command']}`. Median of {entry['repeats']} "
             "timed repeats after warm-up.", "",
             f"## Inference per frame (batch 1, every frame a key frame of its "
             f"{entry.get('model', {}).get('num_frame', 5)}-frame window)", "",
             "| S | released (window) ms | ours (stream) ms | speed-up |", "| --- | --- | --- | --- |"]
    for size, row in entry["inference"].items():
        lines.append(f"| {size} | {row['window']:.1f} | {row['stream']:.1f} | {row['window'] / row['stream']:.2f}× |")
        for key in sorted(k for k in row if "_" in k and k.startswith("window_")):
            amp = key.split("_", 1)[1]
            lines.append(f"| {size} {amp} | {row[key]:.1f} | {row['stream_' + amp]:.1f} | "
                         f"{row[key] / row['stream_' + amp]:.2f}× (streaming {amp} vs float32: "
                         f"{row['stream'] / row['stream_' + amp]:.2f}×) |")
    onnx_rows = {size: row for size, row in entry["inference"].items() if "stream_onnx" in row}
    if onnx_rows:
        lines += ["", f"## ONNX Runtime {entry['onnxruntime']} streaming per frame (CPU execution provider, "
                      "as many threads as PyTorch, batch 1)", "",
                  "| S | PyTorch (stream) ms | ONNX Runtime (stream) ms | PyTorch / ONNX Runtime |",
                  "| --- | --- | --- | --- |"]
        for size, row in onnx_rows.items():
            lines.append(f"| {size} | {row['stream']:.1f} | {row['stream_onnx']:.1f} | "
                         f"{row['stream'] / row['stream_onnx']:.2f}× |")
    lines += ["", "## Training step (forward, loss, backward, optimizer step)", "",
              "| S | batch | released s | ours s | speed-up |", "| --- | --- | --- | --- | --- |"]
    for size, row in entry["train_step"].items():
        lines.append(f"| {size} | {entry['train_batch']} | {row['released']:.3f} | {row['ours']:.3f} | "
                     f"{row['released'] / row['ours']:.2f}× |")
        for key in sorted(k for k in row if k.startswith("ours_")):
            amp = key.split("_", 1)[1]
            lines.append(f"| {size} {amp} | {entry['train_batch']} | | {row[key]:.3f} | "
                         f"{row['ours'] / row[key]:.2f}× ({amp} vs float32, ours) |")
    variants = entry.get("variants")
    if variants:
        precision = "float32" if variants["amp"] == "none" else variants["amp"]
        lines += ["", f"## Layout and torch.compile at S = {variants['size']} ({precision}, ours)", "",
                  "| channels-last | torch.compile | streaming ms/frame | frames/s | training step s (batch "
                  f"{variants['train_batch']}) |", "| --- | --- | --- | --- | --- |"]
        for row in variants["rows"]:
            layout = "on" if row["channels_last"] else "off"
            if "failed" in row:
                lines.append(f"| {layout} | {row['compile']} | failed | | |")
                continue
            step = "—" if row["train_step_s"] is None else f"{row['train_step_s']:.3f}"
            lines.append(f"| {layout} | {row['compile']} | {row['stream_ms']:.2f} | {1000 / row['stream_ms']:.0f} | "
                         f"{step} |")
    evaluation = entry["evaluation"]
    lines += ["", f"## Evaluation engine (vid_map_coco.py) at S = {evaluation['size']}", "",
              f"- batch 1: {evaluation['batch1']:.1f} frames/s; batch 8: {evaluation['batch8']:.1f} frames/s",
              f"- frame decoding + letterbox with 2 workers: {evaluation['decode_letterbox']:.0f} frames/s", "",
              "## Model", "", f"- parameters: {entry['params'] / 1e6:.2f} M",
              f"- peak memory: {entry['peak_mem_mb']:.0f} MB "
              f"({'GPU allocated' if 'cuda' in entry['command'] else 'process RSS'})"]
    for size, counts in entry["gflops"].items():
        lines.append(f"- GFLOPs per sample at {size}: eval window (released) {counts['window_released']:.1f}, "
                     f"streaming per frame (ours) {counts['stream_per_frame']:.1f}, training step forward+backward "
                     f"released {counts['train_step_released']:.1f} / ours {counts['train_step_ours']:.1f}")
    lines += ["", "## Equality checks in this run", ""] + [f"- {check}" for check in entry["checks"]]
    return "\n".join(lines) + "\n"


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
    inference, checks = measure_inference(models, device, specs, root, frames, repeats, args.amp, amp_dtype,
                                          onnx_version is not None)
    print(f"inference done ({time.time() - started:.0f} s)", flush=True)
    evaluation = measure_evaluation(models["fast"], device, specs[0], root, 4 * frames, max(1, repeats // 2))
    evaluation["size"] = specs[0].input_size
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
             "gflops": gflops, "peak_mem_mb": peak_mem_mb, "variants": variants, "checks": checks}
    existing = json.loads(args.out.read_text()) if args.out.exists() else {}
    existing[entry_key(entry)] = entry
    write_json(args.out, existing, indent=2)
    print(markdown(entry))
    # The markdown report shows every entry measured so far (the JSON keeps one per device and --amp).
    write_text(args.markdown, "\n".join(markdown(existing[name]) for name in sorted(existing)))
    print(f"wrote {args.out} and {args.markdown} ({time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    run_cli(main)
