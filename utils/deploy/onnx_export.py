"""Export an eval-mode SSTNet to ONNX: the two streaming graphs and the released single graph
(``utils/deploy/onnx_format.py`` says what each holds), with their metadata, checked on ONNX Runtime against PyTorch
before anything is written.

Only inference is exported: the training-only motion branch (ConvLSTM, ``mapping*``) never runs in eval mode, so
it is not in the graphs. ``frame.onnx`` and ``detect.onnx`` use the fast computation (the per-frame half of
``conv_gl`` is what makes the cache worth keeping); ``window.onnx`` the computation asked for (released by
default).
"""
from __future__ import annotations

import contextlib
import copy
import logging
import uuid
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import nn

from nets import Network

from ..errors import SSTNetError
from ..model_spec import ModelSpec
from ..runtime.fileio import atomic_path, ensure_dir
from ..runtime.provenance import project_commit
from .onnx_format import (DEFAULT_OPSET, FRAME_INPUT, FRAME_OUTPUT, GRAPHS, MIN_OPSET, OUTPUT, WINDOW_INPUT,
                          ExportedGraph, detect_inputs, graph_file, require)
from .onnx_int8 import Calibration, Quantization, quantize_graph

# Largest max |ONNX − PyTorch| / max |PyTorch| accepted by the check, per precision.
TOLERANCE = {"float32": 1e-4, "float16": 2e-2}
CHECK_BATCH = 2  # frames per graph call in the check when the batch axis is dynamic


class FrameGraph(nn.Module):
    """``frame.onnx``: frames → the per-frame tensors the streaming cache keeps."""

    def __init__(self, model: Network) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.frame_features(images)


class DetectGraph(nn.Module):
    """``detect.onnx``: the T cached per-frame tensors, oldest first → the raw head output."""

    def __init__(self, model: Network) -> None:
        super().__init__()
        self.model = model

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        return self.model.detect(features)


class WindowGraph(nn.Module):
    """``window.onnx``: N×3×T×H×W windows → the raw head output, in one graph."""

    def __init__(self, model: Network) -> None:
        super().__init__()
        self.model = model

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        return self.model(window)[0]


@dataclass(frozen=True)
class ExportedFile:
    """One written graph and how far its outputs were from PyTorch's in the check (None: not checked)."""

    graph: str
    path: Path
    difference: float | None


def max_relative_difference(actual, expected) -> float:
    """max |actual − expected| / max |expected| (of arrays or tensors), in float64."""
    actual = torch.as_tensor(actual).double()
    expected = torch.as_tensor(expected).double()
    return float((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30))


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Silence the exporter's progress lines and its warnings about optional packages (torchvision)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def to_onnx(module: nn.Module, inputs: tuple[torch.Tensor, ...], input_names: list[str], opset: int,
            dynamic_batch: bool, metadata: dict[str, str], doc: str):
    """One graph as an ``onnx.ModelProto`` carrying ``metadata``."""
    batch = torch.export.Dim("batch", min=1)
    dynamic_shapes = None
    if dynamic_batch:
        axes = tuple({0: batch} for _ in inputs)
        dynamic_shapes = (axes,) if isinstance(module, DetectGraph) else axes
    with quiet_exporter():
        program = torch.onnx.export(module.eval(), inputs, dynamo=True, opset_version=opset, input_names=input_names,
                                    output_names=[FRAME_OUTPUT if isinstance(module, FrameGraph) else OUTPUT],
                                    dynamic_shapes=dynamic_shapes, verbose=False)
    proto = program.model_proto
    written = next((entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")), None)
    if written != opset:
        # torch's exporter falls back to an opset it knows when asked for another: say so, write nothing.
        raise SSTNetError(f"--opset {opset}: torch's exporter wrote opset {written} instead; choose an opset it "
                          f"supports ({MIN_OPSET}-{written if written and written > MIN_OPSET else DEFAULT_OPSET}); "
                          "nothing written")
    onnx_metadata(proto, metadata, doc)
    return proto


def onnx_metadata(proto, metadata: dict[str, str], doc: str) -> None:
    """Set a graph's metadata and description (replacing any) and check the model."""
    import onnx

    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, metadata)
    proto.doc_string = doc
    onnx.checker.check_model(proto)


def int8_difference(float_proto, int8_proto, feeds: Sequence[dict], samples: int = 8) -> float:
    """max relative difference of the int8 graph's outputs from the float32 graph's on (up to ``samples`` of) the
    calibration feeds: how much quantization moved the raw output."""
    float_session, int8_session = runtime_session(float_proto, False), runtime_session(int8_proto, False)
    worst = 0.0
    for feed in feeds[:samples]:
        worst = max(worst, max_relative_difference(int8_session.run(None, feed)[0], float_session.run(None, feed)[0]))
    return worst


def runtime_session(proto, half: bool):
    """An ONNX Runtime session of ``proto`` for the check: CPU for float32, CUDA for float16 (None: no CUDA
    provider, the float16 check is skipped)."""
    ort = require("onnxruntime", "export_onnx.py")
    provider = "CUDAExecutionProvider" if half else "CPUExecutionProvider"
    if provider not in ort.get_available_providers():
        return None
    return ort.InferenceSession(proto.SerializeToString(), providers=[provider])


def run_session(session, names: Sequence[str], tensors: Sequence[torch.Tensor]):
    return session.run(None, {name: tensor.detach().cpu().numpy() for name, tensor in zip(names, tensors)})[0]


def check_opset(opset: int) -> None:
    """The export's packages are installed and ``opset`` is one the installed onnx knows (and at least MIN_OPSET)."""
    for package in ("onnx", "onnxscript", "onnxruntime"):
        require(package, "export_onnx.py")
    import onnx
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise SSTNetError(f"--opset {opset}: must lie in [{MIN_OPSET}, {newest}] (the installed onnx knows opsets "
                          f"up to {newest})")


def export_graphs(model: Network, spec: ModelSpec, num_classes: int, class_names: Sequence[str], out_dir: str | Path,
                  opset: int = DEFAULT_OPSET, dynamic_batch: bool = False, half: bool = False,
                  graphs: Sequence[str] = GRAPHS, window_computation: str = "released",
                  calibration: Calibration | None = None,
                  quantization: Quantization = Quantization()) -> list[ExportedFile]:
    """Export ``graphs`` of ``model`` (eval mode, on its device) at ``spec``'s input size into ``out_dir``.

    Every graph is checked on ONNX Runtime against PyTorch on random frames (float16 graphs only where a CUDA
    provider is available) and all are written, atomically, only once every check has passed. With a
    ``calibration``, the checked float32 graphs are then quantized to int8 as ``quantization`` says and
    each ExportedFile's difference is the int8 graph's from the float32 one on the calibration windows. Returns what
    was written.
    """
    check_opset(opset)
    out_dir = ensure_dir(out_dir)
    if calibration is not None and half:
        raise SSTNetError("--int8 and --half: choose one precision")
    precision = "float16" if half else "float32"
    parameter = next(model.parameters())
    dtype = torch.float16 if half else torch.float32
    stream_model = copy.deepcopy(model).eval().to(dtype).set_computation("fast")
    window_model = copy.deepcopy(model).eval().to(dtype).set_computation(window_computation)
    base = ExportedGraph("frame", spec.phi, spec.num_frame, spec.lstm_hidden, num_classes, spec.input_shape,
                         tuple(class_names), "fast", None if dynamic_batch else 1, precision, project_commit(),
                         uuid.uuid4().hex, spec.frame_step)
    batch = CHECK_BATCH if dynamic_batch else 1
    height, width = spec.input_shape
    T = spec.num_frame
    generator = torch.Generator().manual_seed(0)
    frames = torch.randn(T, batch, 3, height, width, generator=generator).to(parameter.device, dtype)
    names = detect_inputs(T)

    protos, differences = {}, {}
    with torch.no_grad():
        reference_features = [stream_model.frame_features(frames[t]) for t in range(T)]
        for graph in graphs:
            info = replace(base, graph=graph, computation=window_computation if graph == "window" else "fast")
            metadata = info.metadata()
            if graph == "frame":
                proto = to_onnx(FrameGraph(stream_model), (frames[0],), [FRAME_INPUT], opset, dynamic_batch, metadata,
                                f"SSTNet frame graph: {FRAME_INPUT} N×3×H×W -> {FRAME_OUTPUT}, the per-frame cache")
            elif graph == "detect":
                proto = to_onnx(DetectGraph(stream_model), tuple(reference_features), names, opset, dynamic_batch,
                                metadata, f"SSTNet detect graph: {', '.join(names)} (oldest first) -> {OUTPUT}")
            else:
                proto = to_onnx(WindowGraph(window_model), (frames.permute(1, 2, 0, 3, 4),), [WINDOW_INPUT], opset,
                                dynamic_batch, metadata, f"SSTNet window graph: {WINDOW_INPUT} N×3×T×H×W -> {OUTPUT}")
            protos[graph] = proto
            differences[graph] = check_graph(graph, proto, half, frames, reference_features, stream_model,
                                             window_model, names)
    if calibration is not None:
        for graph in protos:
            info = replace(base, graph=graph, computation=window_computation if graph == "window" else "fast",
                           precision="int8", calibration=calibration.source,
                           float_modules=quantization.float_modules, calibration_method=quantization.describe(),
                           weight_bits=quantization.weight_bits)
            feeds = calibration.feeds(graph, T)
            quantized = quantize_graph(protos[graph], feeds, quantization)
            onnx_metadata(quantized, info.metadata(), protos[graph].doc_string + " (int8)")
            differences[graph] = int8_difference(protos[graph], quantized, feeds)
            protos[graph] = quantized
    # The graphs of an earlier export in the folder go first: a folder never mixes two exports' graphs (the engine
    # checks that too, for a folder left half-written by an interrupted export).
    for graph in GRAPHS:
        (out_dir / graph_file(graph)).unlink(missing_ok=True)
    written = []
    for graph, proto in protos.items():
        path = out_dir / graph_file(graph)
        write_model(proto, path)
        written.append(ExportedFile(graph, path, differences[graph]))
    return written


def check_graph(graph: str, proto, half: bool, frames: torch.Tensor, reference_features: list[torch.Tensor],
                stream_model: Network, window_model: Network, names: list[str]) -> float | None:
    """max relative difference of one graph's output from PyTorch's on the check frames (None: not checked)."""
    session = runtime_session(proto, half)
    if session is None:
        return None
    if graph == "frame":
        actual, expected = run_session(session, [FRAME_INPUT], [frames[-1]]), reference_features[-1]
    elif graph == "detect":
        actual, expected = run_session(session, names, reference_features), stream_model.detect(reference_features)
    else:
        window = frames.permute(1, 2, 0, 3, 4)
        actual, expected = run_session(session, [WINDOW_INPUT], [window]), window_model(window)[0]
    difference = max_relative_difference(actual, expected.float())
    tolerance = TOLERANCE["float16" if half else "float32"]
    if not difference <= tolerance:
        raise SSTNetError(f"{graph_file(graph)}: ONNX Runtime's output differs from PyTorch's by {difference:.1e} "
                          f"(max relative), above {tolerance:g}; nothing written")
    return difference


def write_model(proto, path: Path) -> None:
    """Write an ONNX model atomically (one file, weights inside)."""
    import onnx

    with atomic_path(path) as tmp:
        onnx.save_model(proto, str(tmp))
