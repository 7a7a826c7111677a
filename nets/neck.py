"""The motion-coupling neck (spec §3): fuses the T per-frame P3 maps into one map for the key frame (the last).

Two paths, both driven by the key frame k = feats[T-1]:

- reference gating: r = σ-gate from all reference frames together; ``conv_cur`` on r ⊙ k, mixed with k again;
- per-frame coupling: each reference frame i is paired with k by the shared ``conv_gl`` (one call per i, so in
  training each pair gets its own BatchNorm statistics, as released), scaled by the learnable scalar
  ``weight.i`` and summed.

``weight.{T-1}`` exists (the release creates one scalar per frame) but is never used.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from utils.errors import SSTNetError

from .blocks import BaseConv

NECK_WEIGHT_INIT = 0.25


def _two_convs(in_channels: int, mid_channels: int, out_channels: int, last_act: str = "silu") -> nn.Sequential:
    return nn.Sequential(BaseConv(in_channels, mid_channels, 3, 1), BaseConv(mid_channels, out_channels, 3, 1,
                                                                           act=last_act))


class MotionCouplingNeck(nn.Module):
    """Fuses ``num_frames`` maps of ``channels`` channels (oldest first, key frame last) into one such map."""

    def __init__(self, channels: int = 128, num_frames: int = 5) -> None:
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

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(feats) != self.num_frames:
            raise SSTNetError(f"neck built for {self.num_frames} frames got {len(feats)} feature maps")
        key = feats[-1]
        references = feats[:-1]

        gate = self.conv_ref(torch.cat(list(references), dim=1))
        current = self.conv_cur(gate * key)
        current = self.conv_cr_mix(torch.cat([current, key], dim=1))

        coupled = torch.stack([self.conv_gl(torch.cat([ref, key], dim=1)) * self.weight[i]
                               for i, ref in enumerate(references)], dim=0).sum(dim=0)
        coupled = self.conv_gl_mix(coupled)
        return self.conv_final(torch.cat([coupled, current], dim=1))
