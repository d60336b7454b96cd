"""Exercise checker of the chapter "Instance segmentation with Mask R-CNN"."""
from __future__ import annotations

from typing import Callable

import torch

from .. import ops
from ..data.shapes import shape_mask
from ._report import check_cases, checker


def _cases() -> list[tuple[str, torch.Tensor, torch.Tensor, int]]:
    """(name, mask float[H, W], box [4] xyxy pixels inside the image, M)."""
    g = torch.Generator().manual_seed(11)
    star = torch.from_numpy(shape_mask("star", (30.0, 26.0), 18.0, 0.3, (64, 64)).astype("float32"))
    square = torch.zeros(40, 50)
    square[10:30, 12:40] = 1.0
    noise = torch.rand(48, 40, generator=g)
    return [
        ("a filled rectangle, its own box: all ones", square, torch.tensor([12.0, 10.0, 40.0, 30.0]), 7),
        ("a rectangle, a larger box: a 1-pixel-sharp edge", square, torch.tensor([8.0, 6.0, 44.0, 34.0]), 9),
        ("a star, a box off the pixel grid, M = 28", star, torch.tensor([11.3, 8.6, 49.2, 44.9]), 28),
        ("random values, a tall box", noise, torch.tensor([5.5, 2.0, 20.5, 45.0]), 14),
        ("random values, a box smaller than a pixel per bin", noise, torch.tensor([10.0, 10.0, 13.0, 12.0]), 8),
        ("random values, the whole image as the box, 2 bins per pixel: the outer samples fall in the "
         "edge pixels' outer halves and take their values", noise, torch.tensor([0.0, 0.0, 40.0, 48.0]), 80),
    ]


def _reference(mask: torch.Tensor, box: torch.Tensor, size: int) -> torch.Tensor:
    return ops.roi_align(mask[None, None], [box[None]], size, 1.0, sampling_ratio=1, aligned=True)[0, 0]


def _diagnosis(got: torch.Tensor, mask: torch.Tensor, box: torch.Tensor, size: int) -> str:
    """Names the two grid_sample pitfalls when the answer is exactly one of them."""
    import torch.nn.functional as F

    height, width = mask.shape
    t = (torch.arange(size) + 0.5) / size
    xs, ys = box[0] + t * (box[2] - box[0]), box[1] + t * (box[3] - box[1])
    grid = torch.stack(torch.meshgrid(2 * xs / width - 1, 2 * ys / height - 1, indexing="xy"), dim=-1)[None]
    sample = lambda **kw: F.grid_sample(mask[None, None].float(), grid, **kw)[0, 0]
    if torch.allclose(got, sample(align_corners=True, padding_mode="border"), atol=1e-4) or \
            torch.allclose(got, sample(align_corners=True), atol=1e-4):
        return (": these are the values of align_corners=True, which puts -1 and 1 at the corner"
                " pixels' centres, not at the image's outer edges")
    if torch.allclose(got, sample(align_corners=False), atol=1e-4):
        return (": right inside the image, wrong in its outer half pixel: grid_sample's default"
                " padding_mode='zeros' blends the edge pixel with 0 there")
    return ""


@checker
def check_mask_target(fn: Callable) -> bool:
    """Checks ``fn(mask: Tensor[H, W], box: Tensor[4], size: int) -> Tensor[size, size]``: the
    mask sampled once, bilinearly, at the centre of each of the size x size bins of the box,
    with pixel (x, y) covering [x, x + 1) x [y, y + 1) (its value at its centre); equal to
    ``lessons_pkg.ops.roi_align(..., spatial_scale=1, sampling_ratio=1, aligned=True)``."""
    def mismatch(got, expected, mask, box, size):
        error = (got.float() - expected).abs()
        if torch.allclose(got.float(), expected, atol=1e-4):
            return None
        i, j = divmod(int(error.argmax()), size)
        return (f"bin (row {i}, column {j}) should be {expected[i, j]:.4f}, got {got[i, j]:.4f} "
                f"(largest difference {error.max():.4f}){_diagnosis(got.float(), mask, box, size)}")

    return check_cases("check_mask_target", fn, _cases(), _reference, mismatch)
