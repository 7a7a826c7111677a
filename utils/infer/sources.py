"""Where the inference engine's frames come from: walk plans over sequence folders (every frame a window needs, once,
in index order), folders of frames, video files, cameras and streams, decoded and letterboxed into batches.
"""
from __future__ import annotations

import atexit
import os
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence, TypeVar

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..data.annotations import FrameRecord
from ..data.dataset import worker_ignores_interrupts
from ..data.images import IMAGE_SUFFIXES, decode_frame
from ..data.preprocess import preprocess_frame
from ..data.sequence import SequenceFolders, frame_number, window_numbers
from ..errors import SSTNetError, report
from ..runtime.cpus import available_cpus
from ..runtime.signals import signals_held

Item = TypeVar("Item")


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


# ---------------------------------------------------------------------------------------------- walk plans
def plan_sequence_walk(records: Sequence[FrameRecord], num_frame: int, folders: SequenceFolders | None = None,
                       frozen_motion: bool = False, frame_step: int = 1) -> list[FrameRef]:
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
        window = ([record.path] * num_frame if frozen_motion
                  else folders.window(record.path, num_frame, frame_step))
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
    suffixes = sorted({path.suffix.lower() for path in frames})
    if len(suffixes) > 1:
        raise SSTNetError(f"{folder}: frames with {', '.join(suffixes)} suffixes mixed; a sequence's frames share "
                          "one suffix (convert them, or move the others out)")
    return frames


def plan_frames(frames: Sequence[Path], num_frame: int, frame_step: int = 1) -> list[FrameRef]:
    """Every frame in ``frames`` as a key frame (history frames from their folders as needed)."""
    return plan_sequence_walk([FrameRecord(path, np.zeros((0, 5), np.float32)) for path in frames], num_frame,
                              frame_step=frame_step)


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


def spare_core(workers: int) -> bool:
    """Whether decoding may run beside the compute: no decoding workers, and fewer compute threads than CPUs (with
    every CPU computing, another busy thread stalls each OpenMP barrier instead)."""
    return workers == 0 and torch.get_num_threads() < available_cpus()


def read_ahead(items: Iterator[Item], depth: int = 2) -> Iterator[Item]:
    """Yield ``items`` while a thread produces up to ``depth`` of them ahead: frame decoding (OpenCV, NumPy and
    file reads release the GIL) overlaps the model on a spare core, with no process or copy between them. An
    error of the producer is raised here, after the items before it; leaving early stops the thread."""
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    finished = object()

    def offer(entry: tuple) -> bool:
        while not stop.is_set():
            try:
                handoff.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer((item, None)):
                    return
            offer((finished, None))
        except BaseException as error:  # handed over, raised in the consumer
            offer((None, error))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    def stop_producer() -> None:
        stop.set()
        if producer.is_alive():
            producer.join()

    producer = threading.Thread(target=produce, name="read-ahead", daemon=True)
    # A generator left unclosed (held by the traceback of a Ctrl-C, say) would leave the thread running into the
    # interpreter's exit, which kills it inside OpenCV's C++ and aborts the process; exit stops it first instead.
    atexit.register(stop_producer)
    try:
        # A signal raised inside start() would leave the thread running past this try (CI saw exit -6 after a
        # SIGTERM sent as the progress bar appeared): it is held until the thread has started.
        with signals_held():
            producer.start()
        while True:
            item, error = handoff.get()
            if error is not None:
                raise error
            if item is finished:
                return
            yield item
    finally:
        atexit.unregister(stop_producer)
        stop_producer()


def decode_ahead(batches: Iterator[FrameBatch], workers: int) -> Iterator[FrameBatch]:
    """``batches`` decoded ahead in a thread (:func:`read_ahead`) where a core is spare (:func:`spare_core`), else as
    they are."""
    return read_ahead(batches) if spare_core(workers) else batches


def video_frame_count(path: str | os.PathLike) -> int:
    capture = cv2.VideoCapture(str(path))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    capture.release()
    return count


STREAM_TIMEOUT_S = 10.0


def open_capture(source: str | int | os.PathLike, label: str | None = None,
                 timeout: float = STREAM_TIMEOUT_S) -> cv2.VideoCapture:
    """An opened OpenCV capture of a video file, a camera (an int: its index) or a stream URL (rtsp://, http://...).

    A stream gets ``timeout`` seconds to open and to deliver each frame (OpenCV's FFmpeg backend otherwise waits
    about 30 s, and a stalled stream holds a stop request that long). When OpenCV cannot open it the error names
    ``label`` (default: the source).
    """
    label = label or str(source)
    if isinstance(source, int):
        capture = cv2.VideoCapture(source)
    elif is_stream_url(str(source)):
        milliseconds = int(timeout * 1000)
        capture = cv2.VideoCapture(str(source), cv2.CAP_ANY, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, milliseconds,
                                                             cv2.CAP_PROP_READ_TIMEOUT_MSEC, milliseconds])
    else:
        capture = cv2.VideoCapture(str(source))
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
                    num_frame: int, letterbox: bool = True, label: str | None = None,
                    frame_step: int = 1, stall_after: float | None = None) -> Iterator[FrameBatch]:
    """Batches of the frames ``capture`` delivers, read as they arrive (nothing is counted beforehand), every frame a
    key frame of sequence ``name`` (windows clamped at the first frame). Ends with the stream; releases the capture.
    A capture that ends before its first frame is an error naming ``label`` (default: ``name``). ``stall_after``
    (a live stream's read timeout): a read that failed after waiting that long is a stall, said in a note, not
    passed off as the stream's end."""
    try:
        pending: list[tuple[np.ndarray, FrameRef, np.ndarray]] = []
        number = 0
        while True:
            asked = time.monotonic()
            ok, frame = capture.read()
            if not ok and stall_after is not None and number and time.monotonic() - asked >= 0.9 * stall_after:
                report(f"note: {label or name}: no frame for {stall_after:g} s after frame {number - 1}: the stream "
                       "stalled; ending here")
            if ok:
                image = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                data, _ = preprocess_frame(image, input_shape, letterbox, f"{name} frame {number}")
                ref = FrameRef(name, number, window=tuple(window_numbers(number, 0, num_frame, frame_step)))
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
                  letterbox: bool = True, frame_step: int = 1) -> Iterator[FrameBatch]:
    """Batches of a video file's frames, every frame a key frame (windows clamped at the first frame)."""
    return capture_batches(open_capture(path), str(Path(path)), input_shape, batch_size, num_frame, letterbox,
                           frame_step=frame_step)
