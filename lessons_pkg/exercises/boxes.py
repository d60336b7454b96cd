"""Exercise checkers of the chapter "Boxes, IoU, NMS and mAP".

The chapter builds IoU and greedy NMS itself, so its exercises are their variants: the
Distance-IoU of Zheng et al. (AAAI 2020) and the Gaussian Soft-NMS of Bodla et al. (ICCV 2017).
"""
from __future__ import annotations

from typing import Callable

import torch

from .. import boxes
from ._report import check_cases, checker


def _diou_cases() -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(2024)
    xy = torch.rand(7, 2, generator=g) * 50
    random = torch.cat([xy, xy + 1 + torch.rand(7, 2, generator=g) * 30], dim=1)
    return [
        ("identical boxes: DIoU 1", torch.tensor([[10.0, 10, 20, 30]]), torch.tensor([[10.0, 10, 20, 30]])),
        ("one box inside the other, same centre: DIoU equals IoU",
         torch.tensor([[0.0, 0, 40, 40]]), torch.tensor([[10.0, 10, 30, 30]])),
        ("half overlap", torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[5.0, 0, 15, 10]])),
        ("disjoint boxes, apart in x but overlapping in y",
         torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[20.0, 2, 30, 8]])),
        ("disjoint boxes, apart in both x and y", torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[30.0, 40, 40, 50]])),
        ("a small box inside a large one, off centre",
         torch.tensor([[0.0, 0, 40, 40]]), torch.tensor([[2.0, 30, 8, 38]])),
        ("a zero-width box against a normal one", torch.tensor([[5.0, 5, 5, 15]]), torch.tensor([[0.0, 0, 10, 10]])),
        ("7 random boxes against 5 others (a 7x5 matrix)", random, random[:5].flip(0) + 3),
        ("no boxes on one side (a 0x7 matrix)", torch.zeros(0, 4), random),
    ]


@checker
def check_diou(fn: Callable) -> bool:
    """Checks ``fn(boxes1: Tensor[N, 4], boxes2: Tensor[M, 4]) -> Tensor[N, M]``, the pairwise
    Distance-IoU of xyxy boxes, IoU - rho^2 / c^2 (rho: the distance between the two centres,
    c: the diagonal of the smallest box enclosing both), against
    ``torchvision.ops.distance_box_iou``."""
    import torchvision

    def mismatch(got, expected, a, b):
        if torch.allclose(got.to(expected.dtype), expected, atol=1e-5):
            return None
        i, j = divmod(int((got.to(expected.dtype) - expected).abs().argmax()), expected.shape[1])
        iou = float(boxes.box_iou(a[i:i + 1], b[j:j + 1])[0, 0])
        return (f"DIoU of box {i} {a[i].tolist()} and box {j} {b[j].tolist()} should be "
                f"{expected[i, j]:.4f} (their IoU is {iou:.4f}), got {float(got[i, j]):.4f}")

    return check_cases("check_diou", fn, _diou_cases(), torchvision.ops.distance_box_iou, mismatch)


def _soft_nms_reference(boxes_: torch.Tensor, scores: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian Soft-NMS (Bodla et al. 2017, the Gaussian penalty of section 4): repeatedly take
    the box of highest current score (equal scores: the lower index) and multiply the score of
    every box not yet taken by exp(-IoU(taken, box)^2 / sigma). Returns the final scores in the
    input's order."""
    iou = boxes.box_iou(boxes_, boxes_)
    current = scores.clone().float()
    taken = torch.zeros(len(scores), dtype=torch.bool)
    for _ in range(len(scores)):
        m = int(current.masked_fill(taken, -float("inf")).argmax())   # the first of equal maxima
        taken[m] = True
        current = torch.where(taken, current, current * torch.exp(-iou[m] ** 2 / sigma))
    return current


def _soft_nms_cases() -> list[tuple]:
    g = torch.Generator().manual_seed(7)
    xy = torch.rand(30, 2, generator=g) * 60
    random = torch.cat([xy, xy + 8 + torch.rand(30, 2, generator=g) * 25], dim=1)
    square = torch.tensor([[0.0, 0, 10, 10]])
    return [
        ("no boxes", torch.zeros(0, 4), torch.zeros(0), 0.5),
        ("one box: its score unchanged", square, torch.tensor([0.9]), 0.5),
        ("two disjoint boxes: IoU 0, both scores unchanged",
         torch.tensor([[0.0, 0, 10, 10], [20.0, 20, 30, 30]]), torch.tensor([0.3, 0.8]), 0.5),
        ("two boxes with IoU 0.5: the lower score times exp(-0.5^2 / sigma)",
         torch.tensor([[0.0, 0, 12, 10], [4.0, 0, 16, 10]]), torch.tensor([0.9, 0.8]), 0.5),
        ("box 1 falls below box 2 once box 0 decays it: the next box is the best *current* score",
         torch.tensor([[0.0, 0, 10, 10], [4.0, 0, 14, 10], [12.0, 0, 22, 10]]), torch.tensor([0.9, 0.85, 0.8]), 0.5),
        ("a box overlapped by two chosen boxes is decayed by both",
         torch.tensor([[0.0, 0, 10, 10], [5.0, 0, 15, 10], [10.0, 0, 20, 10]]), torch.tensor([0.9, 0.5, 0.8]), 0.5),
        ("equal scores: the lower index is taken first",
         torch.tensor([[0.0, 0, 10, 10], [0.0, 2, 10, 12], [30.0, 0, 40, 10]]), torch.tensor([0.5, 0.5, 0.5]), 0.5),
        ("30 random boxes, sigma 0.5", random, torch.rand(30, generator=g), 0.5),
        ("30 random boxes, sigma 0.1 (a harsher decay)", random, torch.rand(30, generator=g), 0.1),
    ]


@checker
def check_soft_nms(fn: Callable) -> bool:
    """Checks ``fn(boxes: Tensor[N, 4], scores: Tensor[N], sigma: float) -> Tensor[N]``, Gaussian
    Soft-NMS: the boxes' scores after the decay (in the input's order), against the course's
    reference written from Bodla et al. (2017)."""
    def mismatch(got, expected, boxes_, scores, sigma):
        if torch.allclose(got.float(), expected, atol=1e-6, rtol=1e-5):
            return None
        i = int((got.float() - expected).abs().argmax())
        return (f"box {i} (score {float(scores[i]):.4f} before) should end with score {float(expected[i]):.4f}, "
                f"got {float(got[i]):.4f}")

    return check_cases("check_soft_nms", fn, _soft_nms_cases(), _soft_nms_reference, mismatch,
                       shape_hint=" (one score per box, in the input's order)")
