"""Device and mixed-precision selection from the command-line strings ``--device`` and ``--amp``."""
from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

from ..errors import SSTNetError
from .cpus import default_threads

AMP_DTYPES = {"none": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks the first GPU when CUDA is available, else the CPU; ``cuda``/``cuda:N`` must exist."""
    name = name.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SSTNetError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SSTNetError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SSTNetError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif device.type != "cpu":
        raise SSTNetError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N")
    return device


def check_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``--amp``: fp16 needs CUDA (with a GradScaler), bf16 works on CPU and CUDA."""
    if amp not in AMP_DTYPES:
        raise SSTNetError(f"--amp {amp!r}: expected one of {', '.join(AMP_DTYPES)}")
    if amp == "fp16" and device.type != "cuda":
        raise SSTNetError("--amp fp16 needs a CUDA device; use --amp bf16 on the CPU")
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise SSTNetError("--amp bf16: this GPU does not support bfloat16; use --amp fp16")
    return AMP_DTYPES[amp]


def apply_threads(threads: int | None, workers: int = 0) -> int:
    """Set PyTorch's intra-op threads (``threads``, or the default of :func:`default_threads` for ``workers``
    DataLoader workers) before any tensor work; returns the number set."""
    count = threads if threads is not None else default_threads(workers)
    torch.set_num_threads(count)
    return count


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (CUDA runs asynchronously), so that wall times measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, dtype: torch.dtype | None) -> ContextManager:
    """Autocast to ``dtype`` on ``device``, or a no-op for full precision."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
