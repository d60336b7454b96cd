"""Exercise checker of the chapter "Single-shot detectors: YOLO and SSD"."""
from __future__ import annotations

from typing import Callable

import torch

from ._report import check_cases


def _reference(ce: torch.Tensor, positive: torch.Tensor, ratio: int) -> torch.Tensor:
    """Per image, the ``ratio * P`` negatives of highest loss (P: its positives), written as the
    plain loop over images that the package's vectorized ``ssd.ssd_loss`` must agree with."""
    chosen = torch.zeros_like(positive)
    for i in range(len(ce)):
        negatives = torch.nonzero(~positive[i]).flatten()
        k = min(ratio * int(positive[i].sum()), len(negatives))
        chosen[i, negatives[ce[i, negatives].topk(k).indices]] = True
    return chosen


def _cases() -> list[tuple[str, torch.Tensor, torch.Tensor, int]]:
    """(name, cross-entropy [B, D], positive bool [B, D], ratio); losses without ties."""
    g = torch.Generator().manual_seed(3)

    def losses(b, d):
        return torch.randperm(b * d, generator=g).view(b, d).float() / (b * d)

    one = torch.tensor([[0.9, 0.1, 0.5, 0.3, 0.8, 0.2, 0.7, 0.4]])
    pos_one = torch.tensor([[True, False, False, False, False, False, False, False]])
    many = losses(3, 50)
    pos_many = torch.rand(3, 50, generator=g) < 0.05
    pos_many[2] = False                             # an image without objects
    high = losses(1, 6)
    pos_high = high > 0.5                           # positives with the highest losses of all
    crowded = losses(1, 8)
    pos_crowded = torch.tensor([[True, True, True, False, False, False, False, False]])
    return [
        ("one positive, ratio 3: the 3 hardest of the 7 negatives", one, pos_one, 3),
        ("three images, one without objects (it keeps no negatives)", many, pos_many, 3),
        ("positives are never chosen as negatives, however high their loss", high, pos_high, 1),
        ("more wanted than there are negatives: all of them", crowded, pos_crowded, 3),
        ("ratio 0: no negatives at all", many, pos_many, 0),
    ]


def check_hard_negatives(fn: Callable) -> bool:
    """Checks ``fn(ce: Tensor[B, D], positive: bool Tensor[B, D], ratio: int) -> bool Tensor[B, D]``:
    for each image, the ``ratio`` x (its number of positives) negative default boxes of highest
    cross-entropy (all of them when there are fewer), as SSD's hard negative mining keeps them."""
    def mismatch(got, expected, ce, positive, ratio):
        if torch.equal(got.bool(), expected):
            return None
        i, j = (got.bool() != expected).nonzero()[0].tolist()
        what = "a positive" if positive[i, j] else f"a negative of loss {ce[i, j]:.3f}"
        return (f"image {i}, box {j} ({what}) should {'' if expected[i, j] else 'not '}be chosen; expected "
                f"{int(expected[i].sum())} negatives in that image, got {int(got[i].bool().sum())}")

    return check_cases("check_hard_negatives", fn, _cases(), _reference, mismatch)
