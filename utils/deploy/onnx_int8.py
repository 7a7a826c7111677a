"""Static int8 quantization of the exported graphs for CPU deployment: ONNX Runtime's quantization tools in QDQ form
(int8 weights per output channel, uint8 activations, the pairing x86 CPUs multiply fastest), with activation ranges
calibrated on real windows of a DAUB-layout folder, from their min/max (default) or clipped at a percentile of
their values (outliers then no longer stretch the range over the few levels a dim target's activations use).

The calibration samples (``utils/infer/calibration.py`` gathers them from real frames): ``frame.onnx`` sees key
frames, ``detect.onnx`` the float model's per-frame features of their windows, ``window.onnx`` the windows. The
modules named in ``float_modules`` (module paths of the PyTorch model, by prefix) stay in float: by default the
head's final 1×1 predictions, whose outputs are decoded through exp() and sigmoid() and cost almost nothing
(docs/deployment.md has the measurements).

Weights are 7-bit by default (int8 values in [-64, 64]): on x86 CPUs without VNNI, ONNX Runtime's kernels add pairs
of uint8 × int8 products in 16 bits with saturation, which 8-bit weights overflow
(``utils/runtime/cpu_features.py``); 7-bit weights compute exactly on every CPU.
"""
from __future__ import annotations

import ast
import contextlib
import io
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import SSTNetError
from ..runtime.memory import available_bytes
from .onnx_format import FRAME_INPUT, WINDOW_INPUT, detect_inputs, require

DEFAULT_FLOAT_MODULES = ("model.head.reg_preds", "model.head.obj_preds", "model.head.cls_preds")
DEFAULT_CALIBRATION_FRAMES = 64
CALIBRATION_METHODS = ("minmax", "percentile")
DEFAULT_PERCENTILE = 99.999
WEIGHT_BITS = (7, 8)
DEFAULT_WEIGHT_BITS = 7
# ONNX Runtime's histogram calibrator (the percentile method) keeps every calibrated activation of every sample it is
# given until it builds their histograms: at 512×640 one window of window.onnx holds about a gigabyte. The samples are
# then given in chunks that fit in this share of the available memory; the histograms merge across chunks.
HISTOGRAM_MEMORY_SHARE = 0.5


@dataclass(frozen=True)
class Quantization:
    """How the graphs are quantized: the modules kept in float and how the activation ranges are calibrated."""

    float_modules: tuple[str, ...] = DEFAULT_FLOAT_MODULES
    method: str = "minmax"
    percentile: float = DEFAULT_PERCENTILE  # method "percentile": the share of each activation's values kept in range
    weight_bits: int = DEFAULT_WEIGHT_BITS  # 8 saturates on x86 CPUs without VNNI; 7 is exact everywhere

    def __post_init__(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise SSTNetError(f"--calibration-method {self.method}: expected one of {', '.join(CALIBRATION_METHODS)}")
        if not 50.0 < self.percentile <= 100.0:
            raise SSTNetError(f"--calibration-percentile {self.percentile:g}: must lie in (50, 100]")
        if self.weight_bits not in WEIGHT_BITS:
            raise SSTNetError(f"--weight-bits {self.weight_bits}: expected one of {', '.join(map(str, WEIGHT_BITS))}")

    def describe(self) -> str:
        """The calibration method as the metadata and the report write it."""
        return f"percentile {self.percentile:g}" if self.method == "percentile" else self.method


@dataclass
class Calibration:
    """Inputs of each graph on the calibration windows (numpy, one entry per sample) and where they came from."""

    frames: list[np.ndarray]
    features: list[list[np.ndarray]]
    windows: list[np.ndarray]
    source: str

    def feeds(self, graph: str, num_frame: int) -> list[dict[str, np.ndarray]]:
        """The calibration samples of ``graph`` as ONNX Runtime input feeds."""
        if graph == "frame":
            return [{FRAME_INPUT: frame} for frame in self.frames]
        if graph == "detect":
            return [dict(zip(detect_inputs(num_frame), window)) for window in self.features]
        return [{WINDOW_INPUT: window} for window in self.windows]


def module_of(node) -> str:
    """The PyTorch module path a node of an exported graph computes (from the exporter's name scopes), or ''."""
    for entry in node.metadata_props:
        if entry.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(entry.value)
            except (ValueError, SyntaxError):
                return ""
            modules = [scope for scope in scopes if scope.startswith("model.")]
            return modules[-1] if modules else ""
    return ""


def float_nodes(proto, float_modules: Sequence[str]) -> list[str]:
    """Names of the nodes that compute a module under one of the ``float_modules`` prefixes."""
    names = []
    for node in proto.graph.node:
        module = module_of(node)
        if module and any(module == prefix or module.startswith(prefix + ".") for prefix in float_modules):
            names.append(node.name)
    return names


def quantize_graph(proto, feeds: list[dict[str, np.ndarray]], quantization: Quantization = Quantization()):
    """``proto`` statically quantized (QDQ) with ranges calibrated on ``feeds`` by ``quantization.method``; the
    nodes of its ``float_modules`` stay float. Returns the quantized ``onnx.ModelProto`` (its metadata is the
    caller's to set)."""
    require("onnxruntime", "--int8")

    # The quantizer logs a warning per batch-norm weight it does not quantize per channel, and the histogram
    # calibrators print their bin counts: neither is the user's concern.
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return _quantize(proto, feeds, quantization)
    finally:
        logger.setLevel(level)


def _quantize(proto, feeds: list[dict[str, np.ndarray]], quantization: Quantization):
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Feeds(CalibrationDataReader):
        """The calibration samples, one feed at a time, as ONNX Runtime's calibrator reads them (a range of them at a
        time when it collects in chunks)."""

        def __init__(self) -> None:
            self.set_range(0, len(feeds))

        def __len__(self) -> int:
            return len(feeds)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.remaining = iter(feeds[start_index:end_index])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.remaining, None)

    reader = Feeds()
    keep = float_nodes(proto, quantization.float_modules)
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}[quantization.method]
    extra = {"CalibPercentile": quantization.percentile} if quantization.method == "percentile" else {}
    with tempfile.TemporaryDirectory(prefix="sstnet-int8-") as folder:
        plain, prepared, quantized = (Path(folder) / name for name in ("float.onnx", "prepared.onnx", "int8.onnx"))
        onnx.save_model(proto, str(plain))
        # Folds batch norms into their convolutions and fixes shapes, so that every convolution is quantized whole.
        quant_pre_process(str(plain), str(prepared), skip_symbolic_shape=True)
        if quantization.method == "percentile":
            chunk = histogram_chunk(activation_bytes(onnx.load(str(prepared))), len(feeds),
                                    available_bytes(torch.device("cpu")))
            if chunk is not None:
                # ONNX Runtime's option collects the samples in chunks of this size, whatever the method.
                extra["CalibStridedMinMax"] = chunk
        quantize_static(str(prepared), str(quantized), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=keep,
                        calibrate_method=method, extra_options=extra, reduce_range=quantization.weight_bits == 7)
        return onnx.load(str(quantized))


def activation_bytes(proto) -> int:
    """Bytes of one sample's float tensors in a shape-inferred graph (inputs, intermediates and outputs of known
    static shape): what a histogram calibrator keeps of each sample."""
    import onnx

    total = 0
    for value in [*proto.graph.input, *proto.graph.value_info, *proto.graph.output]:
        tensor = value.type.tensor_type
        if tensor.elem_type != onnx.TensorProto.FLOAT:
            continue
        dims = [dim.dim_value for dim in tensor.shape.dim]
        if dims and all(dim > 0 for dim in dims):
            total += 4 * int(np.prod(dims))
    return total


def histogram_chunk(sample_bytes: int, samples: int, available: float | None) -> int | None:
    """How many calibration samples the histogram calibrator may hold at once so that they fit in
    ``HISTOGRAM_MEMORY_SHARE`` of the ``available`` memory: None when all of them fit (or the memory is unknown),
    else the largest divisor of ``samples`` that fits (ONNX Runtime's chunks must divide them)."""
    budget = HISTOGRAM_MEMORY_SHARE * available if available is not None else None
    if budget is None or sample_bytes * samples <= budget:
        return None
    if sample_bytes > budget:
        raise SSTNetError(f"--calibration-method percentile: one calibration sample holds {sample_bytes / 2**30:.1f} "
                          f"GiB of activations, more than half the {available / 2**30:.1f} GiB of memory available; "
                          "use --calibration-method minmax (which keeps only each activation's range) or a smaller "
                          "--input-size")
    fit = int(budget // sample_bytes)
    return max(size for size in range(1, fit + 1) if samples % size == 0)
