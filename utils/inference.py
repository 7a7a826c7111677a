"""The inference engine: walks sequences frame by frame and detects on every key frame's T-frame window.

Two modes give the same detections:
- ``window`` is the released computation: each window's T frames go through the backbone, T passes per frame.
- ``stream`` keeps the last T frames' backbone features per sequence, so each frame goes through the backbone
  ONCE however many windows it belongs to (in eval mode a frame's features do not depend on its window).
Frames are decoded and letterboxed (or stretched, ``letterbox=False``) once each, in DataLoader workers, whatever
the mode.

The engine calls the model through a backend's three graph calls (``frame_features``, ``detect``, ``window``):
:class:`TorchBackend` runs them on a PyTorch ``Network``; ``utils.onnx_backend.OnnxBackend`` on the exported
ONNX graphs. The walk, the cache, the decoding and the NMS are the same for both.
"""
from __future__ import annotations

import os
import re
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Protocol, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from nets import Network
from nets.weights import load_weights

from .annotations import FrameRecord
from .boxes import decode_outputs, non_max_suppression
from .device import autocast
from .errors import SSTNetError
from .model_spec import ModelSpec
from .images import IMAGE_SUFFIXES, NonFiniteFrames, decode_frame
from .dataloader import worker_ignores_interrupts
from .preprocess import preprocess_frame
from .sequence import SequenceFolders, frame_number, window_numbers

MODES = ("stream", "window")


@dataclass(frozen=True)
class FrameRef:
    """A frame to run through the model: its sequence, index, and — for key frames — the window to detect on."""

    sequence: str
    number: int
    path: Path | None = None
    window: tuple[int, ...] | None = None
    image_id: int | None = None
    # (height, width) an annotation file declares for the frame, and which entry declares it.
    size: tuple[int, int] | None = None
    declared_by: str | None = None

    @property
    def is_key(self) -> bool:
        return self.window is not None


@dataclass
class FrameBatch:
    """Consecutive frames of a walk: B×3×H×W inputs, their refs, original H×W and (if kept) original RGB frames."""

    images: torch.Tensor
    refs: list[FrameRef]
    shapes: list[tuple[int, int]]
    originals: list[np.ndarray | None] = field(default_factory=list)
    nonfinite: list[str] = field(default_factory=list)  # frames whose NaN/infinite pixels were mapped to 0


@dataclass
class DetectSettings:
    """How frames become detections: input size, window length, thresholds, engine mode and batching."""

    input_shape: tuple[int, int] = (512, 512)
    num_frame: int = 5
    conf: float = 0.001
    nms: float = 0.65
    mode: str = "stream"
    batch_size: int = 1
    workers: int = 0
    amp_dtype: torch.dtype | None = None
    letterbox: bool = True  # False: frames stretched to the input (the release's letterbox_image=False)


# ---------------------------------------------------------------------------------------------- walk plans
def plan_sequence_walk(records: Sequence[FrameRecord], num_frame: int, folders: SequenceFolders | None = None,
                       frozen_motion: bool = False) -> list[FrameRef]:
    """Every frame the windows of ``records`` need, once each, sequence by sequence in index order.

    Sequences keep the order in which they first appear in ``records``; key frames carry their window.
    ``frozen_motion``: every window is its key frame repeated T times (a diagnostic: the model sees no motion).
    """
    folders = folders or SequenceFolders()
    windows: dict[str, dict[int, tuple[int, ...]]] = {}
    keys: dict[tuple[str, int], FrameRecord] = {}
    paths: dict[tuple[str, int], Path] = {}
    for record in records:
        sequence = str(record.path.parent)
        window = [record.path] * num_frame if frozen_motion else folders.window(record.path, num_frame)
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
                                 record.image_id if record is not None else None,
                                 record.size if record is not None else None,
                                 record.source if record is not None else None))
    return plan


def folder_frames(folder: str | os.PathLike) -> list[Path]:
    """The frames of one sequence folder (integer names, image suffixes) in numeric order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SSTNetError(f"{folder}: not a folder of frames")
    frames = sorted((path for path in folder.iterdir()
                     if path.suffix.lower() in IMAGE_SUFFIXES and path.stem.isdigit()), key=frame_number)
    if not frames:
        raise SSTNetError(f"{folder}: no frames named by integer index (0.bmp, 1.bmp, ...)")
    return frames


def plan_frames(frames: Sequence[Path], num_frame: int) -> list[FrameRef]:
    """Every frame in ``frames`` as a key frame (history frames from their folders as needed)."""
    return plan_sequence_walk([FrameRecord(path, np.zeros((0, 5), np.float32)) for path in frames], num_frame)


# ------------------------------------------------------------------------------------------ frame sources
class FrameDataset(Dataset):
    """Decodes and letterboxes (``letterbox=False``: stretches) the frames of a walk plan (in workers); items keep the
    plan's order."""

    def __init__(self, plan: Sequence[FrameRef], input_shape: tuple[int, int], keep_original: bool = False,
                 letterbox: bool = True) -> None:
        self.plan = list(plan)
        self.input_shape = input_shape
        self.keep_original = keep_original
        self.letterbox = letterbox

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int, tuple[int, int], np.ndarray | None, bool]:
        ref = self.plan[index]
        decoded = decode_frame(ref.path, ref.size, ref.declared_by)
        data, _ = preprocess_frame(decoded.image, self.input_shape, self.letterbox, str(ref.path))
        return (data, index, decoded.image.shape[:2], decoded.image if self.keep_original else None,
                decoded.nonfinite_pixels > 0)


def frame_batches(plan: Sequence[FrameRef], input_shape: tuple[int, int], batch_size: int, workers: int,
                  keep_original: bool = False, letterbox: bool = True) -> Iterator[FrameBatch]:
    """Batches of frames following ``plan``, decoded by ``workers`` processes."""
    loader = DataLoader(FrameDataset(plan, input_shape, keep_original, letterbox), batch_size=batch_size,
                        shuffle=False, num_workers=workers, collate_fn=list, worker_init_fn=worker_ignores_interrupts)
    for items in loader:
        yield FrameBatch(torch.from_numpy(np.stack([item[0] for item in items])),
                         [plan[item[1]] for item in items], [item[2] for item in items], [item[3] for item in items],
                         [str(plan[item[1]].path) for item in items if item[4]])


def video_frame_count(path: str | os.PathLike) -> int:
    capture = cv2.VideoCapture(str(path))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    capture.release()
    return count


def open_capture(source: str | int | os.PathLike, label: str | None = None) -> cv2.VideoCapture:
    """An opened OpenCV capture of a video file, a camera (an int: its index) or a stream URL (rtsp://, http://...).

    When OpenCV cannot open it the error names ``label`` (default: the source).
    """
    label = label or str(source)
    capture = cv2.VideoCapture(source if isinstance(source, int) else str(source))
    if not capture.isOpened():
        capture.release()
        if isinstance(source, int):
            raise SSTNetError(f"{label}: cannot open camera {source}")
        if is_stream_url(str(source)):
            raise SSTNetError(f"{label}: cannot open the stream (unreachable, or not a video OpenCV can read)")
        raise SSTNetError(f"{label}: cannot open as a video")
    return capture


def is_stream_url(text: str) -> bool:
    """Whether ``text`` is a URL (``scheme://...``) rather than a path."""
    return re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*://", text) is not None


def live_source(text: str) -> int | str | None:
    """The live source ``text`` names: a camera index (digits only) or a stream URL; None for a path."""
    if text.isdigit():
        return int(text)
    return text if is_stream_url(text) else None


def capture_batches(capture: cv2.VideoCapture, name: str, input_shape: tuple[int, int], batch_size: int,
                    num_frame: int, letterbox: bool = True, label: str | None = None) -> Iterator[FrameBatch]:
    """Batches of the frames ``capture`` delivers, read as they arrive (nothing is counted beforehand), every frame a
    key frame of sequence ``name`` (windows clamped at the first frame). Ends with the stream; releases the capture.
    A capture that ends before its first frame is an error naming ``label`` (default: ``name``)."""
    try:
        pending: list[tuple[np.ndarray, FrameRef, np.ndarray]] = []
        number = 0
        while True:
            ok, frame = capture.read()
            if ok:
                image = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                data, _ = preprocess_frame(image, input_shape, letterbox, f"{name} frame {number}")
                ref = FrameRef(name, number, window=tuple(window_numbers(number, 0, num_frame)))
                pending.append((data, ref, image))
                number += 1
            if pending and (not ok or len(pending) == batch_size):
                yield FrameBatch(torch.from_numpy(np.stack([item[0] for item in pending])),
                                 [item[1] for item in pending], [item[2].shape[:2] for item in pending],
                                 [item[2] for item in pending])
                pending = []
            if not ok:
                break
        if number == 0:
            raise SSTNetError(f"{label or name}: no frame could be read")
    finally:
        capture.release()


def video_batches(path: str | os.PathLike, input_shape: tuple[int, int], batch_size: int, num_frame: int,
                  letterbox: bool = True) -> Iterator[FrameBatch]:
    """Batches of a video file's frames, every frame a key frame (windows clamped at the first frame)."""
    return capture_batches(open_capture(path), str(Path(path)), input_shape, batch_size, num_frame, letterbox)


# ---------------------------------------------------------------------------------------------- detection
@dataclass
class KeyFrameOutput:
    """The raw head output (1×(5+C)×h×w) of one key frame, where it came from, and its original frame if kept."""

    ref: FrameRef
    output: torch.Tensor
    original_hw: tuple[int, int]
    image: np.ndarray | None = None


class InferenceBackend(Protocol):
    """The three graph calls the engine makes; inputs and outputs live on ``device`` in ``dtype``."""

    device: torch.device
    dtype: torch.dtype

    def frame_features(self, images: torch.Tensor) -> torch.Tensor:
        """N×3×H×W frames → what the streaming cache keeps per frame (N×…)."""

    def detect(self, slots: Sequence[torch.Tensor]) -> torch.Tensor:
        """The T cached per-frame tensors of N windows (oldest first) → raw output N×(5+C)×H/8×W/8."""

    def window(self, x: torch.Tensor) -> torch.Tensor:
        """N×3×T×H×W windows → raw output N×(5+C)×H/8×W/8 (the released single-graph computation)."""


class TorchBackend:
    """The graph calls on an eval-mode ``Network`` (in its current computation), under autocast to ``amp_dtype``.

    ``channels_last`` converts the model (in place) and the frames to the channels-last layout: under bf16 autocast
    on the CPU, oneDNN's bf16 convolutions then skip a layout conversion per layer (streaming at 512: 2.07× fp32
    instead of 1.85×, benchmarks/NOTES.md); in float32 it changes nothing measurable.

    ``compile_mode`` ("default", "reduce-overhead", "max-autotune") runs the three calls through ``torch.compile``
    in that mode. "reduce-overhead" replays CUDA graphs, which reuse their output memory on the next replay, so the
    per-frame features the streaming cache keeps are copied out.
    """

    def __init__(self, model: torch.nn.Module, amp_dtype: torch.dtype | None = None,
                 channels_last: bool = False, compile_mode: str | None = None) -> None:
        self.model = model.to(memory_format=torch.channels_last) if channels_last else model
        self.amp_dtype = amp_dtype
        self.channels_last = channels_last
        parameter = next(model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        self._copy_out = compile_mode == "reduce-overhead"
        graph = (lambda call: torch.compile(call, mode=compile_mode)) if compile_mode else (lambda call: call)
        self._frame_features, self._detect = graph(self.model.frame_features), graph(self.model.detect)
        self._window = graph(self.model.forward)

    def _output(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.clone() if self._copy_out else tensor

    def frame_features(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.amp_dtype):
            return self._output(self._frame_features(images))

    def detect(self, slots: Sequence[torch.Tensor]) -> torch.Tensor:
        with autocast(self.device, self.amp_dtype):
            return self._output(self._detect(slots))

    def window(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.amp_dtype):
            return self._output(self._window(x)[0])


def as_backend(model: torch.nn.Module | InferenceBackend, amp_dtype: torch.dtype | None = None) -> InferenceBackend:
    """A backend as it is, a PyTorch model wrapped in :class:`TorchBackend`."""
    return TorchBackend(model, amp_dtype) if isinstance(model, torch.nn.Module) else model


class SequenceDetector:
    """Feeds frames, in walk order, to a backend (or an eval-mode ``Network``) and returns the raw output of every
    key frame."""

    def __init__(self, model: torch.nn.Module | InferenceBackend, num_frame: int, mode: str = "stream",
                 amp_dtype: torch.dtype | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.backend = as_backend(model, amp_dtype)
        self.num_frame = num_frame
        self.mode = mode
        self._sequence: str | None = None
        self._cache: deque[tuple[int, torch.Tensor]] = deque(maxlen=num_frame)

    def reset(self) -> None:
        """Forget the cached frames (the next frame starts a new sequence)."""
        self._sequence = None
        self._cache.clear()

    @torch.no_grad()
    def process(self, batch: FrameBatch) -> list[KeyFrameOutput]:
        """Consume a batch of consecutive frames of the walk; return the outputs of its key frames."""
        images = batch.images.to(self.backend.device, self.backend.dtype, non_blocking=True)
        per_frame = self.backend.frame_features(images) if self.mode == "stream" else images
        windows, keys = [], []
        for index, ref in enumerate(batch.refs):
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
        if self.mode == "stream":
            outputs = self.backend.detect(slots)
        else:
            outputs = self.backend.window(torch.stack(slots, dim=2))
        outputs = outputs.float() if outputs.dtype in (torch.float16, torch.bfloat16) else outputs
        originals = batch.originals or [None] * len(batch.refs)
        return [KeyFrameOutput(batch.refs[index], outputs[row:row + 1], tuple(batch.shapes[index]), originals[index])
                for row, index in enumerate(keys)]


def postprocess(outputs: Sequence[KeyFrameOutput], settings: DetectSettings) -> list[np.ndarray]:
    """Decode, threshold, NMS and map back: per key frame N×7 (top, left, bottom, right, obj, class_conf, class)."""
    raw = torch.cat([item.output for item in outputs])
    decoded = decode_outputs([raw], settings.input_shape)
    return non_max_suppression(decoded, raw.shape[1] - 5, settings.input_shape,
                               [item.original_hw for item in outputs], settings.letterbox, settings.conf, settings.nms)


def detect_batches(model: torch.nn.Module | InferenceBackend, batches: Iterable[FrameBatch], settings: DetectSettings,
                   total: int | None, progress: bool = True,
                   desc: str = "detect") -> Iterator[tuple[KeyFrameOutput, np.ndarray]]:
    """Run the engine with ``model`` (a backend or an eval-mode ``Network``) over ``batches`` (``total`` frames for
    the progress bar, None for a live source); yield each key frame's output and its detections (rows as
    :func:`postprocess` returns them)."""
    detector = SequenceDetector(model, settings.num_frame, settings.mode, settings.amp_dtype)
    nonfinite = NonFiniteFrames()
    with tqdm(total=total, desc=desc, unit="frame", disable=not progress, dynamic_ncols=True) as bar:
        for batch in batches:
            nonfinite.add(batch.nonfinite)
            outputs = detector.process(batch)
            bar.update(len(batch.refs))
            if outputs:
                yield from zip(outputs, postprocess(outputs, settings))
    if nonfinite.message():
        tqdm.write(nonfinite.message(), file=sys.stderr)


def detect_plan(model: torch.nn.Module | InferenceBackend, plan: Sequence[FrameRef], settings: DetectSettings,
                progress: bool = True, desc: str = "detect",
                keep_original: bool = False) -> Iterator[tuple[KeyFrameOutput, np.ndarray]]:
    """:func:`detect_batches` over the frames of a walk plan, decoded in ``settings.workers`` processes."""
    batches = frame_batches(plan, settings.input_shape, settings.batch_size, settings.workers, keep_original,
                            settings.letterbox)
    return detect_batches(model, batches, settings, len(plan), progress, desc)


def build_model(spec: ModelSpec, num_classes: int, state: dict[str, torch.Tensor], device: torch.device,
                source: str = "--weights") -> Network:
    """An eval-mode ``Network`` of ``spec`` with ``state`` loaded strictly, on ``device``."""
    model = Network(num_classes, spec.num_frame, spec.phi, lstm_hidden=spec.lstm_hidden, computation=spec.computation)
    load_weights(model, state, mode="strict", name=source)
    return model.to(device).eval()
