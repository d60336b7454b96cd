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
