"""The measurements behind benchmarks/bench.py: timing (fixed seeds, warm-up, median of repeats), the released
computation against ours for inference and training with their equality checks, the evaluation engine's throughput,
ONNX Runtime, layout and torch.compile variants, FLOPs and memory."""
from __future__ import annotations

import copy
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nets import Network, YOLOLoss
from nets.training import init_weights
from utils.data.annotations import read_coco
from utils.data.sequence import window_numbers
from utils.data.synthetic import SyntheticConfig, generate_dataset
from utils.errors import SSTNetError
from utils.infer.engine import DetectSettings, SequenceDetector, TorchBackend, postprocess
from utils.infer.sources import FrameBatch, frame_batches, plan_sequence_walk
from utils.model_spec import ModelSpec
from utils.runtime.complexity import count_flops, stream_frame_flops, window_flops
from utils.runtime.cpu_features import describe_cpu
from utils.runtime.device import autocast, synchronize

REPO = Path(__file__).resolve().parents[1]
DAUB_REAL = REPO.parent / "shared" / "data" / "daub_real"
# Each engine with the computation it is measured in: the released one as released, streaming as ours.
ENGINES = (("window", "released"), ("stream", "fast"))
# The names the report gives the two models.
REPORT_NAMES = {"released": "released", "fast": "ours"}


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


def walk(model, batches: list[FrameBatch], mode: str, amp_dtype, num_frame: int | None = None,
         frame_step: int = 1) -> list:
    """The engine's raw outputs over ``batches`` with ``model`` (a Network, or a backend with ``num_frame``)."""
    detector = SequenceDetector(model, num_frame or model.num_frame, mode, amp_dtype, frame_step)
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
                 settings: DetectSettings, root: Path) -> tuple[dict, list[str]]:
    """ms per frame of the streaming engine on the exported frame/detect graphs (ONNX Runtime, CPU provider, as many
    intra-op threads as PyTorch), float32 (``stream_onnx``) and int8 calibrated on ``root``'s frames
    (``stream_onnx_int8``), and check lines: float32 raw outputs and detections against PyTorch's ``reference``,
    int8 detections against float32's."""
    from utils.deploy.onnx_backend import OnnxBackend
    from utils.deploy.onnx_export import export_graphs, max_relative_difference

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
        int8, calibration = int8_backend(model, spec, root, Path(folder) / "int8")
        int8_seconds = timed(lambda: walk(int8, batches, "stream", None, model.num_frame), torch.device("cpu"), repeats)
        quantized = postprocess(walk(int8, batches, "stream", None, model.num_frame), settings)
        kept = sum(matching_boxes(a, b, iou=0.5, score=0.1) for a, b in zip(quantized, ours))
    checks = [f"S={spec.input_size}: ONNX Runtime streaming raw outputs within {error:.1e} (max relative) of PyTorch's "
              f"in float32; {agreeing} of {sum(len(d) for d in theirs)} detections over {len(batches)} frames agree",
              f"S={spec.input_size}: int8 graphs (calibrated on {calibration.source}) find "
              f"{sum(len(d) for d in quantized)} detections, {kept} of them matching a float32 one (IoU >= 0.5, "
              f"score within 0.1; float32: {sum(len(d) for d in ours)})"]
    per_frame = {"stream_onnx": 1000 * seconds / len(batches), "stream_onnx_int8": 1000 * int8_seconds / len(batches)}
    return per_frame, checks


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
                onnx_rows, onnx_checks = measure_onnx(models["fast"], spec, batches, reference, repeats, settings, root)
                row.update(onnx_rows)
                checks += onnx_checks
            if amp != "none":
                # As the scripts run --amp: autocast, the model and frames channels-last (utils.infer.engine).
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


SHIPPED_WEIGHTS = REPO / "weights" / "sstnet_nano_ir.pth"


def shipped_model(device: torch.device) -> tuple[Network, ModelSpec]:
    """The shipped real-data model and its spec. The whole pipeline is timed with it: a trained model's few
    detections per frame are what NMS and drawing meet in use, where the untrained benchmark model gives about a
    thousand per frame at the evaluation's confidence threshold."""
    from nets.weights import read_trained_weights
    from utils.infer.engine import build_model

    trained, state = read_trained_weights(SHIPPED_WEIGHTS)
    spec = ModelSpec(trained.phi, trained.num_frame, trained.input_shape, trained.lstm_hidden,
                     frame_step=trained.frame_step)
    return build_model(spec, trained.num_classes, state, device, str(SHIPPED_WEIGHTS)), spec


def engine_against_model(model, device: torch.device, spec: ModelSpec, plan: list, batch_size: int,
                         repeats: int) -> dict:
    """Key frames/s of the vid_map_coco.py engine end to end with ``model`` (a Network or a backend) at its default
    decoding (workers for this machine, read-ahead where a core is spare), of the model alone on the same frames
    decoded beforehand, and the share of the end-to-end time spent outside the model."""
    from utils.infer.engine import detect_plan
    from utils.runtime.cpus import default_workers

    keys = sum(ref.is_key for ref in plan)
    settings = DetectSettings(spec.input_shape, spec.num_frame, batch_size=batch_size, workers=default_workers(),
                              frame_step=spec.frame_step)
    seconds = timed(lambda: list(detect_plan(model, plan, settings, progress=False)), device, repeats)
    decoded = [FrameBatch(batch.images.to(device), batch.refs, batch.shapes)
               for batch in frame_batches(plan, spec.input_shape, batch_size, 0)]
    with torch.no_grad():
        model_seconds = timed(lambda: walk(model, decoded, "stream", None, spec.num_frame, spec.frame_step), device,
                              repeats)
    return {"end_to_end": keys / seconds, "model": keys / model_seconds,
            "outside": max(0.0, 1 - model_seconds / seconds)}


def int8_backend(model: Network, spec: ModelSpec, root: Path, folder: Path, frames: int = 16):
    """The model's frame/detect graphs quantized to int8, calibrated on ``frames`` windows of ``root`` (its training
    split where it has one), opened on ONNX Runtime; and the calibration."""
    from utils.deploy.onnx_backend import OnnxBackend
    from utils.deploy.onnx_export import export_graphs
    from utils.infer.calibration import calibration_windows

    split = "train" if (root / "annotations" / "instances_train2017.json").is_file() else "test"
    calibration = calibration_windows(model, spec, root, split, frames)
    export_graphs(model, spec, model.num_classes, ["target"], folder, graphs=("frame", "detect"),
                  calibration=calibration)
    return OnnxBackend(folder, ("stream",), "cpu", torch.get_num_threads()), calibration


def measure_evaluation(model: Network, device: torch.device, spec: ModelSpec, root: Path, frames: int,
                       repeats: int, int8: bool = False) -> dict:
    """The evaluation engine against the model alone (:func:`engine_against_model`) at batch 1 and 8, in PyTorch
    and (``int8``) with the int8 graphs on ONNX Runtime, whose faster model makes the work around it count more;
    and frames/s of decoding + letterbox alone."""
    ground_truth = read_coco(root / "annotations" / "instances_test2017.json", root)
    plan = plan_sequence_walk(ground_truth.records[:frames], spec.num_frame, frame_step=spec.frame_step)
    engines = {"": model}
    with tempfile.TemporaryDirectory(prefix="sstnet_bench_int8_") as folder:
        if int8:
            engines["int8_"] = int8_backend(model, spec, root, Path(folder))[0]
        result = {}
        for prefix, engine in engines.items():
            for batch_size in (1, 8):
                row = engine_against_model(engine, device, spec, plan, batch_size, repeats)
                result[f"{prefix}batch{batch_size}"] = row["end_to_end"]
                result[f"{prefix}model_batch{batch_size}"] = row["model"]
                result[f"{prefix}outside_model_batch{batch_size}"] = row["outside"]
    seconds = timed(lambda: [None for _ in frame_batches(plan, spec.input_shape, 8, 0)], device, repeats)
    result["decode_letterbox"] = len(plan) / seconds
    return result


def measure_video(model: Network, device: torch.device, spec: ModelSpec, root: Path, frames: int,
                  repeats: int) -> dict:
    """Frames/s of ``vid_predict.py --mode video`` on an mp4 made of real frames, end to end (decoding it, letterbox,
    model, NMS, drawing, encoding the annotated mp4; the script's defaults), against the model alone on the same
    frames decoded beforehand, and the share of the time outside the model."""
    import contextlib
    import io

    import vid_predict
    from utils.data.images import read_frame
    from utils.infer.detector import Detector
    from utils.infer.engine import TorchBackend
    from utils.infer.sources import video_batches
    from utils.infer.visualize import open_video
    from utils.model_spec import TrainedModel

    first = inference_batches(root, spec, frames)
    with tempfile.TemporaryDirectory(prefix="sstnet_bench_video_") as folder:
        source, out = Path(folder) / "frames.mp4", Path(folder) / "annotated.mp4"
        with open_video(source, 25.0) as writer:
            for batch in first:
                writer.write(read_frame(batch.refs[0].path), str(batch.refs[0].path))
        args = vid_predict.build_parser().parse_args(["--mode", "video", "--weights", "benchmark", "--source",
                                                      str(source), "--out", str(out), "--quiet"])
        vid_predict.check_detector_arguments(args)
        settings = DetectSettings(spec.input_shape, spec.num_frame, args.conf, args.nms, batch_size=args.batch_size,
                                  workers=args.workers, frame_step=spec.frame_step)
        trained = TrainedModel("benchmark", spec.phi, spec.num_frame, spec.lstm_hidden, model.num_classes,
                               spec.input_shape, frame_step=spec.frame_step)
        detector = Detector(TorchBackend(model), model, spec, trained, settings, device)

        def annotate() -> None:
            with contextlib.redirect_stdout(io.StringIO()):
                vid_predict.annotate(args, detector, source, out, None, ["target"], {})

        seconds = timed(annotate, device, repeats)
        decoded = [FrameBatch(batch.images.to(device), batch.refs, batch.shapes)
                   for batch in video_batches(source, spec.input_shape, args.batch_size, spec.num_frame,
                                              frame_step=spec.frame_step)]
        count = sum(len(batch.refs) for batch in decoded)
        with torch.no_grad():
            model_seconds = timed(lambda: walk(model, decoded, "stream", None, spec.num_frame, spec.frame_step),
                                  device, repeats)
    return {"frames": count, "end_to_end": count / seconds, "model": count / model_seconds,
            "outside": max(0.0, 1 - model_seconds / seconds)}


def training_inputs(spec: ModelSpec, batch: int, device: torch.device):
    generator = torch.Generator().manual_seed(3)
    height, width = spec.input_shape
    images = torch.randn(batch, 3, spec.num_frame, height, width, generator=generator).to(device)
    targets = [torch.tensor([[width / 2 + 13 * b, height / 3, 8.0, 8.0, 0.0]], device=device) for b in range(batch)]
    return images, targets


def training_step(model: torch.nn.Module, images, targets, loss_fn, optimizer, amp_dtype=None,
                  scaler=None) -> torch.Tensor:
    """One step as utils/train/trainer.py takes it: the forward under autocast, the loss in float32, fp16's loss
    scaling."""
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
    """GFLOPs per sample (utils.runtime.complexity, as summary.py counts them): eval window (released), streaming per
    frame (ours), training step forward+backward."""
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
    # The model and instruction set, not just "x86_64": figures from two CPUs must not merge under one name.
    return f"CPU {describe_cpu()}, {torch.get_num_threads()} threads"


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


