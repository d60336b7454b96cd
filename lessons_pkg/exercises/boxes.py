"""Exercise checkers of the chapter "Boxes, IoU, NMS and mAP"."""
from __future__ import annotations

from typing import Callable

import torch

from .. import boxes
from ._report import check_cases


def _iou_cases() -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(2024)
    xy = torch.rand(7, 2, generator=g) * 50
    random = torch.cat([xy, xy + 1 + torch.rand(7, 2, generator=g) * 30], dim=1)
    return [
        ("identical boxes", torch.tensor([[10.0, 10, 20, 30]]), torch.tensor([[10.0, 10, 20, 30]])),
        ("half overlap", torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[5.0, 0, 15, 10]])),
        ("boxes that only touch along an edge", torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[10.0, 0, 20, 10]])),
        ("disjoint boxes, apart in x but overlapping in y",
         torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[20.0, 2, 30, 8]])),
        ("one box inside the other", torch.tensor([[0.0, 0, 40, 40]]), torch.tensor([[10.0, 10, 20, 20]])),
        ("a zero-width box against a normal one", torch.tensor([[5.0, 5, 5, 15]]), torch.tensor([[0.0, 0, 10, 10]])),
        ("7 random boxes against 5 others (a 7x5 matrix)", random, random[:5].flip(0) + 3),
        ("no boxes on one side (a 0x7 matrix)", torch.zeros(0, 4), random),
    ]


def check_iou(fn: Callable) -> bool:
    """Checks ``fn(boxes1: Tensor[N, 4], boxes2: Tensor[M, 4]) -> Tensor[N, M]``, the pairwise IoU
    of xyxy boxes, against ``lessons_pkg.boxes.box_iou``."""
    def mismatch(got, expected, a, b):
        if torch.allclose(got.to(expected.dtype), expected, atol=1e-6):
            return None
        i, j = divmod(int((got.to(expected.dtype) - expected).abs().argmax()), expected.shape[1])
        return (f"IoU of box {i} {a[i].tolist()} and box {j} {b[j].tolist()} should be "
                f"{expected[i, j]:.4f}, got {float(got[i, j]):.4f}")

    return check_cases("check_iou", fn, _iou_cases(), boxes.box_iou, mismatch)


def _nms_cases() -> list[tuple]:
    g = torch.Generator().manual_seed(7)
    xy = torch.rand(30, 2, generator=g) * 60
    random = torch.cat([xy, xy + 8 + torch.rand(30, 2, generator=g) * 25], dim=1)
    square = torch.tensor([[0.0, 0, 10, 10]])
    return [
        ("no boxes", torch.zeros(0, 4), torch.zeros(0), 0.5),
        ("one box", square, torch.tensor([0.9]), 0.5),
        ("two disjoint boxes: both kept, best first",
         torch.tensor([[0.0, 0, 10, 10], [20.0, 20, 30, 30]]), torch.tensor([0.3, 0.8]), 0.5),
        ("an IoU exactly at the threshold survives (only IoU > threshold suppresses)",
         torch.tensor([[0.0, 0, 10, 10], [0.0, 0, 10, 5]]), torch.tensor([0.9, 0.8]), 0.5),
        ("a chain: A suppresses B, so B cannot suppress C",
         torch.tensor([[0.0, 0, 10, 10], [4.0, 0, 14, 10], [8.0, 0, 18, 10]]), torch.tensor([0.9, 0.8, 0.7]), 0.4),
        ("equal scores: the lower index first",
         torch.tensor([[0.0, 0, 10, 10], [30.0, 0, 40, 10], [0.0, 1, 10, 11]]), torch.tensor([0.5, 0.5, 0.5]), 0.5),
        ("30 random boxes, threshold 0.3", random, torch.rand(30, generator=g), 0.3),
        ("30 random boxes, threshold 0.7", random, torch.rand(30, generator=g), 0.7),
    ]


def check_nms(fn: Callable) -> bool:
    """Checks ``fn(boxes: Tensor[N, 4], scores: Tensor[N], iou_threshold: float) -> int64
    Tensor[K]``, greedy non-maximum suppression (the indices kept, best score first), against
    ``lessons_pkg.ops.nms`` (which equals torchvision's)."""
    from .. import ops

    def mismatch(got, expected, boxes_, scores, threshold):
        if torch.equal(got.long(), expected):
            return None
        return f"expected the indices {expected.tolist()}, got {got.long().tolist()}"

    return check_cases("check_nms", fn, _nms_cases(), ops.nms, mismatch,
                       shape_hint=" (one index per kept box)")
