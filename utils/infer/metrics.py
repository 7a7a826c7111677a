"""Scores of a detection run: COCO mAP50 / Precision / Recall / F1 as the paper computes them, and Pd / Fa.

As the paper computes them (docs/design.md, Evaluation protocol): p = COCOeval precision at IoU 0.5 over the 101
recall points (area all, 100 detections), R = COCOeval recall at IoU 0.5, Precision = mean(p[:int(R·100)]),
F1 = 2PR/(P+R). With several classes the per-class values are averaged (one class, as DAUB and IRDST, gives exactly
the paper's numbers).
"""
from __future__ import annotations

import contextlib
import copy
import io
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from scipy.optimize import linear_sum_assignment

RECALL_POINTS = 101


@dataclass
class EvalResult:
    """Every figure of one evaluation; rates are fractions in [0, 1], ``fa`` is false alarms per frame."""

    map50: float = 0.0
    map50_95: float = 0.0
    precision: float = 0.0
    recall: float = 0.0
    f1: float = 0.0
    pd: float = 0.0
    fa: float = 0.0
    pr_curve: np.ndarray = field(default_factory=lambda: np.zeros(RECALL_POINTS))
    summary: str = ""
    num_frames: int = 0
    num_targets: int = 0
    # Each detection's score and whether COCO matched it at IoU 0.5: the data behind the F1-confidence curve.
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    matched: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    # AP at other IoU thresholds than 0.5 (a diagnostic: is a target missed, or found with a box off by a pixel?).
    ap_at_iou: dict[float, float] = field(default_factory=dict)

    def line(self) -> str:
        """The one-line report: percentages, and false alarms per frame."""
        return (f"mAP50 {100 * self.map50:.2f}  Precision {100 * self.precision:.2f}  Recall {100 * self.recall:.2f}  "
                f"F1 {100 * self.f1:.2f}  Pd {100 * self.pd:.2f}  Fa {self.fa:.3f}" + self.iou_line())

    def iou_line(self) -> str:
        """The diagnostic APs, appended to the report line when asked for ("" otherwise)."""
        return "".join(f"  AP@{iou:g} {100 * ap:.2f}" for iou, ap in self.ap_at_iou.items())

    def as_dict(self) -> dict:
        """The scalar figures (percent, like the paper's tables, except Fa) for metrics.json."""
        return {"mAP50": 100 * self.map50, "mAP50_95": 100 * self.map50_95, "precision": 100 * self.precision,
                "recall": 100 * self.recall, "f1": 100 * self.f1, "pd": 100 * self.pd, "fa": self.fa,
                "frames": self.num_frames, "targets": self.num_targets,
                **({"AP_at_IoU": {f"{iou:g}": 100 * ap for iou, ap in self.ap_at_iou.items()}} if self.ap_at_iou
                   else {})}


def coco_api(data: dict) -> COCO:
    """A pycocotools COCO object over an already loaded and validated json, without its console chatter.

    Annotations are renumbered and given an area and ``iscrowd`` 0 when they lack them: COCOeval needs unique
    ids, areas and crowd flags, which user files do not always carry, and none of this changes a score.
    """
    coco = COCO()
    coco.dataset = dict(data)
    coco.dataset.setdefault("info", {})  # loadRes copies it; DAUB/IRDST files have none
    coco.dataset["annotations"] = [
        {"iscrowd": 0, "area": annotation["bbox"][2] * annotation["bbox"][3], **annotation, "id": number}
        for number, annotation in enumerate(data["annotations"], start=1)]
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def f1_score(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def coco_scores(coco_gt: COCO, detections: list[dict], image_ids: list[int],
                extra_ious: Sequence[float] = ()) -> EvalResult:
    """COCO bbox evaluation of ``detections`` (COCO results) on ``image_ids``, reduced as the paper does; with
    ``extra_ious``, also COCO's AP at each of those IoU thresholds."""
    result = EvalResult(num_frames=len(image_ids))
    result.num_targets = len(coco_gt.getAnnIds(imgIds=image_ids, iscrowd=False))
    result.ap_at_iou = {float(iou): 0.0 for iou in extra_ious}
    if not detections or not image_ids:
        result.summary = "no detections" if image_ids else "no frames"
        return result
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(copy.deepcopy(detections))
    evaluator = _accumulated(coco_gt, coco_dt, image_ids)
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        evaluator.summarize()
    result.summary = summary.getvalue().rstrip()
    result.map50_95, result.map50 = max(float(evaluator.stats[0]), 0.0), max(float(evaluator.stats[1]), 0.0)

    # IoU 0.5, every recall point, each class, area "all", the largest detection budget.
    precision = evaluator.eval["precision"][0, :, :, 0, -1]
    recall = evaluator.eval["recall"][0, :, 0, -1]
    defined = recall > -1
    if defined.any():
        curves, precisions = [], []
        for class_index in np.flatnonzero(defined):
            curve = np.clip(precision[:, class_index], 0, None)
            cut = int(recall[class_index] * 100)
            precisions.append(float(curve[:cut].mean()) if cut > 0 else 0.0)
            curves.append(curve)
        result.pr_curve = np.mean(curves, axis=0)
        result.precision = float(np.mean(precisions))
        result.recall = float(np.mean(recall[defined]))
        result.f1 = f1_score(result.precision, result.recall)
    result.scores, result.matched = _matches_at_iou50(evaluator)
    if extra_ious:
        result.ap_at_iou = _ap_at_ious(coco_gt, coco_dt, image_ids, list(result.ap_at_iou))
    return result


def _accumulated(coco_gt: COCO, coco_dt: COCO, image_ids: list[int],
                 ious: list[float] | None = None) -> COCOeval:
    """COCO's bbox evaluation of ``coco_dt`` on ``image_ids``, accumulated, at COCO's IoU thresholds (or ``ious``),
    without its console chatter."""
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.params.imgIds = list(image_ids)
        if ious is not None:
            evaluator.params.iouThrs = np.array(ious, dtype=np.float64)
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator


def _ap_at_ious(coco_gt: COCO, coco_dt: COCO, image_ids: list[int], ious: list[float]) -> dict[float, float]:
    """COCO's AP (area all, 100 detections, classes averaged) at each IoU threshold in ``ious``, as ``stats[1]``
    computes it at 0.5."""
    evaluator = _accumulated(coco_gt, coco_dt, image_ids, ious)
    values = {}
    for index, iou in enumerate(ious):
        precision = evaluator.eval["precision"][index, :, :, 0, -1]
        defined = precision[precision > -1]
        values[iou] = float(defined.mean()) if defined.size else 0.0
    return values


def _matches_at_iou50(evaluator: COCOeval) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the evaluated detections and whether each matched a target at IoU 0.5 (COCO's own matching)."""
    all_area = evaluator.params.areaRng[0]
    scores, matched = [], []
    for entry in evaluator.evalImgs:
        if entry is None or entry["aRng"] != all_area:
            continue
        keep = ~np.asarray(entry["dtIgnore"][0], bool)
        scores.append(np.asarray(entry["dtScores"])[keep])
        matched.append(np.asarray(entry["dtMatches"][0])[keep] > 0)
    if not scores:
        return np.zeros(0), np.zeros(0, bool)
    return np.concatenate(scores), np.concatenate(matched)


def f1_confidence_curve(scores: np.ndarray, matched: np.ndarray, num_targets: int,
                        thresholds: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Precision, recall and F1 of the detections scoring at least each threshold (IoU 0.5 matches)."""
    thresholds = np.linspace(0, 1, 101) if thresholds is None else thresholds
    kept = scores[None, :] >= thresholds[:, None]
    true_positives = (kept & matched[None, :]).sum(1)
    detections = kept.sum(1)
    precision = np.where(detections > 0, true_positives / np.maximum(detections, 1), 0.0)
    recall = true_positives / max(num_targets, 1)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    return thresholds, precision, recall, f1


def pd_fa(targets: dict[int, np.ndarray], detections: dict[int, np.ndarray], image_ids: list[int],
          conf: float = 0.5, radius: float = 3.0) -> tuple[float, float]:
    """Probability of detection and false alarms per frame.

    ``targets[image_id]`` is n×3 (cx, cy, class) and ``detections[image_id]`` m×4 (cx, cy, class, score).
    Detections scoring at least ``conf`` are matched one-to-one to targets of their class whose centre lies within
    ``radius`` px (an optimal assignment, so the count of detected targets is as large as possible).
    Pd = detected targets / targets; Fa = unmatched detections / frames.
    """
    detected = total = false_alarms = 0
    for image_id in image_ids:
        truth = targets.get(image_id, np.zeros((0, 3)))
        found = detections.get(image_id, np.zeros((0, 4)))
        found = found[found[:, 3] >= conf]
        total += len(truth)
        matches = 0
        if len(truth) and len(found):
            distance = np.linalg.norm(truth[:, None, :2] - found[None, :, :2], axis=2)
            allowed = (distance <= radius) & (truth[:, None, 2] == found[None, :, 2])
            # Infeasible pairs cost more than any set of feasible ones, so the assignment maximises matches first.
            cost = np.where(allowed, distance, 1e6 + distance)
            rows, cols = linear_sum_assignment(cost)
            matches = int(allowed[rows, cols].sum())
        detected += matches
        false_alarms += len(found) - matches
    pd = detected / total if total else 0.0
    fa = false_alarms / len(image_ids) if image_ids else 0.0
    return pd, fa
