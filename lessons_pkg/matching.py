"""Who is responsible for which object: matching reference boxes to ground truth, and sampling.

Every trained detector of the course compares a set of *reference* boxes (anchors for an RPN or
SSD, proposals for Fast R-CNN's heads) with the ground truth of an image, decides which
references are positives (and of which object), which are negatives (background) and which are
ignored, then trains on a balanced sample of them (there are far more negatives).

Shape key
    G   ground-truth boxes of one image      A   reference boxes (anchors, proposals) of it
"""
from __future__ import annotations

import torch
from torch import Tensor

NEGATIVE = -1  # IoU with every object below the low threshold: background
IGNORED = -2   # best IoU between the thresholds: neither, left out of the loss


def match_boxes(iou: Tensor, high: float, low: float, allow_low_quality: bool = False) -> Tensor:
    """Assign each reference box to its best object, or to background, or to nothing.

    Args:
        iou (Tensor[G, A]): IoU of every ground-truth box with every reference box.
        high: a reference whose best IoU is >= high is a positive, matched to that object.
        low: one whose best IoU is < low is a negative (:data:`NEGATIVE`); in between it is
            ignored (:data:`IGNORED`). ``low == high`` leaves nothing ignored.
        allow_low_quality: also make positive, for every object, the references with its
            highest IoU (ties included), even below ``high`` (Faster R-CNN's RPN rule: an object
            whose best anchor reaches only 0.4 still gets that anchor). Objects with no overlap
            at all are left alone.
    Returns:
        Tensor[A] int64: the matched object's index in 0..G-1, or NEGATIVE, or IGNORED. With no
        ground truth (G = 0) every reference is NEGATIVE: an image without objects trains the
        background class only. (Equal to torchvision's ``Matcher``, which refuses G = 0.)
    """
    if iou.dim() != 2:
        raise ValueError(f"iou must be a Tensor[G, A], got shape {tuple(iou.shape)}")
    if not 0 <= low <= high <= 1:
        raise ValueError(f"thresholds must satisfy 0 <= low <= high <= 1, got low={low}, high={high}")
    num_gt, num_ref = iou.shape
    if num_gt == 0:
        return torch.full((num_ref,), NEGATIVE, dtype=torch.int64, device=iou.device)
    best_iou, matches = iou.max(dim=0)
    candidates = matches.clone()
    matches = torch.where(best_iou < low, torch.full_like(matches, NEGATIVE), matches)
    matches = torch.where((best_iou >= low) & (best_iou < high), torch.full_like(matches, IGNORED), matches)
    if allow_low_quality and num_ref > 0:
        best_per_gt = iou.max(dim=1, keepdim=True).values  # [G, 1]
        # every (object, reference) pair at that object's best IoU; a reference keeps its own
        # best object (as torchvision does), not necessarily the object it is the best for
        is_best = (iou == best_per_gt) & (best_per_gt > 0)
        promote = is_best.any(dim=0)
        matches = torch.where(promote, candidates, matches)
    return matches


def sample_balanced(matches: Tensor, batch_size: int, positive_fraction: float,
                    generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Pick a training sample of positives and negatives from one image's matches.

    At most ``batch_size * positive_fraction`` positives (matches >= 0), chosen at random; the
    rest of the ``batch_size`` are negatives (matches == NEGATIVE), at random; fewer when there
    are not enough (torchvision's ``BalancedPositiveNegativeSampler``). Ignored references are
    never sampled.

    Returns (positive indices Tensor[P], negative indices Tensor[N]) into ``matches``, int64.
    ``generator`` (a CPU generator) makes the choice reproducible.
    """
    if batch_size < 1 or not 0 < positive_fraction <= 1:
        raise ValueError(f"need batch_size >= 1 and 0 < positive_fraction <= 1, got {batch_size}, {positive_fraction}")
    positive = torch.nonzero(matches >= 0).flatten()
    negative = torch.nonzero(matches == NEGATIVE).flatten()
    num_pos = min(int(batch_size * positive_fraction), positive.numel())
    num_neg = min(batch_size - num_pos, negative.numel())
    pick_pos = torch.randperm(positive.numel(), generator=generator)[:num_pos].to(positive.device)
    pick_neg = torch.randperm(negative.numel(), generator=generator)[:num_neg].to(negative.device)
    return positive[pick_pos], negative[pick_neg]


# ----------------------------------------------------------------------------- one-to-one matching
def set_prediction_cost(pred_boxes: Tensor, pred_probs: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
                        image_size: tuple[int, int], class_weight: float = 1.0, l1_weight: float = 5.0,
                        giou_weight: float = 2.0) -> Tensor:
    """DETR's matching cost of every prediction with every object, Tensor[Q, G] (Q predictions):

        class_weight * (-p(object's class)) + l1_weight * L1(boxes) + giou_weight * (-GIoU)

    the L1 distance on (cx, cy, w, h) normalized by the image's size, the GIoU on pixel boxes
    (the weights are DETR's defaults). pred_boxes Tensor[Q, 4] and gt_boxes Tensor[G, 4] xyxy
    pixels; pred_probs Tensor[Q, C + 1] class probabilities, column 0 "no object"; gt_labels
    int64 Tensor[G] in 1..C."""
    from .boxes import box_convert, generalized_box_iou

    height, width = image_size
    scale = pred_boxes.new_tensor([width, height, width, height])
    l1 = torch.cdist(box_convert(pred_boxes, "xyxy", "cxcywh") / scale,
                     box_convert(gt_boxes, "xyxy", "cxcywh") / scale, p=1)
    return (-class_weight * pred_probs[:, gt_labels] + l1_weight * l1
            - giou_weight * generalized_box_iou(pred_boxes, gt_boxes))


def hungarian_match(cost: Tensor) -> tuple[Tensor, Tensor]:
    """The one-to-one assignment of predictions to objects of least total cost (DETR's bipartite
    matching; SciPy's Hungarian-algorithm solver). cost Tensor[Q, G] with Q >= G.

    Returns (prediction indices, object indices), int64 Tensor[G] each: object ``j`` is matched
    to prediction ``p[j]``; every other prediction is trained as "no object", so no two
    predictions learn the same object and no NMS is needed."""
    from scipy.optimize import linear_sum_assignment

    if cost.shape[0] < cost.shape[1]:
        raise ValueError(f"need at least as many predictions as objects, got cost of shape {tuple(cost.shape)}")
    rows, cols = linear_sum_assignment(cost.detach().cpu().numpy())
    order = torch.as_tensor(cols).argsort()
    return torch.as_tensor(rows)[order].long(), torch.as_tensor(cols)[order].long()
