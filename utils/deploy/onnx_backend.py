"""The ONNX Runtime backend of the inference engine: the engine's graph calls (``utils.infer.engine.InferenceBackend``)
answered by the graphs ``export_onnx.py`` wrote, so the walk, the streaming cache, the decoding and the NMS stay
the PyTorch path's own.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import SSTNetError
from ..model_spec import format_input_shape
from ..runtime.cpu_features import describe_cpu, int8_saturates
from .onnx_format import (FRAME_INPUT, GRAPHS, STREAM_GRAPHS, WINDOW_INPUT, ExportedGraph, detect_inputs, graph_file,
                          require)

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
ENGINE_GRAPHS = {"stream": STREAM_GRAPHS, "window": ("window",)}


def execution_providers(ort, device: str) -> list:
    """ONNX Runtime providers for ``--device``: auto takes CUDA when this onnxruntime has it, else the CPU."""
    available = ort.get_available_providers()
    name = device.strip().lower()
    if name == "auto":
        return [CUDA, CPU] if CUDA in available else [CPU]
    if name == "cpu":
        return [CPU]
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if CUDA not in available:
            raise SSTNetError(f"--device {device}: this onnxruntime has no CUDA provider (install onnxruntime-gpu, or "
                              f"use --device cpu)")
        return [(CUDA, {"device_id": int(name[5:] or 0)}), CPU]
    raise SSTNetError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N")


def session_options(ort, threads: int | None = None):
    """ONNX Runtime session options for the engine: ``threads`` intra-op threads (None: its default), idle ones
    sleeping instead of spinning."""
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    # Streaming at 512 on 2 CPUs, 352 against 416 ms per frame on a quiet machine with spinning off, and spinning
    # threads also stall when another process holds a core (docs/notes/performance.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def check_inputs(session, info: ExportedGraph, path: Path) -> None:
    """The graph's inputs are what its metadata says: names, count (T for detect.onnx), input size and frames."""
    height, width = info.input_shape
    stride = 8
    expected = {"frame": {FRAME_INPUT: (3, height, width)},
                "detect": {name: (None, height // stride, width // stride) for name in detect_inputs(info.num_frame)},
                "window": {WINDOW_INPUT: (3, info.num_frame, height, width)}}[info.graph]
    actual = {item.name: tuple(item.shape[1:]) for item in session.get_inputs()}
    if sorted(actual) != sorted(expected):
        raise SSTNetError(f"{path}: its inputs {', '.join(sorted(actual))} are not those its metadata describes "
                          f"({', '.join(sorted(expected))}: phi {info.phi}, T {info.num_frame}); export it again")
    for name, shape in expected.items():
        if any(want is not None and isinstance(have, int) and have != want for want, have in zip(shape, actual[name])):
            raise SSTNetError(f"{path}: input {name} has shape {list(actual[name])} after the batch axis, but its "
                              f"metadata describes {[side if side is not None else 'C' for side in shape]} (input "
                              f"{format_input_shape(info.input_shape)}, T {info.num_frame}); export it again")


def saturation_warning(info: ExportedGraph, folder: Path, providers: Sequence) -> str | None:
    """A one-line warning when int8 graphs with 8-bit weights run on this CPU's int8 kernels and they saturate here
    (an x86 CPU without VNNI: docs/deployment.md measured −4.6 mAP50 there, where 7-bit weights lose nothing)."""
    on_cpu = providers[0] == CPU
    if info.precision != "int8" or info.weight_bits != 8 or not on_cpu or not int8_saturates():
        return None
    return (f"warning: --onnx {folder}: int8 graphs with 8-bit weights on a CPU without VNNI ({describe_cpu()}): "
            f"ONNX Runtime's int8 kernels saturate here and lose accuracy; export them again with --weight-bits 7 "
            f"(the default)")


def check_one_export(folder: Path, info: ExportedGraph) -> None:
    """Every graph file in ``folder`` — opened or not — comes from the export of ``info``: a folder mixing two
    exports (say, an interrupted re-export) is refused, whichever engine runs."""
    try:
        import onnx
    except ImportError:  # without onnx the graphs' metadata cannot be read without opening them: the opened agree
        return
    for graph in GRAPHS:
        path = folder / graph_file(graph)
        if not path.is_file():
            continue
        try:
            props = {entry.key: entry.value for entry in onnx.load(str(path), load_external_data=False).metadata_props}
        except Exception as exc:  # noqa: BLE001 — onnx raises its own types for unreadable files
            raise SSTNetError(f"{path}: not a readable ONNX model ({str(exc).strip().splitlines()[0]})") from None
        other = ExportedGraph.from_metadata(props, str(path))
        if not info.same_model(other):
            raise SSTNetError(f"--onnx {folder}: {graph_file(graph)} comes from another export than the graphs "
                              f"opened ({other.describe()} / {info.describe()}); export again into an empty folder")


class OnnxBackend:
    """The graphs of an export folder on ONNX Runtime: ``frame.onnx`` and ``detect.onnx`` for the stream engine,
    ``window.onnx`` for the window engine (``engines``: the ones to open). Tensors come and go on the CPU; graphs
    exported with a fixed batch are called once per frame or window."""

    def __init__(self, folder: str | os.PathLike, engines: Sequence[str] = ("stream",), device: str = "auto",
                 threads: int | None = None) -> None:
        ort = require("onnxruntime", "--onnx")
        folder = Path(folder)
        if not folder.is_dir():
            raise SSTNetError(f"--onnx {folder}: not a folder (export_onnx.py --out writes one)")
        options = session_options(ort, threads)
        providers = execution_providers(ort, device)
        self.folder = folder
        self.sessions: dict = {}
        self.graphs: dict[str, ExportedGraph] = {}
        for graph in dict.fromkeys(name for engine in engines for name in ENGINE_GRAPHS[engine]):
            path = folder / graph_file(graph)
            if not path.is_file():
                raise SSTNetError(f"--onnx {folder}: {graph_file(graph)} is missing (export_onnx.py writes it)")
            try:
                session = ort.InferenceSession(str(path), options, providers=providers)
            except Exception as exc:  # noqa: BLE001 — onnxruntime raises its own types for unreadable models
                raise SSTNetError(f"{path}: not a loadable ONNX model ({str(exc).strip().splitlines()[0]})") from None
            info = ExportedGraph.from_metadata(session.get_modelmeta().custom_metadata_map, str(path))
            if info.graph != graph:
                raise SSTNetError(f"{path}: its metadata says it is the {info.graph} graph")
            check_inputs(session, info, path)
            first = next(iter(self.graphs.values()), None)
            if first is not None and not first.same_model(info):
                raise SSTNetError(f"--onnx {folder}: {graph_file(graph)} and {graph_file(first.graph)} come from "
                                  f"different exports ({info.describe()} / {first.describe()}); export again")
            self.sessions[graph], self.graphs[graph] = session, info
        self.info = next(iter(self.graphs.values()))
        check_one_export(folder, self.info)
        warning = saturation_warning(self.info, folder, providers)
        if warning:
            print(warning, file=sys.stderr)
        self.device = torch.device("cpu")
        self.dtype = torch.float16 if self.info.precision == "float16" else torch.float32

    def computation(self, engine: str) -> str:
        """The computation the graphs of ``engine`` were exported in."""
        return self.graphs[ENGINE_GRAPHS[engine][-1]].computation

    def frame_features(self, images: torch.Tensor) -> torch.Tensor:
        return self._run("frame", [FRAME_INPUT], [images])

    def detect(self, slots: Sequence[torch.Tensor]) -> torch.Tensor:
        return self._run("detect", detect_inputs(len(slots)), slots)

    def window(self, x: torch.Tensor) -> torch.Tensor:
        return self._run("window", [WINDOW_INPUT], [x])

    def _run(self, graph: str, names: list[str], tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        session = self.sessions[graph]
        arrays = [np.ascontiguousarray(tensor.numpy()) for tensor in tensors]
        step = self.info.batch or len(arrays[0])
        outputs = [session.run(None, {name: array[start:start + step] for name, array in zip(names, arrays)})[0]
                   for start in range(0, len(arrays[0]), step)]
        return torch.from_numpy(outputs[0] if len(outputs) == 1 else np.concatenate(outputs))
