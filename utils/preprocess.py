"""Letterbox and normalisation: the one preprocessing used by training, evaluation and prediction (spec §1)."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from .errors import SSTNetError

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
PAD_VALUE = 128


def parse_input_shape(value: int | str | tuple[int, int] | list[int]) -> tuple[int, int]:
    """Return (height, width) from ``512``, ``"512"``, ``"384x640"`` (height×width) or a pair.

    Both sides must be positive multiples of 32 (the backbone downsamples 32×).
    """
    if isinstance(value, (tuple, list)):
        sides = tuple(int(v) for v in value)
    elif isinstance(value, int):
        sides = (value, value)
    else:
        text = str(value).lower().replace(",", "x")
        try:
            sides = tuple(int(part) for part in text.split("x"))
        except ValueError:
            raise SSTNetError(f"--input-size {value!r}: expected a number like 512 or HEIGHTxWIDTH like 384x640") from None
        if len(sides) == 1:
            sides = sides * 2
    if len(sides) != 2 or any(side < 32 or side % 32 for side in sides):
        raise SSTNetError(f"--input-size {value!r}: each side must be a multiple of 32 and at least 32")
    return sides[0], sides[1]


@dataclass(frozen=True)
class Letterbox:
    """Where a frame of ``image_hw`` lands inside an input of ``input_hw``: resized to new_hw, pasted at (dy, dx)."""

    image_hw: tuple[int, int]
    input_hw: tuple[int, int]
    new_hw: tuple[int, int]
    offset_yx: tuple[int, int]

    @classmethod
    def fit(cls, image_hw: tuple[int, int], input_hw: tuple[int, int]) -> "Letterbox":
        """Scale by min(S_h/h, S_w/w), truncate the new size to integers and centre it, as the release does."""
        (h, w), (input_h, input_w) = image_hw, input_hw
        scale = min(input_w / w, input_h / h)
        new_h, new_w = int(h * scale), int(w * scale)
        return cls((h, w), (input_h, input_w), (new_h, new_w), ((input_h - new_h) // 2, (input_w - new_w) // 2))

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Resize ``image`` (H×W×3 uint8) bicubically (PIL, as the release) and paste it on a grey canvas."""
        new_h, new_w = self.new_hw
        if (new_h, new_w) != image.shape[:2]:
            image = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BICUBIC))
        canvas = np.full((*self.input_hw, 3), PAD_VALUE, dtype=np.uint8)
        dy, dx = self.offset_yx
        canvas[dy:dy + new_h, dx:dx + new_w] = image
        return canvas

    def map_boxes(self, boxes: np.ndarray) -> np.ndarray:
        """Map n×5 (x1, y1, x2, y2, cls) boxes into the input, clip to it and drop boxes of side <= 1 px."""
        boxes = np.array(boxes, dtype=np.float32).reshape(-1, 5)
        (h, w), (new_h, new_w), (dy, dx) = self.image_hw, self.new_hw, self.offset_yx
        input_h, input_w = self.input_hw
        boxes[:, [0, 2]] = boxes[:, [0, 2]] * (new_w / w) + dx
        boxes[:, [1, 3]] = boxes[:, [1, 3]] * (new_h / h) + dy
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, input_w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, input_h)
        keep = ((boxes[:, 2] - boxes[:, 0]) > 1) & ((boxes[:, 3] - boxes[:, 1]) > 1)
        return boxes[keep]


def normalize(image: np.ndarray) -> np.ndarray:
    """H×W×3 uint8 RGB → 3×H×W float32: /255, minus the ImageNet mean, divided by its std."""
    data = image.astype(np.float32) / 255.0
    data = (data - MEAN) / STD
    return np.ascontiguousarray(data.transpose(2, 0, 1))


def preprocess_frame(image: np.ndarray, input_hw: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """Letterbox and normalise one RGB frame; returns the 3×H×W input and the letterbox used."""
    letterbox = Letterbox.fit(image.shape[:2], input_hw)
    return normalize(letterbox.apply(image)), letterbox


@dataclass(frozen=True)
class AugmentParams:
    """One random draw, shared by every frame of a sample so the motion between frames is preserved."""

    flip: bool
    hsv_gains: tuple[float, float, float]


def draw_augmentation(rng: np.random.Generator, hue: float = 0.1, sat: float = 0.7, val: float = 0.4) -> AugmentParams:
    """Horizontal flip with probability 1/2 and HSV gains in [1-g, 1+g] (the release's unused helper)."""
    gains = rng.uniform(-1.0, 1.0, 3) * np.array([hue, sat, val]) + 1.0
    return AugmentParams(bool(rng.random() < 0.5), (float(gains[0]), float(gains[1]), float(gains[2])))


def augment_image(image: np.ndarray, params: AugmentParams) -> np.ndarray:
    """Apply a drawn flip and HSV jitter to a letterboxed uint8 RGB image."""
    if params.flip:
        image = image[:, ::-1]
    hue, sat, val = cv2.split(cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2HSV))
    levels = np.arange(256, dtype=np.float32)
    hue_lut = ((levels * params.hsv_gains[0]) % 180).astype(np.uint8)
    sat_lut = np.clip(levels * params.hsv_gains[1], 0, 255).astype(np.uint8)
    val_lut = np.clip(levels * params.hsv_gains[2], 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hue, hue_lut), cv2.LUT(sat, sat_lut), cv2.LUT(val, val_lut)))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def augment_boxes(boxes: np.ndarray, params: AugmentParams, input_w: int) -> np.ndarray:
    """Mirror x1,y1,x2,y2 boxes in an input of width ``input_w`` when the draw flipped the image."""
    if not params.flip or not len(boxes):
        return boxes
    boxes = boxes.copy()
    boxes[:, [0, 2]] = input_w - boxes[:, [2, 0]]
    return boxes
