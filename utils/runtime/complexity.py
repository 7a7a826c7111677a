"""What SSTNet costs: parameters and FLOPs, in total and per top-level part (backbone, neck, head, motion branch).

The one FLOP counting of the project (``torch.utils.flop_counter``: a multiply-add counts 2), used by summary.py and
benchmarks/bench.py, so their figures agree. FLOPs are split over the parts by the module that runs them: forward
hooks on every submodule of the model say which part is running when each FLOP is counted.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nets.weights import MODEL_PARTS, model_part

OTHER = "other"  # FLOPs run outside every submodule (none in a forward of Network; a backward's all land here)


@dataclass
class FlopCount:
    """The FLOPs of one computation: the total, and by part (``other``: counted outside every submodule)."""

    total: int = 0
    by_part: dict[str, int] = field(default_factory=lambda: dict.fromkeys((*MODEL_PARTS, OTHER), 0))

    @property
    def gflops(self) -> float:
        return self.total / 1e9


def parameters_by_part(model: nn.Module) -> dict[str, int]:
    """Number of parameters of each part of ``model`` (``MODEL_PARTS`` order)."""
    counts = dict.fromkeys(MODEL_PARTS, 0)
    for name, parameter in model.named_parameters():
        counts[model_part(name)] += parameter.numel()
    return counts


@contextmanager
def _attributed_to_parts(model: nn.Module, counter: FlopCounterMode, count: FlopCount) -> Iterator[None]:
    """While active, add the FLOPs each outermost submodule call of ``model`` runs to that submodule's part."""
    running: dict[str, Any] = {"module": None, "part": None, "start": 0}

    def enter(part: str, module: nn.Module, args: Any) -> None:
        if running["module"] is None:
            running.update(module=module, part=part, start=counter.get_total_flops())

    def leave(module: nn.Module, args: Any, output: Any) -> None:
        if running["module"] is module:
            count.by_part[running["part"]] += counter.get_total_flops() - running["start"]
            running["module"] = None

    handles = []
    for name, module in model.named_modules():
        if name:
            part = model_part(name)
            handles.append(module.register_forward_pre_hook(lambda module, args, part=part: enter(part, module, args)))
            handles.append(module.register_forward_hook(leave))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def count_flops(run: Callable[[], object], model: nn.Module | None = None) -> FlopCount:
    """The FLOPs of ``run()``; with ``model``, split over its parts (forward FLOPs only: a backward's go to
    ``other``)."""
    count = FlopCount()
    with FlopCounterMode(display=False) as counter:
        if model is None:
            run()
        else:
            with _attributed_to_parts(model, counter, count):
                run()
    count.total = counter.get_total_flops()
    count.by_part[OTHER] = count.total - sum(value for part, value in count.by_part.items() if part != OTHER)
    return count


def _window(model: nn.Module, input_shape: tuple[int, int], num_frame: int) -> torch.Tensor:
    parameter = next(model.parameters())
    return torch.zeros(1, 3, num_frame, *input_shape, device=parameter.device, dtype=parameter.dtype)


@torch.no_grad()
def window_flops(model: nn.Module, input_shape: tuple[int, int], num_frame: int) -> FlopCount:
    """One sample's inference as released: a T-frame window through the eval-mode model (every frame through the
    backbone)."""
    was_training = model.training
    model.eval()
    try:
        x = _window(model, input_shape, num_frame)
        return count_flops(lambda: model(x), model)
    finally:
        model.train(was_training)


@torch.no_grad()
def stream_frame_flops(model: nn.Module, input_shape: tuple[int, int], num_frame: int) -> FlopCount:
    """One new frame in the streaming engine: the frame through the backbone once, then the neck and head on the
    cached window (total only: the fast computation runs part of the neck outside its forward)."""
    was_training = model.training
    model.eval()
    try:
        x = _window(model, input_shape, num_frame)
        cached = [model.frame_features(x[:, :, t]) for t in range(num_frame)]
        return count_flops(lambda: (model.frame_features(x[:, :, 0]), model.detect(cached)))
    finally:
        model.train(was_training)


@torch.no_grad()
def training_forward_flops(model: nn.Module, input_shape: tuple[int, int], num_frame: int) -> FlopCount:
    """One sample's training forward (the motion branch included, the detection loss not), on a copy of ``model`` so
    its BatchNorm statistics stay as they are."""
    trained = copy.deepcopy(model).train()
    x = _window(trained, input_shape, num_frame)
    return count_flops(lambda: trained(x), trained)
