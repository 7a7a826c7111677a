"""The motion-coupling neck (docs/design.md, Motion-coupling neck): fuses the T per-frame P3 maps into one map for the
key frame (the last).

Two paths, both driven by the key frame k = feats[T-1]:

- reference gating: r = σ-gate from all reference frames together; ``conv_cur`` on r ⊙ k, mixed with k again;
- per-frame coupling: each reference frame i is paired with k by the shared ``conv_gl`` (one call per i, so in
  training each pair gets its own BatchNorm statistics, as released), scaled by the learnable scalar
  ``weight.i`` and summed.

``weight.{T-1}`` exists (the release creates one scalar per frame) but is never used.

Two computations of the same function (``fast`` switches between them). The first convolution of ``conv_gl``
is linear over concat(ref, key), so it equals conv_ref_half(ref) + conv_key_half(key) with its weight split along
the input channels; BatchNorm and SiLU come after the sum, so each pair still gets its own BatchNorm statistics
in training. The fast computation applies the key half once per window instead of T-1 times, and takes the
reference half of a frame (its "reference projection", :meth:`MotionCouplingNeck.project_references`) from the
caller when given: a streaming caller computes it once per frame, not once per window.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from utils.errors import SSTNetError

from .blocks import BaseConv

NECK_WEIGHT_INIT = 0.25


def _two_convs(in_channels: int, mid_channels: int, out_channels: int, last_act: str = "silu") -> nn.Sequential:
    return nn.Sequential(BaseConv(in_channels, mid_channels, 3, 1), BaseConv(mid_channels, out_channels, 3, 1,
                                                                           act=last_act))


class MotionCouplingNeck(nn.Module):
    """Fuses ``num_frames`` maps of ``channels`` channels (oldest first, key frame last) into one such map.
    ``fast`` picks the computation (module docstring)."""

    def __init__(self, channels: int = 128, num_frames: int = 5, fast: bool = True) -> None:
        super().__init__()
        if num_frames < 2:
            raise SSTNetError(f"num_frames {num_frames}: the neck needs at least 2 frames")
        c = channels
        self.channels = c
        self.num_frames = num_frames
        self.weight = nn.ParameterList(nn.Parameter(torch.tensor([NECK_WEIGHT_INIT])) for _ in range(num_frames))
        self.conv_ref = _two_convs(c * (num_frames - 1), 2 * c, c, last_act="sigmoid")
        self.conv_cur = _two_convs(c, c, c)
        self.conv_gl = _two_convs(2 * c, 2 * c, c)
        self.conv_gl_mix = _two_convs(c, c, c)
        self.conv_cr_mix = _two_convs(2 * c, 2 * c, c)
        self.conv_final = _two_convs(2 * c, 2 * c, c)
        self.fast = fast

    def project_references(self, feats: torch.Tensor) -> torch.Tensor:
        """The reference half of ``conv_gl``'s first convolution (no BatchNorm): B×c×h×w → B×2c×h×w."""
        conv = self.conv_gl[0].conv
        return F.conv2d(feats, conv.weight[:, :self.channels], None, conv.stride, conv.padding)

    def forward(self, feats: Sequence[torch.Tensor],
                projections: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
        """The fused map of the T maps ``feats``. ``projections`` (fast computation only, ignored otherwise):
        :meth:`project_references` of each map where the caller has it, None where not (computed here)."""
        if len(feats) != self.num_frames:
            raise SSTNetError(f"neck built for {self.num_frames} frames got {len(feats)} feature maps")
        if projections is not None and len(projections) != self.num_frames:
            raise SSTNetError(f"neck built for {self.num_frames} frames got {len(projections)} reference projections")
        key = feats[-1]
        references = feats[:-1]

        gate = self.conv_ref(torch.cat(list(references), dim=1))
        current = self.conv_cur(gate * key)
        current = self.conv_cr_mix(torch.cat([current, key], dim=1))

        if self.fast:
            coupled = self._couple_fast(references, key, projections)
        else:
            coupled = torch.stack([self.conv_gl(torch.cat([ref, key], dim=1)) * self.weight[i]
                                   for i, ref in enumerate(references)], dim=0).sum(dim=0)
        coupled = self.conv_gl_mix(coupled)
        return self.conv_final(torch.cat([coupled, current], dim=1))

    def _couple_fast(self, references: Sequence[torch.Tensor], key: torch.Tensor,
                     projections: Sequence[torch.Tensor | None] | None) -> torch.Tensor:
        """Σ_i weight_i · conv_gl(concat(ref_i, key)), with the first convolution split into its two halves."""
        projected = list(projections[:-1]) if projections is not None else [None] * len(references)
        missing = [i for i, projection in enumerate(projected) if projection is None]
        if missing:  # one convolution call for all of them
            computed = self.project_references(torch.cat([references[i] for i in missing], dim=0))
            for i, projection in zip(missing, computed.split(key.shape[0], dim=0)):
                projected[i] = projection
        first, second = self.conv_gl
        conv = first.conv
        key_half = F.conv2d(key, conv.weight[:, self.channels:], None, conv.stride, conv.padding)
        return torch.stack([second(first.act(first.bn(projection + key_half))) * self.weight[i]
                            for i, projection in enumerate(projected)], dim=0).sum(dim=0)
