"""The SSTNet detector (docs/design.md, Backbone to Motion branch): per-frame YOLOX features, motion-coupling neck,
one-level decoupled head,
and, in training only, the cross-slice ConvLSTM branch whose features must reproduce the backbone's (motion loss).

Input x: B×3×T×S_h×S_w (frames oldest first, key frame last), S_h and S_w multiples of 32.
``forward`` returns ``[out]`` in eval mode and ``([out], motion_loss)`` in training mode, with
out = B×(5+C)×S_h/8×S_w/8 raw head output (reg 4, obj 1, cls C).

The defaults build the released model (phi "s", 5 frames), whose state dict matches the authors' key for key.

``computation`` picks how the same function is computed: "released" runs the authors' operations; "fast"
(default) skips work that cannot change the result — the neck applies the key half of ``conv_gl``'s first
convolution once per window, the motion branch merges its two gate convolutions, leaves out inputs known to
be zero and skips the motion update nobody reads (nets/neck.py, nets/convlstm.py), the motion loss applies
``mapping2``'s LeakyReLU after the max-pool, and SiLU runs as one fused op (nets/blocks.py). Both give the same
outputs, losses and gradients up to float rounding; the state dict is the same.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from utils.errors import SSTNetError

from .backbone import FeatureExtractor, get_variant
from .blocks import SiLU
from .convlstm import CrossSliceConvLSTM
from .head import DecoupledHead
from .neck import MotionCouplingNeck

INPUT_MULTIPLE = 32  # the darknet's deepest stride
HEAD_STRIDE = 8

# Released motion branch: frames mapped to 64 channels at stride 4, one slice, one layer, 3×3 kernels.
LSTM_HIDDEN = 64
LSTM_SLICES = 1
LSTM_LAYERS = 1
LSTM_KERNEL = 3

COMPUTATIONS = ("fast", "released")


class Network(nn.Module):
    """SSTNet. ``phi`` picks the YOLOX size; ``lstm_*`` shrink the motion branch (tests), defaults as released.

    ``lstm_hidden`` is both the width ``mapping1`` maps each frame to and the ConvLSTM's hidden width (the
    released node needs the two equal). ``computation``: "fast" or "released" (module docstring); change it
    later with :meth:`set_computation`. ``motion_branch=False`` leaves out the training-only motion branch (an
    inference model: nothing of it runs outside training, and its width then allocates nothing); such a model can
    only be run in eval mode.
    """

    def __init__(self, num_classes: int = 1, num_frame: int = 5, phi: str = "s", lstm_hidden: int = LSTM_HIDDEN,
                 lstm_slices: int = LSTM_SLICES, lstm_layers: int = LSTM_LAYERS,
                 lstm_kernel: int = LSTM_KERNEL, computation: str = "fast", motion_branch: bool = True) -> None:
        super().__init__()
        if num_frame < 2:
            raise SSTNetError(f"num_frame {num_frame}: SSTNet needs at least 2 frames")
        if num_classes < 1:
            raise SSTNetError(f"num_classes {num_classes}: must be at least 1")
        variant = get_variant(phi)
        self.num_classes = num_classes
        self.num_frame = num_frame
        self.phi = phi
        T = num_frame

        self.backbone = FeatureExtractor(variant.depth, variant.width, depthwise=variant.depthwise)
        c = self.channels = self.backbone.out_channels
        self.neck = MotionCouplingNeck(c, num_frame)
        self.head = DecoupledHead(num_classes, in_channels=c, hidden=2 * c)

        self.motion_branch = motion_branch
        if motion_branch:
            # Motion branch (training only). mapping0 is part of the released checkpoint but never used.
            self.mapping0 = nn.Sequential(nn.Conv2d(c * T, c, kernel_size=1, bias=False), nn.LeakyReLU())
            self.SSTNet = CrossSliceConvLSTM(lstm_hidden, lstm_hidden, lstm_kernel, num_slices=lstm_slices,
                                             num_layers=lstm_layers)
            self.mapping1 = nn.Sequential(
                nn.Conv2d(3, 32, kernel_size=5, stride=4, padding=1, bias=False), nn.LeakyReLU(),
                nn.Conv2d(32, lstm_hidden, kernel_size=1, bias=False), nn.LeakyReLU())
            # Followed in motion_loss by a max-pool to P3's size (the release hard-codes 64×64, i.e. S = 512).
            self.mapping2 = nn.Sequential(nn.Conv2d(lstm_hidden * T, c * T, kernel_size=1, bias=False),
                                          nn.LeakyReLU())
        self.set_computation(computation)

    def set_computation(self, computation: str) -> Network:
        """Compute with "fast" or "released" from now on (same function, same parameters); returns the model."""
        if computation not in COMPUTATIONS:
            raise SSTNetError(f"computation {computation!r}: expected one of {', '.join(COMPUTATIONS)}")
        self.computation = computation
        fast = computation == "fast"
        self.neck.fast = fast
        if self.motion_branch:
            self.SSTNet.fast = fast
        for module in self.modules():
            if isinstance(module, SiLU):
                module.fused = fast
        return self

    # ------------------------------------------------------------------ steps
    def check_input(self, x: torch.Tensor) -> None:
        """Fail with a clear message unless x is B×3×T×H×W with H and W multiples of 32."""
        if x.dim() != 5 or x.shape[1] != 3 or x.shape[2] != self.num_frame:
            raise SSTNetError(f"expected input B×3×{self.num_frame}×H×W, got {tuple(x.shape)}")
        height, width = x.shape[-2:]
        if height % INPUT_MULTIPLE or width % INPUT_MULTIPLE or not height or not width:
            raise SSTNetError(f"input size {height}×{width}: both sides must be positive multiples of "
                              f"{INPUT_MULTIPLE}")

    def extract_frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """One frame per sample, B×3×H×W → its P3 map B×c×H/8×W/8 (backbone + top-down path)."""
        return self.backbone(frames)

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """What a streaming caller keeps per frame for :meth:`detect`, B×3×H×W → one tensor per frame.

        Released computation: the P3 map (B×c×H/8×W/8). Fast: P3 and its reference projection concatenated along
        channels (B×3c×H/8×W/8: channels [0, c) P3, [c, 3c) the neck's projection, see
        ``MotionCouplingNeck.project_references``), so a frame's share of every window it belongs to is computed
        once.
        """
        p3 = self.extract_frame_features(frames)
        if self.computation == "released":
            return p3
        return torch.cat([p3, self.neck.project_references(p3)], dim=1)

    def extract_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The T per-frame P3 maps of x (B×3×T×H×W), oldest first.

        In training the frames go through the backbone one at a time, so each call's BatchNorm statistics are
        over the batch of that frame only, as released. In eval BatchNorm uses running statistics and the
        result does not depend on the grouping, so the B·T frames go through in one call.
        """
        if self.training:
            return [self.extract_frame_features(x[:, :, t]) for t in range(x.shape[2])]
        batch, _, steps, height, width = x.shape
        frames = x.transpose(1, 2).reshape(batch * steps, 3, height, width)
        feats = self.extract_frame_features(frames)
        feats = feats.reshape(batch, steps, *feats.shape[1:])
        return list(feats.unbind(dim=1))

    def detect(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Neck + head on T per-frame maps, oldest first: the raw B×(5+C)×H/8×W/8 output.

        Each map is a P3 map (c channels, :meth:`extract_frame_features`) or P3 with its reference projection
        (3c channels, :meth:`frame_features` in the fast computation); either is accepted in both computations.
        """
        c = self.channels
        p3, projections = [], []
        for index, feat in enumerate(feats):
            if feat.dim() != 4 or feat.shape[1] not in (c, 3 * c):
                raise SSTNetError(f"detect: frame map {index} has shape {tuple(feat.shape)}, expected "
                                  f"B×{c}×h×w (P3) or B×{3 * c}×h×w (P3 and its reference projection)")
            p3.append(feat[:, :c])
            projections.append(feat[:, c:] if feat.shape[1] == 3 * c else None)
        return self.head(self.neck(p3, projections))

    def motion_features(self, x: torch.Tensor) -> torch.Tensor:
        """``mapping1`` on every frame, then the cross-slice ConvLSTM: B×T×hidden×H/4×W/4."""
        seq = torch.stack([self.mapping1(x[:, :, t]) for t in range(x.shape[2])], dim=1)
        return self.SSTNet(seq)

    def motion_loss(self, x: torch.Tensor, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """MSE between the concatenated P3 maps (B×cT×H/8×W/8) and ``mapping2`` of the concatenated ConvLSTM
        outputs, max-pooled to P3's size. Gradients reach both the backbone and the motion branch."""
        motion = self.motion_features(x).flatten(start_dim=1, end_dim=2)
        size = tuple(feats[0].shape[-2:])
        if self.computation == "released":
            predicted = F.adaptive_max_pool2d(self.mapping2(motion), size)
        else:
            # LeakyReLU is non-decreasing, so it commutes with the max-pool: apply it to the pooled map.
            conv, leaky_relu = self.mapping2
            predicted = leaky_relu(F.adaptive_max_pool2d(conv(motion), size))
        return F.mse_loss(torch.cat(list(feats), dim=1), predicted)

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor):
        self.check_input(x)
        feats = self.extract_features(x)
        if self.training:
            if not self.motion_branch:
                raise SSTNetError("this model was built without its motion branch (motion_branch=False): "
                                  "it runs in eval mode only")
            loss = self.motion_loss(x, feats)
            return [self.detect(feats)], loss
        return [self.detect(feats)]
