"""Worked solutions of the exercises where the reader writes a function from a stub.

They are here, not in the chapter, so that a reader who wants to try first does not see them
while scrolling; each is written the way the chapter teaches it (loops where they make the idea
plain), not the way the package computes it, and each passes its ``exercises.check_*``
(tests/test_exercises.py proves it, and that planted wrong versions fail).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..boxes import box_iou


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression: Tensor[N, 4] xyxy, Tensor[N] -> int64 Tensor[K], the
    indices kept, best score first (equal scores: lower index first)."""
    order = torch.sort(scores, descending=True, stable=True).indices
    iou = box_iou(boxes, boxes)                       # [N, N], computed once
    suppressed = torch.zeros(len(boxes), dtype=torch.bool)
    keep = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold          # only IoU *above* the threshold suppresses
    return torch.tensor(keep, dtype=torch.int64)


def _round_half_away(x: float) -> int:
    """C's round(): 2.5 -> 3, -2.5 -> -3 (Python's round would give 2)."""
    return int(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)


def roi_pool_box(feature: Tensor, box: Tensor, output_size: tuple[int, int], spatial_scale: float) -> Tensor:
    """RoI Pool of one box: feature Tensor[C, H, W], box Tensor[4] xyxy in image pixels ->
    Tensor[C, PH, PW], Fast R-CNN's (and torchvision's) rules: the box rounded to feature
    pixels, both ends included; bins cut with floor/ceil, shifted by the box's corner and
    clipped to the map; each bin the max of its pixels, an empty bin 0."""
    channels, height, width = feature.shape
    ph, pw = output_size
    x1, y1, x2, y2 = (_round_half_away(v * spatial_scale) for v in box.tolist())
    roi_w, roi_h = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
    bin_h, bin_w = roi_h / ph, roi_w / pw
    out = feature.new_zeros(channels, ph, pw)
    for i in range(ph):
        top = min(max(math.floor(i * bin_h) + y1, 0), height)
        bottom = min(max(math.ceil((i + 1) * bin_h) + y1, 0), height)
        for j in range(pw):
            left = min(max(math.floor(j * bin_w) + x1, 0), width)
            right = min(max(math.ceil((j + 1) * bin_w) + x1, 0), width)
            if bottom > top and right > left:
                out[:, i, j] = feature[:, top:bottom, left:right].amax(dim=(1, 2))
    return out


def anchor_labels(iou: Tensor, high: float, low: float) -> Tensor:
    """Faster R-CNN's anchor labels from the IoU matrix Tensor[G, A]: int64 Tensor[A], the best
    object's index where its IoU >= high, -1 (background) below low, -2 (ignored) in between;
    then every object's best anchors (ties included, IoU > 0) become positives, each matched to
    its own best object."""
    num_objects, num_anchors = iou.shape
    if num_objects == 0:
        return torch.full((num_anchors,), -1, dtype=torch.int64)
    best_iou, best_object = iou.max(dim=0)                     # per anchor
    labels = best_object.clone()
    labels[best_iou < low] = -1
    labels[(best_iou >= low) & (best_iou < high)] = -2
    best_per_object = iou.max(dim=1, keepdim=True).values      # [G, 1]
    promoted = ((iou == best_per_object) & (best_per_object > 0)).any(dim=0)
    labels[promoted] = best_object[promoted]
    return labels


def yolo_targets(boxes: Tensor, labels: Tensor, grid_size: tuple[int, int], image_size: tuple[int, int]) -> Tensor:
    """YOLOv1's target grid Tensor[S_h, S_w, 6] of one image: per object cell (x, y, sqrt(w / W),
    sqrt(h / H), label - 1, 1), elsewhere (0, 0, 0, 0, -1, 0); the largest box wins a cell."""
    (s_h, s_w), (height, width) = grid_size, image_size
    grid = torch.zeros(s_h, s_w, 6)
    grid[..., 4] = -1
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for n in torch.sort(areas, descending=True, stable=True).indices.tolist():   # largest first
        x1, y1, x2, y2 = boxes[n].tolist()
        cx, cy = (x1 + x2) / 2 * s_w / width, (y1 + y2) / 2 * s_h / height      # in cells
        col, row = min(max(math.floor(cx), 0), s_w - 1), min(max(math.floor(cy), 0), s_h - 1)
        if grid[row, col, 5]:
            continue                                                            # a larger one is there
        grid[row, col] = torch.tensor([min(max(cx - col, 0.0), 1.0), min(max(cy - row, 0.0), 1.0),
                                       math.sqrt(min(max((x2 - x1) / width, 0.0), 1.0)),
                                       math.sqrt(min(max((y2 - y1) / height, 0.0), 1.0)),
                                       float(labels[n] - 1), 1.0])
    return grid
