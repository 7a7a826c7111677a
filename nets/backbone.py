"""YOLOX CSPDarknet and the top-down feature extractor that turns one frame into its P3 map (docs/design.md, Backbone).

State-dict layout (prefix ``backbone.`` inside :class:`nets.sstnet.Network`): the darknet under ``backbone.``,
then ``lateral_conv0``, ``C3_p4``, ``reduce_conv1`` and ``C3_p3`` — the same names and shapes as the top-down
half of the official YOLOX PAFPN, so COCO-pretrained YOLOX weights load onto it by key.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from utils.errors import SSTNetError

from .blocks import BaseConv, CSPLayer, DWConv, Focus, SPPBottleneck


@dataclass(frozen=True)
class Variant:
    """A YOLOX size: depth and width multipliers, and whether the darknet uses depthwise convolutions."""

    depth: float
    width: float
    depthwise: bool = False


# The YOLOX model family; SSTNet as released is "s".
VARIANTS: dict[str, Variant] = {
    "nano": Variant(0.33, 0.25, depthwise=True),
    "tiny": Variant(0.33, 0.375),
    "s": Variant(0.33, 0.50),
    "m": Variant(0.67, 0.75),
    "l": Variant(1.0, 1.0),
    "x": Variant(1.33, 1.25),
}

# Channels of dark3 / dark4 / dark5 at width 1.0; the P3 output has int(256 · width) channels.
BASE_IN_CHANNELS = (256, 512, 1024)


def get_variant(phi: str) -> Variant:
    """The :class:`Variant` called ``phi`` (nano, tiny, s, m, l, x)."""
    try:
        return VARIANTS[phi]
    except KeyError:
        raise SSTNetError(f"phi {phi!r}: expected one of {', '.join(VARIANTS)}") from None


class CSPDarknet(nn.Module):
    """YOLOX CSPDarknet: ``stem`` (Focus) and ``dark2``…``dark5``; returns the requested stages by name."""

    def __init__(self, dep_mul: float, wid_mul: float, out_features: tuple[str, ...] = ("dark3", "dark4", "dark5"),
                 depthwise: bool = False, act: str = "silu") -> None:
        super().__init__()
        self.out_features = tuple(out_features)
        conv = DWConv if depthwise else BaseConv
        base_channels = int(wid_mul * 64)
        base_depth = max(round(dep_mul * 3), 1)

        self.stem = Focus(3, base_channels, ksize=3, act=act)
        self.dark2 = nn.Sequential(
            conv(base_channels, base_channels * 2, 3, 2, act=act),
            CSPLayer(base_channels * 2, base_channels * 2, n=base_depth, depthwise=depthwise, act=act),
        )
        self.dark3 = nn.Sequential(
            conv(base_channels * 2, base_channels * 4, 3, 2, act=act),
            CSPLayer(base_channels * 4, base_channels * 4, n=base_depth * 3, depthwise=depthwise, act=act),
        )
        self.dark4 = nn.Sequential(
            conv(base_channels * 4, base_channels * 8, 3, 2, act=act),
            CSPLayer(base_channels * 8, base_channels * 8, n=base_depth * 3, depthwise=depthwise, act=act),
        )
        self.dark5 = nn.Sequential(
            conv(base_channels * 8, base_channels * 16, 3, 2, act=act),
            SPPBottleneck(base_channels * 16, base_channels * 16, activation=act),
            CSPLayer(base_channels * 16, base_channels * 16, n=base_depth, shortcut=False, depthwise=depthwise,
                     act=act),
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = {}
        for name in ("stem", "dark2", "dark3", "dark4", "dark5"):
            x = getattr(self, name)(x)
            if name in self.out_features:
                outputs[name] = x
        return outputs


class FeatureExtractor(nn.Module):
    """CSPDarknet plus the top-down path: dark5 → ``lateral_conv0`` → up ⊕ dark4 → ``C3_p4`` →
    ``reduce_conv1`` → up ⊕ dark3 → ``C3_p3``. Maps one B×3×H×W frame to its P3 map (stride 8)."""

    def __init__(self, depth: float = 0.33, width: float = 0.50, depthwise: bool = False, act: str = "silu",
                 in_channels: tuple[int, int, int] = BASE_IN_CHANNELS) -> None:
        super().__init__()
        c3, c4, c5 = (int(c * width) for c in in_channels)
        n = round(3 * depth)
        self.out_channels = c3
        self.backbone = CSPDarknet(depth, width, depthwise=depthwise, act=act)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.lateral_conv0 = BaseConv(c5, c4, 1, 1, act=act)
        self.C3_p4 = CSPLayer(2 * c4, c4, n, False, depthwise=depthwise, act=act)
        self.reduce_conv1 = BaseConv(c4, c3, 1, 1, act=act)
        self.C3_p3 = CSPLayer(2 * c3, c3, n, False, depthwise=depthwise, act=act)

    @classmethod
    def from_variant(cls, phi: str = "s", act: str = "silu") -> "FeatureExtractor":
        variant = get_variant(phi)
        return cls(variant.depth, variant.width, depthwise=variant.depthwise, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        dark3, dark4, dark5 = features["dark3"], features["dark4"], features["dark5"]
        p5 = self.lateral_conv0(dark5)
        p4 = self.C3_p4(torch.cat([self.upsample(p5), dark4], dim=1))
        p4 = self.reduce_conv1(p4)
        return self.C3_p3(torch.cat([self.upsample(p4), dark3], dim=1))
