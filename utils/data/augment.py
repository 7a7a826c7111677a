"""Training augmentation: one random draw per sample, applied identically to its T frames.

The motion between the frames of a sample is what SSTNet detects, so every geometric and photometric change is
drawn once per sample and applied to all T frames alike; only sensor noise is fresh in every frame, as a real
sensor's is. Frames arrive letterboxed to the input size (uint8 RGB), boxes as (x1, y1, x2, y2, cls) in input
pixels with pixel edges as coordinates (pixel c covers [c, c + 1)).

The release trains without augmentation (``AugmentConfig()``); its unused helper, a horizontal flip and an HSV
jitter, is ``RELEASE_AUGMENT`` (``--augment``). The other knobs exist for models that must work on scenes they
were not trained on (docs/training.md, the `make real` recipe).
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, fields
from typing import Any, Mapping

import cv2
import numpy as np

from ..errors import SSTNetError
from .preprocess import PAD_VALUE


@dataclass(frozen=True)
class AugmentConfig:
    """Every augmentation knob; zero (and a scale of exactly 1) switches a knob off."""

    flip_lr: float = 0.0
    """Probability of a left-right mirror."""
    flip_ud: float = 0.0
    """Probability of an up-down mirror."""
    translate: float = 0.0
    """Largest shift, as a fraction of the input side; the shift is drawn so that every box stays inside."""
    scale: tuple[float, float] = (1.0, 1.0)
    """Zoom factor range about the input's centre."""
    hsv: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Hue, saturation and value gains are drawn in [1 - g, 1 + g] (the release's jitter)."""
    contrast: float = 0.0
    """Contrast gain about mid-grey drawn in [1 - c, 1 + c]."""
    brightness: float = 0.0
    """Brightness offset drawn in [-b, b] times 255."""
    gamma: float = 0.0
    """Gamma drawn log-uniformly in [1 / (1 + g), 1 + g]."""
    noise: float = 0.0
    """Gaussian sensor noise: a standard deviation in grey levels is drawn in [0, noise] per sample, the noise
    itself is fresh in every frame."""

    def __post_init__(self) -> None:
        for name in ("flip_lr", "flip_ud"):
            _check(name, getattr(self, name), 0.0, 1.0)
        _check("translate", self.translate, 0.0, 1.0)
        _check("contrast", self.contrast, 0.0, 1.0)
        _check("brightness", self.brightness, 0.0, 1.0)
        _check("gamma", self.gamma, 0.0, 10.0)
        _check("noise", self.noise, 0.0, 255.0)
        if len(self.scale) != 2:
            raise SSTNetError(f"--scale {self.scale}: expected MIN MAX")
        for value in self.scale:
            _check("scale", value, 0.1, 10.0)
        if self.scale[0] > self.scale[1]:
            raise SSTNetError(f"--scale {self.scale[0]} {self.scale[1]}: MIN is greater than MAX")
        if len(self.hsv) != 3:
            raise SSTNetError(f"--hsv {self.hsv}: expected three gains (hue, saturation, value)")
        for value in self.hsv:
            _check("hsv", value, 0.0, 1.0)

    @property
    def enabled(self) -> bool:
        """Whether any knob changes a sample."""
        return self != AugmentConfig()


def _check(name: str, value: float, low: float, high: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high):
        raise SSTNetError(f"--{name.replace('_', '-')} {value}: must be a number in [{low}, {high}]")


# The release's helper (flip + HSV jitter), which its training never calls; ``--augment`` turns it on.
RELEASE_AUGMENT = AugmentConfig(flip_lr=0.5, hsv=(0.1, 0.7, 0.4))
AUGMENT_FIELDS = tuple(field.name for field in fields(AugmentConfig))


@dataclass(frozen=True)
class AugmentDraw:
    """One sample's draw: an affine map of pixel centres (None: identity), a grey-level table (None: identity),
    HSV gains (None: off) and the noise level."""

    matrix: np.ndarray | None
    lut: np.ndarray | None
    hsv_gains: tuple[float, float, float] | None
    noise_std: float


def _geometry(config: AugmentConfig, rng: np.random.Generator, input_hw: tuple[int, int],
              boxes: np.ndarray, base_zoom: float = 1.0) -> np.ndarray | None:
    """The 2×3 map of pixel centres: zoom about the centre (``base_zoom`` times the drawn one), mirrors, then a
    whole-pixel shift that keeps boxes in."""
    height, width = input_hw
    flip_x = rng.random() < config.flip_lr
    flip_y = rng.random() < config.flip_ud
    zoom = base_zoom * math.exp(rng.uniform(math.log(config.scale[0]), math.log(config.scale[1])))
    centre_x, centre_y = (width - 1) / 2, (height - 1) / 2
    sx, sy = (-zoom if flip_x else zoom), (-zoom if flip_y else zoom)
    matrix = np.array([[sx, 0.0, centre_x - sx * centre_x], [0.0, sy, centre_y - sy * centre_y]])
    moved = transform_boxes(boxes, matrix)
    shift = []
    for axis, side in ((0, width), (1, height)):
        limit = config.translate * side
        low, high = -limit, limit
        if len(moved):
            # Shifts that keep every box whole inside the input.
            fit_low, fit_high = -moved[:, axis].min(), side - moved[:, axis + 2].max()
            if fit_low <= fit_high:
                low, high = max(low, fit_low), min(high, fit_high)
                if low > high:  # the zoom pushed a box out further than --translate may shift: bring it back
                    low = high = fit_low if fit_low > limit else fit_high
            else:
                low = high = 0.0
        whole_low, whole_high = math.ceil(low), math.floor(high)
        shift.append(float(rng.integers(whole_low, whole_high + 1)) if whole_low <= whole_high
                     else float(round((low + high) / 2)))
    matrix[:, 2] += shift
    return None if np.array_equal(matrix, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]) else matrix


def _grey_table(config: AugmentConfig, rng: np.random.Generator) -> np.ndarray | None:
    contrast = rng.uniform(1 - config.contrast, 1 + config.contrast)
    brightness = rng.uniform(-config.brightness, config.brightness) * 255
    gamma = math.exp(rng.uniform(-math.log1p(config.gamma), math.log1p(config.gamma)))
    if contrast == 1 and brightness == 0 and gamma == 1:
        return None
    levels = 255 * (np.arange(256) / 255) ** gamma
    levels = (levels - 127.5) * contrast + 127.5 + brightness
    return np.clip(np.round(levels), 0, 255).astype(np.uint8)


def draw_augmentation(config: AugmentConfig, rng: np.random.Generator, input_hw: tuple[int, int],
                      boxes: np.ndarray, base_zoom: float = 1.0) -> AugmentDraw:
    """Draw one sample's augmentation; ``boxes`` (input pixels) are those the geometry must keep inside, and
    ``base_zoom`` multiplies the zoom drawn from ``config.scale``."""
    matrix = _geometry(config, rng, input_hw, boxes, base_zoom)
    lut = _grey_table(config, rng)
    gains = rng.uniform(-1.0, 1.0, 3) * np.asarray(config.hsv) + 1.0
    hsv_gains = None if np.all(gains == 1.0) else (float(gains[0]), float(gains[1]), float(gains[2]))
    noise_std = float(rng.uniform(0.0, config.noise)) if config.noise > 0 else 0.0
    return AugmentDraw(matrix, lut, hsv_gains, noise_std)


def transform_boxes(boxes: np.ndarray, matrix: np.ndarray | None) -> np.ndarray:
    """Map x1,y1,x2,y2 boxes through an axis-aligned affine map of pixel centres (mirrors reorder the edges)."""
    if matrix is None or not len(boxes):
        return boxes
    boxes = np.array(boxes, dtype=np.float32)
    # Box coordinates are pixel edges; the map acts on pixel centres, half a pixel away.
    xs = (boxes[:, [0, 2]] - 0.5) * matrix[0, 0] + matrix[0, 2] + 0.5
    ys = (boxes[:, [1, 3]] - 0.5) * matrix[1, 1] + matrix[1, 2] + 0.5
    boxes[:, 0], boxes[:, 2] = xs.min(axis=1), xs.max(axis=1)
    boxes[:, 1], boxes[:, 3] = ys.min(axis=1), ys.max(axis=1)
    return boxes


def _hsv_jitter(image: np.ndarray, gains: tuple[float, float, float]) -> np.ndarray:
    hue, sat, val = cv2.split(cv2.cvtColor(image, cv2.COLOR_RGB2HSV))
    levels = np.arange(256, dtype=np.float32)
    hue_lut = ((levels * gains[0]) % 180).astype(np.uint8)
    sat_lut = np.clip(levels * gains[1], 0, 255).astype(np.uint8)
    val_lut = np.clip(levels * gains[2], 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hue, hue_lut), cv2.LUT(sat, sat_lut), cv2.LUT(val, val_lut)))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def augment_frame(image: np.ndarray, draw: AugmentDraw, rng: np.random.Generator) -> np.ndarray:
    """Apply a draw to one letterboxed uint8 RGB frame; ``rng`` gives this frame's own sensor noise."""
    image = np.ascontiguousarray(image)
    if draw.matrix is not None:
        height, width = image.shape[:2]
        image = cv2.warpAffine(image, draw.matrix, (width, height), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=(PAD_VALUE,) * 3)
    if draw.lut is not None:
        image = cv2.LUT(image, draw.lut)
    if draw.hsv_gains is not None:
        image = _hsv_jitter(image, draw.hsv_gains)
    if draw.noise_std > 0:
        # One noise plane for all channels keeps grey frames grey.
        noise = rng.normal(0.0, draw.noise_std, image.shape[:2] + (1,)).astype(np.float32)
        image = np.clip(image + noise, 0, 255).round().astype(np.uint8)
    return image


def augment_sample(frames: list[np.ndarray], boxes: np.ndarray, config: AugmentConfig,
                   rng: np.random.Generator, base_zoom: float = 1.0) -> tuple[list[np.ndarray], np.ndarray]:
    """Augment a sample's T frames (oldest first) and its key frame's boxes with one draw from ``rng``, its zoom
    ``base_zoom`` times the drawn one."""
    draw = draw_augmentation(config, rng, frames[-1].shape[:2], boxes, base_zoom)
    return [augment_frame(frame, draw, rng) for frame in frames], transform_boxes(boxes, draw.matrix)


def add_augment_arguments(parser: argparse.ArgumentParser) -> None:
    """The augmentation flags (one per :class:`AugmentConfig` knob, plus the release's ``--augment`` preset)."""
    group = parser.add_argument_group(
        "augmentation", "drawn once per sample and applied alike to its T frames (sensor noise excepted); all off by "
                        "default, as the release trains")
    group.add_argument("--augment", action="store_true",
                       help="the release's unused helper: --flip-lr 0.5 --hsv 0.1 0.7 0.4 (flags given explicitly "
                            "take precedence)")
    group.add_argument("--flip-lr", type=float, default=None, help="probability of a left-right mirror (default: 0)")
    group.add_argument("--flip-ud", type=float, default=0.0, help="probability of an up-down mirror")
    group.add_argument("--translate", type=float, default=0.0,
                       help="largest shift as a fraction of the input side; boxes are kept inside")
    group.add_argument("--scale", type=float, nargs=2, default=(1.0, 1.0), metavar=("MIN", "MAX"),
                       help="zoom range about the centre")
    group.add_argument("--hsv", type=float, nargs=3, default=None, metavar=("H", "S", "V"),
                       help="HSV gains drawn in [1-g, 1+g] (default: 0 0 0)")
    group.add_argument("--contrast", type=float, default=0.0, help="contrast gain drawn in [1-c, 1+c]")
    group.add_argument("--brightness", type=float, default=0.0, help="brightness offset drawn in [-b, b] × 255")
    group.add_argument("--gamma", type=float, default=0.0, help="gamma drawn log-uniformly in [1/(1+g), 1+g]")
    group.add_argument("--noise", type=float, default=0.0,
                       help="largest std (grey levels) of Gaussian sensor noise, fresh in every frame")


def augment_from_flags(values: Mapping[str, Any]) -> AugmentConfig:
    """The augmentation the flags (or a run's stored flat options) ask for: the explicit knobs, with ``augment``
    (``--augment``) filling the release's flip and HSV jitter where they are left out (None)."""
    preset = RELEASE_AUGMENT if values.get("augment") else AugmentConfig()
    flip_lr, hsv = values.get("flip_lr"), values.get("hsv")
    return AugmentConfig(flip_lr=preset.flip_lr if flip_lr is None else flip_lr, flip_ud=values.get("flip_ud", 0.0),
                         translate=values.get("translate", 0.0), scale=tuple(values.get("scale", (1.0, 1.0))),
                         hsv=preset.hsv if hsv is None else tuple(hsv), contrast=values.get("contrast", 0.0),
                         brightness=values.get("brightness", 0.0), gamma=values.get("gamma", 0.0),
                         noise=values.get("noise", 0.0))
