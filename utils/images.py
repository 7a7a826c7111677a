"""Reading frames from disk: one decoder and one bit-depth rule for training, evaluation and prediction."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .errors import SSTNetError

IMAGE_SUFFIXES = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff")

# OpenCV logs decoder failures to stderr itself; we report them as one clear error instead.
cv2.setLogLevel(0)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Convert a frame of any bit depth to 8 bits.

    8-bit frames pass unchanged. Deeper frames (16-bit PNG/TIFF from infrared cameras, float TIFF) are
    stretched linearly from their own minimum to their own maximum onto 0..255, because such cameras use
    only part of the range (often 12-14 bits) and a fixed shift would leave dim frames nearly black.
    A constant frame becomes all zeros.
    """
    if image.dtype == np.uint8:
        return image
    data = image.astype(np.float64)
    low, high = float(data.min()), float(data.max())
    if high <= low:
        return np.zeros(image.shape, np.uint8)
    return np.round((data - low) * (255.0 / (high - low))).astype(np.uint8)


def read_frame(path: str | os.PathLike) -> np.ndarray:
    """Read a frame as an H×W×3 uint8 RGB array (grey frames are replicated into the three channels)."""
    path = Path(path)
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise SSTNetError(f"{path}: frame not found") from None
    except OSError as exc:
        raise SSTNetError(f"{path}: cannot read frame ({exc.strerror or exc})") from None
    image = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED) if raw.size else None
    if image is None:
        raise SSTNetError(f"{path}: not a readable image (corrupt, truncated or unsupported format)")
    image = to_uint8(image)
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    channels = image.shape[2]
    if channels == 1:
        return np.repeat(image, 3, axis=2)
    if channels == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    raise SSTNetError(f"{path}: unsupported image with {channels} channels")
