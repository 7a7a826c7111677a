"""The evaluation engine shared by ``vid_map_coco.py`` and the evaluation inside training (spec §8)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from .annotations import CocoGroundTruth, FrameRecord
from .boxes import decode_outputs, non_max_suppression
from .errors import SSTNetError
from .fileio import ensure_dir, write_json, write_text
from .inference import FrameRef, SequenceDetector, frame_batches, plan_sequence_walk
from .metrics import EvalResult, coco_api, coco_scores, f1_confidence_curve, pd_fa
from .plots import plot_f1_confidence, plot_pr_curves


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


def detect_frames(model: torch.nn.Module, plan: Sequence[FrameRef], settings: DetectSettings,
                  progress: bool = True, desc: str = "detect") -> Iterator[tuple[FrameRef, np.ndarray, tuple[int, int]]]:
    """Walk ``plan`` and yield (key frame, N×7 detections, original H×W) per key frame.

    Detection rows are (top, left, bottom, right, obj, class_conf, class) in original pixels, as
    :func:`utils.boxes.non_max_suppression` returns them.
    """
    detector = SequenceDetector(model, settings.num_frame, settings.mode, settings.amp_dtype)
    bar = tqdm(total=len(plan), desc=desc, unit="frame", disable=not progress, dynamic_ncols=True)
    try:
        for images, refs, shapes in frame_batches(plan, settings.input_shape, settings.batch_size, settings.workers):
            outputs = detector.process(images, refs, shapes)
            bar.update(len(refs))
            if not outputs:
                continue
            raw = torch.cat([item.output for item in outputs])
            decoded = decode_outputs([raw], settings.input_shape)
            results = non_max_suppression(decoded, raw.shape[1] - 5, settings.input_shape,
                                          [item.original_hw for item in outputs], True, settings.conf, settings.nms)
            for item, detections in zip(outputs, results):
                yield item.ref, detections, item.original_hw
    finally:
        bar.close()


def centres_by_image(records: Sequence[FrameRecord]) -> dict[int, np.ndarray]:
    """Ground-truth centres (cx, cy, class) per image id."""
    return {record.image_id: np.stack([(record.boxes[:, 0] + record.boxes[:, 2]) / 2,
                                       (record.boxes[:, 1] + record.boxes[:, 3]) / 2, record.boxes[:, 4]], axis=1)
            for record in records}


def evaluate(model: torch.nn.Module, ground_truth: CocoGroundTruth, settings: DetectSettings,
             all_frames: bool = False, pd_conf: float = 0.5, pd_radius: float = 3.0,
             progress: bool = True) -> tuple[EvalResult, list[dict]]:
    """Detect on every annotated frame (``all_frames``: every listed frame) and score it as the paper does.

    Returns the figures and the detections as COCO results (``bbox`` = [left, top, width, height], ``score`` =
    obj · class confidence).
    """
    records = ground_truth.records + (ground_truth.unannotated if all_frames else [])
    if not records:
        raise SSTNetError("evaluation: the annotation file lists no frames to score")
    was_training = model.training
    model.eval()
    coco_results: list[dict] = []
    found: dict[int, np.ndarray] = {}
    try:
        for ref, detections, _ in detect_frames(model, plan_sequence_walk(records, settings.num_frame), settings,
                                                progress, desc="evaluate"):
            top, left, bottom, right = detections[:, 0], detections[:, 1], detections[:, 2], detections[:, 3]
            scores = detections[:, 4] * detections[:, 5]
            classes = detections[:, 6].astype(int)
            for row in range(len(detections)):
                coco_results.append({"image_id": ref.image_id, "category_id": ground_truth.category_ids[classes[row]],
                                     "bbox": [float(left[row]), float(top[row]), float(right[row] - left[row]),
                                              float(bottom[row] - top[row])],
                                     "score": float(scores[row])})
            found[ref.image_id] = np.stack([(left + right) / 2, (top + bottom) / 2, classes, scores], axis=1)
    finally:
        model.train(was_training)
    image_ids = [record.image_id for record in records]
    result = coco_scores(coco_api(ground_truth.data), coco_results, image_ids)
    result.pd, result.fa = pd_fa(centres_by_image(ground_truth.records), found, image_ids, pd_conf, pd_radius)
    return result, coco_results


def read_pr_curve(path: str | os.PathLike) -> np.ndarray:
    """A results file in the authors' format: 101 precision values separated by whitespace."""
    path = Path(path)
    try:
        values = np.array([float(token) for token in path.read_text(encoding="utf-8").split()])
    except FileNotFoundError:
        raise SSTNetError(f"--compare {path}: file not found") from None
    except (ValueError, UnicodeDecodeError):
        raise SSTNetError(f"--compare {path}: expected 101 numbers separated by tabs") from None
    if values.shape != (101,):
        raise SSTNetError(f"--compare {path}: expected 101 precision values, found {values.size}")
    return values


def format_pr_curve(curve: np.ndarray) -> str:
    """The authors' results format: the 101 values tab-separated on one line (with their trailing tab)."""
    return "".join(f"{value!r}\t" for value in curve.astype(float).tolist()) + "\n"


def write_eval_outputs(out_dir: str | os.PathLike, result: EvalResult, detections: list[dict],
                       compare: Sequence[str | os.PathLike] = (), label: str = "SSTNet (ours)") -> Path:
    """Write detections.json, metrics.json, pr_curve.txt, pr_curve.png and f1_curve.png into ``out_dir``."""
    out_dir = ensure_dir(out_dir)
    others = {Path(path).stem: read_pr_curve(path) for path in compare}
    write_json(out_dir / "detections.json", detections)
    write_json(out_dir / "metrics.json", result.as_dict(), indent=2)
    write_text(out_dir / "pr_curve.txt", format_pr_curve(result.pr_curve))
    plot_pr_curves({label: result.pr_curve, **others}, out_dir / "pr_curve.png")
    plot_f1_confidence(*f1_confidence_curve(result.scores, result.matched, result.num_targets),
                       out_dir / "f1_curve.png")
    return out_dir
