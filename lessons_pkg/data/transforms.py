"""Augmentation pipelines built from torchvision.transforms.v2.

The pipelines take and return ``(image, target)`` where the target holds tv_tensors
(see :func:`lessons_pkg.data.dataset.wrap_tv_tensors`), so boxes, instance masks and the
semantic mask follow every flip, crop and resize of the image.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

from .dataset import per_object_values


def clean_boxes() -> list:
    """The steps that end every pipeline: boxes clamped into the image, then boxes left
    degenerate dropped with their labels, crowd flags, areas and masks (:func:`per_object_values`)."""
    return [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=1.0, labels_getter=per_object_values)]


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
                       *clean_boxes()])


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
    steps += clean_boxes()
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
    steps += clean_boxes()
    return v2.Compose(steps)


class ResizedImages(Dataset):
    """A dataset's images resized for the model, its targets left in the image's own frame.

    COCO scores detections in the annotation file's pixels (its boxes, masks and ``area``), so a
    set evaluated at another size is resized for the model only: each sample is (the image
    resized by :func:`resize_to_limits`, the original target plus ``"orig_size"`` (H, W) and
    ``"size"`` (h, w), as DETR's targets carry them). :func:`lessons_pkg.evaluation.predictions`
    then maps the predictions back with :func:`to_original_size` before they meet the targets.
    """

    def __init__(self, dataset: Dataset, min_size: int, max_size: int | None = None):
        self.dataset, self.resize = dataset, v2.Resize(min_size, max_size=max_size, antialias=True)
        resize_to_limits(min_size, max_size)   # the same argument checks
        self.classes = getattr(dataset, "classes", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, dict]:
        image, target = self.dataset[index]
        resized = self.resize(image)
        return resized, {**target, "orig_size": tuple(image.shape[-2:]), "size": tuple(resized.shape[-2:])}


def to_original_size(prediction: dict, size: tuple[int, int], orig_size: tuple[int, int]) -> dict:
    """One image's prediction made on the image resized to ``size`` (h, w), mapped back to
    ``orig_size`` (H, W): boxes scaled per axis, masks (probabilities [M, H, W] or [M, 1, H, W])
    resized bilinearly, a "semantic" class map by nearest neighbour (torchvision's detection
    models' ``postprocess`` does the same for their internal resize)."""
    (h, w), (height, width) = size, orig_size
    if (h, w) == (height, width):
        return prediction
    out = dict(prediction)
    if "boxes" in out:
        scale = torch.tensor([width / w, height / h, width / w, height / h], dtype=out["boxes"].dtype)
        out["boxes"] = out["boxes"] * scale.to(out["boxes"].device)
    if "masks" in out and len(out["masks"]):
        masks = out["masks"]
        flat = masks[:, None] if masks.dim() == 3 else masks
        flat = F.interpolate(flat.float(), size=(height, width), mode="bilinear", align_corners=False)
        out["masks"] = flat[:, 0] if masks.dim() == 3 else flat
    elif "masks" in out:
        out["masks"] = out["masks"].new_zeros((0, *out["masks"].shape[1:-2], height, width))
    if "semantic" in out:
        out["semantic"] = F.interpolate(out["semantic"][None, None].float(), size=(height, width),
                                        mode="nearest")[0, 0].to(out["semantic"].dtype)
    return out
