"""Detectors trained longer than a notebook can afford, by our own command, offline.

    python -m lessons_pkg.checkpoints ssd                       # remakes data/pretrained/ssd.pt
    python -m lessons_pkg.checkpoints ssd --out /tmp/ssd.pt     # the same recipe, elsewhere
    python -m lessons_pkg.checkpoints ssd --out /tmp/s.pt --steps 300 --seed 1   # a variation

A chapter trains its model live for a few hundred steps (to show the loss falling) and loads
the checkpoint for the numbers that need a longer training (``load("ssd")``). Each recipe
(``RECIPES``) holds everything its checkpoint needs: the model and its settings, the step count,
the seed and the training settings on the shapes ``train`` split, so the command with no flag
but the recipe's name remakes the committed checkpoint (it refuses to replace an existing file
unless given ``--overwrite``). The command writes the ``state_dict`` in float16 and, beside it,
a JSON record (:func:`lessons_pkg.records.save_checkpoint`): the command, the settings, the
torch version, the training time and the scores of the float16 weights, COCO mAP for a
detector and mIoU for a segmentation network, on the first ``VAL_IMAGES`` images of the ``val``
split (what development looked at) and on the first ``TEST_IMAGES`` of the ``test`` split (the
headline numbers and the quality bars); tests/test_checkpoints.py recomputes both.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import metrics, records, train
from .cli import positive_int
from .data import make_split
from .models import centernet, faster_rcnn, fcn, mask_rcnn, rcnn, reference, sliding_window, ssd, yolo

VAL_IMAGES = 64     # the validation images that development looked at
TEST_IMAGES = 300   # the test images that no choice looked at: headline numbers and quality bars
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
    # R-CNN and Fast R-CNN read selective-search proposals, computed once per image (0.1 s each):
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


def evaluation_set(split: str, num_images: int, config: str = "default", proposals: bool = False):
    """The first ``num_images`` images of ``split`` (with ``proposals``, each image's
    selective-search proposals in its target, computed once and kept)."""
    dataset = make_split(split, num_images, config)
    return rcnn.WithProposals(dataset) if proposals else dataset


def split_map(model: nn.Module, split: str = "val", num_images: int = VAL_IMAGES, config: str = "default",
              device: torch.device | str = "cpu", proposals: bool = False, iou_type: str = "bbox",
              dataset=None) -> dict:
    """COCO mAP (all of :data:`metrics.SUMMARY_KEYS`) on the first ``num_images`` images of
    ``split`` (with ``proposals``, each image's selective-search proposals in its target), or
    on ``dataset`` when given (an :func:`evaluation_set` kept between calls).
    ``iou_type`` "bbox", "segm" (masks), or "both": {"bbox": ..., "segm": ...} from one pass."""
    dataset = evaluation_set(split, num_images, config, proposals) if dataset is None else dataset
    loader = train.make_loader(dataset, batch_size=16, shuffle=False)
    if iou_type == "both":
        preds, targets = train.evaluate(model, loader, device=device)
        return {kind: metrics.mean_average_precision(preds, targets, iou_type=kind) for kind in ("bbox", "segm")}
    return train.evaluate(model, loader, device=device,
                          metric=lambda p, t: metrics.mean_average_precision(p, t, iou_type=iou_type))


def split_miou(model: nn.Module, split: str = "val", num_images: int = VAL_IMAGES, config: str = "default",
               device: torch.device | str = "cpu", dataset=None) -> dict:
    """{"miou", "pixel_accuracy", "iou_per_class"} of a segmentation model on the first
    ``num_images`` images of ``split`` (one confusion matrix over all their pixels), or on
    ``dataset`` when given."""
    dataset = evaluation_set(split, num_images, config) if dataset is None else dataset
    loader = train.make_loader(dataset, batch_size=16, shuffle=False)
    return train.evaluate(model, loader, device=device, metric=metrics.segmentation_metrics)


def split_record(task: str, model: nn.Module, split: str, num_images: int, config: str = "default",
                 proposals: bool = False, dataset=None) -> dict:
    """The scores a checkpoint's record keeps for one split (and its test recomputes):
    {"split", "num_images", "config", and mIoU or COCO mAP (box mAP, and mask mAP under "segm"
    for instance segmentation)}. ``dataset``: that split's :func:`evaluation_set`, when kept."""
    out = {"split": split, "num_images": num_images, "config": config}
    if task == "segmentation":
        r = split_miou(model, split, num_images, config, dataset=dataset)
        return {**out, "miou": round(r["miou"], 6), "pixel_accuracy": round(r["pixel_accuracy"], 6),
                "iou_per_class": [round(float(v), 6) for v in r["iou_per_class"]]}
    if task == "instance":   # box mAP at the top level (as for every detector), mask mAP under "segm"
        r = split_map(model, split, num_images, config, proposals=proposals, iou_type="both", dataset=dataset)
        return {**out, **{k: round(float(r["bbox"][k]), 6) for k in metrics.SUMMARY_KEYS},
                "segm": {k: round(float(r["segm"][k]), 6) for k in metrics.SUMMARY_KEYS}}
    r = split_map(model, split, num_images, config, proposals=proposals, dataset=dataset)
    return {**out, **{k: round(float(r[k]), 6) for k in metrics.SUMMARY_KEYS}}


def curve_point(task: str, split_scores: dict) -> dict:
    """The few numbers a point of the time-to-quality curve keeps from :func:`split_record`:
    mAP@0.5 and mAP (box; and the mask's for instance segmentation) or mIoU."""
    if task == "segmentation":
        return {"miou": split_scores["miou"]}
    point = {"map_50": split_scores["map_50"], "map": split_scores["map"]}
    if task == "instance":
        point.update(mask_map_50=split_scores["segm"]["map_50"], mask_map=split_scores["segm"]["map"])
    return point


class QualityCurve:
    """Records a training's test-split quality every ``recipe.curve_every`` steps, against the
    seconds spent training so far (the evaluations' own time left out), for ``fit``'s ``on_step``.

    The evaluation leaves the training as it would have been without it: the model's mode is
    restored by ``train.evaluate``, and every random state (Python, NumPy, torch) is put back, so
    a run with a curve trains the same weights as one without.
    """

    def __init__(self, recipe: Recipe, model: nn.Module, steps: int):
        self.recipe, self.model, self.steps = recipe, model, steps
        self.dataset = evaluation_set("test", TEST_IMAGES, recipe.config, recipe.proposals)
        self.points: list[dict] = []
        self.eval_seconds = 0.0
        self.start = time.perf_counter()

    def training_seconds(self) -> float:
        return time.perf_counter() - self.start - self.eval_seconds

    def on_step(self, done: int) -> None:
        if done % self.recipe.curve_every or done >= self.steps:  # the last point is the saved weights'
            return
        seconds = self.training_seconds()
        began = time.perf_counter()
        state = train.rng_state()
        scored = split_record(self.recipe.task, self.model, "test", TEST_IMAGES, self.recipe.config,
                              self.recipe.proposals, dataset=self.dataset)
        train.set_rng_state(state)
        self.points.append({"step": done, "seconds": round(seconds, 1), **curve_point(self.recipe.task, scored)})
        self.eval_seconds += time.perf_counter() - began

    def finish(self, test_scores: dict, train_seconds: float) -> list[dict]:
        """The points, the last one the final weights' ``test_scores`` at ``train_seconds``."""
        last = {"step": self.steps, "seconds": round(train_seconds, 1), **curve_point(self.recipe.task, test_scores)}
        return [*self.points, last]


def scores(recipe: Recipe, model: nn.Module) -> dict:
    """What a record keeps: the scores on the ``VAL_IMAGES`` validation images (what development
    looked at) and on the ``TEST_IMAGES`` test images (the headline numbers and the bars)."""
    return {"val": split_record(recipe.task, model, "val", VAL_IMAGES, recipe.config, recipe.proposals),
            "test": split_record(recipe.task, model, "test", TEST_IMAGES, recipe.config, recipe.proposals)}


def command_line(name: str, out: Path, steps: int, seed: int) -> str:
    """The shortest command that makes this checkpoint: flags only where they differ from the recipe."""
    recipe, words = RECIPES[name], ["python", "-m", "lessons_pkg.checkpoints", name]
    if Path(out).resolve() != records.default_path(name):
        words += ["--out", records.display_path(out)]
    if steps != recipe.steps:
        words += ["--steps", str(steps)]
    if seed != recipe.seed:
        words += ["--seed", str(seed)]
    return shlex.join(words)


def make_checkpoint(name: str, out: str | Path | None = None, steps: int | None = None, seed: int | None = None,
                    overwrite: bool = False, curve_only: bool = False) -> dict:
    """Train recipe ``name`` (its steps and seed unless given), write ``out`` (default: the
    committed ``data/pretrained/NAME.pt``) in float16 and its record beside it; returns the record.

    The record keeps the time-to-quality ``"curve"`` (:class:`QualityCurve`): the test-split
    quality every ``curve_every`` steps against the training seconds, the last point the saved
    weights' own test scores. With ``curve_only`` the recipe is trained the same way but no
    weights are written: only the existing record's ``"curve"`` is replaced (``--curve``, for a
    checkpoint made before records kept curves).
    """
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose from {sorted(RECIPES)}")
    recipe = RECIPES[name]
    steps = recipe.steps if steps is None else steps
    seed = recipe.seed if seed is None else seed
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    out = records.default_path(name) if out is None else Path(out)
    if curve_only:
        existing = records.load_record(out)   # a clear error when there is no record to add to
        if (existing["steps"], existing["seed"]) != (steps, seed):
            raise ValueError(f"{out.with_suffix('.json')} was trained for {existing['steps']} steps with seed "
                             f"{existing['seed']}; its curve must come from the same run, not {steps} and {seed}")
    else:
        out = records.check_writable(out, overwrite)
    # The data, model and loader of python -m lessons_pkg.train on the shapes data, one process:
    # the committed checkpoints and a user's runs are trained the same way.
    from .train.__main__ import make_train_loader, shapes_training_set
    from .train.distributed import Context
    train.seed_everything(seed)
    model = recipe.build(pretrained=True)
    dataset = shapes_training_set(recipe)
    if recipe.proposals:
        dataset = rcnn.WithProposals(dataset)
    start = time.perf_counter()
    for i in range(len(dataset)):  # render (and propose) once, up front, so the timing below is training only
        dataset[i]
    render_seconds = time.perf_counter() - start
    loader = make_train_loader(dataset, recipe.batch_size, seed, Context(), workers=0)
    curve = QualityCurve(recipe, model, steps)
    history = train.fit(model, loader, steps=steps, lr=recipe.lr, warmup_steps=recipe.warmup_steps,
                        seed=seed, log_every=50, desc=name, on_step=curve.on_step)
    train_seconds = history.seconds - curve.eval_seconds
    if curve_only:
        model = model.cpu().eval()
        model.load_state_dict(records.cast_state(model.state_dict(), records.DTYPES[existing["dtype"]]))
        test = split_record(recipe.task, model, "test", TEST_IMAGES, recipe.config, recipe.proposals,
                            dataset=curve.dataset)
        existing["curve"] = curve.finish(test, train_seconds)
        existing["curve_threads"] = torch.get_num_threads()
        existing["curve_made_by"] = (f"{command_line(name, out, steps, seed)} --curve: the recipe trained again "
                                     f"with torch {torch.__version__} ({torch.get_num_threads()} threads), no "
                                     "weights written; its last point scores that run's weights")
        records.write_record(out, existing)
        return existing
    record = {"command": command_line(name, out, steps, seed), "recipe": name, **recipe.settings(),
              "steps": steps, "seed": seed, "final_loss": round(history.final(), 5),
              "train_seconds": round(train_seconds, 1), "render_seconds": round(render_seconds, 1),
              "threads": torch.get_num_threads()}
    record = records.save_checkpoint(model, out, record, dtype="float16", scores=lambda saved: scores(recipe, saved))
    record["curve"] = curve.finish(record["test"], train_seconds)
    records.write_record(out, record)
    return record


def rescore(name: str, path: str | Path | None = None) -> dict:
    """Recompute the val and test scores of checkpoint ``name`` (default: the committed one) and
    write them into its record (``--rescore``: the weights are not touched). Returns the record."""
    model, record = load(name, path)
    path = records.default_path(name) if path is None else Path(path)
    record.update(scores(RECIPES[name], model))
    records.write_record(path, record)
    return record


def load(name: str, path: str | Path | None = None, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Build recipe ``name``'s model, load the weights at ``path`` (weights only; default: the
    committed ``data/pretrained/NAME.pt``) and its record.

    Returns (model in eval mode, the JSON record). Raises FileNotFoundError naming the file and
    the command that makes it when the checkpoint is missing.
    """
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose from {sorted(RECIPES)}")
    path = records.default_path(name) if path is None else Path(path)
    record_file = path.with_suffix(".json")
    if not path.exists() or not record_file.exists():
        raise FileNotFoundError(f"checkpoint {path} (or its record {record_file.name}) is missing; make it with "
                                f"{command_line(name, path, RECIPES[name].steps, RECIPES[name].seed)}")
    record = records.load_record(path)
    # a model trained on other data (python -m lessons_pkg.train) records its number of classes
    model = RECIPES[name].build(num_classes=int(record.get("num_classes", 4)))
    model.load_state_dict(records.load_weights(path, map_location))
    return model.eval(), record


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lessons_pkg.checkpoints", description=__doc__.split("\n")[0])
    p.add_argument("recipe", choices=sorted(RECIPES))
    p.add_argument("--out", type=Path, default=None,
                   help="where to write the .pt (and the .json beside it); default: data/pretrained/RECIPE.pt")
    p.add_argument("--steps", type=positive_int, default=None, help="optimizer steps; default: the recipe's")
    p.add_argument("--seed", type=int, default=None, help="default: the recipe's")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--rescore", action="store_true",
                   help="no training: recompute the val and test scores of the checkpoint into its record")
    p.add_argument("--curve", action="store_true",
                   help="train the recipe again without writing weights and put its time-to-quality curve "
                        "into the existing record")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.rescore:
        print(json.dumps(rescore(args.recipe, args.out), indent=2))
        return 0
    try:
        record = make_checkpoint(args.recipe, args.out, args.steps, args.seed, args.overwrite, curve_only=args.curve)
    except FileExistsError as error:
        p.error(str(error))
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
