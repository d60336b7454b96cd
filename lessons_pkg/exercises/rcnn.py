"""Exercise checkers of the chapter "The R-CNN family"."""
from __future__ import annotations

from typing import Callable

import torch

from .. import boxes
from ._report import check_cases, checker


def _encode_cases() -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, ground-truth boxes [K, 4], proposals [K, 4]), xyxy pixels."""
    g = torch.Generator().manual_seed(2027)
    xy = torch.rand(6, 2, generator=g) * 80
    proposals = torch.cat([xy, xy + 8 + torch.rand(6, 2, generator=g) * 40], dim=1)
    gt = proposals + torch.randn(6, 4, generator=g) * 4
    gt[:, 2:] = torch.maximum(gt[:, 2:], gt[:, :2] + 2)
    p = torch.tensor([[10.0, 20, 50, 40]])
    return [
        ("a proposal that is already the object: all deltas 0", p.clone(), p.clone()),
        ("the object 8 px to the right of a 40-px-wide proposal: dx = 10 * 8 / 40 = 2", p + torch.tensor([8.0, 0, 8, 0]), p),
        ("the object twice as tall: dh = 5 * log 2", torch.tensor([[10.0, 10, 50, 50]]), p),
        ("6 random pairs", gt, proposals),
        ("no boxes at all", torch.zeros(0, 4), torch.zeros(0, 4)),
    ]


@checker
def check_encode_boxes(fn: Callable) -> bool:
    """Checks ``fn(gt: Tensor[K, 4], proposals: Tensor[K, 4]) -> Tensor[K, 4]``, the regression
    targets (dx, dy, dw, dh) of R-CNN with weights (10, 10, 5, 5), against
    ``lessons_pkg.boxes.encode_boxes``."""
    def mismatch(got, expected, gt, proposals):
        if torch.allclose(got.float(), expected, atol=1e-4, rtol=1e-4):
            return None
        i = int((got.float() - expected).abs().amax(1).argmax())
        return (f"pair {i} should give {[round(v, 4) for v in expected[i].tolist()]}, "
                f"got {[round(v, 4) for v in got[i].tolist()]}")

    return check_cases("check_encode_boxes", fn, _encode_cases(),
                       lambda gt, proposals: boxes.encode_boxes(gt, proposals, (10.0, 10.0, 5.0, 5.0)), mismatch)


def _roi_pool_cases() -> list[tuple]:
    g = torch.Generator().manual_seed(11)
    feature = torch.randn(3, 16, 16, generator=g)
    return [
        ("a box on the feature grid, 2 x 2 bins", feature, torch.tensor([16.0, 16, 63, 63]), (2, 2), 1 / 8),
        ("a box whose corners round half away from zero (x1 * scale = 2.5 -> 3)",
         feature, torch.tensor([20.0, 12, 60, 44]), (2, 2), 1 / 8),
        ("rectangular bins: 2 x 3 over a wide box", feature, torch.tensor([0.0, 8, 120, 40]), (2, 3), 1 / 8),
        ("more bins than pixels: neighbouring bins share a pixel", feature, torch.tensor([40.0, 40, 55, 55]), (4, 4), 1 / 8),
        ("a box partly outside the map (clipped)", feature, torch.tensor([100.0, -20, 160, 40]), (2, 2), 1 / 8),
        ("a box entirely outside the map (every bin empty: 0)", feature, torch.tensor([140.0, 140, 150, 150]), (2, 2), 1 / 8),
        ("spatial scale 1 (image and map the same size)", feature, torch.tensor([3.0, 1, 12, 9]), (3, 3), 1.0),
    ]


@checker
def check_roi_pool_box(fn: Callable) -> bool:
    """Checks ``fn(feature: Tensor[C, H, W], box: Tensor[4], output_size: (PH, PW),
    spatial_scale: float) -> Tensor[C, PH, PW]``, RoI Pool of one box, against
    ``lessons_pkg.ops.roi_pool`` (which equals torchvision's)."""
    from .. import ops

    def reference(feature, box, output_size, scale):
        return ops.roi_pool(feature[None], [box[None]], output_size, scale)[0]

    def mismatch(got, expected, feature, box, output_size, scale):
        if torch.allclose(got.to(expected.dtype), expected):
            return None
        c, i, j = (int(v) for v in torch.nonzero(~torch.isclose(got.to(expected.dtype), expected))[0])
        return f"bin ({i}, {j}) of channel {c} should be {expected[c, i, j]:.4f}, got {float(got[c, i, j]):.4f}"

    return check_cases("check_roi_pool_box", fn, _roi_pool_cases(), reference, mismatch,
                       shape_hint=" [C, PH, PW]")


def _anchor_cases() -> list[tuple]:
    g = torch.Generator().manual_seed(5)
    return [
        ("no objects: every anchor is background (a 0 x 4 IoU matrix)", torch.zeros(0, 4), 0.7, 0.3),
        ("a clear positive, a clear negative, one in between (ignored)",
         torch.tensor([[0.9, 0.1, 0.5]]), 0.7, 0.3),
        ("an IoU exactly at the low threshold is ignored, not background", torch.tensor([[0.3, 0.29, 0.8]]), 0.7, 0.3),
        ("an object whose best anchor reaches only 0.4 still gets it", torch.tensor([[0.4, 0.1, 0.05]]), 0.7, 0.3),
        ("ties: every anchor at an object's best IoU becomes positive", torch.tensor([[0.5, 0.5, 0.2]]), 0.7, 0.3),
        ("a promoted anchor keeps its own best object (anchor 0 is object 0's best, but its own best is object 1)",
         torch.tensor([[0.45, 0.1, 0.0], [0.6, 0.65, 0.1]]), 0.7, 0.3),
        ("an object that overlaps no anchor is left alone", torch.tensor([[0.0, 0.0, 0.0], [0.8, 0.1, 0.2]]), 0.7, 0.3),
        ("5 objects, 40 anchors", torch.rand(5, 40, generator=g) ** 3, 0.7, 0.3),
    ]


@checker
def check_anchor_labels(fn: Callable) -> bool:
    """Checks ``fn(iou: Tensor[G, A], high: float, low: float) -> int64 Tensor[A]``, Faster R-CNN's
    anchor labels (the matched object's index, -1 background, -2 ignored; each object's best
    anchors positive even below ``high``), against ``lessons_pkg.matching.match_boxes``."""
    from .. import matching

    def reference(iou, high, low):
        return matching.match_boxes(iou, high, low, allow_low_quality=True)

    def mismatch(got, expected, iou, high, low):
        if torch.equal(got.long(), expected):
            return None
        a = int((got.long() != expected).nonzero()[0])
        return f"anchor {a} should be labelled {int(expected[a])}, got {int(got[a])} (-1 background, -2 ignored)"

    return check_cases("check_anchor_labels", fn, _anchor_cases(), reference, mismatch,
                       shape_hint=" (one label per anchor)")
