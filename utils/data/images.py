"""Reading frames from disk: one decoder and one bit-depth rule for training, evaluation and prediction."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from ..errors import SSTNetError

IMAGE_SUFFIXES = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff")

# OpenCV logs decoder failures to stderr itself; we report them as one clear error instead. Some OpenCV builds
# lack the call; there the log stays, which is harmless.
try:
    cv2.setLogLevel(0)
except AttributeError:
    pass


def to_uint8(image: np.ndarray) -> tuple[np.ndarray, int]:
    """Convert a frame of any bit depth to 8 bits; returns the frame and its count of non-finite pixels.

    8-bit frames pass unchanged. Deeper frames (16-bit PNG/TIFF from infrared cameras, float TIFF) are
    stretched linearly from their own minimum to their own maximum onto 0..255, because such cameras use
    only part of the range (often 12-14 bits) and a fixed shift would leave dim frames nearly black.
    The stretch spans the finite values only; NaN and infinite pixels (dead pixels in float TIFFs) become 0.
    A constant frame becomes all zeros.
    """
    if image.dtype == np.uint8:
        return image, 0
    data = image.astype(np.float64)
    finite = np.isfinite(data)
    nonfinite = int(data.size - np.count_nonzero(finite))
    if not finite.any():
        return np.zeros(image.shape, np.uint8), nonfinite
    low, high = float(data[finite].min()), float(data[finite].max())
    if high <= low:
        return np.zeros(image.shape, np.uint8), nonfinite
    scaled = np.where(finite, (data - low) * (255.0 / (high - low)), 0.0)
    return np.round(scaled).astype(np.uint8), nonfinite


@dataclass(frozen=True)
class DecodedFrame:
    """A frame as H×W×3 uint8 RGB, and how many of its pixels were NaN or infinite (mapped to 0)."""

    image: np.ndarray
    nonfinite_pixels: int = 0


def decode_frame(path: str | os.PathLike, expected_hw: tuple[int, int] | None = None,
                 declared_by: str | None = None) -> DecodedFrame:
    """Read a frame (grey frames are replicated into the three channels). ``expected_hw``: the size an
    annotation file (``declared_by``) gives it; a frame of another size is an error."""
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
    if expected_hw is not None and tuple(image.shape[:2]) != tuple(expected_hw):
        raise SSTNetError(f"{path}: the frame is {image.shape[1]}x{image.shape[0]} px, but "
                          f"{declared_by or 'its annotation'} declares width {expected_hw[1]}, height {expected_hw[0]}")
    image, nonfinite = to_uint8(image)
    if image.ndim == 2:
        return DecodedFrame(np.repeat(image[:, :, None], 3, axis=2), nonfinite)
    channels = image.shape[2]
    if channels == 1:
        return DecodedFrame(np.repeat(image, 3, axis=2), nonfinite)
    if channels == 3:
        return DecodedFrame(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), nonfinite)
    if channels == 4:
        return DecodedFrame(cv2.cvtColor(image, cv2.COLOR_BGRA2RGB), nonfinite)
    raise SSTNetError(f"{path}: unsupported image with {channels} channels")


def read_frame(path: str | os.PathLike) -> np.ndarray:
    """Read a frame as an H×W×3 uint8 RGB array (see :func:`decode_frame`)."""
    return decode_frame(path).image


class NonFiniteFrames:
    """Collects the frames that had NaN or infinite pixels during a run, to say so once at its end."""

    def __init__(self) -> None:
        self.paths: set[str] = set()

    def add(self, paths: Iterable[str]) -> None:
        self.paths.update(paths)

    def message(self) -> str | None:
        if not self.paths:
            return None
        shown = ", ".join(sorted(self.paths)[:3]) + (", ..." if len(self.paths) > 3 else "")
        return (f"note: {len(self.paths)} frame(s) had NaN or infinite pixels, mapped to 0 after stretching the "
                f"finite ones ({shown})")
