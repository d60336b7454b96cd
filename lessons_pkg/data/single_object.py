"""The single-object data of classification & localization, held as tensors and augmented there.

A localizer (:mod:`lessons_pkg.models.localizer`) trains for many epochs over a thousand scenes
of one object each (``make_split(split, n, config="single")``): :class:`SingleObjectTensors`
renders them once and moves tensors afterwards.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset


class SingleObjectTensors(Dataset):
    """Rendered once, reused every epoch: single-object samples held as tensors, with random
    flips and transposes (the eight symmetries of the square; the shapes have no "up").

    Rendering a scene costs a few milliseconds, an epoch of a thousand about 4 s on a CPU: far
    more than training on them. Here the scenes are rendered once, and augmentation moves the
    tensors. Draws use PyTorch's global generator, which ``train.fit(seed=...)`` seeds.

    Args:
        dataset: any dataset in the contract whose targets hold exactly one box (e.g.
            ``data.make_split("train", n, config="single")``).
        augment: apply the random symmetries (turn off for evaluation).
    Items: (image Tensor[3, H, W], {"boxes": float32[1, 4], "labels": int64[1], "image_id": int}).
    """

    def __init__(self, dataset: Dataset, augment: bool = True):
        samples = [dataset[i] for i in range(len(dataset))]
        if not samples:
            raise ValueError("SingleObjectTensors needs a non-empty dataset")
        for i, (_, t) in enumerate(samples):
            if t["boxes"].shape[0] != 1:
                raise ValueError(f"image {i} holds {t['boxes'].shape[0]} boxes; a localizer needs exactly one")
        self.images = torch.stack([im for im, _ in samples])  # [N, 3, H, W]
        self.boxes = torch.cat([t["boxes"] for _, t in samples]).float()  # [N, 4]
        self.labels = torch.cat([t["labels"] for _, t in samples])  # [N]
        self.classes = getattr(dataset, "classes", None)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, dict]:
        image, box = self.images[index], self.boxes[index].clone()
        height, width = image.shape[-2:]
        if self.augment:
            flip_x, flip_y, transpose = (torch.rand(3) < 0.5).tolist()
            if transpose and height == width:  # swap x and y: rows become columns
                image, box = image.transpose(1, 2), box[[1, 0, 3, 2]]
            if flip_x:
                image, box = image.flip(2), torch.stack([width - box[2], box[1], width - box[0], box[3]])
            if flip_y:
                image, box = image.flip(1), torch.stack([box[0], height - box[3], box[2], height - box[1]])
        return image.contiguous(), {"boxes": box[None], "labels": self.labels[index:index + 1], "image_id": int(index)}
