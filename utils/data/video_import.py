"""Labelled videos into the DAUB layout: ``images/<split>/<clip>/<n>.png``, ``annotations/instances_<split>2017.json``.

A clip is a video file and its label file (:mod:`utils.video_labels`). Frame ``n`` on disk is the video's frame
``n`` (0-based, decoding order), so a label is never shifted. The key frames, which the COCO file lists and an
evaluation scores, are the labelled frames whose index is a multiple of the key-frame step; a labelled frame where
no target is in view stays a key frame with no box, so false alarms on it count. Only the frames the key frames'
T-frame windows need are written, as single-channel images.

Each clip is converted on its own (in a worker process when asked), so one unreadable video or label file stops
that clip alone, with one line naming the file.
"""
from __future__ import annotations

import multiprocessing
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from ..errors import SSTNetError
from ..runtime.fileio import check_dataset_folder, check_not_input, ensure_dir, write_json
from .annotations import load_json
from .video_labels import Box, VideoLabels, read_labels

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm", ".ts", ".mts", ".flv",
                  ".ogv", ".3gp", ".y4m")
# Label files looked for beside a video NAME.EXT, in this order (the Drone-detection dataset's is the first).
LABEL_NAMES = ("{name}_LABELS.mat", "{name}.mat", "{name}_LABELS.txt", "{name}.txt")
CLASS_MODES = ("target", "from-name", "from-labels")
FRAME_FORMATS = ("png", "bmp")
# A clip's class from its name: the last word of letters before its number (IR_DRONE_001 -> drone).
DEFAULT_NAME_PATTERN = r"(?:.*_)?(?P<class>[A-Za-z]+)_?\d*"
MARKER = ".videos_to_daub.json"
# zlib's run-length strategy at level 1: on the Drone-detection dataset's thermal frames 17 % smaller than the
# default strategy and 30x faster to write than level 9, which is larger still (29.0 / 34.8 / 30.9 KB per frame).
_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]


@dataclass(frozen=True)
class ImportConfig:
    """How clips become a dataset (every field is a flag of ``utils_coco/videos_to_daub.py``)."""

    keyframe_step: int = 5
    num_frame: int = 5
    frame_step: int = 1
    classes: str = "target"
    name_pattern: str = DEFAULT_NAME_PATTERN
    frame_format: str = "png"

    def __post_init__(self) -> None:
        if self.keyframe_step < 1:
            raise SSTNetError(f"--keyframe-step {self.keyframe_step}: must be at least 1")
        if self.num_frame < 1:
            raise SSTNetError(f"--num-frame {self.num_frame}: must be at least 1")
        if self.frame_step < 1:
            raise SSTNetError(f"--frame-step {self.frame_step}: must be at least 1")
        if self.classes not in CLASS_MODES:
            raise SSTNetError(f"--classes {self.classes}: choose one of {', '.join(CLASS_MODES)}")
        if self.frame_format not in FRAME_FORMATS:
            raise SSTNetError(f"--frame-format {self.frame_format}: choose one of {', '.join(FRAME_FORMATS)}")
        try:
            pattern = re.compile(self.name_pattern)
        except re.error as exc:
            raise SSTNetError(f"--name-pattern {self.name_pattern!r}: not a regular expression ({exc})") from None
        if "class" not in pattern.groupindex:
            raise SSTNetError(f"--name-pattern {self.name_pattern!r}: needs a group named 'class', e.g. "
                              f"{DEFAULT_NAME_PATTERN!r}")


@dataclass(frozen=True)
class Clip:
    """One video to convert: its name (the sequence folder's), files, split and attributes from the split file."""

    name: str
    video: Path
    labels: Path
    split: str
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class KeyFrame:
    index: int
    boxes: list[tuple[float, float, float, float, str]]


@dataclass
class ClipResult:
    """What converting one clip gave: sizes, frame counts, key frames with their boxes, warnings, or an error."""

    clip: Clip
    width: int = 0
    height: int = 0
    video_frames: int = 0
    labelled_frames: int = 0
    keyframes: list[KeyFrame] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    bytes_written: int = 0
    warnings: list[str] = field(default_factory=list)
    error: str | None = None


# ------------------------------------------------------------------------------------------ finding clips
def clip_class(name: str, pattern: str) -> str:
    """The class a clip's name gives under ``pattern`` (lower case), or an error naming the clip."""
    match = re.fullmatch(pattern, name)
    if match is None or not match.group("class"):
        raise SSTNetError(f"{name}: --classes from-name: the name does not match --name-pattern {pattern!r}")
    return match.group("class").lower()


def label_file(video: Path, labels_dir: Path) -> Path:
    """The one label file of ``video`` in ``labels_dir`` (see LABEL_NAMES); none or several is an error."""
    found = [labels_dir / pattern.format(name=video.stem) for pattern in LABEL_NAMES]
    found = [path for path in found if path.is_file()]
    if not found:
        names = ", ".join(pattern.format(name=video.stem) for pattern in LABEL_NAMES)
        raise SSTNetError(f"{video}: no label file in {labels_dir} (looked for {names})")
    if len(found) > 1:
        raise SSTNetError(f"{video}: several label files ({', '.join(path.name for path in found)}); keep one")
    return found[0]


def read_splits(path: Path) -> tuple[dict[str, list[str]], dict[str, dict[str, Any]]]:
    """A split file: every list-valued key is a split (clip names), every object-valued key a per-clip attribute
    (e.g. ``distance_bin``: {clip: bin}). A clip in two splits is an error."""
    data = load_json(path, f"--splits {path}", "split json")
    if not isinstance(data, dict):
        raise SSTNetError(f"--splits {path}: expected an object like {{\"train\": [clips], \"test\": [clips]}}")
    splits, attributes = {}, {}
    for key, value in data.items():
        if isinstance(value, list):
            if not re.fullmatch(r"[A-Za-z0-9_\-]+", key):
                raise SSTNetError(f"--splits {path}: split name '{key}' must be a word (letters, digits, _ or -)")
            if not all(isinstance(name, str) and name for name in value):
                raise SSTNetError(f"--splits {path}: '{key}' must list clip names (strings)")
            splits[key] = value
        elif isinstance(value, dict):
            attributes[key] = value
        else:
            raise SSTNetError(f"--splits {path}: '{key}' must be a list of clips or an object of per-clip values")
    if not splits:
        raise SSTNetError(f"--splits {path}: no split (a key whose value is a list of clip names)")
    owner: dict[str, str] = {}
    for split, names in splits.items():
        for name in names:
            if name in owner:
                raise SSTNetError(f"--splits {path}: clip {name} is in both '{owner[name]}' and '{split}'")
            owner[name] = split
    return splits, attributes


def find_clips(videos: Path, labels_dir: Path, splits: dict[str, list[str]] | None,
               attributes: dict[str, dict[str, Any]], default_split: str,
               name_pattern: str = DEFAULT_NAME_PATTERN) -> tuple[list[Clip], list[str]]:
    """The clips to convert and the problems found on the way (one line each: a video without labels, a clip of the
    split file without a video, a video in no split). A clip's attributes are its values in ``attributes`` plus
    ``class``, the class its name gives under ``name_pattern`` when it matches (for scoring per class)."""
    if not videos.is_dir():
        raise SSTNetError(f"--videos {videos}: not a folder")
    files = sorted(path for path in videos.iterdir() if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file())
    by_name: dict[str, Path] = {}
    problems: list[str] = []
    for path in files:
        if path.stem in by_name:
            problems.append(f"error: {path}: {by_name[path.stem].name} has the same name; clip {path.stem} left out")
            continue
        by_name[path.stem] = path
    if not by_name:
        raise SSTNetError(f"--videos {videos}: no video files ({', '.join(VIDEO_SUFFIXES[:5])}, ...)")
    split_of = ({name: split for split, names in splits.items() for name in names} if splits is not None
                else {name: default_split for name in by_name})
    if splits is not None:
        for name in sorted(set(split_of) - set(by_name)):
            problems.append(f"warning: {name}: in the split file but no video {name}.* in {videos}; left out")
        for name in sorted(set(by_name) - set(split_of)):
            problems.append(f"warning: {by_name[name]}: in no split of the split file; left out")
    clips = []
    for name, video in by_name.items():
        if name not in split_of:
            continue
        try:
            labels = label_file(video, labels_dir)
        except SSTNetError as exc:
            problems.append(f"error: {exc}; clip left out")
            continue
        clip_attributes = {key: values[name] for key, values in attributes.items() if name in values}
        match = re.fullmatch(name_pattern, name)
        if match is not None and match.group("class"):
            clip_attributes.setdefault("class", match.group("class").lower())
        clips.append(Clip(name, video, labels, split_of[name], clip_attributes))
    return clips, problems


# ------------------------------------------------------------------------------------------ one clip
def _grey(frame: np.ndarray) -> np.ndarray:
    """A decoded frame as one channel (thermal video stores grey as three equal channels)."""
    if frame.ndim == 2:
        return frame
    if frame.shape[2] == 1:
        return frame[:, :, 0]
    first = frame[:, :, 0]
    if np.array_equal(first, frame[:, :, 1]) and np.array_equal(first, frame[:, :, 2]):
        return first
    return cv2.cvtColor(frame[:, :, :3], cv2.COLOR_BGR2GRAY)


def _box_in_frame(box: Box, width: int, height: int) -> tuple[float, float, float, float] | None:
    """``box`` clipped to the frame (unchanged when it lies inside), or None when nothing of it is inside or its
    size is not positive."""
    if box.w <= 0 or box.h <= 0:
        return None
    if box.x >= 0 and box.y >= 0 and box.x + box.w <= width and box.y + box.h <= height:
        return box.x, box.y, box.w, box.h
    x1, y1 = max(box.x, 0.0), max(box.y, 0.0)
    x2, y2 = min(box.x + box.w, float(width)), min(box.y + box.h, float(height))
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        return None
    return x1, y1, x2 - x1, y2 - y1


def _class_of_box(box: Box, clip: Clip, config: ImportConfig, labels_path: Path) -> str:
    if config.classes == "target":
        return "target"
    if config.classes == "from-name":
        return clip_class(clip.name, config.name_pattern)
    if box.class_name is None:
        raise SSTNetError(f"{labels_path}: --classes from-labels: a box has no class name (x,y,w,h,class)")
    return box.class_name


def needed_frames(keyframes: Sequence[int], num_frame: int, frame_step: int = 1) -> list[int]:
    """The frames the T-frame windows of ``keyframes`` read: each key frame and the T - 1 before it, ``frame_step``
    apart, clamped at frame 0 (as a dataset's windows are clamped at its first frame)."""
    return sorted({max(key - frame_step * offset, 0) for key in keyframes for offset in range(num_frame)})


def _write_frame(path: Path, image: np.ndarray, frame_format: str) -> int:
    params = _PNG_PARAMS if frame_format == "png" else []
    ok, encoded = cv2.imencode(f".{frame_format}", image, params)
    if not ok:
        raise SSTNetError(f"{path}: OpenCV could not encode the frame")
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(encoded.tobytes())
    os.replace(temporary, path)
    return len(encoded)


def convert_clip(clip: Clip, out: str | os.PathLike, config: ImportConfig) -> ClipResult:
    """Decode ``clip``, write the frames its key frames need under ``out`` and return its key frames. A problem that
    stops the clip is returned as ``error`` (one line), never raised, so the other clips go on."""
    result = ClipResult(clip)
    try:
        _convert(clip, Path(out), config, result)
    except SSTNetError as exc:
        result.error = str(exc)
    except (OSError, cv2.error, MemoryError) as exc:
        result.error = f"{clip.video}: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
    return result


def _convert(clip: Clip, out: Path, config: ImportConfig, result: ClipResult) -> None:
    labels: VideoLabels = read_labels(clip.labels)
    capture = cv2.VideoCapture(str(clip.video))
    try:
        if not capture.isOpened():
            raise SSTNetError(f"{clip.video}: not a readable video (OpenCV cannot open it)")
        # The labelled key-frame candidates, then the frames their windows need; decoding stops after the last.
        candidates = [index for index in sorted(labels.frames) if index % config.keyframe_step == 0]
        wanted = set(needed_frames(candidates, config.num_frame, config.frame_step))
        folder = out / "images" / clip.split / clip.name
        frames = 0
        size: tuple[int, int] | None = None
        # grab() alone steps through a frame; only the frames a window needs (and the first, for the size) are
        # converted and written.
        while capture.grab():
            if frames in wanted or size is None:
                ok, frame = capture.retrieve()
                if not ok:
                    raise SSTNetError(f"{clip.video}: frame {frames} cannot be decoded")
                image = _grey(frame)
                if size is None:
                    size = image.shape[:2]
                    ensure_dir(folder)
                elif image.shape[:2] != size:
                    raise SSTNetError(f"{clip.video}: frame {frames} is {image.shape[1]}x{image.shape[0]}, the first "
                                      f"was {size[1]}x{size[0]}")
                if frames in wanted:
                    path = folder / f"{frames}.{config.frame_format}"
                    result.bytes_written += _write_frame(path, image, config.frame_format)
                    result.written.append(str(path))
            frames += 1
    finally:
        capture.release()
    if size is None:
        raise SSTNetError(f"{clip.video}: not a readable video (no frame could be decoded)")
    result.height, result.width = size
    result.video_frames = frames
    result.labelled_frames = len(labels.frames)
    _check_lengths(labels, frames, clip, result)
    _collect_keyframes(labels, [index for index in candidates if index < frames], clip, config, result)


def _check_lengths(labels: VideoLabels, frames: int, clip: Clip, result: ClipResult) -> None:
    """One warning when labels and video differ in length; labels stay aligned from frame 0 either way."""
    beyond = sorted(index for index in labels.frames if index >= frames)
    if beyond:
        which = f"frame {beyond[0]}" if len(beyond) == 1 else f"frames {beyond[0]}-{beyond[-1]}"
        result.warnings.append(f"{clip.labels.name}: has labels for {which}, but {clip.video.name} has {frames} frames "
                               f"(0-{frames - 1}); {'that label is' if len(beyond) == 1 else 'those labels are'} "
                               "dropped (labels stay aligned from frame 0)")
    if labels.dense and labels.last_frame + 1 < frames:
        result.warnings.append(f"{clip.labels.name}: {labels.last_frame + 1} labels for the {frames} frames of "
                               f"{clip.video.name}; frames {labels.last_frame + 1}-{frames - 1} are not key frames "
                               "(labels stay aligned from frame 0)")


def _collect_keyframes(labels: VideoLabels, keyframes: list[int], clip: Clip, config: ImportConfig,
                       result: ClipResult) -> None:
    clipped: list[str] = []
    dropped: list[str] = []
    for index in keyframes:
        boxes = []
        for box in labels.frames[index]:
            inside = _box_in_frame(box, result.width, result.height)
            described = f"frame {index} [{box.x:g}, {box.y:g}, {box.w:g}, {box.h:g}]"
            if inside is None:
                dropped.append(described)
                continue
            if inside != (box.x, box.y, box.w, box.h):
                clipped.append(described)
            boxes.append((*inside, _class_of_box(box, clip, config, clip.labels)))
        result.keyframes.append(KeyFrame(index, boxes))
    frame = f"{result.width}x{result.height}"
    if clipped:
        result.warnings.append(f"{clip.labels.name}: {len(clipped)} box(es) reach outside the {frame} frame (first: "
                               f"{clipped[0]}); clipped to the frame")
    if dropped:
        result.warnings.append(f"{clip.labels.name}: {len(dropped)} box(es) lie outside the {frame} frame or have no "
                               f"size (first: {dropped[0]}); dropped, the frame keeps its other boxes")


# ------------------------------------------------------------------------------------------ the dataset
def check_out_folder(out: Path, inputs: Sequence[tuple[str, Path | None]]) -> Path | None:
    """``out`` must be new, empty, or a folder this tool wrote (its marker file), and must not be, contain or lie
    inside an input ((flag, path) pairs). Returns the marker of an earlier conversion, if any."""
    check_not_input(out, "--out", inputs)
    own = check_dataset_folder(out, "--out", "is not empty and was not written by videos_to_daub.py; give a new or "
                               "empty folder", own=lambda folder: (folder / MARKER).is_file())
    return out / MARKER if own else None


def _ignore_interrupts() -> None:
    # Ctrl-C reaches the whole process group; the main process stops the pool itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _convert_star(arguments: tuple[Clip, str, ImportConfig]) -> ClipResult:
    return convert_clip(*arguments)


def run_conversions(clips: Sequence[Clip], out: Path, config: ImportConfig, workers: int) -> Iterator[ClipResult]:
    """Convert ``clips`` (in ``workers`` processes; 0: here), yielding each result as it completes."""
    jobs = [(clip, str(out), config) for clip in clips]
    if workers == 0:
        yield from map(_convert_star, jobs)
        return
    pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_ignore_interrupts)
    try:
        yield from pool.imap_unordered(_convert_star, jobs)
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()


def build_coco(results: Sequence[ClipResult], categories: list[str], config: ImportConfig,
               out: Path) -> dict[str, dict]:
    """One COCO file per split: key frames as images (``video_id``, ``frame_id``), their boxes, the categories, and
    a ``videos`` list saying per clip its folder, size, frame counts and attributes."""
    category_id = {name: index + 1 for index, name in enumerate(categories)}
    coco: dict[str, dict] = {}
    for result in sorted(results, key=lambda item: (item.clip.split, item.clip.name)):
        clip = result.clip
        split = coco.setdefault(clip.split, {
            "info": {"description": "converted by utils_coco/videos_to_daub.py", "keyframe_step": config.keyframe_step,
                     "num_frame": config.num_frame, "frame_step": config.frame_step, "classes": config.classes},
            "videos": [], "images": [], "annotations": [],
            "categories": [{"id": category_id[name], "name": name, "supercategory": "none"} for name in categories]})
        video_id = len(split["videos"]) + 1
        split["videos"].append({"id": video_id, "name": clip.name, "folder": f"images/{clip.split}/{clip.name}",
                                "source": clip.video.name, "labels": clip.labels.name, "width": result.width,
                                "height": result.height, "frames": result.video_frames,
                                "labelled_frames": result.labelled_frames, "keyframes": len(result.keyframes),
                                "attributes": clip.attributes})
        for keyframe in result.keyframes:
            image_id = len(split["images"]) + 1
            split["images"].append({"id": image_id, "file_name": f"images/{clip.split}/{clip.name}/{keyframe.index}."
                                                                 f"{config.frame_format}",
                                    "width": result.width, "height": result.height, "video_id": video_id,
                                    "frame_id": keyframe.index})
            for x, y, w, h, name in keyframe.boxes:
                split["annotations"].append({"id": len(split["annotations"]) + 1, "image_id": image_id,
                                             "category_id": category_id[name], "bbox": [x, y, w, h],
                                             "area": w * h, "iscrowd": 0})
    return coco


def remove_stale(out: Path, written: set[str]) -> int:
    """Delete the frames under ``out/images`` that this run did not write (from an earlier conversion into the same
    folder, which the marker shows is this tool's) and the folders they leave empty."""
    images = out / "images"
    removed = 0
    if not images.is_dir():
        return 0
    for path in sorted(images.rglob("*")):
        if path.is_file() and str(path) not in written and (path.stem.isdigit() or path.name.endswith(".tmp")):
            path.unlink()
            removed += 1
    for folder in sorted((path for path in images.rglob("*") if path.is_dir()), key=lambda p: len(p.parts),
                         reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    return removed


@dataclass
class ImportSummary:
    clips: dict[str, int]
    frames_written: int
    bytes_written: int
    keyframes: int
    empty_keyframes: int
    boxes: int
    warnings: int
    failed: list[str]
    seconds: float
    json_files: list[str]


def _report(line: str) -> None:
    tqdm.write(line, file=sys.stderr)  # above the progress bar, never inside its line


def import_videos(clips: Sequence[Clip], out: Path, config: ImportConfig, workers: int = 0, progress: bool = True,
                  report: Callable[[str], None] = _report) -> ImportSummary:
    """Convert ``clips`` into the dataset at ``out``; ``report`` receives each warning or error line (default: on
    stderr, above the progress bar)."""
    started = time.perf_counter()
    out = ensure_dir(out)
    write_json(out / MARKER, {"tool": "utils_coco/videos_to_daub.py", "keyframe_step": config.keyframe_step,
                              "num_frame": config.num_frame, "frame_step": config.frame_step}, indent=2)
    results: list[ClipResult] = []
    warnings = 0
    failed = []
    with tqdm(total=len(clips), unit="clip", desc="videos", disable=not progress) as bar:
        for result in run_conversions(clips, out, config, workers):
            for line in result.warnings:
                report(f"warning: {line}")
            warnings += len(result.warnings)
            if result.error is not None:
                report(f"error: {result.error}; clip left out")
                failed.append(result.clip.name)
            else:
                results.append(result)
            bar.update(1)
    written = {path for result in results for path in result.written}
    remove_stale(out, written)
    if not results:
        raise SSTNetError("no clip could be converted; nothing written")
    if config.classes == "target":
        categories = ["target"]
    else:
        categories = sorted({box[4] for result in results for keyframe in result.keyframes for box in keyframe.boxes})
        if not categories:
            raise SSTNetError(f"--classes {config.classes}: no box in any key frame, so no class to name")
    coco = build_coco(results, categories, config, out)
    annotations = out / "annotations"
    json_files = []
    for split, data in coco.items():
        path = annotations / f"instances_{split}2017.json"
        write_json(path, data)
        json_files.append(str(path))
    # The folder is this tool's (its marker): a split of an earlier conversion that this one lacks goes too.
    for path in annotations.glob("instances_*2017.json"):
        if str(path) not in json_files:
            path.unlink()
    counts: dict[str, int] = {}
    for result in results:
        counts[result.clip.split] = counts.get(result.clip.split, 0) + 1
    keyframes = [keyframe for result in results for keyframe in result.keyframes]
    return ImportSummary(clips=counts, frames_written=len(written),
                         bytes_written=sum(result.bytes_written for result in results), keyframes=len(keyframes),
                         empty_keyframes=sum(not keyframe.boxes for keyframe in keyframes),
                         boxes=sum(len(keyframe.boxes) for keyframe in keyframes), warnings=warnings, failed=failed,
                         seconds=time.perf_counter() - started, json_files=json_files)
