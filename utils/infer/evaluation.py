"""The evaluation engine shared by ``vid_map_coco.py`` and the evaluation inside training (docs/design.md, Evaluation
protocol)."""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..data.annotations import CocoGroundTruth, FrameRecord, category_names, load_json
from ..errors import SSTNetError
from ..runtime.fileio import ensure_dir, write_json, write_text
from ..runtime.plots import plot_f1_confidence, plot_pr_curves
from .engine import DetectSettings, InferenceBackend, detect_plan
from .metrics import EvalResult, coco_api, coco_scores, f1_confidence_curve, pd_fa
from .sources import plan_sequence_walk


def centres_by_image(records: Sequence[FrameRecord]) -> dict[int, np.ndarray]:
    """Ground-truth centres (cx, cy, class) per image id."""
    return {record.image_id: np.stack([(record.boxes[:, 0] + record.boxes[:, 2]) / 2,
                                       (record.boxes[:, 1] + record.boxes[:, 3]) / 2, record.boxes[:, 4]], axis=1)
            for record in records}


def detection_centres(ground_truth: CocoGroundTruth, detections: list[dict]) -> dict[int, np.ndarray]:
    """Detection centres (cx, cy, class index, score) per image id, from COCO results."""
    class_of = {category_id: index for index, category_id in enumerate(ground_truth.category_ids)}
    rows: dict[int, list] = {}
    for detection in detections:
        left, top, width, height = detection["bbox"]
        rows.setdefault(detection["image_id"], []).append(
            (left + width / 2, top + height / 2, class_of.get(detection["category_id"], -1), detection["score"]))
    return {image_id: np.array(values, dtype=np.float64) for image_id, values in rows.items()}


def score_detections(ground_truth: CocoGroundTruth, detections: list[dict], image_ids: Sequence[int],
                     pd_conf: float = 0.5, pd_radius: float = 3.0, extra_ious: Sequence[float] = ()) -> EvalResult:
    """Every figure of the paper's protocol (and Pd/Fa) for COCO-results ``detections`` on ``image_ids``; with
    ``extra_ious``, also the AP at those IoU thresholds."""
    image_ids = list(image_ids)
    result = coco_scores(coco_api(ground_truth.data), detections, image_ids, extra_ious)
    result.pd, result.fa = pd_fa(centres_by_image(ground_truth.records), detection_centres(ground_truth, detections),
                                 image_ids, pd_conf, pd_radius)
    return result


def scored_records(ground_truth: CocoGroundTruth, all_frames: bool = False) -> list[FrameRecord]:
    """The frames an evaluation scores: the annotated ones (``all_frames``: every listed frame)."""
    records = ground_truth.records + (ground_truth.unannotated if all_frames else [])
    if not records:
        raise SSTNetError("evaluation: the annotation file lists no frames to score")
    return records


def evaluate(model: torch.nn.Module | InferenceBackend, ground_truth: CocoGroundTruth, settings: DetectSettings,
             all_frames: bool = False, pd_conf: float = 0.5, pd_radius: float = 3.0,
             progress: bool = True, frozen_motion: bool = False, extra_ious: Sequence[float] = (),
             part_shapes: Sequence[tuple[tuple[str, CocoGroundTruth], tuple[int, int]]] = ()
             ) -> tuple[EvalResult, list[dict]]:
    """Detect on every annotated frame (``all_frames``: every listed frame) and score it as the paper does.
    ``frozen_motion``: each window is its key frame repeated (the diagnostic of what motion contributes).
    ``part_shapes``: for a ``merge_ground_truths`` merge, each part with the input shape its frames are read at
    (instead of ``settings.input_shape``); all the detections are scored together.

    ``model``: a ``Network`` (put in eval mode for the run) or an inference backend (e.g. the ONNX graphs).
    Returns the figures and the detections as COCO results (``bbox`` = [left, top, width, height], ``score`` =
    obj · class confidence).
    """
    records = scored_records(ground_truth, all_frames)
    if part_shapes:
        coco_results = []
        split = _records_by_part([part for part, _ in part_shapes], records)
        for ((name, _), shape), part_records in zip(part_shapes, split):
            coco_results += _detect_records(model, ground_truth, part_records,
                                            dataclasses.replace(settings, input_shape=shape), progress, frozen_motion,
                                            desc=f"evaluate {name}")
    else:
        coco_results = _detect_records(model, ground_truth, records, settings, progress, frozen_motion)
    result = score_detections(ground_truth, coco_results, [record.image_id for record in records], pd_conf, pd_radius,
                              extra_ious)
    return result, coco_results


def _detect_records(model: torch.nn.Module | InferenceBackend, ground_truth: CocoGroundTruth,
                    records: Sequence[FrameRecord], settings: DetectSettings, progress: bool = True,
                    frozen_motion: bool = False, desc: str = "evaluate") -> list[dict]:
    """The detections on ``records`` (frames of ``ground_truth``) as COCO results, unscored (``evaluate``'s first
    half)."""
    module = model if isinstance(model, torch.nn.Module) else None
    was_training = module is not None and module.training
    if module is not None:
        module.eval()
    coco_results: list[dict] = []
    plan = plan_sequence_walk(records, settings.num_frame, frozen_motion=frozen_motion,
                              frame_step=settings.frame_step)
    try:
        for item, detections in detect_plan(model, plan, settings, progress, desc=desc):
            top, left, bottom, right = detections[:, 0], detections[:, 1], detections[:, 2], detections[:, 3]
            scores = detections[:, 4] * detections[:, 5]
            classes = detections[:, 6].astype(int)
            for row in range(len(detections)):
                coco_results.append({"image_id": item.ref.image_id,
                                     "category_id": ground_truth.category_ids[classes[row]],
                                     "bbox": [float(left[row]), float(top[row]), float(right[row] - left[row]),
                                              float(bottom[row] - top[row])],
                                     "score": float(scores[row])})
    finally:
        if module is not None:
            module.train(was_training)
    return coco_results


def per_sequence_scores(ground_truth: CocoGroundTruth, detections: list[dict], records: Sequence[FrameRecord],
                        roots: Sequence[Path] = (), pd_conf: float = 0.5, pd_radius: float = 3.0,
                        extra_ious: Sequence[float] = ()) -> dict[str, EvalResult]:
    """The same figures for each sequence (the folder of its frames, named relative to the dataset root in ``roots``
    that holds it, after the root's name when there are several) on its own."""
    groups: dict[str, list[int]] = {}
    for record in records:
        folder = record.path.parent
        root = next((root for root in roots if folder.is_relative_to(root)), None)
        name = str(folder) if root is None else str(folder.relative_to(root))
        if root is not None and len(roots) > 1:
            name = f"{root.name}/{name}"
        groups.setdefault(name, []).append(record.image_id)
    return {name: score_detections(ground_truth, detections, ids, pd_conf, pd_radius, extra_ious)
            for name, ids in groups.items()}


def image_attributes(ground_truth: CocoGroundTruth) -> dict[int, dict[str, Any]]:
    """Per image id, what is known of where it comes from: the ``dataset`` (set by :func:`merge_ground_truths`), the
    ``video`` and that video's attributes (the ``videos`` list and ``video_id`` that ``utils_coco/videos_to_daub.py``
    writes, e.g. ``distance_bin``, ``class``)."""
    videos = {video["id"]: {**(video.get("attributes") or {}), "video": video.get("name")}
              for video in ground_truth.data.get("videos") or [] if isinstance(video, dict) and "id" in video}
    attributes = {}
    for image in ground_truth.data["images"]:
        values = dict(videos.get(image.get("video_id"), {}))
        if "dataset" in image:
            values["dataset"] = image["dataset"]
        attributes[image["id"]] = values
    return attributes


def check_group_keys(ground_truth: CocoGroundTruth, records: Sequence[FrameRecord], keys: Sequence[str]) -> None:
    """Every attribute in ``keys`` is known for at least one of the scored frames (see :func:`image_attributes`)."""
    attributes = image_attributes(ground_truth)
    known = sorted({name for record in records for name in attributes.get(record.image_id, {})})
    for key in keys:
        if key not in known:
            where = (f"the scored frames have {', '.join(known)}" if known else "the annotation file has no videos "
                     "list (utils_coco/videos_to_daub.py writes one); give several --data-root for dataset")
            raise SSTNetError(f"--group-by {key}: unknown attribute ({where})")


def per_group_scores(ground_truth: CocoGroundTruth, detections: list[dict], records: Sequence[FrameRecord], key: str,
                     pd_conf: float = 0.5, pd_radius: float = 3.0,
                     extra_ious: Sequence[float] = ()) -> dict[str, EvalResult]:
    """The same figures for the frames of each value of attribute ``key`` (see :func:`image_attributes`); frames
    without it form the group ``-``."""
    attributes = image_attributes(ground_truth)
    groups: dict[str, list[int]] = {}
    for record in records:
        value = attributes.get(record.image_id, {}).get(key)
        groups.setdefault("-" if value is None else str(value), []).append(record.image_id)
    return {name: score_detections(ground_truth, detections, groups[name], pd_conf, pd_radius, extra_ious)
            for name in sorted(groups)}


def merge_ground_truths(parts: Sequence[tuple[str, CocoGroundTruth]]) -> CocoGroundTruth:
    """Several datasets' ground truth as one, scored together: image, video and annotation ids renumbered, every
    image marked with its ``dataset`` name. The datasets must name the same classes in the same order."""
    names = [category_names(ground_truth) for _, ground_truth in parts]
    for (name, _), classes in zip(parts[1:], names[1:]):
        if classes != names[0]:
            raise SSTNetError(f"--data-root {name}: its classes {classes} differ from {parts[0][0]}'s {names[0]}")
    images, annotations, videos, records, unannotated = [], [], [], [], []
    for name, ground_truth in parts:
        image_ids, video_ids = {}, {}
        for video in ground_truth.data.get("videos") or []:
            if isinstance(video, dict) and "id" in video:
                video_ids[video["id"]] = len(videos) + 1
                videos.append({**video, "id": len(videos) + 1})
        for image in ground_truth.data["images"]:
            image_ids[image["id"]] = len(images) + 1
            merged = {**image, "id": len(images) + 1, "dataset": name}
            if image.get("video_id") in video_ids:
                merged["video_id"] = video_ids[image["video_id"]]
            images.append(merged)
        for annotation in ground_truth.data["annotations"]:
            annotations.append({**annotation, "id": len(annotations) + 1,
                                "image_id": image_ids[annotation["image_id"]]})
        records += [dataclasses.replace(record, image_id=image_ids[record.image_id]) for record in ground_truth.records]
        unannotated += [dataclasses.replace(record, image_id=image_ids[record.image_id])
                        for record in ground_truth.unannotated]
    first = parts[0][1]
    data = {"images": images, "annotations": annotations, "categories": first.data["categories"], "videos": videos}
    return CocoGroundTruth(records, first.category_ids, unannotated, data)


def _records_by_part(parts: Sequence[tuple[str, CocoGroundTruth]],
                     records: Sequence[FrameRecord]) -> list[list[FrameRecord]]:
    """``records`` of a ``merge_ground_truths(parts)`` merge split back into its parts, in order (the merge numbers
    the images part by part, so each part holds a range of image ids)."""
    bounds = np.cumsum([len(ground_truth.data["images"]) for _, ground_truth in parts])
    split: list[list[FrameRecord]] = [[] for _ in parts]
    for record in records:
        split[int(np.searchsorted(bounds, record.image_id, side="left"))].append(record)
    return split


RESULT_KEYS = ("image_id", "category_id", "bbox", "score")


def read_coco_results(path: str | os.PathLike, ground_truth: CocoGroundTruth, ann_name: str = "the annotations",
                      flag: str = "--detections") -> list[dict]:
    """A COCO results file (a JSON list of ``{image_id, category_id, bbox: [x, y, w, h], score}``) checked against
    ``ground_truth``: every entry an object with the four keys, integer ids of an image and a category of
    ``ground_truth`` (named ``ann_name`` in errors), four finite box numbers with a non-negative size and a finite
    score. A problem is a one-line error naming the file (as ``flag``) and the entry. Returns the entries with only
    those keys, numbers as floats."""
    path = Path(path)
    where = f"{flag} {path}"
    data = load_json(path, where, "COCO results json")
    if not isinstance(data, list):
        raise SSTNetError(f"{where}: expected a list of COCO results ({{{', '.join(RESULT_KEYS)}}}), "
                          f"got a JSON {type(data).__name__}")
    image_ids = {image["id"] for image in ground_truth.data["images"]}
    category_ids = set(ground_truth.category_ids)
    return [_checked_result(entry, f"{where}: entry {index}", image_ids, category_ids, ann_name)
            for index, entry in enumerate(data)]


def _checked_result(entry: Any, where: str, image_ids: set[int], category_ids: set[int], ann_name: str) -> dict:
    if not isinstance(entry, dict):
        raise SSTNetError(f"{where}: expected an object, got {type(entry).__name__}")
    for key in RESULT_KEYS:
        if key not in entry:
            raise SSTNetError(f"{where}: missing '{key}'")
    image_id, category_id, bbox, score = (entry[key] for key in RESULT_KEYS)
    if isinstance(image_id, bool) or not isinstance(image_id, int) or image_id not in image_ids:
        raise SSTNetError(f"{where}: image_id {image_id!r} is not an image of {ann_name}")
    if isinstance(category_id, bool) or not isinstance(category_id, int) or category_id not in category_ids:
        raise SSTNetError(f"{where}: category_id {category_id!r} is not a category of {ann_name} "
                          f"({', '.join(map(str, sorted(category_ids)))})")
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_finite_number(value) for value in bbox):
        raise SSTNetError(f"{where}: bbox {bbox!r}: expected four finite numbers [x, y, width, height]")
    if bbox[2] < 0 or bbox[3] < 0:
        raise SSTNetError(f"{where}: bbox {bbox!r}: width and height must not be negative")
    if not _is_finite_number(score):
        raise SSTNetError(f"{where}: score {score!r}: expected a finite number")
    return {"image_id": image_id, "category_id": category_id, "bbox": [float(value) for value in bbox],
            "score": float(score)}


def _is_finite_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def read_pr_curve(path: str | os.PathLike) -> np.ndarray:
    """A results file in the authors' format: 101 precision values separated by whitespace."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise SSTNetError(f"--compare {path}: not a regular file, expected 101 numbers separated by tabs")
    try:
        values = np.array([float(token) for token in path.read_text(encoding="utf-8").split()])
    except FileNotFoundError:
        raise SSTNetError(f"--compare {path}: file not found") from None
    except (ValueError, UnicodeDecodeError):
        raise SSTNetError(f"--compare {path}: expected 101 numbers separated by tabs") from None
    if values.shape != (101,):
        raise SSTNetError(f"--compare {path}: expected 101 precision values, found {values.size}")
    # COCO writes -1 where a recall level has no precision; anything else must be a precision.
    bad = ~(((values >= 0) & (values <= 1)) | (values == -1))
    if bad.any():
        index = int(np.argmax(bad))
        raise SSTNetError(f"--compare {path}: value {index + 1} is {float(values[index])}, expected a precision in "
                          "[0, 1] (or -1 where COCO has none)")
    return values


def format_pr_curve(curve: np.ndarray) -> str:
    """The authors' results format: the 101 values tab-separated on one line (with their trailing tab)."""
    return "".join(f"{value!r}\t" for value in curve.astype(float).tolist()) + "\n"


def write_eval_outputs(out_dir: str | os.PathLike, result: EvalResult, detections: list[dict],
                       compare: Sequence[str | os.PathLike] = (), label: str = "SSTNet (ours)") -> Path:
    """Write detections.json, metrics.json, summary.txt (the COCO summary and the one-line report), pr_curve.txt,
    pr_curve.png and f1_curve.png into ``out_dir``."""
    out_dir = ensure_dir(out_dir)
    others = {Path(path).stem: read_pr_curve(path) for path in compare}
    write_json(out_dir / "detections.json", detections)
    write_json(out_dir / "metrics.json", result.as_dict(), indent=2)
    write_text(out_dir / "summary.txt", f"{result.summary}\n{result.line()}\n")
    write_text(out_dir / "pr_curve.txt", format_pr_curve(result.pr_curve))
    plot_pr_curves({label: result.pr_curve, **others}, out_dir / "pr_curve.png")
    plot_f1_confidence(*f1_confidence_curve(result.scores, result.matched, result.num_targets),
                       out_dir / "f1_curve.png")
    return out_dir
