"""Augmentation pipelines built from torchvision.transforms.v2.

The pipelines take and return ``(image, target)`` where the target holds tv_tensors
(see :func:`lessons_pkg.data.dataset.wrap_tv_tensors`), so boxes, instance masks and the
semantic mask follow every flip, crop and resize of the image.
"""
from __future__ import annotations

from torchvision.transforms import v2


def detection_augmentation(output_size: tuple[int, int] | None = None, crop: bool = False,
                           flip: bool = True, colour: float = 0.2) -> v2.Compose:
    """A training pipeline for detection and segmentation.

    Args:
        output_size: (H, W) to resize to at the end (needed after ``crop`` to batch images).
        crop: SSD-style ``RandomIoUCrop`` (a crop that keeps objects with a sampled minimum IoU).
        flip: random horizontal and vertical flips (the shapes have no "up").
        colour: ColorJitter strength for brightness, contrast and saturation (0 turns it off).
    """
    steps: list = []
    if colour > 0:
        steps.append(v2.ColorJitter(brightness=colour, contrast=colour, saturation=colour, hue=colour / 4))
    if flip:
        steps += [v2.RandomHorizontalFlip(0.5), v2.RandomVerticalFlip(0.5)]
    if crop:
        steps.append(v2.RandomIoUCrop())
    if output_size is not None:
        steps.append(v2.Resize(output_size, antialias=True))
    # Crops can push boxes partly outside the image or shrink them to nothing: clamp, then drop
    # degenerate boxes with their labels and masks.
    steps += [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=1.0)]
    return v2.Compose(steps)


def segmentation_augmentation(crop_size: tuple[int, int] | None = (64, 64), flip: bool = True) -> v2.Compose:
    """A training pipeline for semantic segmentation: a random crop and random flips.

    A fully convolutional network trains on crops and predicts on whole images: a 64 x 64 crop
    costs a quarter of a 128 x 128 image, so the same training time sees four times as many
    (different) views. The semantic mask, instance masks and boxes follow the crop; boxes
    cut to nothing are dropped with their labels and masks.
    """
    steps: list = []
    if crop_size is not None:
        steps.append(v2.RandomCrop(crop_size))
    if flip:
        steps += [v2.RandomHorizontalFlip(0.5), v2.RandomVerticalFlip(0.5)]
    steps += [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=1.0)]
    return v2.Compose(steps)
