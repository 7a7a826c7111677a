"""YOLOX/SimOTA loss: parity with the authors' code and hand-made assignment cases on an 8×8 grid of stride 8."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from nets.loss import YOLOLoss, candidate_cells, dynamic_k_matching, simota_assign

FIXTURE = Path(__file__).parent / "fixtures" / "sstnet_reference.pt"
STRIDE = 8
SIDE = 8  # cells per side: a 64×64 input


def softplus(value: float) -> float:
    return math.log1p(math.exp(value))


def bce_with_logits(logit: float, target: float) -> float:
    """Binary cross-entropy of a logit, written out: log(1 + e^z) − t·z."""
    return softplus(logit) - target * logit


def raw_box(cell_x: int, cell_y: int, box: tuple[float, float, float, float]) -> list[float]:
    """Raw (p0..p3) that make cell (x, y) decode to ``box`` = (cx, cy, w, h) in pixels."""
    cx, cy, w, h = box
    return [cx / STRIDE - cell_x, cy / STRIDE - cell_y, math.log(w / STRIDE), math.log(h / STRIDE)]


def far_away_map(num_classes: int, seed: int = 0) -> torch.Tensor:
    """1×(5+C)×8×8 raw map: every box far off the image (IoU 0 with any GT), random obj/cls logits."""
    generator = torch.Generator().manual_seed(seed)
    output = torch.randn(1, 5 + num_classes, SIDE, SIDE, generator=generator)
    for y in range(SIDE):
        for x in range(SIDE):
            output[0, :4, y, x] = torch.tensor(raw_box(x, y, (-100.0, -100.0, 8.0, 8.0)))
    return output


def cell_grid() -> tuple[torch.Tensor, torch.Tensor]:
    """Centres (A×2, pixels) and strides (A) of the 8×8 cells in row-major order."""
    ys, xs = torch.meshgrid(torch.arange(SIDE), torch.arange(SIDE), indexing="ij")
    centres = (torch.stack((xs, ys), dim=-1).reshape(-1, 2).float() + 0.5) * STRIDE
    return centres, torch.full((SIDE * SIDE,), float(STRIDE))


def cells(*xy: tuple[int, int]) -> set[int]:
    return {y * SIDE + x for x, y in xy}


# ------------------------------------------------------------------------------------------------- parity
def test_loss_matches_reference():
    reference = torch.load(FIXTURE)
    raw = reference["train512"].clone()
    loss = YOLOLoss(1, (8,))([raw], reference["targets"])
    expected = reference["train512_yolo_loss"]
    assert abs(loss.item() - expected.item()) <= 1e-4 * abs(expected.item())
    assert torch.equal(raw, reference["train512"]), "the loss must not modify the head output"


def test_loss_backpropagates_finite_gradients():
    reference = torch.load(FIXTURE)
    raw = reference["train512"].clone().requires_grad_(True)
    YOLOLoss(1, (8,))([raw], reference["targets"]).backward()
    assert torch.isfinite(raw.grad).all() and raw.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------- no ground truth
def test_images_without_gt_contribute_only_background_objectness():
    generator = torch.Generator().manual_seed(1)
    output = torch.randn(2, 6, SIDE, SIDE, generator=generator)
    loss_fn = YOLOLoss(1, (STRIDE,))
    parts = loss_fn.parts([output], [torch.zeros(0, 5), torch.zeros(0, 5)])
    expected = sum(softplus(value) for value in output[:, 4].flatten().tolist())  # BCE to 0, summed, / 1
    assert parts.num_fg == 0
    assert parts.iou.item() == 0 and parts.cls.item() == 0
    assert parts.total.item() == pytest.approx(expected, rel=1e-5)


# ------------------------------------------------------------------------------------------------ candidates
def test_candidates_are_in_box_or_in_centre_square_strictly():
    centres, strides = cell_grid()
    # GT box 2..62 on both axes: every cell centre (4..60) is strictly inside it. Its centre square is
    # (32 ± 20) = (12, 52): centres 20, 28, 36, 44 (cells 2..5) are strictly inside, 12 and 52 are not.
    candidates, in_both = candidate_cells(torch.tensor([[32.0, 32.0, 60.0, 60.0]]), centres, strides)
    assert candidates.all()
    inside_both = {index for index, flag in enumerate(in_both[0].tolist()) if flag}
    assert inside_both == cells(*[(x, y) for x in range(2, 6) for y in range(2, 6)])

    # A 16×16 GT (box 24..40): candidates come from the centre square (cells 2..5), the box adds nothing;
    # in box AND centre are the cells with centres 28 and 36 (cells 3 and 4).
    candidates, in_both = candidate_cells(torch.tensor([[32.0, 32.0, 16.0, 16.0]]), centres, strides)
    assert set(candidates.nonzero().flatten().tolist()) == cells(*[(x, y) for x in range(2, 6) for y in range(2, 6)])
    candidate_index = candidates.nonzero().flatten()
    assert set(candidate_index[in_both[0]].tolist()) == cells((3, 3), (4, 3), (3, 4), (4, 4))

    # A 24×24 GT (box 20..44): centres 20 and 44 lie on its edges, so only cells 3 and 4 are inside it.
    candidates, in_both = candidate_cells(torch.tensor([[32.0, 32.0, 24.0, 24.0]]), centres, strides)
    candidate_index = candidates.nonzero().flatten()
    assert set(candidate_index[in_both[0]].tolist()) == cells((3, 3), (4, 3), (3, 4), (4, 4))


# ------------------------------------------------------------------------------------------------ dynamic k
@pytest.mark.parametrize("ious, expected_k", [
    ([0.5] * 15, 5),        # top 10 of 15 sum to 5
    ([1.0] * 12, 10),       # never more than 10 IoUs are summed
    ([1.0] * 3, 3),         # fewer than 10 candidates: all of them
    ([0.05] * 8, 1),        # the sum truncates to 0: at least one match
    ([0.9, 0.9, 0.3], 2),   # 2.1 truncates to 2
])
def test_dynamic_k_takes_the_k_cheapest_candidates(ious, expected_k):
    count = len(ious)
    cost = torch.randperm(count, generator=torch.Generator().manual_seed(count)).float()[None]
    matching = dynamic_k_matching(cost, torch.tensor([ious]))
    assert set(matching[0].nonzero().flatten().tolist()) == set(cost[0].argsort()[:expected_k].tolist())


def test_contested_candidate_goes_to_the_cheapest_gt():
    cost = torch.tensor([[1.0, 5.0, 9.0], [2.0, 0.5, 9.0]])
    ious = torch.tensor([[1.0, 1.0, 0.1], [1.0, 1.0, 0.1]])  # k = int(2.1) = 2 for both GTs
    matching = dynamic_k_matching(cost, ious)
    assert matching.tolist() == [[True, False, False], [False, True, False]]


# ------------------------------------------------------------------------------------------- one GT, end to end
@pytest.mark.parametrize("num_classes", [1, 2])
def test_one_gt_matches_follow_dynamic_k_and_loss_is_the_formula(num_classes):
    gt = (32.0, 32.0, 16.0, 16.0)
    gt_class = num_classes - 1
    output = far_away_map(num_classes)
    # The four cells inside both the box and its centre square predict boxes of known IoU with the GT:
    # same centre and width, heights 16, 12, 8, 4 → IoU 1, 0.75, 0.5, 0.25; sum 2.5 → k = 2.
    cls_logits = [0.3, -0.7][:num_classes]
    predicted = {(3, 3): 16.0, (4, 3): 12.0, (3, 4): 8.0, (4, 4): 4.0}
    for (x, y), height in predicted.items():
        output[0, :4, y, x] = torch.tensor(raw_box(x, y, (32.0, 32.0, 16.0, height)))
        output[0, 4, y, x] = 0.2  # same obj and cls logits, so the cost ranks them by IoU alone
        output[0, 5:, y, x] = torch.tensor(cls_logits)
    targets = [torch.tensor([[*gt, float(gt_class)]])]

    parts = YOLOLoss(num_classes, (STRIDE,)).parts([output], targets)
    assert parts.num_fg == 2

    foreground = {(3, 3): 1.0, (4, 3): 0.75}
    fg_indices = cells(*foreground)
    obj = output[0, 4].flatten().tolist()
    expected_obj = sum(bce_with_logits(obj[i], 1.0 if i in fg_indices else 0.0) for i in range(SIDE * SIDE))
    expected_iou = sum(1 - iou ** 2 for iou in foreground.values())
    expected_cls = sum(bce_with_logits(logit, iou if c == gt_class else 0.0)
                       for iou in foreground.values() for c, logit in enumerate(cls_logits))
    assert parts.obj.item() == pytest.approx(expected_obj, rel=1e-5)
    assert parts.iou.item() == pytest.approx(expected_iou, abs=1e-5)
    assert parts.cls.item() == pytest.approx(expected_cls, rel=1e-5)
    assert parts.total.item() == pytest.approx((5 * expected_iou + expected_obj + expected_cls) / 2, rel=1e-5)


def test_l1_term_is_the_raw_offsets_distance_on_the_foreground_and_off_by_default():
    """Same case as above: foreground cells (3, 3) (the exact box) and (4, 3) (height 12 against 16). The L1 term is
    |log(12/8) − log(16/8)| = log(4/3) for (4, 3) and 0 for (3, 3), added once to the sum before normalisation."""
    gt = (32.0, 32.0, 16.0, 16.0)
    output = far_away_map(1)
    for (x, y), height in {(3, 3): 16.0, (4, 3): 12.0, (3, 4): 8.0, (4, 4): 4.0}.items():
        output[0, :4, y, x] = torch.tensor(raw_box(x, y, (32.0, 32.0, 16.0, height)))
        output[0, 4:, y, x] = 0.2
    targets = [torch.tensor([[*gt, 0.0]])]
    published = YOLOLoss(1, (STRIDE,)).parts([output], targets)
    with_l1 = YOLOLoss(1, (STRIDE,), use_l1=True).parts([output], targets)
    assert published.l1 is None
    assert with_l1.l1.item() == pytest.approx(math.log(4 / 3), rel=1e-5)
    assert with_l1.total.item() == pytest.approx(published.total.item() + math.log(4 / 3) / 2, rel=1e-5)
    assert with_l1.num_fg == published.num_fg == 2


def decoded_boxes(output: torch.Tensor) -> torch.Tensor:
    """A×4 (cx, cy, w, h) pixels of a 1×(5+C)×8×8 raw map, decoded by hand."""
    flat = output[0].flatten(1).T
    cell_xy = cell_grid()[0] / STRIDE - 0.5
    return torch.cat(((flat[:, :2] + cell_xy) * STRIDE, flat[:, 2:4].exp() * STRIDE), dim=1)


def test_cost_weighs_sqrt_class_score_against_three_times_iou_cost():
    # Two cells inside the GT's box and centre square: cell (3, 3) predicts the GT exactly (IoU 1) with a poor
    # class logit, cell (4, 3) a 16×12 box (IoU 0.75) with a good one. k = int(1.75) = 1.
    # cls cost gap = ½·(log σ(2) − log σ(−1)) ≈ 0.593 < iou cost gap 3·(−log 0.75) ≈ 0.863 → cell (3, 3) wins.
    # (Without the square root the class gap would be 1.19, and with an IoU weight of 1 only 0.29.)
    gt_boxes = torch.tensor([[32.0, 32.0, 16.0, 16.0]])
    output = far_away_map(1)
    output[0, :4, 3, 3] = torch.tensor(raw_box(3, 3, (32.0, 32.0, 16.0, 16.0)))
    output[0, :4, 3, 4] = torch.tensor(raw_box(4, 3, (32.0, 32.0, 16.0, 12.0)))
    output[0, 4, 3, 3:5] = 0.0
    output[0, 5, 3, 3], output[0, 5, 3, 4] = -1.0, 2.0
    flat = output[0].flatten(1).T
    centres, strides = cell_grid()
    assignment = simota_assign(gt_boxes, torch.zeros(1), decoded_boxes(output), flat[:, 5:], flat[:, 4], centres,
                               strides, 1)
    assert set(assignment.fg_mask.nonzero().flatten().tolist()) == cells((3, 3))
    assert assignment.matched_iou.item() == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------- two competing GTs
@pytest.mark.parametrize("predicted_centre, winner, winner_iou", [
    (31.0, 0, 225 / 287),  # overlaps GT 0 by 15×15 px and GT 1 by 13×13: GT 0's cost is lower
    (33.0, 1, 225 / 287),  # the mirror image: GT 1 wins
])
def test_two_gts_competing_for_one_cell(predicted_centre, winner, winner_iou):
    # GT boxes 22..38 and 26..42 on both axes share the cells 3 and 4. Only cell (3, 3) predicts a box near
    # them, so each GT's top IoU is below 1 → k = 1 and both pick that cell; the lower cost keeps it.
    gt_boxes = torch.tensor([[30.0, 30.0, 16.0, 16.0], [34.0, 34.0, 16.0, 16.0]])
    output = far_away_map(1)
    output[0, :4, 3, 3] = torch.tensor(raw_box(3, 3, (predicted_centre, predicted_centre, 16.0, 16.0)))
    flat = output[0].flatten(1).T
    centres, strides = cell_grid()
    assignment = simota_assign(gt_boxes, torch.zeros(2), decoded_boxes(output), flat[:, 5:], flat[:, 4], centres,
                               strides, 1)
    assert set(assignment.fg_mask.nonzero().flatten().tolist()) == cells((3, 3))
    assert assignment.matched_gt.tolist() == [winner]
    assert assignment.matched_iou.item() == pytest.approx(winner_iou, rel=1e-5)


def test_batch_normalises_by_foreground_cells_of_all_images():
    first, second = far_away_map(1, seed=3), far_away_map(1, seed=4)
    first[0, :4, 3, 3] = torch.tensor(raw_box(3, 3, (32.0, 32.0, 16.0, 16.0)))
    output = torch.cat((first, second))
    targets = [torch.tensor([[32.0, 32.0, 16.0, 16.0, 0.0]]), torch.zeros(0, 5)]
    parts = YOLOLoss(1, (STRIDE,)).parts([output], targets)
    assert parts.num_fg == 1  # IoU 1 at cell (3, 3) only → k = 1
    background = sum(softplus(value) for value in second[0, 4].flatten().tolist())
    single = YOLOLoss(1, (STRIDE,)).parts([first], targets[:1])
    assert parts.obj.item() == pytest.approx(single.obj.item() + background, rel=1e-5)
    assert parts.total.item() == pytest.approx(single.total.item() + background, rel=1e-5)


def test_gt_off_the_grid_leaves_only_background():
    # No cell centre lies in the box or near the centre of a GT far outside the input (the release would fail).
    output = far_away_map(1)
    parts = YOLOLoss(1, (STRIDE,)).parts([output], [torch.tensor([[-500.0, -500.0, 8.0, 8.0, 0.0]])])
    assert parts.num_fg == 0
    assert parts.total.item() == pytest.approx(sum(softplus(v) for v in output[0, 4].flatten().tolist()), rel=1e-5)


def test_mismatched_inputs_are_rejected():
    loss_fn = YOLOLoss(1, (STRIDE,))
    with pytest.raises(ValueError):
        loss_fn([torch.zeros(2, 6, SIDE, SIDE)], [torch.zeros(0, 5)])
    with pytest.raises(ValueError):
        loss_fn([torch.zeros(1, 6, SIDE, SIDE)] * 2, [torch.zeros(0, 5)])
