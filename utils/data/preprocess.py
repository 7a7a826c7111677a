"""Letterbox and normalisation: the one preprocessing used by training, evaluation and prediction (docs/design.md,
Data).

Evaluation and prediction may instead stretch frames to the input without keeping their aspect ratio (the release's
``letterbox_image=False``): a :class:`Letterbox` fitted with ``keep_ratio=False``, whose boxes map the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from ..errors import SSTNetError

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
PAD_VALUE = 128


@dataclass(frozen=True)
class Letterbox:
    """Where a frame of ``image_hw`` lands inside an input of ``input_hw``: resized to new_hw, pasted at (dy, dx).

    A plain resize is the case new_hw = input_hw, offset (0, 0).
    """

    image_hw: tuple[int, int]
    input_hw: tuple[int, int]
    new_hw: tuple[int, int]
    offset_yx: tuple[int, int]

    @classmethod
    def fit(cls, image_hw: tuple[int, int], input_hw: tuple[int, int], keep_ratio: bool = True,
            source: str = "frame") -> "Letterbox":
        """Scale by min(S_h/h, S_w/w), truncate the new size to integers and centre it, as the release does.
        ``keep_ratio=False``: stretch the frame over the whole input instead. A frame so elongated that one side
        would shrink to no pixel at all is an error naming ``source``."""
        (h, w), (input_h, input_w) = image_hw, input_hw
        if not keep_ratio:
            return cls((h, w), (input_h, input_w), (input_h, input_w), (0, 0))
        scale = min(input_w / w, input_h / h)
        new_h, new_w = int(h * scale), int(w * scale)
        if new_h < 1 or new_w < 1:
            raise SSTNetError(f"{source}: a {w}x{h} px frame letterboxes to {new_w}x{new_h} px at input "
                              f"{input_w}x{input_h}; such an elongated frame cannot be used")
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
        boxes[:, [0, 2]] = boxes[:, [0, 2]] * (new_w / w) + dx
        boxes[:, [1, 3]] = boxes[:, [1, 3]] * (new_h / h) + dy
        return clip_boxes(boxes, self.input_hw)


def clip_boxes(boxes: np.ndarray, input_hw: tuple[int, int]) -> np.ndarray:
    """Clip n×5 (x1, y1, x2, y2, cls) boxes to an input of ``input_hw`` and drop those of side <= 1 px."""
    boxes = boxes.copy()
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, input_hw[1])
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, input_hw[0])
    keep = ((boxes[:, 2] - boxes[:, 0]) > 1) & ((boxes[:, 3] - boxes[:, 1]) > 1)
    return boxes[keep]


def _normalized_levels() -> np.ndarray:
    """3×256 float32: every uint8 level of each channel after /255, minus the ImageNet mean, divided by its std (the
    same float32 arithmetic, so a frame normalised through this table is bit-identical to one computed directly)."""
    levels = np.arange(256, dtype=np.float32)[:, None] / 255.0
    return np.ascontiguousarray(((levels - MEAN) / STD).T)


NORMALIZED_LEVELS = _normalized_levels()


def normalize(image: np.ndarray) -> np.ndarray:
    """H×W×3 uint8 RGB → 3×H×W float32: /255, minus the ImageNet mean, divided by its std. Each channel plane goes
    through its table of levels (OpenCV's LUT): about 10x faster than the arithmetic on whole float frames, which
    was most of a frame's decoding time."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"normalize expects an H×W×3 uint8 frame, got {image.dtype} {image.shape}")
    data = np.empty((3, *image.shape[:2]), dtype=np.float32)
    for channel, plane in enumerate(cv2.split(image)):
        data[channel] = cv2.LUT(plane, NORMALIZED_LEVELS[channel])
    return data


def preprocess_frame(image: np.ndarray, input_hw: tuple[int, int],
                     keep_ratio: bool = True, source: str = "frame") -> tuple[np.ndarray, Letterbox]:
    """Letterbox (``keep_ratio=False``: stretch) and normalise one RGB frame; returns the 3×H×W input and the
    letterbox used."""
    letterbox = Letterbox.fit(image.shape[:2], input_hw, keep_ratio, source)
    return normalize(letterbox.apply(image)), letterbox
