"""YOLOX detection loss with SimOTA label assignment, as the released SSTNet trains it (docs/design.md, Detection loss).

Per image, SimOTA picks the foreground cells: candidates are cells whose centre lies inside a GT box or within
2.5 strides of a GT centre; each GT takes its ``k`` cheapest candidates, with ``k`` from the sum of its best
IoUs; a cell claimed by several GTs keeps the cheapest. The loss then sums an IoU term on the foreground
boxes, objectness BCE on every cell and class BCE (soft targets = IoU) on the foreground, divided by the
number of foreground cells in the batch. With ``use_l1`` (off in the published recipe) YOLOX's L1 term on the raw box
offsets of the foreground cells is added, which pulls small boxes to the label's exact centre and size where the
IoU term's gradient is weak.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from utils.boxes import aligned_iou, decode_boxes, encode_boxes, flatten_level, make_grid, pairwise_iou

CENTRE_RADIUS = 2.5  # half-side, in strides, of the square around a GT centre whose cells are candidates
IOU_COST_WEIGHT = 3.0
OUTSIDE_COST = 100000.0  # makes cells outside "box and centre" the last resort of every GT
TOP_IOUS_FOR_K = 10  # dynamic k sums at most this many of a GT's best IoUs
REG_WEIGHT = 5.0


@dataclass
class Assignment:
    """SimOTA's result for one image with A cells.

    ``fg_mask`` (A, bool) marks the foreground cells; for the foreground cells in cell order, ``matched_gt``
    gives the index of the GT each one learns and ``matched_iou`` the IoU of its prediction with that GT.
    """

    fg_mask: torch.Tensor
    matched_gt: torch.Tensor
    matched_iou: torch.Tensor

    @property
    def num_fg(self) -> int:
        return int(self.matched_gt.numel())


@dataclass
class LossParts:
    """The detection loss and its un-normalised terms (sums over the batch)."""

    total: torch.Tensor
    iou: torch.Tensor
    obj: torch.Tensor
    cls: torch.Tensor
    num_fg: int
    l1: torch.Tensor | None = None


def candidate_cells(gt_boxes: torch.Tensor, cell_centres: torch.Tensor, cell_strides: torch.Tensor,
                    centre_radius: float = CENTRE_RADIUS) -> tuple[torch.Tensor, torch.Tensor]:
    """Which cells SimOTA considers for G GT boxes (cxcywh, input pixels) over A cells.

    ``cell_centres`` A×2 are the cells' centres in pixels, ``cell_strides`` A their strides. A cell is a
    candidate when its centre is strictly inside some GT box, or strictly inside the square of half-side
    ``centre_radius``·stride around some GT centre. Returns (candidate mask A, in-box-and-centre G×A_cand): the
    second says, per GT and per candidate, whether the cell is inside that GT's box AND its centre square.
    """
    centres = cell_centres[None, :, :]
    gt_centres, gt_half_sizes = gt_boxes[:, None, :2], gt_boxes[:, None, 2:4] / 2
    # Distances from the cell centre to the four sides; all positive means strictly inside.
    in_box = torch.cat((centres - (gt_centres - gt_half_sizes), (gt_centres + gt_half_sizes) - centres),
                       dim=-1).min(dim=-1).values > 0
    radius = centre_radius * cell_strides[None, :, None]
    in_centre = torch.cat((centres - (gt_centres - radius), (gt_centres + radius) - centres),
                          dim=-1).min(dim=-1).values > 0
    candidates = in_box.any(dim=0) | in_centre.any(dim=0)
    return candidates, in_box[:, candidates] & in_centre[:, candidates]


def dynamic_k_matching(cost: torch.Tensor, ious: torch.Tensor) -> torch.Tensor:
    """Match G GTs to C candidates from their G×C ``cost`` and ``ious``; returns a G×C boolean matrix.

    Each GT takes its ``k = max(1, int(sum of its top-min(10, C) IoUs))`` lowest-cost candidates; a candidate
    taken by several GTs is given to the GT with the lowest cost for it (over all GTs, as released).
    """
    num_top = min(TOP_IOUS_FOR_K, ious.shape[1])
    dynamic_ks = ious.topk(num_top, dim=1).values.sum(dim=1).int().clamp(min=1)
    matching = torch.zeros_like(cost, dtype=torch.bool)
    for gt_index, k in enumerate(dynamic_ks.tolist()):
        cheapest = cost[gt_index].topk(k, largest=False).indices
        matching[gt_index, cheapest] = True
    contested = matching.sum(dim=0) > 1
    if contested.any():
        cheapest_gt = cost[:, contested].argmin(dim=0)
        matching[:, contested] = False
        matching[cheapest_gt, contested.nonzero(as_tuple=True)[0]] = True
    return matching


@torch.no_grad()
def simota_assign(gt_boxes: torch.Tensor, gt_classes: torch.Tensor, pred_boxes: torch.Tensor,
                  cls_logits: torch.Tensor, obj_logits: torch.Tensor, cell_centres: torch.Tensor,
                  cell_strides: torch.Tensor, num_classes: int) -> Assignment:
    """SimOTA for one image: G GT boxes (cxcywh, pixels) and classes vs A cells' decoded boxes (A×4 cxcywh),
    class logits (A×C) and objectness logits (A). See :func:`candidate_cells` and :func:`dynamic_k_matching`.

    Cost per (GT, candidate): Σ_c BCE(sqrt(σ(cls)·σ(obj)), one-hot) + 3·(−log(IoU + 1e-8)) + 1e5 when the cell
    is not inside both the GT box and its centre square.
    """
    num_cells = pred_boxes.shape[0]
    candidates, in_box_and_centre = candidate_cells(gt_boxes, cell_centres, cell_strides)
    if not candidates.any():  # every GT lies off the grid: nothing to learn but background
        empty = torch.zeros(0, dtype=torch.long, device=pred_boxes.device)
        return Assignment(torch.zeros(num_cells, dtype=torch.bool, device=pred_boxes.device), empty,
                          empty.to(pred_boxes.dtype))

    ious = pairwise_iou(gt_boxes, pred_boxes[candidates], box_format="cxcywh")
    iou_cost = -torch.log(ious + 1e-8)
    # Joint class-and-object probability; sqrt makes its BCE a geometric-mean-like score, as YOLOX does.
    joint = (cls_logits[candidates].float().sigmoid() * obj_logits[candidates, None].float().sigmoid()).sqrt()
    one_hot = F.one_hot(gt_classes.long(), num_classes).to(joint.dtype)
    cls_cost = F.binary_cross_entropy(joint[None].expand(len(gt_boxes), -1, -1),
                                      one_hot[:, None, :].expand(-1, joint.shape[0], -1),
                                      reduction="none").sum(dim=-1)
    cost = cls_cost + IOU_COST_WEIGHT * iou_cost + OUTSIDE_COST * (~in_box_and_centre).to(cls_cost.dtype)

    matching = dynamic_k_matching(cost, ious)
    matched_candidates = matching.any(dim=0)
    fg_mask = torch.zeros(num_cells, dtype=torch.bool, device=pred_boxes.device)
    fg_mask[candidates.nonzero(as_tuple=True)[0][matched_candidates]] = True
    matched_gt = matching[:, matched_candidates].int().argmax(dim=0)
    matched_iou = (matching * ious).sum(dim=0)[matched_candidates]
    return Assignment(fg_mask, matched_gt, matched_iou)


class YOLOLoss(nn.Module):
    """Detection loss (docs/design.md, Detection loss) over one or more levels.

    Called as ``loss(outputs, targets)``: ``outputs`` holds one raw B×(5+C)×H×W map per stride (the head's
    output, before any sigmoid), ``targets`` one n×5 tensor per image of (cx, cy, w, h, class) in input pixels.
    Returns the scalar loss; :meth:`parts` also returns its terms. Computed in float32 whatever the input dtype.
    ``use_l1`` adds the L1 term (a trainer turns it on for the last epochs, as YOLOX does).
    """

    def __init__(self, num_classes: int = 1, strides: Sequence[int] = (8,), use_l1: bool = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.strides = tuple(strides)
        self.use_l1 = use_l1

    def forward(self, outputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.parts(outputs, targets).total

    def _flatten(self, outputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All levels as B×A×(5+C) raw predictions, plus the A×2 cell grid and the A cell strides."""
        if len(outputs) != len(self.strides):
            raise ValueError(f"expected {len(self.strides)} output maps (one per stride), got {len(outputs)}")
        predictions, grids, strides = [], [], []
        for stride, output in zip(self.strides, outputs):
            flat = flatten_level(output).float()
            grid = make_grid(*output.shape[-2:], device=flat.device, dtype=flat.dtype)
            predictions.append(flat)
            grids.append(grid)
            strides.append(torch.full((len(grid),), float(stride), device=flat.device, dtype=flat.dtype))
        return torch.cat(predictions, dim=1), torch.cat(grids), torch.cat(strides)

    def parts(self, outputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]) -> LossParts:
        """The loss and its terms: ``total = (5·iou + obj + cls [+ l1]) / max(num_fg, 1)``."""
        predictions, grid, cell_strides = self._flatten(outputs)
        if len(targets) != len(predictions):
            raise ValueError(f"got {len(targets)} target tensors for a batch of {len(predictions)}")
        pred_boxes = decode_boxes(predictions[..., :4], grid, cell_strides[:, None])
        obj_logits = predictions[..., 4]
        cls_logits = predictions[..., 5:]
        cell_centres = (grid + 0.5) * cell_strides[:, None]

        iou_loss = obj_loss = cls_loss = l1_loss = predictions.new_zeros(())
        num_fg = 0
        for image_index, image_targets in enumerate(targets):
            image_targets = torch.as_tensor(image_targets, device=predictions.device, dtype=predictions.dtype)
            obj_target = torch.zeros_like(obj_logits[image_index])
            if len(image_targets):
                gt_boxes, gt_classes = image_targets[:, :4], image_targets[:, 4]
                assignment = simota_assign(gt_boxes, gt_classes, pred_boxes[image_index], cls_logits[image_index],
                                           obj_logits[image_index], cell_centres, cell_strides, self.num_classes)
                fg = assignment.fg_mask
                obj_target[fg] = 1.0
                num_fg += assignment.num_fg
                box_iou = aligned_iou(pred_boxes[image_index][fg], gt_boxes[assignment.matched_gt],
                                      box_format="cxcywh")
                iou_loss = iou_loss + (1.0 - box_iou ** 2).sum()
                if self.use_l1:
                    raw_target = encode_boxes(gt_boxes[assignment.matched_gt], grid[fg], cell_strides[fg, None])
                    l1_loss = l1_loss + F.l1_loss(predictions[image_index, fg, :4], raw_target, reduction="sum")
                cls_target = (F.one_hot(gt_classes[assignment.matched_gt].long(), self.num_classes)
                              * assignment.matched_iou[:, None])
                cls_loss = cls_loss + F.binary_cross_entropy_with_logits(
                    cls_logits[image_index][fg], cls_target, reduction="sum")
            obj_loss = obj_loss + F.binary_cross_entropy_with_logits(obj_logits[image_index], obj_target,
                                                                     reduction="sum")
        total = (REG_WEIGHT * iou_loss + obj_loss + cls_loss + l1_loss) / max(num_fg, 1)
        return LossParts(total, iou_loss, obj_loss, cls_loss, num_fg, l1_loss if self.use_l1 else None)

