"""Exercise checkers of the chapter "The R-CNN family"."""
from __future__ import annotations

from typing import Callable

import torch

from .. import boxes
from ._report import check_cases


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
