"""Drawing detections and ground truth on frames (Pillow's default font, scaled to the frame), writing them as PNGs
and videos, and showing them in a window where a display and OpenCV's GUI exist."""
from __future__ import annotations

import colorsys
import contextlib
import math
import os
import re
import sys
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import SSTNetError, no_space_error, report
from ..runtime.fileio import atomic_path

GT_COLOUR = (0, 255, 0)


def class_colour(index: int, num_classes: int) -> tuple[int, int, int]:
    """Evenly spaced hues, starting at red, one per class."""
    r, g, b = colorsys.hsv_to_rgb(index / max(num_classes, 1), 1.0, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


@lru_cache(maxsize=16)
def label_font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def draw_frame(image: np.ndarray, detections: np.ndarray, class_names: Sequence[str],
               ground_truth: np.ndarray | None = None) -> Image.Image:
    """The RGB ``image`` with detection rows (top, left, bottom, right, obj, class_conf, class) as labelled
    boxes and optional ground-truth rows (x1, y1, x2, y2, class) in green."""
    frame = Image.fromarray(image)
    draw = ImageDraw.Draw(frame)
    height, width = image.shape[:2]
    font = label_font(max(9, round(min(height, width) / 32)))
    line = max(1, round(min(height, width) / 320))
    if ground_truth is not None:
        for x1, y1, x2, y2, _ in ground_truth:
            draw.rectangle((x1, y1, x2, y2), outline=GT_COLOUR, width=line)
    for top, left, bottom, right, obj, class_conf, cls in detections:
        colour = class_colour(int(cls), len(class_names))
        left, right = np.clip([float(left), float(right)], 0, width - 1)
        top, bottom = np.clip([float(top), float(bottom)], 0, height - 1)
        if right <= left or bottom <= top:
            continue  # a box wholly outside the frame (the letterbox padding) has nothing to draw
        draw.rectangle((left, top, right, bottom), outline=colour, width=line)
        text = f"{class_names[int(cls)]} {obj * class_conf:.2f}"
        text_box = draw.textbbox((0, 0), text, font=font)
        text_w, text_h = text_box[2] - text_box[0], text_box[3] - text_box[1]
        # Above the box when there is room, else inside it.
        y = top - text_h - 2 if top - text_h - 2 >= 0 else top + 1
        x = min(left, max(0.0, width - text_w - 2))
        draw.rectangle((x, y, x + text_w + 2, y + text_h + 2), fill=colour)
        draw.text((x + 1, y + 1 - text_box[1]), text, fill=(0, 0, 0), font=font)
    return frame


def crops(image: np.ndarray, detections: np.ndarray) -> list[np.ndarray]:
    """The pixels inside each detection box (clipped to the frame; at least 1×1)."""
    height, width = image.shape[:2]
    result = []
    for top, left, bottom, right, *_ in detections:
        x1, y1 = int(np.clip(np.floor(left), 0, width - 1)), int(np.clip(np.floor(top), 0, height - 1))
        x2, y2 = int(np.clip(np.ceil(right), x1 + 1, width)), int(np.clip(np.ceil(bottom), y1 + 1, height))
        result.append(image[y1:y2, x1:x2])
    return result


def save_png(rgb: np.ndarray, path: str | os.PathLike) -> None:
    """Write an RGB array as a PNG, atomically."""
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)):
            raise SSTNetError(f"{path}: could not write the image")


def source_fps(path: str | os.PathLike, default: float = 25.0) -> float:
    """The frame rate a video file declares (``default`` when it declares none)."""
    capture = cv2.VideoCapture(str(path))
    fps = capture_fps(capture, default) if capture.isOpened() else default
    capture.release()
    return fps


def capture_fps(capture: cv2.VideoCapture, default: float = 25.0) -> float:
    """The frame rate an open capture declares (``default`` when it declares none, as many cameras and streams)."""
    fps = capture.get(cv2.CAP_PROP_FPS)
    return fps if fps and math.isfinite(fps) and fps > 0 else default


class VideoWriter:
    """Writes RGB frames to an mp4 (``mp4v``), sized by the first frame. A later frame of another size is scaled
    into that size (aspect kept, padded with black) with one note, since OpenCV's writer drops it without a word."""

    def __init__(self, path: Path, fps: float, final_path: Path) -> None:
        self.path, self.fps, self.final_path = path, fps, final_path
        self.frames = 0
        self.size: tuple[int, int] | None = None
        self.resized = 0
        self._writer: cv2.VideoWriter | None = None

    def write(self, rgb: np.ndarray, name: str = "") -> None:
        if self._writer is None:
            height, width = self.size = rgb.shape[:2]
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (width, height))
            if not self._writer.isOpened():
                raise SSTNetError(f"{self.final_path}: OpenCV cannot write an mp4 video here")
        elif rgb.shape[:2] != self.size:
            self.resized += 1
            if self.resized == 1:
                report(f"note: {self.final_path}: frame {name or self.frames} is {rgb.shape[1]}x{rgb.shape[0]}, the "
                       f"video {self.size[1]}x{self.size[0]} (its first frame's size): frames of another size are "
                       "scaled into it")
            rgb = fit_into(rgb, self.size)
        self._writer.write(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
        self.frames += 1

    def release(self) -> None:
        if self._writer is not None:
            self._writer.release()


def fit_into(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``rgb`` scaled to fit ``size`` (height, width) with its aspect kept, centred on black."""
    height, width = size
    scale = min(height / rgb.shape[0], width / rgb.shape[1])
    new_h, new_w = max(1, round(rgb.shape[0] * scale)), max(1, round(rgb.shape[1] * scale))
    canvas = np.zeros((height, width, 3), np.uint8)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    canvas[top:top + new_h, left:left + new_w] = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_AREA)
    return canvas


@contextlib.contextmanager
def open_video(path: str | os.PathLike, fps: float) -> Iterator[VideoWriter]:
    """A video written under a temporary name that appears at ``path`` only when complete and not empty."""
    path = Path(path)
    with atomic_path(path) as tmp:
        writer = VideoWriter(tmp, fps, path)
        try:
            yield writer
        finally:
            writer.release()
        if writer.frames == 0:
            raise SSTNetError(f"{path}: no frames to write")
        # OpenCV's writer drops frames silently when the disk fills up; a full disk now means a truncated video.
        full = no_space_error(RuntimeError("video writer"), path.parent if str(path.parent) else ".")
        if full is not None:
            raise full


def window_unavailable() -> str | None:
    """Why frames cannot be shown in a window here, or None when they can."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display to show frames on (DISPLAY and WAYLAND_DISPLAY are unset)"
    if re.search(r"^\s*GUI:\s*NONE\s*$", cv2.getBuildInformation(), re.MULTILINE):
        return ("this OpenCV has no GUI support (the opencv-python-headless build); install opencv-python to show "
                "frames")
    return None


class FrameWindow:
    """A window showing RGB frames as they are made; the user closes it with q, Esc or the window's close button."""

    KEYS_TO_CLOSE = (ord("q"), 27)

    def __init__(self, title: str) -> None:
        self.title = title
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error as exc:
            raise SSTNetError(f"--show: cannot open a window ({str(exc).strip().splitlines()[-1]})") from None

    def show(self, rgb: np.ndarray) -> bool:
        """Show ``rgb``; False once the user has closed the window."""
        cv2.imshow(self.title, cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
        key = cv2.waitKey(1) & 0xFF
        return key not in self.KEYS_TO_CLOSE and cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1

    def close(self) -> None:
        cv2.destroyWindow(self.title)
