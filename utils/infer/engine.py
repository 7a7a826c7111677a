"""The inference engine: walks sequences frame by frame and detects on every key frame's T-frame window.

Two modes give the same detections:
- ``window`` is the released computation: each window's T frames go through the backbone, T passes per frame.
- ``stream`` keeps the last T frames' backbone features per sequence, so each frame goes through the backbone
  ONCE however many windows it belongs to (in eval mode a frame's features do not depend on its window).
Frames are decoded and letterboxed (or stretched, ``letterbox=False``) once each, in DataLoader workers, whatever
the mode.

The engine calls the model through a backend's three graph calls (``frame_features``, ``detect``, ``window``):
:class:`TorchBackend` runs them on a PyTorch ``Network``; ``utils.deploy.onnx_backend.OnnxBackend`` on the exported
ONNX graphs. The walk, the cache, the decoding and the NMS are the same for both.
"""
from __future__ import annotations

import sys
from collections import deque
from dataclasses import dataclass
from typing import Iterable, Iterator, Protocol, Sequence

import numpy as np
import torch
from tqdm import tqdm

from nets import Network
from nets.weights import is_detector_key, load_weights

from ..boxes import decode_outputs, non_max_suppression
from ..data.images import NonFiniteFrames
from ..model_spec import ModelSpec
from ..runtime.device import autocast
from .sources import FrameBatch, FrameRef, decode_ahead, frame_batches

MODES = ("stream", "window")


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
    frame_step: int = 1  # frames between the frames of a window (1: consecutive, as released)


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
    instead of 1.85×, docs/notes/performance.md); in float32 it changes nothing measurable.

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
                 amp_dtype: torch.dtype | None = None, frame_step: int = 1) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.backend = as_backend(model, amp_dtype)
        self.num_frame = num_frame
        self.mode = mode
        self._sequence: str | None = None
        # Every walked frame a window may still reach: the last (T - 1)·step + 1 (walks skip only unneeded frames).
        self._cache: deque[tuple[int, torch.Tensor]] = deque(maxlen=(num_frame - 1) * frame_step + 1)

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
    detector = SequenceDetector(model, settings.num_frame, settings.mode, settings.amp_dtype, settings.frame_step)
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
    batches = decode_ahead(frame_batches(plan, settings.input_shape, settings.batch_size, settings.workers,
                                         keep_original, settings.letterbox), settings.workers)
    return detect_batches(model, batches, settings, len(plan), progress, desc)


def build_model(spec: ModelSpec, num_classes: int, state: dict[str, torch.Tensor], device: torch.device,
                source: str = "--weights") -> Network:
    """An eval-mode ``Network`` of ``spec`` with the detector part of ``state`` loaded strictly, on ``device``; the
    training-only motion branch is not built (whatever width the weights or their sidecar give it)."""
    model = Network(num_classes, spec.num_frame, spec.phi, lstm_hidden=spec.lstm_hidden, computation=spec.computation,
                    motion_branch=False)
    load_weights(model, {key: value for key, value in state.items() if is_detector_key(key)}, mode="strict",
                 name=source)
    return model.to(device).eval()
