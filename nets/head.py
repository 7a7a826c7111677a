"""One-level YOLOX decoupled head (docs/design.md, Head).

``stems.0`` (1×1) widens the fused map to the hidden width; the class branch (``cls_convs.0``, two 3×3) ends in
``cls_preds.0``; the regression branch (``reg_convs.0``) feeds both ``reg_preds.0`` (4) and ``obj_preds.0`` (1).
The output is concat(reg, obj, cls): B×(5+C)×H×W raw logits / offsets, no sigmoid, no decoding. The modules sit
in length-1 ModuleLists so the state-dict names are the YOLOX ones (``head.stems.0...``).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from utils.errors import SSTNetError

from .blocks import BaseConv


class DecoupledHead(nn.Module):
    def __init__(self, num_classes: int = 1, in_channels: int = 128, hidden: int | None = None,
                 act: str = "silu") -> None:
        super().__init__()
        hidden = 2 * in_channels if hidden is None else hidden
        self.num_classes = num_classes
        self.cls_convs = nn.ModuleList([nn.Sequential(BaseConv(hidden, hidden, 3, 1, act=act),
                                                      BaseConv(hidden, hidden, 3, 1, act=act))])
        self.reg_convs = nn.ModuleList([nn.Sequential(BaseConv(hidden, hidden, 3, 1, act=act),
                                                      BaseConv(hidden, hidden, 3, 1, act=act))])
        self.cls_preds = nn.ModuleList([nn.Conv2d(hidden, num_classes, kernel_size=1)])
        self.reg_preds = nn.ModuleList([nn.Conv2d(hidden, 4, kernel_size=1)])
        self.obj_preds = nn.ModuleList([nn.Conv2d(hidden, 1, kernel_size=1)])
        self.stems = nn.ModuleList([BaseConv(in_channels, hidden, 1, 1, act=act)])

    @torch.no_grad()
    def initialize_biases(self, prior_prob: float = 0.01) -> None:
        """Official YOLOX start (not used by the release): objectness and class biases set so that
        σ(bias) = ``prior_prob``."""
        if not 0.0 < prior_prob < 1.0:
            raise SSTNetError(f"prior probability {prior_prob}: must lie strictly between 0 and 1")
        for conv in (*self.cls_preds, *self.obj_preds):
            conv.bias.fill_(-math.log((1.0 - prior_prob) / prior_prob))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stems[0](x)
        cls_output = self.cls_preds[0](self.cls_convs[0](x))
        reg_feat = self.reg_convs[0](x)
        return torch.cat([self.reg_preds[0](reg_feat), self.obj_preds[0](reg_feat), cls_output], dim=1)
