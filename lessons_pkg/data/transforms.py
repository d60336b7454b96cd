"""Augmentation pipelines built from torchvision.transforms.v2.

The pipelines take and return ``(image, target)`` where the target holds tv_tensors
(see :func:`lessons_pkg.data.dataset.wrap_tv_tensors`), so boxes, instance masks and the
semantic mask follow every flip, crop and resize of the image.
"""
from __future__ import annotations

from torchvision.transforms import v2


def resize_to_limits(min_size: int, max_size: int | None = None) -> v2.Compose:
    """Resize so that the shorter side is ``min_size`` and the longer at most ``max_size``
    (torchvision's detection models' ``min_size`` / ``max_size``), boxes and masks following.

    For the evaluation images of a set whose sizes vary a lot, with the same limits as the
    training pipeline (``detection_augmentation(min_size=..., max_size=...)``): predictions and
    targets are then in the resized frame. Images of different sizes need no resizing to be
    batched (the models pad them, :mod:`lessons_pkg.batching`); resizing bounds the cost and
    brings objects to the scale the model learned.
    """
    if not isinstance(min_size, int) or min_size < 1:
        raise ValueError(f"min_size must be an int >= 1, got {min_size!r}")
    if max_size is not None and (not isinstance(max_size, int) or max_size <= min_size):
        raise ValueError(f"max_size must be an int > min_size ({min_size}) or None, got {max_size!r}")
    return v2.Compose([v2.Resize(min_size, max_size=max_size, antialias=True),
                       v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=1.0)])


def detection_augmentation(output_size: tuple[int, int] | None = None, crop: bool = False,
                           flip: bool = True, colour: float = 0.2, min_size: int | None = None,
                           max_size: int | None = None) -> v2.Compose:
    """A training pipeline for detection and segmentation.

    Args:
        output_size: (H, W) to resize to at the end (needed after ``crop`` to batch images).
        min_size, max_size: instead of ``output_size``, resize keeping the aspect ratio
            (:func:`resize_to_limits`); images of different sizes still batch (padded).
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
    if output_size is not None and min_size is not None:
        raise ValueError("give output_size or min_size/max_size, not both")
    if output_size is not None:
        steps.append(v2.Resize(output_size, antialias=True))
    elif min_size is not None:
        steps.append(resize_to_limits(min_size, max_size))
    elif max_size is not None:
        raise ValueError("max_size needs min_size")
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
