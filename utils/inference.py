"""The inference engine: walks sequences frame by frame and detects on every key frame's T-frame window.

Two modes give the same detections:
- ``window`` is the released computation: each window's T frames go through the backbone, T passes per frame.
- ``stream`` keeps the last T frames' backbone features per sequence, so each frame goes through the backbone
  ONCE however many windows it belongs to (in eval mode a frame's features do not depend on its window).
Frames are decoded and letterboxed once each, in DataLoader workers, whatever the mode.
"""
from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .annotations import FrameRecord
from .device import autocast
from .images import read_frame
from .preprocess import preprocess_frame
from .sequence import SequenceFolders, frame_number

MODES = ("stream", "window")


@dataclass(frozen=True)
class FrameRef:
    """A frame to run through the model: its sequence, index, and — for key frames — the window to detect on."""

    sequence: str
    number: int
    path: Path | None = None
    window: tuple[int, ...] | None = None
    image_id: int | None = None

    @property
    def is_key(self) -> bool:
        return self.window is not None


def plan_sequence_walk(records: Sequence[FrameRecord], num_frame: int,
                       folders: SequenceFolders | None = None) -> list[FrameRef]:
    """Every frame the windows of ``records`` need, once each, sequence by sequence in index order.

    Sequences keep the order in which they first appear in ``records``; key frames carry their window.
    """
    folders = folders or SequenceFolders()
    windows: dict[str, dict[int, tuple[int, ...]]] = {}
    keys: dict[tuple[str, int], FrameRecord] = {}
    paths: dict[tuple[str, int], Path] = {}
    for record in records:
        sequence = str(record.path.parent)
        window = folders.window(record.path, num_frame)
        numbers = tuple(frame_number(path) for path in window)
        windows.setdefault(sequence, {})[numbers[-1]] = numbers
        keys[(sequence, numbers[-1])] = record
        for number, path in zip(numbers, window):
            paths[(sequence, number)] = path
    plan = []
    for sequence, key_windows in windows.items():
        needed = sorted({number for window in key_windows.values() for number in window})
        for number in needed:
            record = keys.get((sequence, number))
            plan.append(FrameRef(sequence, number, paths[(sequence, number)], key_windows.get(number),
                                 record.image_id if record is not None else None))
    return plan


def plan_folder(folder: str | os.PathLike, num_frame: int, suffixes: Iterable[str]) -> list[FrameRef]:
    """Every frame of one sequence folder as a key frame, in numeric order."""
    folder = Path(folder)
    frames = sorted((path for path in folder.iterdir() if path.suffix.lower() in tuple(suffixes)
                     and path.stem.isdigit()), key=frame_number)
    records = [FrameRecord(path, np.zeros((0, 5), np.float32)) for path in frames]
    return plan_sequence_walk(records, num_frame)


class FrameDataset(Dataset):
    """Decodes and letterboxes the frames of a walk plan (in workers); items keep the plan's order."""

    def __init__(self, plan: Sequence[FrameRef], input_shape: tuple[int, int]) -> None:
        self.plan = list(plan)
        self.input_shape = input_shape

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int, tuple[int, int]]:
        image = read_frame(self.plan[index].path)
        data, _ = preprocess_frame(image, self.input_shape)
        return data, index, image.shape[:2]


def collate_frames(batch):
    images = torch.from_numpy(np.stack([item[0] for item in batch]))
    return images, [item[1] for item in batch], [item[2] for item in batch]


def frame_batches(plan: Sequence[FrameRef], input_shape: tuple[int, int], batch_size: int,
                  workers: int) -> Iterator[tuple[torch.Tensor, list[FrameRef], list[tuple[int, int]]]]:
    """Batches of (B×3×H×W frames, their refs, their original H×W) following ``plan``."""
    loader = DataLoader(FrameDataset(plan, input_shape), batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=collate_frames)
    for images, indices, shapes in loader:
        yield images, [plan[index] for index in indices], shapes


@dataclass
class KeyFrameOutput:
    """The raw head output (1×(5+C)×h×w) of one key frame and where it came from."""

    ref: FrameRef
    output: torch.Tensor
    original_hw: tuple[int, int]


class SequenceDetector:
    """Feeds frames, in walk order, to an eval-mode ``Network`` and yields the raw output of every key frame."""

    def __init__(self, model: torch.nn.Module, num_frame: int, mode: str = "stream",
                 amp_dtype: torch.dtype | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.model = model
        self.num_frame = num_frame
        self.mode = mode
        self.amp_dtype = amp_dtype
        parameter = next(model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        self._sequence: str | None = None
        self._cache: deque[tuple[int, torch.Tensor]] = deque(maxlen=num_frame)

    def reset(self) -> None:
        """Forget the cached frames (the next frame starts a new sequence)."""
        self._sequence = None
        self._cache.clear()

    @torch.no_grad()
    def process(self, images: torch.Tensor, refs: Sequence[FrameRef],
                shapes: Sequence[tuple[int, int]]) -> list[KeyFrameOutput]:
        """Consume a batch of consecutive frames of the walk; return the outputs of its key frames."""
        images = images.to(self.device, self.dtype, non_blocking=True)
        with autocast(self.device, self.amp_dtype):
            per_frame = self.model.extract_frame_features(images) if self.mode == "stream" else images
        windows, keys = [], []
        for index, ref in enumerate(refs):
            if ref.sequence != self._sequence:
                self.reset()
                self._sequence = ref.sequence
            self._cache.append((ref.number, per_frame[index]))
            if ref.is_key:
                cached = dict(self._cache)
                windows.append([cached[number] for number in ref.window])
                keys.append(index)
        if not keys:
            return []
        slots = [torch.stack([window[t] for window in windows]) for t in range(self.num_frame)]
        with autocast(self.device, self.amp_dtype):
            if self.mode == "stream":
                outputs = self.model.detect(slots)
            else:
                outputs = self.model(torch.stack(slots, dim=2))[0]
        outputs = outputs.float() if outputs.dtype in (torch.float16, torch.bfloat16) else outputs
        return [KeyFrameOutput(refs[index], outputs[row:row + 1], tuple(shapes[index]))
                for row, index in enumerate(keys)]
