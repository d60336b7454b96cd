"""Anchor boxes: a grid of sizes x aspect ratios per feature map, and SSD default boxes.

Shape key
    h, w   rows and columns of a feature map       A   anchors per location
    D      default boxes of all SSD levels, sum over levels of h_k * w_k * A_k
Order, which detection heads rely on when they reshape a [B, A * 4, h, w] output to
[B, h * w * A, 4] (permute to [B, h, w, A * 4] first):
    locations row-major (row i, then column j), and at each location its A anchors.
Anchor shape: a size s (pixels) and an aspect ratio r = height / width give
    w = s / sqrt(r),  h = s * sqrt(r)
so every anchor has area s**2 and h / w = r exactly, whatever the image's size or aspect.
(D2L's ``multibox_prior`` scaled the width by the image's aspect ratio and mixed sizes and
ratios in its own way, d2l-zh issue #1357; computing in pixels rules that out.)
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .inputs import as_pair

__all__ = ["anchor_shapes", "anchor_grid", "ssd_scales", "ssd_default_boxes"]


def _positive_list(values, name: str) -> list[float]:
    values = [values] if isinstance(values, (int, float)) else list(values)
    if not values or not all(isinstance(v, (int, float)) and 0 < v < math.inf for v in values):
        raise ValueError(f"{name} must be a non-empty list of positive numbers, got {values!r}")
    return [float(v) for v in values]


def anchor_shapes(sizes: Sequence[float], aspect_ratios: Sequence[float],
                  dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """Widths and heights of the A = len(aspect_ratios) * len(sizes) anchors of one location.

    Args:
        sizes: anchor sizes s in pixels (square root of the area).
        aspect_ratios: r = height / width.
    Returns:
        Tensor[A, 2] of (w, h), ordered for each ratio, for each size (torchvision's order).
    """
    s = torch.tensor(_positive_list(sizes, "sizes"), dtype=torch.float64)
    r = torch.tensor(_positive_list(aspect_ratios, "aspect_ratios"), dtype=torch.float64)
    w = (s[None, :] / r.sqrt()[:, None]).reshape(-1)        # float64: exact to ~1e-16
    h = (s[None, :] * r.sqrt()[:, None]).reshape(-1)
    return torch.stack((w, h), 1).to(dtype=dtype, device=device)


def anchor_grid(feature_size: tuple[int, int], stride, sizes: Sequence[float],
                aspect_ratios: Sequence[float], device=None, dtype: torch.dtype = torch.float32,
                convention: str = "center") -> Tensor:
    """Anchors of every location of one feature map.

    Args:
        feature_size: (h, w) of the feature map.
        stride: image pixels per feature pixel, a number or (stride_y, stride_x).
        sizes, aspect_ratios: see :func:`anchor_shapes`.
        convention: ``"center"``: the anchors of location (i, j) are centred on the centre of
            the image cell it covers, ((j + 0.5) * stride_x, (i + 0.5) * stride_y), with exact
            area s**2. ``"torchvision"``: as ``torchvision``'s ``AnchorGenerator``: centred on
            the cell's corner (j * stride_x, i * stride_y), corners rounded to integers (the
            area is then only close to s**2).
    Returns:
        Tensor[h * w * A, 4]: xyxy, absolute pixels, location-major (see the module
        docstring). Anchors may extend past the image; clip them if the method needs that.
    """
    h, w = as_pair(feature_size, "feature_size", positive=True)
    sy, sx = as_pair(stride, "stride", positive=True, kind=(int, float))
    if convention not in ("center", "torchvision"):
        raise ValueError(f"convention must be 'center' or 'torchvision', got {convention!r}")
    if convention == "center":
        wh = anchor_shapes(sizes, aspect_ratios, dtype=torch.float64)
        half, offset = torch.cat((-wh, wh), 1) / 2, 0.5                  # [A, 4]
    else:   # torchvision's float32 arithmetic, then rounding, so the corners match exactly
        s = torch.tensor(_positive_list(sizes, "sizes"))
        r = torch.tensor(_positive_list(aspect_ratios, "aspect_ratios")).sqrt()
        ws, hs = ((1 / r)[:, None] * s[None, :]).reshape(-1), (r[:, None] * s[None, :]).reshape(-1)
        half, offset = (torch.stack((-ws, -hs, ws, hs), 1) / 2).round().double(), 0.0
    cy = (torch.arange(h, dtype=torch.float64) + offset) * sy
    cx = (torch.arange(w, dtype=torch.float64) + offset) * sx
    cy, cx = torch.meshgrid(cy, cx, indexing="ij")                      # [h, w], row-major
    centres = torch.stack((cx, cy, cx, cy), -1).reshape(-1, 1, 4)       # [h * w, 1, 4]
    return (centres + half[None]).reshape(-1, 4).to(dtype=dtype, device=device)


def ssd_scales(num_levels: int, s_min: float = 0.2, s_max: float = 0.9) -> list[float]:
    """SSD's scales s_k = s_min + (s_max - s_min) (k - 1) / (m - 1), k = 1..m, plus
    s_{m+1} = 1 for the extra square box of the last level (fractions of the image side)."""
    if num_levels < 1:
        raise ValueError(f"num_levels must be >= 1, got {num_levels}")
    if num_levels == 1:
        return [s_min, s_max]
    step = (s_max - s_min) / (num_levels - 1)
    return [s_min + step * k for k in range(num_levels)] + [1.0]


def ssd_default_boxes(feature_sizes: Sequence[tuple[int, int]], image_size: tuple[int, int],
                      scales: Sequence[float], aspect_ratios: Sequence[Sequence[float]],
                      clip: bool = True, normalized: bool = False, device=None,
                      dtype: torch.dtype = torch.float32) -> Tensor:
    """SSD default boxes of all levels, concatenated level by level.

    At each location of level k (cell centre ((j + 0.5) / w_k, (i + 0.5) / h_k) of the
    image): a square box of scale s_k, a square box of scale sqrt(s_k * s_{k+1}), and for each
    ratio r of the level two boxes, w / h = r and h / w = r, both of area s_k**2 (in
    normalized coordinates, as in the SSD paper and torchvision's DefaultBoxGenerator: on a
    non-square image a "square" box has the image's aspect). A_k = 2 + 2 * len(ratios_k).

    Args:
        feature_sizes: (h_k, w_k) per level.
        image_size: (H, W) in pixels.
        scales: s_1..s_m and s_{m+1} (m + 1 values; see :func:`ssd_scales`), fractions of
            the image side.
        aspect_ratios: per level, the ratios r (e.g. [[2], [2, 3], ...]); [] for squares only.
        clip: clip the boxes to the image. Unclipped default boxes of the coarse levels reach
            far outside the image (sgrvinod's SSD tutorial, issue #94); matching then compares
            ground truth with boxes partly made of nothing.
        normalized: return coordinates divided by (W, H), in [0, 1] when clipped.
    Returns:
        Tensor[D, 4]: xyxy, absolute pixels (or normalized), location-major per level.
    """
    H, W = as_pair(image_size, "image_size", positive=True)
    if len(scales) != len(feature_sizes) + 1:
        raise ValueError(f"scales must have len(feature_sizes) + 1 = {len(feature_sizes) + 1} "
                         f"entries (s_1..s_m and s_(m+1)), got {len(scales)}")
    if len(aspect_ratios) != len(feature_sizes):
        raise ValueError(f"aspect_ratios must have one list per level ({len(feature_sizes)}), "
                         f"got {len(aspect_ratios)}")
    _positive_list(scales, "scales")
    levels = []
    for k, size in enumerate(feature_sizes):
        h, w = as_pair(size, f"feature_sizes[{k}]", positive=True)
        s, s_next = float(scales[k]), float(scales[k + 1])
        wh = [(s, s), (math.sqrt(s * s_next),) * 2]
        for r in (_positive_list(aspect_ratios[k], f"aspect_ratios[{k}]")
                  if len(aspect_ratios[k]) else []):
            wh += [(s * math.sqrt(r), s / math.sqrt(r)), (s / math.sqrt(r), s * math.sqrt(r))]
        wh = torch.tensor(wh, dtype=torch.float64)                          # [A_k, 2]
        cy = (torch.arange(h, dtype=torch.float64) + 0.5) / h
        cx = (torch.arange(w, dtype=torch.float64) + 0.5) / w
        cy, cx = torch.meshgrid(cy, cx, indexing="ij")
        centres = torch.stack((cx, cy), -1).reshape(-1, 1, 2)                # [h * w, 1, 2]
        levels.append(torch.cat((centres - wh / 2, centres + wh / 2), -1).reshape(-1, 4))
    boxes = torch.cat(levels)                                               # normalized
    if clip:
        boxes = boxes.clamp(0.0, 1.0)
    if not normalized:
        boxes = boxes * torch.tensor([W, H, W, H], dtype=torch.float64)
    return boxes.to(dtype=dtype, device=device)
