"""Exercise checker of the chapter "The shapes dataset": the targets of a scene from its shapes'
silhouettes, as the generator makes them (occlusion in painting order, the ``min_visible`` rule,
tight boxes in the pixel-edge convention)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..data.shapes import masks_to_boxes_np, shape_mask
from ._report import check_cases, checker


def _reference(masks: torch.Tensor, min_visible: float) -> torch.Tensor:
    """Each object's visible part is what the masks after it (painted later, on top) leave
    uncovered; an object is kept when its visible area is at least ``min_visible`` of its whole
    silhouette's (and at least one pixel); the kept objects' tight boxes, in painting order."""
    full = masks.bool().numpy()
    kept = []
    for i in range(len(full)):
        visible = full[i] & ~full[i + 1:].any(axis=0)
        if visible.sum() > 0 and visible.sum() >= min_visible * full[i].sum():
            kept.append(visible)
    stacked = np.stack(kept).astype(np.uint8) if kept else np.zeros((0, *full.shape[1:]), np.uint8)
    return torch.from_numpy(masks_to_boxes_np(stacked))


def _cases() -> list[tuple[str, torch.Tensor, float]]:
    """(name, silhouettes uint8 [N, H, W] in painting order, min_visible)."""
    single = torch.zeros(1, 8, 8, dtype=torch.uint8)
    single[0, 3, 5] = 1
    edge = torch.zeros(2, 10, 12, dtype=torch.uint8)
    edge[0, :, 0] = 1                        # a full-height line on the left border
    edge[1, 9, 4:12] = 1                     # a line along the bottom-right border
    pieces = torch.zeros(1, 16, 16, dtype=torch.uint8)
    pieces[0, 2, 3] = pieces[0, 12, 9] = 1   # two separate blobs: one box around both
    covered = torch.zeros(2, 20, 20, dtype=torch.uint8)
    covered[0, 2:10, 2:10] = 1               # 8 x 8 = 64 pixels
    covered[1, 2:10, 6:14] = 1               # painted later: covers the right half of the first
    hidden = torch.zeros(2, 12, 12, dtype=torch.uint8)
    hidden[0, 4:7, 4:7] = 1
    hidden[1, 2:9, 2:9] = 1                  # covers the first completely
    rng = np.random.default_rng(31)
    scene = torch.from_numpy(np.stack([
        shape_mask(str(rng.choice(["circle", "square", "triangle", "star"])),
                   tuple(rng.uniform(10, 54, 2)), float(rng.uniform(6, 16)), float(rng.uniform(0, 6.28)), (64, 64))
        for _ in range(7)]).astype(np.uint8))
    return [
        ("a single pixel at row 3, column 5: a box of width 1", single, 0.45),
        ("lines touching the image border", edge, 0.45),
        ("a mask in two separate pieces: one box around both", pieces, 0.45),
        ("no masks at all: a [0, 4] tensor", torch.zeros(0, 5, 5, dtype=torch.uint8), 0.45),
        ("a square half covered by a later one, min_visible 0.4: kept, boxed around its visible half",
         covered, 0.4),
        ("the same squares, min_visible 0.6: the half-covered one is dropped", covered, 0.6),
        ("the same squares, min_visible exactly 0.5: kept (dropped only below it)", covered, 0.5),
        ("an object covered completely is dropped, even with min_visible 0", hidden, 0.0),
        ("7 overlapping shapes, min_visible 0.45", scene, 0.45),
    ]


@checker
def check_visible_boxes(fn: Callable) -> bool:
    """Checks ``fn(masks: uint8 Tensor[N, H, W], min_visible: float) -> Tensor[K, 4]``: the
    masks are the objects' whole silhouettes in painting order (the last one on top); each
    object's visible part is what the later masks leave uncovered; the objects whose visible area
    is at least ``min_visible`` of their silhouette's (and at least one pixel) are kept, in
    painting order, each as the tight xyxy box of its visible part in the pixel-edge convention
    (pixel (x, y) covers [x, x + 1) x [y, y + 1))."""
    def mismatch(got, expected, masks, min_visible):
        if torch.allclose(got.float(), expected):
            return None
        row = int((got.float() - expected).abs().sum(1).argmax())
        return f"box {row} (of the kept objects) should be {expected[row].tolist()}, got {got[row].tolist()}"

    return check_cases("check_visible_boxes", fn, _cases(), _reference, mismatch,
                       shape_hint=" (one box per object kept)")
