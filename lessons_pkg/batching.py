"""Images of different sizes in one batch: padded together, predictions cropped back.

A real dataset's images differ in size; a batch is one tensor. As torchvision's detection
models do, every model of the course takes a *list* of images of any sizes: :func:`pad_batch`
pads them at the bottom and right to the largest height and width, the model runs once on the
batch, and :func:`restore_sizes` maps each image's predictions back to its own size. Padding
at the bottom and right keeps every pixel's coordinates, so boxes need no shift.

The padded pixels are filled with the image's own mean colour: the backbone subtracts each
image's mean (``backbone.normalize``), so the padding becomes exactly 0 there, what a
convolution's own zero padding would have shown the network at the image's border, and the
mean it subtracts is the image's, not the padding's. Targets follow: instance masks are padded
with 0 and semantic maps with ``IGNORE_INDEX`` (left out of the loss); boxes are unchanged.

Resizing (to a minimum and maximum side, torchvision's ``min_size`` / ``max_size``) is a
transform of the data (``data.resize_to_limits``), so targets and predictions share one frame.

Shape key
    B        images in the batch
    H_i, W_i the size of image i
    H, W     the batch's size: max_i H_i, max_i W_i
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from .inputs import IGNORE_INDEX

PER_PIXEL_KEYS = {"masks": 0, "semantic": IGNORE_INDEX}  # target maps padded with these values


def _is_image_list(images) -> bool:
    return (isinstance(images, (list, tuple)) and len(images) > 0
            and all(isinstance(im, Tensor) and im.dim() == 3 for im in images))


def needs_padding(images, size_divisible: int = 1) -> bool:
    """True for a list of Tensor[3, H_i, W_i] whose sizes differ, or images (a list or a
    Tensor[B, 3, H, W]) whose size is not a multiple of ``size_divisible``."""
    if isinstance(images, Tensor):
        return images.dim() == 4 and len(images) > 0 and any(s % size_divisible for s in images.shape[-2:])
    if not _is_image_list(images):
        return False
    sizes = {tuple(im.shape[-2:]) for im in images}
    return len(sizes) > 1 or any(s % size_divisible for size in sizes for s in size)


def pad_batch(images: list[Tensor], targets: list[dict] | None = None, size_divisible: int = 1
              ) -> tuple[Tensor, list[dict] | None, list[tuple[int, int]]]:
    """A list of Tensor[3, H_i, W_i] -> (Tensor[B, 3, H, W], padded targets, [(H_i, W_i)]).

    H and W are the largest height and width, rounded up to a multiple of ``size_divisible``
    (a model whose coarsest level needs it, e.g. SSD's 128).

    Each image is padded at the bottom and right with its own mean colour; a target's
    "masks" (Tensor[N, H_i, W_i]) with 0 and "semantic" (Tensor[H_i, W_i]) with IGNORE_INDEX.
    Maps of another size than their image's are left as they are, for the contract check to
    name. The targets are new dicts (the caller's are not changed).
    """
    sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
    height, width = (-(-max(s[k] for s in sizes) // size_divisible) * size_divisible for k in (0, 1))
    batch = []
    for im, (h, w) in zip(images, sizes):
        canvas = im.mean(dim=(1, 2), keepdim=True).expand(im.shape[0], height, width).clone()
        canvas[:, :h, :w] = im
        batch.append(canvas)
    padded_targets = None
    if targets is not None and isinstance(targets, (list, tuple)) and len(targets) == len(images):
        padded_targets = []
        for t, (h, w) in zip(targets, sizes):
            if not isinstance(t, dict):
                padded_targets.append(t)
                continue
            t = dict(t)
            for key, fill in PER_PIXEL_KEYS.items():
                value = t.get(key)
                if isinstance(value, Tensor) and value.dim() >= 2 and tuple(value.shape[-2:]) == (h, w):
                    t[key] = F.pad(value, (0, width - w, 0, height - h), value=fill)
            padded_targets.append(t)
    elif targets is not None:
        padded_targets = targets  # the contract check names what is wrong with them
    return torch.stack(batch), padded_targets, sizes


def restore_sizes(predictions: list[dict], sizes: list[tuple[int, int]]) -> list[dict]:
    """Each image's predictions in its own frame: "boxes" Tensor[N, 4] clipped to (W_i, H_i),
    per-pixel outputs (masks Tensor[N, ..., H, W], "semantic" Tensor[H, W], score maps
    Tensor[C + 1, H, W]) cropped to (H_i, W_i)."""
    restored = []
    for p, (h, w) in zip(predictions, sizes):
        p = dict(p)
        if isinstance(p.get("boxes"), Tensor) and p["boxes"].numel():
            boxes = p["boxes"].clone()
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
            p["boxes"] = boxes
        for key in ("masks", "semantic", "scores"):
            value = p.get(key)
            per_pixel = isinstance(value, Tensor) and value.dim() >= (3 if key == "scores" else 2)
            if per_pixel:  # (a detector's "scores" are Tensor[N], one per detection)
                p[key] = value[..., :h, :w]
        restored.append(p)
    return restored


def any_size(forward):
    """Decorate a model's ``forward(images, targets=None, ...)`` to take a list of images of
    different sizes: they are padded into one batch (:func:`pad_batch`), the forward runs once,
    and in eval mode each image's predictions are cropped back to its size
    (:func:`restore_sizes`). A model with a ``size_divisible`` attribute gets every batch
    padded to a multiple of it. Other batches pass through untouched."""

    @functools.wraps(forward)
    def wrapper(self, images, targets=None, *args, **kwargs):
        size_divisible = getattr(self, "size_divisible", 1)
        if not needs_padding(images, size_divisible):
            return forward(self, images, targets, *args, **kwargs)
        batch, padded, sizes = pad_batch(list(images), targets if self.training else None, size_divisible)
        out = forward(self, batch, padded if self.training else targets, *args, **kwargs)
        return out if self.training else restore_sizes(out, sizes)

    return wrapper
