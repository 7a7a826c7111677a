"""What this machine attains on the model's dominant operations, the ceiling each engine is measured against.

The dominant operation is the dense convolution of the streaming engine's per-frame work with the most FLOPs, at
its exact shape (channels, kernel, stride, input map); the GEMM is the same work as one matrix product (M = output
positions, K = input channels × kernel area, N = output channels). A thin dominant layer can run below what the
machine does on the model's wider ones, so the next convolutions by FLOPs and the widest one are timed too, and the
ceiling in each precision is the best rate over them all. Each is timed in float32 (PyTorch), bf16 (PyTorch, only
where the CPU multiplies bf16 natively) and int8 (ONNX Runtime, the QDQ form export_onnx.py --int8 writes: uint8
activations × int8 weights). An engine's fraction of the limit is its per-frame GFLOPs divided by its time per
frame, over that ceiling in its precision.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from benchmarks.measure import timed
from utils.runtime.cpu_features import native_bf16


@dataclass(frozen=True)
class ConvShape:
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    height: int  # of the input map
    width: int

    @property
    def output_positions(self) -> int:
        padding = self.kernel // 2
        out_h = (self.height + 2 * padding - self.kernel) // self.stride + 1
        out_w = (self.width + 2 * padding - self.kernel) // self.stride + 1
        return out_h * out_w

    @property
    def flops(self) -> int:
        """Multiply-adds counted as 2, as the rest of the benchmark counts them."""
        return 2 * self.output_positions * self.in_channels * self.kernel ** 2 * self.out_channels

    def describe(self) -> str:
        return (f"{self.kernel}×{self.kernel} conv {self.in_channels}→{self.out_channels}, stride {self.stride}, on "
                f"{self.height}×{self.width}")


def model_convs(model: nn.Module, input_shape: tuple[int, int]) -> list[ConvShape]:
    """The distinct dense (groups = 1) convolutions of one frame's pass through ``model.frame_features``, most
    FLOPs first."""
    found: set[ConvShape] = set()

    def record(module: nn.Conv2d, inputs, output) -> None:
        if module.groups == 1:
            height, width = inputs[0].shape[-2:]
            found.add(ConvShape(module.in_channels, module.out_channels, module.kernel_size[0], module.stride[0],
                                int(height), int(width)))

    hooks = [module.register_forward_hook(record) for module in model.modules() if isinstance(module, nn.Conv2d)]
    try:
        with torch.no_grad():
            model.eval().frame_features(torch.zeros(1, 3, *input_shape))
    finally:
        for hook in hooks:
            hook.remove()
    return sorted(found, key=lambda shape: (-shape.flops, shape.describe()))


def ceiling_convs(model: nn.Module, input_shape: tuple[int, int], count: int = 3) -> list[ConvShape]:
    """The shapes the ceiling is taken over: the ``count`` convolutions with the most FLOPs (the dominant first) and
    the widest one (the most multiply-adds per output position), which a thin dominant layer may run far below."""
    shapes = model_convs(model, input_shape)
    chosen = shapes[:count]
    widest = max(shapes, key=lambda shape: (shape.in_channels * shape.kernel ** 2 * shape.out_channels, shape.flops))
    return chosen + ([widest] if widest not in chosen else [])


def _int8_session(module: nn.Module, example: torch.Tensor, threads: int):
    """An ONNX Runtime session of ``module`` quantized as export_onnx.py --int8 quantizes, run as the engine runs
    graphs, and a feed for it."""
    import onnxruntime as ort

    from utils.deploy.onnx_backend import session_options
    from utils.deploy.onnx_export import quiet_exporter
    from utils.deploy.onnx_int8 import Quantization, quantize_graph

    with quiet_exporter():
        proto = torch.onnx.export(module.eval(), (example,), dynamo=True, input_names=["x"], verbose=False).model_proto
    feeds = [{"x": torch.randn_like(example).numpy()} for _ in range(4)]
    quantized = quantize_graph(proto, feeds, Quantization(float_modules=()))
    session = ort.InferenceSession(quantized.SerializeToString(), session_options(ort, threads),
                                   providers=["CPUExecutionProvider"])
    return session, feeds[0]


class _Matmul(nn.Module):
    def __init__(self, k: int, n: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(k, n) / k ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight


def attainable(shape: ConvShape, repeats: int, int8: bool = True, gemm: bool = True) -> dict[str, float]:
    """GFLOP/s attained on ``shape``'s convolution and (``gemm``) its GEMM: float32, bf16 (where native), int8 (ONNX
    Runtime).

    Threads: PyTorch's current setting, for both libraries."""
    threads = torch.get_num_threads()
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    conv = nn.Conv2d(shape.in_channels, shape.out_channels, shape.kernel, shape.stride, shape.kernel // 2,
                     bias=False).eval()
    image = torch.randn(1, shape.in_channels, shape.height, shape.width)
    m, k, n = shape.output_positions, shape.in_channels * shape.kernel ** 2, shape.out_channels
    matmul = _Matmul(k, n).eval()
    rows = torch.randn(m, k)
    rates = {}
    with torch.no_grad():
        rates["conv_float32"] = shape.flops / timed(lambda: conv(image), cpu, repeats) / 1e9
        if gemm:
            rates["gemm_float32"] = 2 * m * k * n / timed(lambda: matmul(rows), cpu, repeats) / 1e9
        if native_bf16():
            conv_bf16 = copy.deepcopy(conv).to(torch.bfloat16, memory_format=torch.channels_last)
            image_bf16 = image.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
            rates["conv_bf16"] = shape.flops / timed(lambda: conv_bf16(image_bf16), cpu, repeats) / 1e9
            if gemm:
                matmul_bf16, rows_bf16 = copy.deepcopy(matmul).to(torch.bfloat16), rows.to(torch.bfloat16)
                rates["gemm_bf16"] = 2 * m * k * n / timed(lambda: matmul_bf16(rows_bf16), cpu, repeats) / 1e9
    if int8:
        session, feed = _int8_session(conv, image, threads)
        rates["conv_int8"] = shape.flops / timed(lambda: session.run(None, feed), cpu, repeats) / 1e9
        if gemm:
            session, feed = _int8_session(matmul, rows, threads)
            rates["gemm_int8"] = 2 * m * k * n / timed(lambda: session.run(None, feed), cpu, repeats) / 1e9
    return {name: float(np.round(rate, 2)) for name, rate in rates.items()}
