"""Sequences on disk: frames named by their integer index inside one folder per sequence, and T-frame windows."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import SSTNetError
from .images import IMAGE_SUFFIXES


def frame_number(path: Path) -> int:
    """The integer index a frame is named by (``12.bmp`` → 12)."""
    try:
        return int(path.stem)
    except ValueError:
        raise SSTNetError(f"{path}: frame names must be integer indices like 0.bmp, 1.bmp, ...") from None


def window_numbers(key_number: int, first_number: int, num_frame: int, frame_step: int = 1) -> list[int]:
    """Frame indices of the window ending at ``key_number``, oldest first, ``frame_step`` apart (1: consecutive frames,
    as released), clamped at the sequence's first frame."""
    return [max(key_number - frame_step * offset, first_number) for offset in range(num_frame - 1, -1, -1)]


class SequenceFolders:
    """Knows which frames each sequence folder holds (scanned once per folder) and builds sample windows.

    Frames are found by their integer index whatever the spelling of their names (``7.bmp`` or zero-padded
    ``00007.bmp``), and a window keeps each frame's real path.
    """

    def __init__(self) -> None:
        self._frames: dict[tuple[Path, str], dict[int, Path]] = {}

    def frame_paths(self, folder: Path, suffix: str) -> dict[int, Path]:
        """The frames with ``suffix`` in ``folder``, by integer index."""
        key = (folder, suffix.lower())
        if key not in self._frames:
            try:
                names = os.listdir(folder)
            except FileNotFoundError:
                raise SSTNetError(f"{folder}: sequence folder not found") from None
            except NotADirectoryError:
                raise SSTNetError(f"{folder}: expected a sequence folder") from None
            frames: dict[int, Path] = {}
            for name in sorted(names):
                stem, ext = os.path.splitext(name)
                if ext.lower() == key[1] and stem.isdigit():
                    number = int(stem)
                    if number in frames:
                        raise SSTNetError(f"{folder}: {frames[number].name} and {name} are both frame {number}")
                    frames[number] = folder / name
            self._frames[key] = frames
        return self._frames[key]

    def other_suffix(self, folder: Path, number: int, suffix: str) -> Path | None:
        """Frame ``number`` of ``folder`` under an image suffix other than ``suffix``, if there is one."""
        for other in IMAGE_SUFFIXES:
            if other != suffix.lower() and number in self.frame_paths(folder, other):
                return self.frame_paths(folder, other)[number]
        return None

    def window(self, key_frame: Path, num_frame: int, frame_step: int = 1) -> list[Path]:
        """The ``num_frame`` paths ending at ``key_frame``, ``frame_step`` frames apart, oldest first (key frame last).

        History indices below the first frame of the sequence on disk are clamped to it, so a window at the
        start of a sequence repeats its first frame. Frames use the key frame's extension.
        """
        key_number = frame_number(key_frame)
        present = self.frame_paths(key_frame.parent, key_frame.suffix)
        if key_number not in present:
            raise SSTNetError(f"{key_frame}: key frame not found")
        numbers = window_numbers(key_number, min(present), num_frame, frame_step)
        for number in numbers:
            if number not in present:
                # Named as the key frame spells its index (zero-padded or not).
                padded = key_frame.stem.startswith("0") and len(key_frame.stem) > 1
                missing = key_frame.with_name(f"{number:0{len(key_frame.stem) if padded else 1}d}{key_frame.suffix}")
                other = self.other_suffix(key_frame.parent, number, key_frame.suffix)
                hint = (f" (the folder has {other.name}: a sequence's frames must share the key frame's suffix)"
                        if other is not None else "")
                raise SSTNetError(f"{missing}: frame not found, needed by the {num_frame}-frame window of "
                                  f"{key_frame}{hint}")
        # The key frame keeps the spelling it was given (the annotation's path); history frames their names on disk.
        return [present[number] for number in numbers[:-1]] + [key_frame]
