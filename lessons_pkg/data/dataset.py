"""The shapes data as a ``torch.utils.data.Dataset`` in the target contract (README).

Every sample is ``(image, target)``:
  image (Tensor[3, H, W]): float32 in [0, 1];
  target: {"boxes": float32[N, 4] xyxy absolute pixels, "labels": int64[N] (1..C),
           "masks": uint8[N, H, W], "semantic": int64[H, W], "image_id": int}.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors

from .shapes import Scene, ShapesConfig, preset, render_scene

# Each split has its own seed, so train, val and test never share a scene.
SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}


def scene_to_sample(scene: Scene, image_id: int) -> tuple[Tensor, dict]:
    """Numpy scene -> (image float[3, H, W] in [0, 1], target dict of the contract)."""
    image = torch.from_numpy(scene.image).permute(2, 0, 1).float().div_(255)
    target = {
        "boxes": torch.from_numpy(scene.boxes),
        "labels": torch.from_numpy(scene.labels),
        "masks": torch.from_numpy(scene.masks),
        "semantic": torch.from_numpy(scene.semantic),
        "image_id": int(image_id),
    }
    return image, target


def wrap_tv_tensors(image: Tensor, target: dict) -> tuple[Tensor, dict]:
    """Wrap a sample in tv_tensors so torchvision.transforms.v2 moves boxes and masks with the image.

    The instance masks and the semantic mask are both ``tv_tensors.Mask``: geometric transforms
    apply to them, SanitizeBoundingBoxes filters the [N, H, W] one along with the boxes and
    leaves the [H, W] one alone.
    """
    h, w = image.shape[-2:]
    wrapped = dict(target)
    wrapped["boxes"] = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(h, w))
    for key in ("masks", "semantic"):
        if key in target:
            wrapped[key] = tv_tensors.Mask(target[key])
    return tv_tensors.Image(image), wrapped


def unwrap_tv_tensors(image: Tensor, target: dict) -> tuple[Tensor, dict]:
    """Plain tensors again (models and metrics see no tv_tensors subclasses)."""
    plain = {k: v.as_subclass(Tensor) if isinstance(v, Tensor) else v for k, v in target.items()}
    return image.as_subclass(Tensor), plain


# Per-object values that are plain tensors: transforms.v2 moves boxes and masks, and drops these
# with their boxes only when told (SanitizeBoundingBoxes' labels_getter, :func:`per_object_values`).
PER_OBJECT_KEYS = ("labels", "iscrowd", "area")


def per_object_values(inputs) -> tuple[Tensor, ...]:
    """SanitizeBoundingBoxes' ``labels_getter``: the target's :data:`PER_OBJECT_KEYS`, so that a
    dropped box takes its label, crowd flag and area with it. ``inputs``: (image, target)."""
    target = inputs[1] if isinstance(inputs, (tuple, list)) else inputs
    return tuple(target[k] for k in PER_OBJECT_KEYS if k in target)


def apply_transforms(transforms: Callable | None, image: Tensor, target: dict) -> tuple[Tensor, dict]:
    """Run a torchvision.transforms.v2 pipeline on a contract sample and return plain tensors.

    A target's ``area`` (COCO's, in the original image's pixels) does not follow a resize or a
    crop: when the image's size changes it is dropped, and the metrics fall back to the mask's or
    the box's area. (Scoring as COCO does happens in the original frame: :class:`ResizedImages`.)
    A pipeline that drops boxes but not their per-object values is refused by name."""
    if transforms is None:
        return image, target
    size = tuple(image.shape[-2:])
    image, target = unwrap_tv_tensors(*transforms(*wrap_tv_tensors(image, target)))
    if "area" in target and tuple(image.shape[-2:]) != size:
        target = {k: v for k, v in target.items() if k != "area"}
    n = len(target["boxes"])
    for key in PER_OBJECT_KEYS:
        if key in target and len(target[key]) != n:
            raise ValueError(f"the transforms left {n} boxes but {len(target[key])} values of {key!r}: give "
                             "SanitizeBoundingBoxes labels_getter=lessons_pkg.data.dataset.per_object_values")
    return image, target


class ShapesDataset(Dataset):
    """``num_images`` scenes of the shapes generator, deterministic for (seed, index).

    Args:
        num_images: length of the dataset.
        seed: the scene stream; use :func:`make_split` for the course's train/val/test seeds.
        config: a :class:`ShapesConfig` or a preset name (``"default"``, ``"single"``, ...).
        transforms: an optional torchvision.transforms.v2 pipeline applied to (image, target).
        cache: keep rendered scenes in memory (a 128x128 scene is about 100 kB with masks).
    """

    def __init__(self, num_images: int, seed: int = 0, config: ShapesConfig | str = "default",
                 transforms: Callable | None = None, cache: bool = True):
        if num_images < 0:
            raise ValueError(f"num_images must be >= 0, got {num_images}")
        self.num_images = int(num_images)
        self.seed = int(seed)
        self.config = preset(config) if isinstance(config, str) else config
        if not isinstance(self.config, ShapesConfig):
            raise TypeError(f"config must be a ShapesConfig or a preset name, got {type(config).__name__}")
        self.transforms = transforms
        self._cache: dict[int, Scene] | None = {} if cache else None

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names; label ``k`` is ``classes[k - 1]`` (label 0 is background)."""
        return self.config.classes

    def __len__(self) -> int:
        return self.num_images

    def scene(self, index: int) -> Scene:
        """The raw numpy scene at ``index`` (cached)."""
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for a ShapesDataset of {self.num_images} images")
        if self._cache is None:
            return render_scene(self.config, self.seed, index)
        if index not in self._cache:
            self._cache[index] = render_scene(self.config, self.seed, index)
        return self._cache[index]

    def __getitem__(self, index: int) -> tuple[Tensor, dict]:
        index = int(index)
        image, target = scene_to_sample(self.scene(index), image_id=index)
        return apply_transforms(self.transforms, image, target)


def make_split(split: str, num_images: int, config: ShapesConfig | str = "default",
               transforms: Callable | None = None) -> ShapesDataset:
    """The course's ``train``, ``val`` or ``test`` split (each with its own seed)."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; choose from {sorted(SPLIT_SEEDS)}")
    return ShapesDataset(num_images, seed=SPLIT_SEEDS[split], config=config, transforms=transforms)


def collate_detection(batch: list[tuple[Tensor, dict]]) -> tuple[Tensor | list[Tensor], list[dict]]:
    """Collate for detection: images stacked to Tensor[B, 3, H, W] when they share a size
    (a list of Tensor[3, H, W] otherwise); targets stay a list of dicts (N varies per image)."""
    if not batch:
        raise ValueError("collate_detection got an empty batch")
    images = [image for image, _ in batch]
    targets = [target for _, target in batch]
    if all(im.shape == images[0].shape for im in images):
        return torch.stack(images), targets
    return images, targets


def class_counts(dataset: Dataset, num_classes: int) -> np.ndarray:
    """int64[C + 1]: how many objects of each label (index 0, background, is always 0)."""
    counts = np.zeros(num_classes + 1, dtype=np.int64)
    for i in range(len(dataset)):
        counts += np.bincount(dataset[i][1]["labels"].numpy(), minlength=num_classes + 1)
    return counts
