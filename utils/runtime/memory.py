"""Peak-memory estimates, checked before a run allocates: a size or batch that cannot fit is refused at once
instead of growing past the machine's memory.

Activations scale with the input's pixels, so one forward of the same model on a tiny input, with hooks recording
every module's output, gives the bytes per input pixel; the estimate scales that to the requested size, batch and
frame count. Training keeps every activation for the backward pass (and about as much again for their
gradients); inference holds only a few at a time, the largest ones bounding the peak.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import SSTNetError
from ..model_spec import ModelSpec

PROBE_SIDE = 64
# Calibrated on this project's 2-core CPU machine (2026-11, issue 12): the measured peaks of
# training steps (nano and s at 256 px) are 0.74-0.83 of these estimates, those of streaming inference passes
# (nano at 256, s at 512, batch 8) 0.76-0.78.
TRAINING_FACTOR = 1.4      # activations kept for backward, plus their gradients and the allocator's slack
INFERENCE_FACTOR = 2.0     # the largest activation and its input
WARN_FRACTION = 0.8


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a run is expected to need at its peak, and what the device has available."""

    needed: float
    available: float | None
    what: str

    def describe(self) -> str:
        have = f"{self.available / 2**30:.1f} GiB available" if self.available is not None else "available unknown"
        return f"{self.what} needs about {self.needed / 2**30:.1f} GiB (estimated), {have}"


def available_bytes(device: torch.device) -> float | None:
    """Free memory of ``device``: the GPU's free memory, or the system's MemAvailable on Linux."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return float(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _activation_bytes(model: torch.nn.Module, spec: ModelSpec, training: bool) -> tuple[float, float]:
    """(sum, max) over the model's modules of their output bytes per input pixel, for one sample of T frames."""
    outputs: list[int] = []

    def record(module, inputs, output) -> None:
        tensors = output if isinstance(output, (tuple, list)) else (output,)
        outputs.append(sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor)))

    leaves = [module for module in model.modules() if not list(module.children())]
    handles = [module.register_forward_hook(record) for module in leaves]
    was_training = model.training
    try:
        model.train(training)
        x = torch.zeros(1, 3, spec.num_frame, PROBE_SIDE, PROBE_SIDE)
        with torch.set_grad_enabled(training):
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    pixels = PROBE_SIDE * PROBE_SIDE
    return sum(outputs) / pixels, max(outputs) / pixels


def estimate_peak(spec: ModelSpec, batch: int, training: bool, num_classes: int = 1,
                  frames_at_once: int = 1) -> float:
    """Bytes expected at the peak of a training step (``training``) or an inference pass at ``batch``, whose
    backbone sees ``frames_at_once`` frames per sample together (streaming: 1; the window engine: T)."""
    from nets import Network

    model = Network(num_classes, spec.num_frame, spec.phi, lstm_hidden=spec.lstm_hidden, motion_branch=training)
    parameters = sum(p.numel() * p.element_size() for p in model.parameters())
    total, largest = _activation_bytes(model, spec, training)
    pixels = spec.input_shape[0] * spec.input_shape[1]
    if training:
        # Weights, their gradients, two optimizer moments and the EMA copy.
        return TRAINING_FACTOR * total * pixels * batch + 5 * parameters
    return INFERENCE_FACTOR * largest * pixels * batch * frames_at_once + parameters


def check_memory(spec: ModelSpec, batch: int, training: bool, device: torch.device, num_classes: int = 1,
                 frames_at_once: int = 1, note=print) -> MemoryEstimate:
    """Refuse a run whose estimated peak exceeds the memory available on ``device``; note one that comes close."""
    needed = estimate_peak(spec, batch, training, num_classes, frames_at_once)
    what = (f"{'training' if training else 'inference'} at --input-size {spec.input_size} with --batch-size {batch} "
            f"and {spec.num_frame} frames")
    estimate = MemoryEstimate(needed, available_bytes(device), what)
    if estimate.available is not None and math.isfinite(needed):
        if needed > estimate.available:
            raise SSTNetError(f"--input-size {spec.input_size}: {estimate.describe()}; lower --input-size or "
                              "--batch-size")
        if needed > WARN_FRACTION * estimate.available:
            note(f"note: {estimate.describe()}")
    return estimate
