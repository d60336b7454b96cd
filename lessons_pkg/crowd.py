"""Crowd regions (COCO's ``iscrowd``) in training: out of the positives, never hard background.

A crowd annotation marks one region over many objects whose instances were not drawn apart (a
stand of spectators, a shelf of bottles). COCOeval ignores detections on it. Training follows
torchvision's detection references (``ConvertCocoPolysToMask`` keeps ``iscrowd == 0`` only), so a
crowd region is never a positive; but a model that only dropped it would then call the objects
inside it background and learn to suppress them. So every model's ``forward`` (through
:func:`lessons_pkg.inputs.prepare_batch`) splits a target with :func:`split_crowd`: the objects
stay, the crowd regions move to ``"crowd_boxes"``, and what a model would have made a negative
inside one is ignored instead (left out of the loss) by :func:`inside_crowd`. The rule is
py-faster-rcnn's for COCO (``_filter_crowd_proposals``: a proposal inside a crowd region is left out
of training) and mmdetection's ``ignore_iof_thr``: a reference box whose intersection with a crowd
region covers at least :data:`CROWD_IOF` of the reference's own area.

Shape key
    N   objects of one image (crowd ones included)      K   crowd regions of it
    A   reference boxes (anchors, proposals, default boxes, windows, map cells)
"""
from __future__ import annotations

import torch
from torch import Tensor

from . import boxes as box_ops

CROWD_IOF = 0.7   # py-faster-rcnn's crowd_thresh for COCO


def split_crowd(target: dict) -> dict:
    """The target without its crowd objects, which move to ``"crowd_boxes"`` Tensor[K, 4].

    Every per-object value (``boxes``, ``labels``, ``masks``, ``area``, ``iscrowd``) keeps the
    objects with ``iscrowd == 0``. A target without ``"iscrowd"`` is returned as it is (the shapes
    data has no crowds), so models train on it exactly as before.
    """
    if "iscrowd" not in target:
        return target
    crowd = target["iscrowd"].bool()
    n = len(crowd)
    kept = {k: (v[~crowd] if isinstance(v, Tensor) and v.dim() >= 1 and len(v) == n and k != "crowd_boxes" else v)
            for k, v in target.items()}
    kept["crowd_boxes"] = target["boxes"][crowd]
    return kept


def inside_crowd(references: Tensor, crowd_boxes: Tensor | None, threshold: float = CROWD_IOF,
                 image_size: tuple[int, int] | None = None) -> Tensor:
    """Which reference boxes lie inside a crowd region.

    Args:
        references (Tensor[A, 4]): xyxy boxes (anchors, proposals, default boxes, windows, or a
            map's cells as boxes).
        crowd_boxes (Tensor[K, 4] or None): the image's crowd regions.
        threshold: the least fraction of a reference's own area that one crowd region must cover.
        image_size: (H, W): references are first clipped to the image (anchors and default
            boxes reach past its border, and the part outside holds no pixels).
    Returns:
        bool Tensor[A]: intersection(reference, crowd) / area(reference) >= threshold for some
        crowd region (all False without crowd regions). A reference of zero area is inside when
        its point is.
    """
    if crowd_boxes is None or len(crowd_boxes) == 0:
        return torch.zeros(len(references), dtype=torch.bool, device=references.device)
    crowd_boxes = crowd_boxes.to(references)
    if image_size is not None:
        references = box_ops.clip_boxes_to_image(references, image_size)
    ioa = box_ops.box_ioa(references, crowd_boxes)                                      # [A, K]
    point_inside = ((references[:, None, :2] >= crowd_boxes[None, :, :2])
                    & (references[:, None, 2:] <= crowd_boxes[None, :, 2:])).all(-1)
    covered = torch.where(box_ops.box_area(references)[:, None] > 0, ioa >= threshold, point_inside)
    return covered.any(dim=1)


def ignore_in_crowd(matches: Tensor, references: Tensor, crowd_boxes: Tensor | None, negative: int,
                    ignored: int, image_size: tuple[int, int] | None = None) -> Tensor:
    """``matches`` Tensor[A] (an object index, or ``negative``) with the negatives inside a crowd
    region (:func:`inside_crowd`) turned to ``ignored``; positives stay positives. Unchanged
    without crowd regions."""
    if crowd_boxes is None or len(crowd_boxes) == 0:
        return matches
    return torch.where((matches == negative) & inside_crowd(references, crowd_boxes, image_size=image_size),
                       torch.full_like(matches, ignored), matches)


def cells_inside_crowd(targets: list[dict], grid_size: tuple[int, int], image_size: tuple[int, int],
                       threshold: float = CROWD_IOF) -> Tensor | None:
    """bool Tensor[B, h, w]: the cells of an h x w map over the H x W images (each cell the
    pixel box it covers) that lie inside a crowd region of their image (:func:`inside_crowd`);
    None when no target of the batch has a crowd region, so that models skip the work."""
    if not any(len(t.get("crowd_boxes", ())) for t in targets):
        return None
    (h, w), (height, width) = grid_size, image_size
    device = targets[0]["boxes"].device
    ys = torch.arange(h, device=device, dtype=torch.float32) * (height / h)
    xs = torch.arange(w, device=device, dtype=torch.float32) * (width / w)
    y0, x0 = torch.meshgrid(ys, xs, indexing="ij")
    cells = torch.stack([x0, y0, x0 + width / w, y0 + height / h], dim=-1).reshape(-1, 4)     # [h * w, 4]
    return torch.stack([inside_crowd(cells, t.get("crowd_boxes"), threshold).view(h, w) for t in targets])
