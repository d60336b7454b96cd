"""Detectors trained longer than a notebook can afford, by our own command, offline.

    python -m lessons_pkg.checkpoints sliding_window --out data/pretrained/sliding_window.pt --steps 4000 --seed 0

A chapter trains its model live for a few hundred steps (to show the loss falling) and loads
the checkpoint for the numbers that need a longer training. Each recipe (``RECIPES``) says how
to build the model and train it on the shapes ``train`` split; the command writes the float32
``state_dict`` (loaded back with ``torch.load(..., weights_only=True)``) and, beside it, a JSON
record: the command, the settings, the torch version, the training time and the validation
score on the first ``VAL_IMAGES`` images of the ``val`` split, COCO mAP for a detector and mIoU
for a segmentation network (tests/test_checkpoints.py recomputes it).

    python -m lessons_pkg.checkpoints fcn --out data/pretrained/fcn.pt --steps 1500 --seed 0
    python -m lessons_pkg.checkpoints faster_rcnn --out data/pretrained/faster_rcnn.pt --steps 1500 --seed 0
    python -m lessons_pkg.checkpoints ssd --out data/pretrained/ssd.pt --steps 1500 --seed 0

(the README lists every command that made a committed checkpoint).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from . import metrics, train
from .data import collate_detection, make_split, segmentation_augmentation
from .models import faster_rcnn, fcn, mask_rcnn, rcnn, reference, sliding_window, ssd, yolo

VAL_IMAGES = 64


@dataclass(frozen=True)
class Recipe:
    """How one checkpoint is made: the model's builder and its training settings."""

    build: Callable[..., nn.Module] = field(repr=False)  # build(pretrained_backbone_path_or_None)
    num_train_images: int = 2000
    batch_size: int = 8
    lr: float = 3e-3
    warmup_steps: int = 50
    config: str = "default"
    task: str = "detection"  # "segmentation" (mIoU) or "instance" (box and mask COCO mAP)
    crop_size: int | None = None  # train on random square crops of this side (segmentation)
    pretrained: bool = False  # start the backbone from data/pretrained/backbone.pt
    proposals: bool = False  # the model reads selective-search proposals (rcnn.WithProposals), train and val

    def settings(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "build"}


RECIPES: dict[str, Recipe] = {
    "sliding_window": Recipe(build=lambda pretrained=None: sliding_window.SlidingWindowDetector(num_classes=4)),
    # The encoder starts from the pretrained backbone (python -m lessons_pkg.pretrain); the
    # checkpoint holds the whole network, so loading it needs no other file.
    "fcn": Recipe(build=lambda pretrained=None: fcn.BackboneFCN(num_classes=4, upsampling="bilinear",
                                                               pretrained=pretrained),
                  num_train_images=2000, batch_size=32, lr=3e-3, warmup_steps=20, task="segmentation",
                  crop_size=64, pretrained=True),
    "faster_rcnn": Recipe(build=lambda pretrained=None: faster_rcnn.FasterRCNN(num_classes=4,
                                                                            pretrained_backbone=pretrained),
                          num_train_images=2000, batch_size=8, lr=3e-3, warmup_steps=50, pretrained=True),
    # R-CNN and Fast R-CNN read selective-search proposals, computed once per image (0.1 s each):
    # fewer training images, the same number of steps as Faster R-CNN.
    "fast_rcnn": Recipe(build=lambda pretrained=None: rcnn.FastRCNN(num_classes=4, pretrained_backbone=pretrained),
                        num_train_images=500, batch_size=8, lr=1e-3, warmup_steps=50, pretrained=True,
                        proposals=True),
    "rcnn": Recipe(build=lambda pretrained=None: rcnn.RCNN(num_classes=4, pretrained_backbone=pretrained),
                   num_train_images=500, batch_size=8, lr=1e-3, warmup_steps=50, pretrained=True, proposals=True),
    # The single-shot detectors, the same budget and backbone as Faster R-CNN. SSD's two
    # variants change only how the background default boxes enter the classification loss.
    "yolo": Recipe(build=lambda pretrained=None: yolo.YOLO(num_classes=4, pretrained_backbone=pretrained),
                   num_train_images=2000, batch_size=8, lr=3e-3, warmup_steps=50, pretrained=True),
    "ssd": Recipe(build=lambda pretrained=None: ssd.SSD(num_classes=4, pretrained_backbone=pretrained),
                  num_train_images=2000, batch_size=8, lr=3e-3, warmup_steps=50, pretrained=True),
    "ssd_focal": Recipe(build=lambda pretrained=None: ssd.SSD(num_classes=4, pretrained_backbone=pretrained,
                                                              negatives="focal"),
                        num_train_images=2000, batch_size=8, lr=3e-3, warmup_steps=50, pretrained=True),
    "ssd_random": Recipe(build=lambda pretrained=None: ssd.SSD(num_classes=4, pretrained_backbone=pretrained,
                                                               negatives="random"),
                         num_train_images=2000, batch_size=8, lr=3e-3, warmup_steps=50, pretrained=True),
    # Mask R-CNN and its two ablations (RoI Pool instead of RoI Align; one mask per RoI instead
    # of one per class), the same budget.
    "mask_rcnn": Recipe(build=lambda pretrained=None: mask_rcnn.MaskRCNN(num_classes=4, pretrained_backbone=pretrained),
                        num_train_images=2000, batch_size=8, lr=3e-3, warmup_steps=50, pretrained=True,
                        task="instance"),
    "mask_rcnn_roi_pool": Recipe(build=lambda pretrained=None: mask_rcnn.MaskRCNN(
        num_classes=4, pretrained_backbone=pretrained, pool="roi_pool"),
        num_train_images=2000, batch_size=8, lr=3e-3, warmup_steps=50, pretrained=True, task="instance"),
    "mask_rcnn_agnostic": Recipe(build=lambda pretrained=None: mask_rcnn.MaskRCNN(
        num_classes=4, pretrained_backbone=pretrained, class_agnostic=True),
        num_train_images=2000, batch_size=8, lr=3e-3, warmup_steps=50, pretrained=True, task="instance"),
    # The outside reference point: torchvision's SSDLite from random weights, the same budget
    # (1500 steps of 8 images) as Faster R-CNN; it cannot use our backbone.
    "ssdlite": Recipe(build=lambda pretrained=None: reference.SSDLite(num_classes=4),
                      num_train_images=2000, batch_size=8, lr=3e-3, warmup_steps=50),
}
PRETRAINED_BACKBONE = Path(__file__).resolve().parents[1] / "data" / "pretrained" / "backbone.pt"


def validation_map(model: nn.Module, config: str = "default", num_images: int = VAL_IMAGES,
                   device: torch.device | str = "cpu", proposals: bool = False, iou_type: str = "bbox") -> dict:
    """COCO mAP (all of :data:`metrics.SUMMARY_KEYS`) on the first ``num_images`` val images
    (with ``proposals``, each image's selective-search proposals in its target). ``iou_type``
    "bbox", "segm" (masks), or "both": {"bbox": ..., "segm": ...} from one pass."""
    dataset = make_split("val", num_images, config)
    loader = train.make_loader(rcnn.WithProposals(dataset) if proposals else dataset, batch_size=16, shuffle=False)
    if iou_type == "both":
        preds, targets = train.evaluate(model, loader, device=device)
        return {kind: metrics.mean_average_precision(preds, targets, iou_type=kind) for kind in ("bbox", "segm")}
    return train.evaluate(model, loader, device=device,
                          metric=lambda p, t: metrics.mean_average_precision(p, t, iou_type=iou_type))


def validation_miou(model: nn.Module, config: str = "default", num_images: int = VAL_IMAGES,
                    device: torch.device | str = "cpu") -> dict:
    """{"miou", "pixel_accuracy", "iou_per_class"} of a segmentation model on the first
    ``num_images`` val images (one confusion matrix over all their pixels)."""
    loader = train.make_loader(make_split("val", num_images, config), batch_size=16, shuffle=False)
    return train.evaluate(model, loader, device=device, metric=fcn.segmentation_metrics)


def validation_record(task: str, model: nn.Module, config: str, num_images: int, proposals: bool = False) -> dict:
    """The numbers a checkpoint's record keeps (and its test recomputes)."""
    if task == "segmentation":
        r = validation_miou(model, config, num_images)
        return {"miou": round(r["miou"], 6), "pixel_accuracy": round(r["pixel_accuracy"], 6),
                "iou_per_class": [round(float(v), 6) for v in r["iou_per_class"]]}
    if task == "instance":   # box mAP at the top level (as for every detector), mask mAP under "segm"
        r = validation_map(model, config, num_images, proposals=proposals, iou_type="both")
        return {**{k: round(float(r["bbox"][k]), 6) for k in metrics.SUMMARY_KEYS},
                "segm": {k: round(float(r["segm"][k]), 6) for k in metrics.SUMMARY_KEYS}}
    r = validation_map(model, config, num_images, proposals=proposals)
    return {k: round(float(r[k]), 6) for k in metrics.SUMMARY_KEYS}


def make_checkpoint(name: str, out: Path, steps: int, seed: int, command: str) -> dict:
    """Train recipe ``name`` for ``steps`` steps, write ``out`` and ``out.with_suffix('.json')``."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose from {sorted(RECIPES)}")
    recipe = RECIPES[name]
    train.seed_everything(seed)
    model = recipe.build(PRETRAINED_BACKBONE if recipe.pretrained else None)
    crop = segmentation_augmentation((recipe.crop_size,) * 2) if recipe.crop_size else None
    dataset = make_split("train", recipe.num_train_images, recipe.config, transforms=crop)
    if recipe.proposals:
        dataset = rcnn.WithProposals(dataset)
    start = time.perf_counter()
    for i in range(len(dataset)):  # render (and propose) once, up front, so the timing below is training only
        dataset[i]
    render_seconds = time.perf_counter() - start
    loader = train.make_loader(dataset, batch_size=recipe.batch_size, collate_fn=collate_detection)
    history = train.fit(model, loader, steps=steps, lr=recipe.lr, warmup_steps=recipe.warmup_steps,
                        seed=seed, log_every=50, desc=name)
    model.cpu().eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out)
    record = {
        "command": command, "recipe": name, **recipe.settings(), "steps": steps, "seed": seed,
        "final_loss": round(history.final(), 5), "train_seconds": round(history.seconds, 1),
        "render_seconds": round(render_seconds, 1), "torch": torch.__version__, "dtype": "float32",
        "parameters": sum(p.numel() for p in model.parameters()),
        "val": {"split": "val", "num_images": VAL_IMAGES, "config": recipe.config,
                **validation_record(recipe.task, model, recipe.config, VAL_IMAGES, recipe.proposals)},
    }
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def load(name: str, path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Build recipe ``name``'s model, load the weights at ``path`` (weights only) and its record.

    Returns (model in eval mode, the JSON record). Raises FileNotFoundError naming the file and
    the command that makes it when the checkpoint is missing.
    """
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose from {sorted(RECIPES)}")
    path = Path(path)
    record_file = path.with_suffix(".json")
    if not path.exists() or not record_file.exists():
        raise FileNotFoundError(f"checkpoint {path} (or its record {record_file.name}) is missing; make it with "
                                f"python -m lessons_pkg.checkpoints {name} --out {path}")
    record = json.loads(record_file.read_text())
    model = RECIPES[name].build()
    model.load_state_dict(torch.load(path, map_location=map_location, weights_only=True))
    return model.eval(), record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lessons_pkg.checkpoints", description=__doc__.split("\n")[0])
    parser.add_argument("recipe", choices=sorted(RECIPES))
    parser.add_argument("--out", type=Path, required=True, help="where to write the .pt (and the .json beside it)")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    command = "python -m lessons_pkg.checkpoints " + shlex.join(
        [args.recipe, "--out", str(args.out), "--steps", str(args.steps), "--seed", str(args.seed)])
    record = make_checkpoint(args.recipe, args.out, args.steps, args.seed, command)
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
