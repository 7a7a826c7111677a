"""Box utilities shared by the loss, inference and evaluation (docs/design.md, Detection loss; Inference and
post-processing).

Box formats: ``xyxy`` is (x1, y1, x2, y2); ``cxcywh`` is (centre x, centre y, width, height). Raw head maps are
B×(5+C)×H×W with channels (p0, p1, p2, p3, obj, cls...); a cell (x, y) of a level with stride s decodes to
cx = (p0 + x)·s, cy = (p1 + y)·s, w = exp(p2)·s, h = exp(p3)·s.

NMS runs on torchvision's kernels when torchvision imports, and otherwise on a pure-PyTorch version with the
same semantics (see :func:`pure_nms`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

try:  # torchvision is optional: a build that does not match torch fails at import (e.g. "torchvision::nms")
    from torchvision.ops import batched_nms as _tv_batched_nms
    from torchvision.ops import nms as _tv_nms
except Exception:  # noqa: BLE001 — any import failure means "use the pure version"
    _tv_nms = _tv_batched_nms = None

HAS_TORCHVISION_NMS = _tv_nms is not None

# Rows of boxes compared at once by the pure NMS, so its IoU matrix stays small for thousands of boxes.
_NMS_CHUNK = 1024


# ---------------------------------------------------------------------------------------------- conversions
def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) centre/size boxes → corner boxes."""
    centre, size = boxes[..., :2], boxes[..., 2:4]
    return torch.cat((centre - size / 2, centre + size / 2), dim=-1)


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) corner boxes → centre/size boxes."""
    top_left, bottom_right = boxes[..., :2], boxes[..., 2:4]
    return torch.cat(((top_left + bottom_right) / 2, bottom_right - top_left), dim=-1)


def _corners_and_area(boxes: torch.Tensor, box_format: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-left corners, bottom-right corners and areas of (..., 4) boxes in ``box_format``."""
    if box_format == "xyxy":
        top_left, bottom_right = boxes[..., :2], boxes[..., 2:4]
        return top_left, bottom_right, (bottom_right - top_left).prod(dim=-1)
    if box_format == "cxcywh":
        centre, size = boxes[..., :2], boxes[..., 2:4]
        # The area comes from w·h directly (not from the corners) as the released loss computes it.
        return centre - size / 2, centre + size / 2, size.prod(dim=-1)
    raise ValueError(f"box_format must be 'xyxy' or 'cxcywh', got {box_format!r}")


def pairwise_iou(boxes_a: torch.Tensor, boxes_b: torch.Tensor, box_format: str = "xyxy") -> torch.Tensor:
    """IoU of every box in ``boxes_a`` (N×4) with every box in ``boxes_b`` (M×4): an N×M tensor.

    Boxes that do not overlap (touching edges included) have IoU 0. No epsilon is added to the union,
    like torchvision's ``box_iou`` and the released SimOTA.
    """
    tl_a, br_a, area_a = _corners_and_area(boxes_a, box_format)
    tl_b, br_b, area_b = _corners_and_area(boxes_b, box_format)
    top_left = torch.max(tl_a[:, None, :], tl_b[None, :, :])
    bottom_right = torch.min(br_a[:, None, :], br_b[None, :, :])
    intersection = (bottom_right - top_left).clamp(min=0).prod(dim=-1)
    return intersection / (area_a[:, None] + area_b[None, :] - intersection)


def aligned_iou(boxes_a: torch.Tensor, boxes_b: torch.Tensor, box_format: str = "xyxy",
                eps: float = 1e-16) -> torch.Tensor:
    """IoU of each box in ``boxes_a`` with the box at the same index in ``boxes_b`` (both N×4): shape N.

    ``eps`` keeps the division finite for two empty boxes (the released IoU loss adds 1e-16).
    """
    tl_a, br_a, area_a = _corners_and_area(boxes_a, box_format)
    tl_b, br_b, area_b = _corners_and_area(boxes_b, box_format)
    intersection = (torch.min(br_a, br_b) - torch.max(tl_a, tl_b)).clamp(min=0).prod(dim=-1)
    return intersection / (area_a + area_b - intersection + eps)


# ------------------------------------------------------------------------------------------ grids and decoding
def make_grid(height: int, width: int, device: torch.device | str | None = None,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(H·W)×2 cell coordinates (x, y) in row-major order, matching a flattened H×W map."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device, dtype=dtype),
                            torch.arange(width, device=device, dtype=dtype), indexing="ij")
    return torch.stack((xs, ys), dim=-1).reshape(-1, 2)


def flatten_level(output: torch.Tensor) -> torch.Tensor:
    """B×K×H×W head map → B×(H·W)×K, one row per cell in row-major order."""
    return output.flatten(start_dim=2).permute(0, 2, 1)


def decode_boxes(raw_boxes: torch.Tensor, grid: torch.Tensor, stride: torch.Tensor | float) -> torch.Tensor:
    """Raw (p0, p1, p2, p3) of shape (..., A, 4) → (cx, cy, w, h) in input pixels.

    ``grid`` is A×2 cell coordinates from :func:`make_grid`; ``stride`` is a number, an A×1 tensor or an
    A×2 tensor of (stride x, stride y).
    """
    centre = (raw_boxes[..., :2] + grid) * stride
    size = torch.exp(raw_boxes[..., 2:4]) * stride
    return torch.cat((centre, size), dim=-1)


def encode_boxes(boxes: torch.Tensor, grid: torch.Tensor, stride: torch.Tensor | float) -> torch.Tensor:
    """The inverse of :func:`decode_boxes`: the raw (p0, p1, p2, p3) that decode to ``boxes`` (..., A, 4) of (cx, cy,
    w, h) pixels at cells ``grid`` (A×2); the L1 loss term's target. 1e-8 keeps the log of a zero size finite."""
    centre = boxes[..., :2] / stride - grid
    size = torch.log(boxes[..., 2:4] / stride + 1e-8)
    return torch.cat((centre, size), dim=-1)


def decode_outputs(outputs: list[torch.Tensor], input_shape: tuple[int, int]) -> torch.Tensor:
    """Raw head maps (one B×(5+C)×h×w per level) → B×(Σ h·w)×(5+C) decoded predictions (docs/design.md, Inference and
    post-processing).

    Columns: (cx, cy, w, h) normalised to [0, 1] of the input (x and w divided by the input width, y and h by
    its height), then sigmoid(obj), sigmoid(cls...). ``input_shape`` is (height, width). Each level's stride
    is taken per axis (input side / map side); the released code uses height/h for both axes, which is the
    same for the square inputs it supports.
    """
    input_h, input_w = input_shape
    levels = []
    for output in outputs:
        map_h, map_w = output.shape[-2:]
        flat = flatten_level(output)
        grid = make_grid(map_h, map_w, device=flat.device, dtype=flat.dtype)
        stride = torch.tensor([input_w / map_w, input_h / map_h], device=flat.device, dtype=flat.dtype)
        boxes = decode_boxes(flat[..., :4], grid, stride)
        levels.append(torch.cat((boxes, torch.sigmoid(flat[..., 4:])), dim=-1))
    decoded = torch.cat(levels, dim=1)
    normaliser = torch.tensor([input_w, input_h, input_w, input_h], device=decoded.device, dtype=decoded.dtype)
    return torch.cat((decoded[..., :4] / normaliser, decoded[..., 4:]), dim=-1)


# ---------------------------------------------------------------------------------------------------- NMS
def _greedy_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor | None,
                iou_threshold: float) -> torch.Tensor:
    """Greedy NMS shared by :func:`pure_nms` and :func:`pure_batched_nms` (``classes`` None: one class)."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    sorted_boxes = boxes[order].float()
    sorted_classes = classes[order] if classes is not None else None
    rows = []
    for start in range(0, len(sorted_boxes), _NMS_CHUNK):
        overlap = pairwise_iou(sorted_boxes[start:start + _NMS_CHUNK], sorted_boxes) > iou_threshold
        if sorted_classes is not None:
            # Comparing classes directly (not torchvision's coordinate-offset trick) keeps IoUs exact.
            overlap &= sorted_classes[start:start + _NMS_CHUNK, None] == sorted_classes[None, :]
        rows.append(overlap)
    # The greedy pass is inherently sequential; on a host boolean matrix it is one row-OR per kept box.
    overlaps = torch.cat(rows).cpu().numpy()
    suppressed = np.zeros(len(sorted_boxes), dtype=bool)
    kept = []
    for index in range(len(sorted_boxes)):
        if suppressed[index]:
            continue
        kept.append(index)
        suppressed |= overlaps[index]
    return order[torch.as_tensor(kept, dtype=torch.long, device=boxes.device)]


def pure_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS in plain PyTorch with torchvision's semantics.

    ``boxes`` N×4 xyxy, ``scores`` N. Boxes are visited by score, highest first (equal scores keep their input
    order); each kept box suppresses every later box whose IoU with it is > ``iou_threshold``. Returns the
    indices of the kept boxes (int64), highest score first.
    """
    return _greedy_nms(boxes, scores, None, iou_threshold)


def pure_batched_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor,
                     iou_threshold: float) -> torch.Tensor:
    """Class-wise :func:`pure_nms`: a box only suppresses boxes of its own class (``classes``: N integers).

    Returns the kept indices of all classes together, highest score first.
    """
    return _greedy_nms(boxes, scores, classes, iou_threshold)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """NMS of N×4 xyxy ``boxes``: torchvision's when available, else :func:`pure_nms` (same semantics)."""
    if HAS_TORCHVISION_NMS:
        return _tv_nms(boxes, scores, iou_threshold)
    return pure_nms(boxes, scores, iou_threshold)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor,
                iou_threshold: float) -> torch.Tensor:
    """Class-wise NMS: torchvision's when available, else :func:`pure_batched_nms` (same semantics)."""
    if HAS_TORCHVISION_NMS:
        return _tv_batched_nms(boxes, scores, classes, iou_threshold)
    return pure_batched_nms(boxes, scores, classes, iou_threshold)


# ----------------------------------------------------------------------------------------- post-processing
def letterbox_to_image(boxes: np.ndarray, input_shape: tuple[int, int], image_shape: tuple[int, int],
                       letterbox: bool = True) -> np.ndarray:
    """Map N×4 normalised (cx, cy, w, h) input boxes to (top, left, bottom, right) pixels of the original frame.

    As released (docs/design.md, Inference and post-processing):
    ``new = round(image_shape · min(input_shape / image_shape))``, ``offset = (input − new) / 2 / input``,
    ``scale = input / new``; centre ← (centre − offset)·scale, size ← size·scale, then × (h, w). Without
    ``letterbox`` the frame was stretched to the input, so only the final × (h, w) applies. Shapes are (h, w).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    input_hw = np.asarray(input_shape, dtype=np.float64)
    image_hw = np.asarray(image_shape, dtype=np.float64)
    # Work in (y, x) order so every step multiplies by (h, w) directly.
    centre_yx = boxes[:, [1, 0]]
    size_hw = boxes[:, [3, 2]]
    if letterbox:
        new_hw = np.round(image_hw * np.min(input_hw / image_hw))
        offset = (input_hw - new_hw) / 2.0 / input_hw
        scale = input_hw / new_hw
        centre_yx = (centre_yx - offset) * scale
        size_hw = size_hw * scale
    top_left = (centre_yx - size_hw / 2) * image_hw
    bottom_right = (centre_yx + size_hw / 2) * image_hw
    return np.concatenate((top_left, bottom_right), axis=1)


def _per_image_shapes(image_shape, batch_size: int) -> list[tuple[int, int]]:
    """One (h, w) per image from a single shared (h, w) or a sequence of them."""
    shapes = np.asarray(image_shape)
    if shapes.shape == (2,):
        return [tuple(int(side) for side in shapes)] * batch_size
    if shapes.shape != (batch_size, 2):
        raise ValueError(f"image_shape must be (h, w) or {batch_size} such pairs, got shape {shapes.shape}")
    return [tuple(int(side) for side in pair) for pair in shapes]


def non_max_suppression(prediction: torch.Tensor, num_classes: int, input_shape: tuple[int, int],
                        image_shape: tuple[int, int] | Sequence[tuple[int, int]], letterbox: bool = True,
                        conf_thres: float = 0.5, nms_thres: float = 0.4) -> list[np.ndarray]:
    """Score, filter, class-wise NMS and map back to the original frames (the released semantics, docs/design.md).

    ``prediction`` is the B×A×(5+C) output of :func:`decode_outputs`. For each image: score = obj · max_c cls;
    rows with score ≥ ``conf_thres`` are kept; class-wise NMS removes boxes whose IoU with a higher-scoring box
    of the same class is > ``nms_thres``; the survivors are mapped through :func:`letterbox_to_image`.
    ``image_shape`` is one (h, w) for the whole batch or one per image.

    Returns, per image, a float32 array N×7 sorted by score (highest first), columns
    ``(top, left, bottom, right, obj, class_conf, class)`` — box in original pixels, ``obj`` the objectness,
    ``class_conf`` the best class probability (score = obj · class_conf), ``class`` its index. Images without
    detections get a 0×7 array.
    """
    shapes = _per_image_shapes(image_shape, len(prediction))
    results = []
    for image_pred, shape in zip(prediction, shapes):
        class_conf, class_index = image_pred[:, 5:5 + num_classes].max(dim=1)
        keep = image_pred[:, 4] * class_conf >= conf_thres
        candidates, class_conf, class_index = image_pred[keep], class_conf[keep], class_index[keep]
        kept = batched_nms(cxcywh_to_xyxy(candidates[:, :4]), candidates[:, 4] * class_conf, class_index, nms_thres)
        scores = torch.stack((candidates[kept, 4], class_conf[kept], class_index[kept].to(candidates.dtype)), dim=1)
        boxes = letterbox_to_image(candidates[kept, :4].detach().cpu().numpy(), input_shape, shape, letterbox)
        results.append(np.concatenate((boxes, scores.detach().cpu().numpy()), axis=1).astype(np.float32))
    return results
