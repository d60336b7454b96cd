"""The recipes: how every committed checkpoint is made, and how it is loaded back.

A recipe (:class:`Recipe`) holds everything a checkpoint needs: the model class and its
settings, the step count, the seed and the training settings on the shapes ``train`` split.
``RECIPES[NAME]`` is what ``python -m lessons_pkg.checkpoints NAME`` trains (into
``data/pretrained/NAME.pt``) and what ``python -m lessons_pkg.train NAME`` trains on any data;
:func:`load` builds the recipe's model and loads a checkpoint into it::

    from lessons_pkg import recipes
    model, record = recipes.load("ssd")        # the committed checkpoint, in eval mode

This module is the experiment layer's first floor: it imports the models and the checkpoint
files (:mod:`lessons_pkg.records`), nothing that trains or scores.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import records
from .models import centernet, centernet2, faster_rcnn, fcn, mask_rcnn, rcnn, reference, sliding_window, ssd, yolo

TASKS = ("detection", "segmentation", "instance")


@dataclass(frozen=True)
class Recipe:
    """How one checkpoint is made: the model, its settings, and how it trains.

    ``model(num_classes=4, pretrained_backbone=..., **model_settings)`` builds the network;
    ``fit`` trains it for ``steps`` steps of ``batch_size`` images from the first
    ``num_train_images`` of the shapes ``train`` split (preset ``config``), seeded with ``seed``.
    """

    model: type = field(repr=False)
    model_settings: dict = field(default_factory=dict, repr=False)
    steps: int = 1500
    seed: int = 0
    num_train_images: int = 2000
    batch_size: int = 8
    lr: float = 3e-3
    warmup_steps: int = 50
    config: str = "default"
    task: str = "detection"  # "segmentation" (mIoU) or "instance" (box and mask COCO mAP)
    crop_size: int | None = None  # train on random square crops of this side (segmentation)
    pretrained: bool = False  # start the backbone from data/pretrained/backbone.pt
    proposals: bool = False  # the model reads selective-search proposals (rcnn.WithProposals), train and val
    curve_every: int = 250  # the test-split quality is recorded every this many steps (the time-to-quality curve)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        for name in ("steps", "num_train_images", "batch_size", "curve_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def build(self, pretrained: bool = False, num_classes: int = 4) -> nn.Module:
        """The untrained model for ``num_classes`` classes (the shapes data has 4); its backbone
        pretrained when ``pretrained`` and the recipe's is."""
        return self.model(num_classes=num_classes, pretrained_backbone=True if pretrained and self.pretrained else None,
                          **self.model_settings)

    def settings(self) -> dict:
        """The training settings, as the record keeps them."""
        return {name: getattr(self, name) for name in ("num_train_images", "batch_size", "lr", "warmup_steps",
                                                       "config", "task", "crop_size", "pretrained", "proposals",
                                                       "steps", "seed")}


# Every recipe but sliding_window and ssdlite starts its backbone from the pretrained one
# (python -m lessons_pkg.pretrain); each checkpoint holds the whole network, so loading it
# needs no other file. The detectors share one budget: 1500 steps of 8 images.
RECIPES: dict[str, Recipe] = {
    "sliding_window": Recipe(sliding_window.SlidingWindowDetector, steps=4000, curve_every=1000),
    "fcn": Recipe(fcn.BackboneFCN, {"upsampling": "bilinear"}, num_train_images=2000, batch_size=32,
                  warmup_steps=20, task="segmentation", crop_size=64, pretrained=True),
    # The FCN of Long et al. (scores fused by addition) at two depths of fusion, beside "fcn"
    # (U-Net-style): the same backbone, data and budget.
    "fcn_16s": Recipe(fcn.ScoreFusionFCN, {"strides": (16,)}, num_train_images=2000, batch_size=32,
                      warmup_steps=20, task="segmentation", crop_size=64, pretrained=True),
    "fcn_8s": Recipe(fcn.ScoreFusionFCN, {"strides": (16, 8)}, num_train_images=2000, batch_size=32,
                     warmup_steps=20, task="segmentation", crop_size=64, pretrained=True),
    "faster_rcnn": Recipe(faster_rcnn.FasterRCNN, pretrained=True),
    # R-CNN and Fast R-CNN read selective-search proposals, computed once per image:
    # fewer training images, the same number of steps as Faster R-CNN.
    # (Their evaluation is the slowest, R-CNN's most of all: a curve point every 500 steps.)
    "fast_rcnn": Recipe(rcnn.FastRCNN, num_train_images=500, lr=1e-3, pretrained=True, proposals=True,
                        curve_every=500),
    "rcnn": Recipe(rcnn.RCNN, num_train_images=500, lr=1e-3, pretrained=True, proposals=True, curve_every=500),
    # Fast R-CNN with RoI Align instead of RoI Pool, nothing else changed: the step from Fast to
    # Faster R-CNN then separates "proposals from the RPN" from "Align instead of Pool".
    "fast_rcnn_align": Recipe(rcnn.FastRCNN, {"pool": "roi_align"}, num_train_images=500, lr=1e-3, pretrained=True,
                              proposals=True),
    # Faster R-CNN at Fast R-CNN's training settings (500 images, learning rate 1e-3): beside
    # fast_rcnn_align, the pair differs only in where the proposals come from (selective search
    # or the RPN, trained with the rest).
    "faster_rcnn_500": Recipe(faster_rcnn.FasterRCNN, num_train_images=500, lr=1e-3, pretrained=True),
    # The single-shot detectors. SSD's two variants change only how the background default
    # boxes enter the classification loss.
    "yolo": Recipe(yolo.YOLO, pretrained=True),
    "ssd": Recipe(ssd.SSD, pretrained=True, curve_every=150),
    "ssd_focal": Recipe(ssd.SSD, {"negatives": "focal"}, pretrained=True),
    # The focal loss's modulation alone, without its α weighting of objects against background
    # (Lin et al., eq. 4 instead of eq. 5): beside ssd_focal, one change.
    "ssd_focal_no_alpha": Recipe(ssd.SSD, {"negatives": "focal", "focal_alpha": None}, pretrained=True),
    "ssd_random": Recipe(ssd.SSD, {"negatives": "random"}, pretrained=True),
    # The bar of the object-detection part's open challenge (lessons_pkg.challenges): SSD's
    # recipe on the "hard" preset (more, smaller, more overlapping objects), val and test alike.
    "ssd_hard": Recipe(ssd.SSD, pretrained=True, config="hard"),
    # The anchor-free detector (CenterNet) on a budget of about one minute on 2 CPU cores: its
    # heads work on the stride-4 map, so they are 32 channels wide (64 cost 1.6x the time per step).
    "centernet": Recipe(centernet.CenterNet, {"channels": 32}, steps=900, warmup_steps=20, pretrained=True,
                        curve_every=150),
    # A second stage on CenterNet's peaks (CenterNet2's idea): the committed centernet.pt is the
    # first stage, frozen; RoI Align crops its class-agnostic peaks from the backbone's stride-8
    # stage and the R-CNN family's box head re-scores and refines them. Measured on val: stride 8
    # above stride 4; 600 steps tie with 900 and 1200; training both stages together was over the
    # budget of twice CenterNet's cost at the steps tried. Its cost is CenterNet's 900 steps plus
    # these (a frozen step costs less than one of CenterNet's). The product of two probabilities
    # needs a lower score threshold than RoIHeads' 0.05 (models/centernet2.py says why).
    "centernet2": Recipe(centernet2.CenterNet2, {"channels": 32, "first_stage_checkpoint": "centernet",
                                                 "roi_map": "stride8", "score_threshold": 0.001},
                         steps=600, warmup_steps=20, pretrained=True, curve_every=150),
    # Mask R-CNN and its two ablations (RoI Pool instead of RoI Align; one mask per RoI instead
    # of one per class).
    "mask_rcnn": Recipe(mask_rcnn.MaskRCNN, pretrained=True, task="instance"),
    "mask_rcnn_roi_pool": Recipe(mask_rcnn.MaskRCNN, {"pool": "roi_pool"}, pretrained=True, task="instance"),
    # RoI Pool in the mask branch only: the boxes keep RoI Align, so only the masks can change.
    "mask_rcnn_mask_roi_pool": Recipe(mask_rcnn.MaskRCNN, {"mask_pool": "roi_pool"}, pretrained=True,
                                      task="instance"),
    "mask_rcnn_agnostic": Recipe(mask_rcnn.MaskRCNN, {"class_agnostic": True}, pretrained=True, task="instance"),
    # The outside reference point: torchvision's SSDLite from random weights; it cannot use our backbone.
    "ssdlite": Recipe(reference.SSDLite),
}


def get(name: str) -> Recipe:
    """``RECIPES[name]``; ValueError listing the recipes when there is none of that name."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose from {sorted(RECIPES)}")
    return RECIPES[name]


def remake_command(name: str, out: str | Path | None = None, steps: int | None = None, seed: int | None = None) -> str:
    """The shortest command that makes checkpoint ``name`` at ``out`` (default: the committed
    file) with ``steps`` and ``seed`` (default: the recipe's): flags only where they differ."""
    recipe, words = get(name), ["python", "-m", "lessons_pkg.checkpoints", name]
    if out is not None and Path(out).resolve() != records.default_path(name):
        words += ["--out", records.display_path(out)]
    if steps is not None and steps != recipe.steps:
        words += ["--steps", str(steps)]
    if seed is not None and seed != recipe.seed:
        words += ["--seed", str(seed)]
    return shlex.join(words)


def load(name: str, path: str | Path | None = None, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Build recipe ``name``'s model, load the weights at ``path`` (weights only; default: the
    committed ``data/pretrained/NAME.pt``) and its record.

    Returns (model in eval mode, the JSON record). Raises FileNotFoundError naming the file and
    the command that makes it when the checkpoint is missing.
    """
    recipe = get(name)
    path = records.default_path(name) if path is None else Path(path)
    record_file = path.with_suffix(".json")
    if not path.exists() or not record_file.exists():
        raise FileNotFoundError(f"checkpoint {path} (or its record {record_file.name}) is missing; make it with "
                                f"{remake_command(name, path)}")
    record = records.load_record(path)
    # a model trained on other data (python -m lessons_pkg.train) records its number of classes
    model = recipe.build(num_classes=int(record.get("num_classes", 4)))
    model.load_state_dict(records.load_weights(path, map_location))
    return model.eval(), record
