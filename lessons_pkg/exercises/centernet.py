"""Exercise checker of the chapter "After 2017: detection without anchors"."""
from __future__ import annotations

from typing import Callable

import torch

from ._report import check_cases, checker


def _cases() -> list[tuple]:
    """(name, boxes Tensor[N, 4] xyxy pixels, labels int64[N] in 1..C, C, (h, w) of the map)."""
    g = torch.Generator().manual_seed(19)
    xy = torch.rand(6, 2, generator=g) * 100
    random_boxes = torch.cat([xy, xy + 8 + torch.rand(6, 2, generator=g) * 30], dim=1)
    return [
        ("no objects: an all-zero heatmap", torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), 2, (16, 16)),
        ("one 24 x 24 object: one bump, peak 1 at its centre cell",
         torch.tensor([[20.0, 20.0, 44.0, 44.0]]), torch.tensor([1]), 1, (32, 32)),
        ("a centre that falls between cells (cell = floor(centre / 4))",
         torch.tensor([[13.0, 30.0, 31.0, 41.0]]), torch.tensor([2]), 2, (32, 32)),
        ("two overlapping objects of one class: the maximum of their bumps, not the sum",
         torch.tensor([[20.0, 20.0, 50.0, 50.0], [30.0, 26.0, 60.0, 56.0]]), torch.tensor([1, 1]), 1, (32, 32)),
        ("two classes: each object on its own channel",
         torch.tensor([[20.0, 20.0, 50.0, 50.0], [30.0, 26.0, 60.0, 56.0]]), torch.tensor([1, 2]), 2, (32, 32)),
        ("an object at the image's corner: its bump cut by the map's edge",
         torch.tensor([[0.0, 0.0, 22.0, 18.0]]), torch.tensor([1]), 1, (32, 32)),
        ("a tiny object (radius 0: one cell)", torch.tensor([[40.0, 40.0, 43.0, 42.0]]), torch.tensor([1]), 1, (32, 32)),
        ("6 random objects, 3 classes, a wide map", random_boxes, torch.tensor([1, 2, 3, 1, 2, 3]), 3, (36, 40)),
    ]


@checker
def check_centernet_heatmap(fn: Callable) -> bool:
    """Checks ``fn(boxes: Tensor[N, 4], labels: int64 Tensor[N], num_classes: int, map_size: (h, w))
    -> Tensor[C, h, w]``, CenterNet's heatmap target of one image on the stride-4 map, against
    ``lessons_pkg.models.centernet.encode_targets``."""
    from ..models import centernet

    def reference(boxes, labels, num_classes, map_size):
        return centernet.encode_targets([{"boxes": boxes, "labels": labels}], num_classes, map_size)["heatmap"][0]

    def mismatch(got, expected, *args):
        if torch.allclose(got.float(), expected, atol=1e-4):
            return None
        k, i, j = (int(v) for v in torch.nonzero(~torch.isclose(got.float(), expected, atol=1e-4))[0])
        return (f"class channel {k}, cell (row {i}, column {j}) should be {float(expected[k, i, j]):.4f}, "
                f"got {float(got[k, i, j]):.4f}")

    return check_cases("check_centernet_heatmap", fn, _cases(), reference, mismatch, shape_hint=" [C, h, w]")
