"""Deterministic SSTNet weights and inputs for the parity tests (the recipe behind tests/fixtures/
sstnet_reference.pt, reimplemented): every tensor comes from a generator seeded by a hash of its own key."""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch

FIXTURES = Path(__file__).resolve().parent / "fixtures"
LAYOUT = FIXTURES / "sstnet_s_layout.tsv"
REFERENCE = FIXTURES / "sstnet_reference.pt"


def read_layout(path: Path = LAYOUT) -> list[tuple[str, tuple[int, ...], str]]:
    """Rows ``(key, shape, dtype)`` of a layout file (``key<TAB>(d0, d1, ...)<TAB>torch.float32``)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        key, shape, dtype = line.split("\t")
        rows.append((key, tuple(int(s) for s in shape.strip("()").split(",") if s.strip()), dtype))
    return rows


def make_state(layout) -> dict[str, torch.Tensor]:
    """The recipe's weights for ``layout``, independent of module creation order."""
    state = {}
    for key, shape, _ in layout:
        generator = torch.Generator().manual_seed(int(hashlib.sha256(key.encode()).hexdigest()[:8], 16))
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0, dtype=torch.long)
            continue
        r = torch.randn(shape, generator=generator)
        if key.endswith("running_var"):
            value = 0.5 + torch.rand(shape, generator=generator)
        elif key.endswith("running_mean"):
            value = 0.1 * r
        elif ".bn.weight" in key:
            value = 1.0 + 0.1 * r
        elif key.endswith("bias"):
            value = 0.05 * r
        elif key.startswith("neck.weight"):
            value = 0.25 + 0.05 * r
        else:
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
            value = r / math.sqrt(fan_in)
        state[key] = value.float()
    return state


def make_input(shape, seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """‖ours − ref‖ / ‖ref‖."""
    return float((ours.double() - reference.double()).norm() / reference.double().norm())
