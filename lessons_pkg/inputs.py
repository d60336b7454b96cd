"""Checks of model inputs against the target contract (README), shared by every model."""
from __future__ import annotations

import torch
from torch import Tensor


def check_images(images) -> Tensor:
    """Tensor[B, 3, H, W] floating (or a list of equal-size Tensor[3, H, W]) -> Tensor[B, 3, H, W]."""
    if isinstance(images, (list, tuple)):
        if not images or not all(isinstance(im, Tensor) and im.shape == images[0].shape for im in images):
            raise ValueError("images as a list must be a non-empty list of Tensor[3, H, W] of one size, "
                             f"got shapes {[tuple(getattr(im, 'shape', ())) for im in images]}")
        images = torch.stack(list(images))
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a Tensor[B, 3, H, W], got {got}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [0, 1], got dtype {images.dtype} "
                         "(divide uint8 images by 255)")
    return images


def check_detection_targets(targets, batch_size: int, num_classes: int | None = None) -> None:
    """Raise ValueError, naming the image and the key, unless ``targets`` is a list of
    ``batch_size`` dicts with "boxes" float Tensor[N, 4] (xyxy pixels, x1 < x2 and y1 < y2,
    finite) and, when ``num_classes`` is given, "labels" int64 Tensor[N] in 1..C.

    Shapes and dtypes are checked always (free); values only on CPU tensors, where reading them
    costs nothing (on a GPU it would make every training step wait). A degenerate box would
    turn a regression target into log(0).
    """
    if not isinstance(targets, (list, tuple)) or len(targets) != batch_size:
        got = f"{len(targets)} targets" if isinstance(targets, (list, tuple)) else type(targets).__name__
        raise ValueError(f"targets must be a list of {batch_size} dicts (one per image), got {got}")
    keys = ("boxes", "labels") if num_classes is not None else ("boxes",)
    for i, t in enumerate(targets):
        if not isinstance(t, dict) or any(k not in t for k in keys):
            got = sorted(t) if isinstance(t, dict) else type(t).__name__
            raise ValueError(f"target {i}: expected a dict with {' and '.join(repr(k) for k in keys)}, got {got}")
        boxes = t["boxes"]
        if not isinstance(boxes, Tensor) or not boxes.is_floating_point() or boxes.dim() != 2 or boxes.shape[1] != 4:
            got = f"{boxes.dtype} {list(boxes.shape)}" if isinstance(boxes, Tensor) else type(boxes).__name__
            raise ValueError(f"target {i} 'boxes': expected a float Tensor[N, 4] (xyxy pixels), got {got}")
        if boxes.device.type == "cpu" and len(boxes):
            if not bool(torch.isfinite(boxes).all()):
                raise ValueError(f"target {i} 'boxes': expected finite values, got {boxes.tolist()}")
            bad = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
            if bool(bad.any()):
                raise ValueError(f"target {i} 'boxes': expected x1 < x2 and y1 < y2, got {boxes[bad].tolist()}")
        if num_classes is None:
            continue
        labels = t["labels"]
        if not isinstance(labels, Tensor) or labels.dtype != torch.int64 or labels.shape != (len(boxes),):
            got = f"{labels.dtype} {list(labels.shape)}" if isinstance(labels, Tensor) else type(labels).__name__
            raise ValueError(f"target {i} 'labels': expected an int64 Tensor[{len(boxes)}], got {got}")
        if labels.device.type == "cpu" and len(labels) and (labels.min() < 1 or labels.max() > num_classes):
            raise ValueError(f"target {i} 'labels': expected values in 1..{num_classes}, got {labels.tolist()}")
