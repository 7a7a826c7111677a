"""YOLOX building blocks (docs/design.md, Backbone): convolution units, Focus stem, CSP layers and the SPP bottleneck.

Every ``BaseConv`` is Conv2d(bias=False, padding=(k-1)//2) → BatchNorm2d(eps=1e-3, momentum=0.03) → activation,
with the state-dict names ``conv`` / ``bn`` the released weights use.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from utils.errors import SSTNetError

BN_EPS = 1e-3
BN_MOMENTUM = 0.03
ACTIVATIONS = ("silu", "relu", "lrelu", "sigmoid")


class SiLU(nn.Module):
    """x · σ(x), computed as the release does (two ops). ``nn.SiLU``'s fused kernel rounds differently; with
    BatchNorm in training mode those differences grow through the network (about 1.6e-5 relative on the head
    output at 512 px), while this form reproduces the authors' outputs bit for bit on the same CPU.

    ``fused`` (set by ``Network``'s fast computation) uses that fused kernel: the same function in one op
    forward and one backward instead of two and four.
    """

    def __init__(self, fused: bool = False) -> None:
        super().__init__()
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x) if self.fused else x * torch.sigmoid(x)


def get_activation(name: str = "silu", inplace: bool = False) -> nn.Module:
    """The activation module called ``name``: silu, relu, lrelu (slope 0.1, as in YOLOX) or sigmoid.
    ``inplace`` applies to relu and lrelu only."""
    if name == "silu":
        return SiLU()
    if name == "relu":
        return nn.ReLU(inplace=inplace)
    if name == "lrelu":
        return nn.LeakyReLU(0.1, inplace=inplace)
    if name == "sigmoid":
        return nn.Sigmoid()
    raise SSTNetError(f"activation {name!r}: expected one of {', '.join(ACTIVATIONS)}")


class BaseConv(nn.Module):
    """Conv2d (no bias, 'same' padding for odd kernels) → BatchNorm2d → activation."""

    def __init__(self, in_channels: int, out_channels: int, ksize: int, stride: int = 1, groups: int = 1,
                 bias: bool = False, act: str = "silu") -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=ksize, stride=stride, padding=(ksize - 1) // 2,
                              groups=groups, bias=bias)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = get_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class DWConv(nn.Module):
    """Depthwise ``BaseConv`` (``dconv``, groups = in_channels), then a pointwise 1×1 ``BaseConv`` (``pconv``)."""

    def __init__(self, in_channels: int, out_channels: int, ksize: int, stride: int = 1, act: str = "silu") -> None:
        super().__init__()
        self.dconv = BaseConv(in_channels, in_channels, ksize, stride=stride, groups=in_channels, act=act)
        self.pconv = BaseConv(in_channels, out_channels, 1, stride=1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pconv(self.dconv(x))


class Focus(nn.Module):
    """Space-to-depth (4·C channels, order top-left, bottom-left, top-right, bottom-right) then a ``BaseConv``."""

    def __init__(self, in_channels: int, out_channels: int, ksize: int = 1, stride: int = 1,
                 act: str = "silu") -> None:
        super().__init__()
        self.conv = BaseConv(in_channels * 4, out_channels, ksize, stride, act=act)

    @staticmethod
    def space_to_depth(x: torch.Tensor) -> torch.Tensor:
        """B×C×H×W → B×4C×H/2×W/2; rows are the second-to-last axis, so 'bottom' means odd rows."""
        top_left = x[..., ::2, ::2]
        bottom_left = x[..., 1::2, ::2]
        top_right = x[..., ::2, 1::2]
        bottom_right = x[..., 1::2, 1::2]
        return torch.cat((top_left, bottom_left, top_right, bottom_right), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.space_to_depth(x))


class Bottleneck(nn.Module):
    """1×1 ``conv1`` to ``out·expansion`` channels, 3×3 ``conv2`` back to ``out``; residual add when allowed."""

    def __init__(self, in_channels: int, out_channels: int, shortcut: bool = True, expansion: float = 0.5,
                 depthwise: bool = False, act: str = "silu") -> None:
        super().__init__()
        hidden = int(out_channels * expansion)
        conv = DWConv if depthwise else BaseConv
        self.conv1 = BaseConv(in_channels, hidden, 1, stride=1, act=act)
        self.conv2 = conv(hidden, out_channels, 3, stride=1, act=act)
        self.use_add = shortcut and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x))
        return y + x if self.use_add else y


class CSPLayer(nn.Module):
    """CSP block: ``conv1`` → n ``Bottleneck``s (``m``) and a parallel ``conv2``; concat(m, conv2) → ``conv3``."""

    def __init__(self, in_channels: int, out_channels: int, n: int = 1, shortcut: bool = True,
                 expansion: float = 0.5, depthwise: bool = False, act: str = "silu") -> None:
        super().__init__()
        hidden = int(out_channels * expansion)
        self.conv1 = BaseConv(in_channels, hidden, 1, stride=1, act=act)
        self.conv2 = BaseConv(in_channels, hidden, 1, stride=1, act=act)
        self.conv3 = BaseConv(2 * hidden, out_channels, 1, stride=1, act=act)
        self.m = nn.Sequential(*[Bottleneck(hidden, hidden, shortcut, 1.0, depthwise, act=act) for _ in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(torch.cat((self.m(self.conv1(x)), self.conv2(x)), dim=1))


class SPPBottleneck(nn.Module):
    """1×1 ``conv1`` to in/2, stride-1 max-pools (5, 9, 13) concatenated after their input, 1×1 ``conv2`` to out."""

    def __init__(self, in_channels: int, out_channels: int, kernel_sizes: tuple[int, ...] = (5, 9, 13),
                 activation: str = "silu") -> None:
        super().__init__()
        hidden = in_channels // 2
        self.conv1 = BaseConv(in_channels, hidden, 1, stride=1, act=activation)
        self.m = nn.ModuleList([nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2) for k in kernel_sizes])
        self.conv2 = BaseConv(hidden * (len(kernel_sizes) + 1), out_channels, 1, stride=1, act=activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [pool(x) for pool in self.m], dim=1))
