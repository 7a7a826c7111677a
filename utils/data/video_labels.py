"""Per-frame boxes of a labelled video, read from MATLAB ``groundTruth`` files or from the project's text format.

Both readers give a :class:`VideoLabels`: for each labelled frame index (0-based, the video's own order) the list
of its boxes, an empty list meaning "labelled, no target in view". Boxes are ``(x, y, w, h, class_name)`` in
pixel-edge coordinates: (0, 0) is the top-left corner of the top-left pixel, as in COCO; ``class_name`` is None
when the file does not name one.

The text format (``.txt``), one line per labelled frame::

    # comments and blank lines are ignored
    0 120.5,88,9,7              frame 0: one box x,y,w,h
    1 121,88,9,7,bird 30,40,6,6 frame 1: two boxes, the first with a class name
    2                           frame 2: labelled, no target in view

Frames not listed are unlabelled: they may serve as history frames of a window but are never scored.

MATLAB Video Labeler's ``groundTruth`` (``.mat``) lists one slot per frame, from frame 0, with a box or nothing.
Its boxes are in MATLAB's spatial coordinates, where the image spans [0.5, W + 0.5]; they are shifted by half a
pixel into pixel-edge coordinates.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SSTNetError
from .annotations import read_text_lines

LABEL_SUFFIXES = (".mat", ".txt")
# MATLAB's spatial coordinates put the image's top-left corner at (0.5, 0.5).
MATLAB_ORIGIN = 0.5
_CLASS_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


@dataclass(frozen=True)
class Box:
    """A labelled box in pixel-edge coordinates, with the class name its label file gave (or None)."""

    x: float
    y: float
    w: float
    h: float
    class_name: str | None = None


@dataclass
class VideoLabels:
    """The labels of one video: boxes by frame index (only labelled frames are keys) and the file they came from.
    ``dense``: the file labels every frame from 0 on (a groundTruth file), so frames past its end lack labels."""

    path: Path
    frames: dict[int, list[Box]] = field(default_factory=dict)
    dense: bool = False

    @property
    def last_frame(self) -> int:
        """The largest labelled frame index (-1 when nothing is labelled)."""
        return max(self.frames, default=-1)


def read_labels(path: str | os.PathLike) -> VideoLabels:
    """The labels in ``path``, read by its suffix (``.mat``: MATLAB groundTruth; ``.txt``: the text format)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".mat":
        return read_groundtruth_mat(path)
    if suffix == ".txt":
        return read_label_text(path)
    raise SSTNetError(f"{path}: unknown label format (expected {' or '.join(LABEL_SUFFIXES)})")


def read_groundtruth_mat(path: str | os.PathLike) -> VideoLabels:
    """A MATLAB Video Labeler ``groundTruth`` file: one slot per frame from frame 0, a box or none."""
    path = Path(path)
    try:
        from mcos_decoder import load_groundtruth  # only where a .mat is read: --help and .txt never need it
    except ImportError:
        raise SSTNetError(f"{path}: reading MATLAB groundTruth files needs the mcos-decoder package "
                          "(pip install -r requirements.txt)") from None
    if not path.is_file():
        raise SSTNetError(f"{path}: label file not found")
    try:
        slots = load_groundtruth(path)
    except Exception as exc:  # the decoder raises whatever its parser hits on a file it cannot read
        raise SSTNetError(f"{path}: not a readable MATLAB groundTruth file ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})") from None
    if not slots:
        raise SSTNetError(f"{path}: no per-frame labels found (not a groundTruth object with a box label?)")
    labels = VideoLabels(path, dense=True)
    for index, slot in enumerate(slots):
        if slot is None:
            labels.frames[index] = []
            continue
        x, y, w, h = (float(value) for value in slot)
        if not all(math.isfinite(value) for value in (x, y, w, h)):
            raise SSTNetError(f"{path}: frame {index}: box {slot} is not finite")
        labels.frames[index] = [Box(x - MATLAB_ORIGIN, y - MATLAB_ORIGIN, w, h)]
    return labels


def _text_box(token: str, where: str) -> Box:
    parts = token.split(",")
    if len(parts) not in (4, 5):
        raise SSTNetError(f"{where}: box '{token}' must be x,y,w,h or x,y,w,h,class")
    try:
        x, y, w, h = (float(part) for part in parts[:4])
    except ValueError:
        raise SSTNetError(f"{where}: box '{token}' has a value that is not a number") from None
    if not all(math.isfinite(value) for value in (x, y, w, h)):
        raise SSTNetError(f"{where}: box '{token}' is not finite")
    name = parts[4] if len(parts) == 5 else None
    if name is not None and not _CLASS_NAME.match(name):
        raise SSTNetError(f"{where}: box '{token}': class name '{name}' must be a word (letters, digits, _ or -)")
    return Box(x, y, w, h, name)


def read_label_text(path: str | os.PathLike) -> VideoLabels:
    """The text format (module docstring): ``FRAME [x,y,w,h[,class] ...]`` per line, frames 0-based."""
    path = Path(path)
    lines = read_text_lines(path, "label file", "one line per frame: FRAME x,y,w,h ...")
    labels = VideoLabels(path)
    for number, line in enumerate(lines, start=1):
        tokens = line.split("#", 1)[0].split()
        if not tokens:
            continue
        where = f"{path}:{number}"
        if not tokens[0].isdigit():
            raise SSTNetError(f"{where}: line must start with a frame index (0, 1, ...), got '{tokens[0]}'")
        index = int(tokens[0])
        if index in labels.frames:
            raise SSTNetError(f"{where}: frame {index} is listed twice")
        labels.frames[index] = [_text_box(token, where) for token in tokens[1:]]
    if not labels.frames:
        raise SSTNetError(f"{path}: no labelled frames (expected lines 'FRAME x,y,w,h ...')")
    return labels


def format_label_text(frames: dict[int, list[Box]]) -> str:
    """``frames`` in the text format, frames in index order (the inverse of :func:`read_label_text`)."""
    lines = []
    for index in sorted(frames):
        boxes = [",".join(f"{value:g}" for value in (box.x, box.y, box.w, box.h))
                 + (f",{box.class_name}" if box.class_name else "") for box in frames[index]]
        lines.append(" ".join([str(index), *boxes]))
    return "\n".join(lines) + "\n"
