"""The sequence dataset: T-frame windows ending at each annotated key frame, for both DAUB and IRDST layouts."""
from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..boxes import xyxy_to_cxcywh
from ..errors import SSTNetError
from .annotations import FrameRecord, read_coco, read_index
from .augment import AugmentConfig, augment_sample
from .images import decode_frame
from .preprocess import Letterbox, clip_boxes, normalize
from .sequence import SequenceFolders


class SequenceDataset(Dataset):
    """Samples of ``num_frame`` frames ``frame_step`` apart (consecutive by default; key frame last) with the key
    frame's boxes.

    ``__getitem__`` returns a 3×T×H×W float32 array and an n×5 float32 tensor of (cx, cy, w, h, cls) in input
    pixels. Every window is checked when the dataset is built, so a missing frame fails at once, not mid-epoch.
    Augmentation (``augment``: one config for every record, or one per record, e.g. each dataset with its own zoom
    range; none by default, as the release trains) is drawn once per sample from a generator seeded by (seed, epoch,
    index), so runs and resumed runs see the same draws. ``zooms`` (one per record, default 1) enlarge a sample about
    its centre before the augmentation's own zoom, cropped to the input with its boxes kept inside: a dataset whose
    targets are smaller than the others' is shown at their size.
    """

    def __init__(self, records: Sequence[FrameRecord], input_shape: tuple[int, int], num_frame: int = 5,
                 augment: AugmentConfig | Sequence[AugmentConfig | None] | None = None, seed: int = 0,
                 source: str = "dataset", frame_step: int = 1, zooms: Sequence[float] | None = None) -> None:
        if num_frame < 2:
            raise SSTNetError(f"--num-frame {num_frame}: SSTNet needs at least 2 frames per sample")
        if not records:
            raise SSTNetError(f"{source}: no annotated frames to load")
        self.records = list(records)
        self.input_shape = tuple(input_shape)
        self.num_frame = num_frame
        per_record = [augment] * len(self.records) if augment is None or isinstance(augment, AugmentConfig) else augment
        # None stands for "no augmentation" so that a sample with nothing to draw skips the generator.
        self.augments = [config if config is not None and config.enabled else None for config in per_record]
        if len(self.augments) != len(self.records):
            raise ValueError(f"{source}: {len(self.augments)} augmentations for {len(self.records)} records")
        self.zooms = [1.0] * len(self.records) if zooms is None else [float(zoom) for zoom in zooms]
        if len(self.zooms) != len(self.records):
            raise ValueError(f"{source}: {len(self.zooms)} zooms for {len(self.records)} records")
        self.seed = seed
        self.epoch = 0
        folders = SequenceFolders()
        self.windows = [folders.window(record.path, num_frame, frame_step) for record in self.records]

    @classmethod
    def from_coco(cls, json_path: str | os.PathLike, root: str | os.PathLike, input_shape: tuple[int, int],
                  num_frame: int = 5, **kwargs) -> "SequenceDataset":
        """Annotated frames of a COCO file whose ``file_name`` entries are relative to ``root``."""
        return cls(read_coco(json_path, root).records, input_shape, num_frame, source=str(json_path), **kwargs)

    @classmethod
    def from_index(cls, txt_path: str | os.PathLike, root: str | os.PathLike | None, input_shape: tuple[int, int],
                   num_frame: int = 5, **kwargs) -> "SequenceDataset":
        """Frames of an index txt; relative paths are resolved against ``root``."""
        return cls(read_index(txt_path, root), input_shape, num_frame, source=str(txt_path), **kwargs)

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (workers are re-created each epoch and copy this)."""
        self.epoch = epoch

    def load_window(self, index: int) -> tuple[list[np.ndarray], list[Letterbox], tuple[str, ...]]:
        """Letterboxed uint8 frames of sample ``index`` (oldest first), the letterbox of each, and the frames that
        had non-finite pixels. The key frame must have the size its annotation declares."""
        record = self.records[index]
        frames, letterboxes, nonfinite = [], [], []
        for path in self.windows[index]:
            is_key = path == self.windows[index][-1]
            decoded = decode_frame(path, record.size if is_key else None, record.source)
            letterbox = Letterbox.fit(decoded.image.shape[:2], self.input_shape, source=str(path))
            frames.append(letterbox.apply(decoded.image))
            letterboxes.append(letterbox)
            if decoded.nonfinite_pixels:
                nonfinite.append(str(path))
        return frames, letterboxes, tuple(nonfinite)

    def __getitem__(self, index: int) -> tuple[np.ndarray, torch.Tensor, tuple[str, ...]]:
        """The 3×T×H×W input, the key frame's n×5 targets, and the frames with non-finite pixels (see
        :meth:`load_window`)."""
        frames, letterboxes, nonfinite = self.load_window(index)
        boxes = letterboxes[-1].map_boxes(self.records[index].boxes)
        zoom = self.zooms[index]
        augment = self.augments[index]
        if augment is not None or zoom != 1:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            frames, boxes = augment_sample(frames, boxes, augment or AugmentConfig(), rng, zoom)
            boxes = clip_boxes(boxes, self.input_shape)
        sample = np.stack([normalize(frame) for frame in frames], axis=1)
        targets = torch.from_numpy(boxes)
        targets[:, :4] = xyxy_to_cxcywh(targets[:, :4])
        return sample, targets, nonfinite


class Batch(NamedTuple):
    """B×3×T×H×W inputs, the per-sample n×5 targets, and the frames of the batch that had non-finite pixels."""

    images: torch.Tensor
    targets: list[torch.Tensor]
    nonfinite: tuple[str, ...]


def sequence_collate(samples: Sequence[tuple[np.ndarray, torch.Tensor, tuple[str, ...]]]) -> Batch:
    """Stack samples into a :class:`Batch`."""
    images = torch.from_numpy(np.stack([sample for sample, _, _ in samples]))
    return Batch(images, [targets for _, targets, _ in samples],
                 tuple(path for _, _, paths in samples for path in paths))


def worker_ignores_interrupts(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: Ctrl-C in a terminal reaches the workers too, which inherit the main process's
    handler; they leave the stop to the main process, which shuts them down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def resolve_dataset_root(root: str | os.PathLike) -> Path:
    """Check that a dataset root exists and is a folder."""
    root = Path(root)
    if not root.exists():
        raise SSTNetError(f"{root}: dataset root not found")
    if not root.is_dir():
        raise SSTNetError(f"{root}: dataset root is not a folder")
    return root
