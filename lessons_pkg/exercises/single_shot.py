"""Exercise checker of the chapter "Single-shot detectors: YOLO and SSD"."""
from __future__ import annotations

from typing import Callable

import torch

from ._report import check_cases, checker


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


@checker
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


def _yolo_cases() -> list[tuple]:
    """(name, boxes Tensor[N, 4] xyxy, labels int64[N], grid (S_h, S_w), image (H, W))."""
    return [
        ("no objects", torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), (4, 4), (128, 128)),
        ("one object centred in cell (1, 2)", torch.tensor([[70.0, 40, 90, 56]]), torch.tensor([3]), (4, 4), (128, 128)),
        ("a centre exactly on a cell border belongs to the cell right of it / below it",
         torch.tensor([[16.0, 16, 48, 48]]), torch.tensor([1]), (4, 4), (128, 128)),
        ("two centres in one cell: the larger box is kept",
         torch.tensor([[2.0, 2, 12, 12], [0.0, 0, 30, 30]]), torch.tensor([1, 2]), (4, 4), (128, 128)),
        ("two centres in one cell, equal areas: the first listed is kept",
         torch.tensor([[4.0, 4, 20, 20], [6.0, 6, 22, 22]]), torch.tensor([4, 2]), (4, 4), (128, 128)),
        ("a non-square grid and image (S_h, S_w) = (2, 3), 96 x 144",
         torch.tensor([[100.0, 10, 140, 60], [10.0, 50, 40, 90]]), torch.tensor([2, 1]), (2, 3), (96, 144)),
        ("a box past the image's edge: its centre is clamped into the last cell",
         torch.tensor([[110.0, 110, 140, 140]]), torch.tensor([1]), (4, 4), (128, 128)),
    ]


def _yolo_reference(boxes, labels, grid_size, image_size) -> torch.Tensor:
    from ..models import yolo
    enc = yolo.encode_targets([{"boxes": boxes, "labels": labels}], grid_size, image_size)
    return torch.cat([enc["target"][0], enc["classes"][0, ..., None].float(),
                      enc["mask"][0, ..., None].float()], dim=-1)


@checker
def check_yolo_targets(fn: Callable) -> bool:
    """Checks ``fn(boxes: Tensor[N, 4], labels: int64 Tensor[N], grid_size: (S_h, S_w),
    image_size: (H, W)) -> Tensor[S_h, S_w, 6]``, YOLOv1's target grid: in the cell holding an
    object's centre (x, y, sqrt(w / W), sqrt(h / H), its class index label - 1, 1), where x, y
    is the centre's offset inside the cell (0..1); in other cells (0, 0, 0, 0, -1, 0). One object
    per cell: the largest box wins, the first listed on equal areas. Compared with
    ``lessons_pkg.models.yolo.encode_targets``."""
    names = ("x", "y", "sqrt(w / W)", "sqrt(h / H)", "class index", "has object")

    def mismatch(got, expected, *args):
        close = torch.isclose(got.float(), expected, atol=1e-5)
        if close.all():
            return None
        i, j, k = (int(v) for v in torch.nonzero(~close)[0])
        return (f"cell (row {i}, column {j}): {names[k]} should be {float(expected[i, j, k]):.4f}, "
                f"got {float(got[i, j, k]):.4f}")

    return check_cases("check_yolo_targets", fn, _yolo_cases(), _yolo_reference, mismatch,
                       shape_hint=" [S_h, S_w, 6]")
