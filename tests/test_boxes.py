"""Box utilities: decoding parity with the authors' code, IoU, NMS (hand cases and brute force), letterbox inverse."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from utils.boxes import (aligned_iou, batched_nms, cxcywh_to_xyxy, decode_boxes, decode_outputs, encode_boxes,
                         letterbox_to_image, make_grid, nms, non_max_suppression, pairwise_iou, pure_batched_nms,
                         pure_nms, xyxy_to_cxcywh)

FIXTURE = Path(__file__).parent / "fixtures" / "sstnet_reference.pt"


@pytest.fixture(scope="module")
def reference() -> dict:
    return torch.load(FIXTURE)


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return ((ours - theirs).norm() / theirs.norm()).item()


# ----------------------------------------------------------------------------------------------- decoding
@pytest.mark.parametrize("key, side", [("eval128", 128), ("eval256", 256)])
def test_decode_matches_reference(reference, key, side):
    raw = reference[key].clone()
    decoded = decode_outputs([raw], (side, side))
    assert decoded.shape == reference[f"{key}_decoded"].shape
    assert relative_error(decoded, reference[f"{key}_decoded"]) <= 1e-5
    assert torch.equal(raw, reference[key]), "decoding must not modify the raw output"


def test_decode_hand_values_on_non_square_input():
    # Input 16 high × 24 wide, one level of 2×3 cells: stride 8 on both axes.
    raw = torch.zeros(1, 6, 2, 3)
    raw[0, 0, 1, 2] = 0.25  # cell (x=2, y=1)
    raw[0, 1, 1, 2] = -0.5
    raw[0, 2, 1, 2] = math.log(2.0)
    raw[0, 3, 1, 2] = math.log(0.5)
    raw[0, 4, 1, 2] = 0.0
    raw[0, 5, 1, 2] = 2.0
    decoded = decode_outputs([raw], (16, 24))
    row = decoded[0, 1 * 3 + 2]  # row-major cell index
    expected = torch.tensor([(2 + 0.25) * 8 / 24, (1 - 0.5) * 8 / 16, 2 * 8 / 24, 0.5 * 8 / 16,
                             0.5, 1 / (1 + math.exp(-2.0))])
    torch.testing.assert_close(row, expected)
    # A cell with all-zero raw values sits at its top-left corner with a one-stride box.
    torch.testing.assert_close(decoded[0, 0, :4], torch.tensor([0.0, 0.0, 8 / 24, 8 / 16]))


def test_make_grid_is_row_major_x_then_y():
    grid = make_grid(2, 3)
    assert grid.tolist() == [[0, 0], [1, 0], [2, 0], [0, 1], [1, 1], [2, 1]]


# ------------------------------------------------------------------------------------------ conversions, IoU
def test_box_format_round_trip():
    boxes = torch.tensor([[10.0, 20.0, 4.0, 6.0], [0.0, 0.0, 2.0, 2.0]])
    corners = cxcywh_to_xyxy(boxes)
    assert corners.tolist() == [[8.0, 17.0, 12.0, 23.0], [-1.0, -1.0, 1.0, 1.0]]
    torch.testing.assert_close(xyxy_to_cxcywh(corners), boxes)


def test_pairwise_and_aligned_iou_hand_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [2.0, 0.0, 4.0, 2.0], [0.0, 0.0, 2.0, 2.0]])
    expected = torch.tensor([[1 / 7, 0.0, 1.0], [0.0, 0.0, 0.25]])  # touching edges do not overlap
    torch.testing.assert_close(pairwise_iou(a, b), expected)
    torch.testing.assert_close(pairwise_iou(xyxy_to_cxcywh(a), xyxy_to_cxcywh(b), box_format="cxcywh"), expected)
    torch.testing.assert_close(aligned_iou(a, b[:2]), torch.tensor([1 / 7, 0.0]))


# --------------------------------------------------------------------------------------------------- NMS
def brute_force_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, classes=None) -> list[int]:
    """Textbook greedy NMS, one box at a time (stable order for equal scores)."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    kept: list[int] = []
    for i in order:
        def iou(j):
            x1, y1 = max(boxes[i][0], boxes[j][0]), max(boxes[i][1], boxes[j][1])
            x2, y2 = min(boxes[i][2], boxes[j][2]), min(boxes[i][3], boxes[j][3])
            inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
            area = lambda k: (boxes[k][2] - boxes[k][0]) * (boxes[k][3] - boxes[k][1])  # noqa: E731
            return inter / (area(i) + area(j) - inter)
        if all(iou(j) <= threshold or (classes is not None and classes[i] != classes[j]) for j in kept):
            kept.append(i)
    return kept


def test_nms_hand_case():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0],   # kept (best)
                          [1.0, 0.0, 11.0, 10.0],   # IoU 9/11 with box 0: suppressed
                          [20.0, 20.0, 30.0, 30.0],  # far away: kept
                          [0.0, 0.0, 10.0, 5.0]])   # IoU exactly 0.5 with box 0: kept (only IoU > thr suppresses)
    scores = torch.tensor([0.9, 0.8, 0.3, 0.7])
    assert pure_nms(boxes, scores, 0.5).tolist() == [0, 3, 2]
    assert pure_nms(boxes, scores, 0.49).tolist() == [0, 2]
    assert nms(boxes, scores, 0.5).tolist() == [0, 3, 2]


def test_nms_chain_is_greedy_not_transitive():
    # B overlaps A and C; A suppresses B, so C survives even though B would have suppressed C.
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [4.0, 0.0, 14.0, 10.0], [8.0, 0.0, 18.0, 10.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert pure_nms(boxes, scores, 0.3).tolist() == [0, 2]


def test_nms_equal_scores_keep_input_order_and_empty_input():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 3)
    assert pure_nms(boxes, torch.ones(3), 0.5).tolist() == [0]
    assert pure_nms(boxes[[2, 0, 1]], torch.tensor([0.5, 0.5, 0.1]), 0.5).tolist() == [0]
    assert pure_nms(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0
    assert pure_batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).numel() == 0


def test_batched_nms_is_class_wise():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    classes = torch.tensor([0, 1, 0])
    assert pure_batched_nms(boxes, scores, classes, 0.5).tolist() == [0, 1]
    assert batched_nms(boxes, scores, classes, 0.5).tolist() == [0, 1]
    assert pure_nms(boxes, scores, 0.5).tolist() == [0]


@pytest.mark.parametrize("seed", range(5))
def test_pure_nms_matches_brute_force_on_random_boxes(seed):
    generator = torch.Generator().manual_seed(seed)
    count = 60
    top_left = torch.rand(count, 2, generator=generator) * 50
    boxes = torch.cat((top_left, top_left + 5 + torch.rand(count, 2, generator=generator) * 20), dim=1)
    scores = torch.rand(count, generator=generator).round(decimals=1)  # rounding creates ties
    classes = torch.randint(0, 3, (count,), generator=generator)
    for threshold in (0.3, 0.5, 0.7):
        expected = brute_force_nms(boxes.tolist(), scores.tolist(), threshold)
        assert pure_nms(boxes, scores, threshold).tolist() == expected
        expected_by_class = brute_force_nms(boxes.tolist(), scores.tolist(), threshold, classes.tolist())
        assert pure_batched_nms(boxes, scores, classes, threshold).tolist() == expected_by_class


# -------------------------------------------------------------------------------- letterbox and full post-process
def test_letterbox_inverse_on_non_square_image():
    # A 100×200 (h×w) frame in a 256×256 input: scale 1.28, pasted as 128×256 at y offset 64.
    top, left, bottom, right = 10.0, 20.0, 30.0, 60.0
    in_top, in_bottom = top * 1.28 + 64, bottom * 1.28 + 64
    in_left, in_right = left * 1.28, right * 1.28
    normalised = np.array([[(in_left + in_right) / 2 / 256, (in_top + in_bottom) / 2 / 256,
                            (in_right - in_left) / 256, (in_bottom - in_top) / 256]])
    mapped = letterbox_to_image(normalised, (256, 256), (100, 200))
    np.testing.assert_allclose(mapped, [[top, left, bottom, right]], atol=1e-9)


def test_letterbox_inverse_uses_rounded_size_and_plain_stretch():
    # 101×50 into 64×64: min scale 64/101, new size round(101·0.634, 50·0.634) = (64, 32) → x offset 16 px.
    mapped = letterbox_to_image(np.array([[0.5, 0.5, 0.5, 0.5]]), (64, 64), (101, 50))
    # Centre maps to the frame centre; the size 32 input px covers the whole 32-px-wide paste region.
    np.testing.assert_allclose(mapped, [[101 * 0.25, 50 * 0.0, 101 * 0.75, 50 * 1.0]], atol=1e-9)
    stretched = letterbox_to_image(np.array([[0.5, 0.25, 0.2, 0.1]]), (64, 64), (100, 200), letterbox=False)
    np.testing.assert_allclose(stretched, [[20.0, 80.0, 30.0, 120.0]], atol=1e-9)


def test_non_max_suppression_filters_suppresses_and_maps_back():
    # Normalised predictions for a 256×256 input of a 100×200 frame (same letterbox as above).
    def row(cx, cy, w, h, obj, *cls):
        return [cx, cy, w, h, obj, *cls]
    prediction = torch.tensor([[
        row(0.30, 0.50, 0.10, 0.10, 0.9, 0.9, 0.1),  # score 0.81, class 0: kept
        row(0.31, 0.50, 0.10, 0.10, 0.9, 0.8, 0.1),  # overlaps the first, same class: suppressed
        row(0.31, 0.50, 0.10, 0.10, 0.8, 0.1, 0.9),  # same place, class 1: kept (class-wise NMS)
        row(0.70, 0.50, 0.10, 0.10, 0.5, 0.5, 0.2),  # score 0.25 < 0.3: dropped
    ]])
    detections = non_max_suppression(prediction, 2, (256, 256), (100, 200), conf_thres=0.3, nms_thres=0.5)
    assert len(detections) == 1
    result = detections[0]
    assert result.dtype == np.float32 and result.shape == (2, 7)
    # Sorted by score: (0.81, class 0) then (0.72, class 1).
    np.testing.assert_allclose(result[:, 4:], [[0.9, 0.9, 0.0], [0.8, 0.9, 1.0]], rtol=1e-6)
    # Box of the first: centre (0.30·256, 0.50·256) in input px → x 76.8/1.28 = 60, y (128 − 64)/1.28 = 50,
    # half size 12.8/1.28 = 10 → (top, left, bottom, right) = (40, 50, 60, 70).
    np.testing.assert_allclose(result[0, :4], [40.0, 50.0, 60.0, 70.0], atol=1e-4)


def test_non_max_suppression_per_image_shapes_and_empty_images():
    prediction = torch.tensor([[[0.5, 0.5, 0.5, 0.5, 0.9, 0.9]], [[0.5, 0.5, 0.5, 0.5, 0.1, 0.1]]])
    detections = non_max_suppression(prediction, 1, (64, 64), [(64, 64), (32, 32)], conf_thres=0.5)
    np.testing.assert_allclose(detections[0][:, :4], [[16.0, 16.0, 48.0, 48.0]], atol=1e-5)
    assert detections[1].shape == (0, 7)


def test_encode_boxes_inverts_decode_boxes():
    """The L1 term's target: raw offsets that decode back to the box, at cells of any stride."""
    grid = make_grid(4, 5)
    raw = torch.randn(3, len(grid), 4, generator=torch.Generator().manual_seed(0))
    strides = torch.tensor([8.0, 16.0])[torch.arange(len(grid)) % 2][:, None]
    boxes = decode_boxes(raw, grid, strides)
    assert torch.allclose(encode_boxes(boxes, grid, strides), raw, atol=1e-5)
    cell = torch.tensor([[3.0, 4.0]])
    expected = [0.5, 0.25, math.log(2.0), math.log(0.5)]  # (28, 34, 16, 4) at cell (3, 4) of stride 8
    assert encode_boxes(torch.tensor([[28.0, 34.0, 16.0, 4.0]]), cell, 8.0)[0].tolist() == pytest.approx(expected)
