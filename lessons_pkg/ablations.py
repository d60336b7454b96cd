"""Ablations over seeds: when two variants differ by little, one training run each says nothing.

    python -m lessons_pkg.ablations ssd_negatives      # trains seeds 1 and 2 of each variant
    python -m lessons_pkg.ablations mask_heads
    python -m lessons_pkg.ablations centernet_second_stage
    python -m lessons_pkg.ablations localizer_box_weight   # a chapter's live runs, over seeds 0, 1, 2
    python -m lessons_pkg.ablations upsampling             # every upsampling kind, seeds 0, 1, 2

An ablation (``ABLATIONS``) is a few variants that change one thing, trained with several
seeds. Either the variants are recipes of :mod:`lessons_pkg.recipes`, trained at the
recipe's budget: seed 0 of each is the committed checkpoint (its record's scores are reused),
the other seeds are trained into a temporary folder. Or they are the runs a chapter trains live
(``run(variant, seed)`` trains one and scores it): seed 0 is what the chapter shows, and every
seed is trained here. Only scores are kept: ``data/ablations/NAME.json`` holds, for every recipe and seed,
the val and test scores and the command that remakes them, and for every score the mean and the
spread (sample standard deviation) over the seeds. A chapter claims a difference between two
variants only where it is larger than the spread.
"""
from __future__ import annotations

import statistics
import sys
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch

from . import evaluation, metrics, records, recipes, training

ABLATIONS_DIR = records.PRETRAINED_DIR.parent / "ablations"
SUMMARY = ("map_50", "map", "map_75", "mar_100", "recall_50", "boxes_50", "miou", "accuracy", "mean_iou", "acc_at_iou")


@dataclass(frozen=True)
class Ablation:
    """Variants that differ in one setting, and the seeds each is trained with.

    ``run`` is None when the variants are checkpoint recipes; otherwise ``run(variant, seed)``
    trains one variant live and returns {"val": scores, "test": scores, "train_seconds": s}.
    ``extra(recipe, model, split)``: scores the records do not keep ({key: value}), computed
    from each seed's weights (recipes only) and added to its val and test scores.
    ``keep_weights`` (live runs only): the variants whose seed-0 weights are kept, for a chapter
    that loads them (:func:`kept_model`) instead of training them; ``run`` is then called with
    ``weights_out``, the file to save them to, and ``model(variant)`` builds the empty model.
    """

    recipes: tuple[str, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    what: str = ""
    run: Callable[[str, int], dict] | None = None
    extra: Callable[[str, torch.nn.Module, str], dict] | None = None
    keep_weights: tuple[str, ...] = ()
    model: Callable[[str], torch.nn.Module] | None = None

    def __post_init__(self):
        if self.keep_weights and (self.run is None or self.model is None):
            raise ValueError("keep_weights needs a live run (run) and a model builder (model)")
        unknown = set(self.keep_weights) - set(self.recipes)
        if unknown:
            raise ValueError(f"keep_weights names variants that are not in recipes: {sorted(unknown)}")


def recall_50(recipe: str, model: torch.nn.Module, split: str) -> dict:
    """{"recall_50": COCO's recall at IoU 0.5, 100 dets (:func:`metrics.recall_at_iou`: how many
    objects are found, loose boxes or tight), "boxes_50": the number of detections of score >= 0.5
    (what a user who thresholds at 0.5 sees)} on the images of ``split`` that a record scores."""
    r = recipes.get(recipe)
    dataset = evaluation.evaluation_set(split, evaluation.split_size(split), r.config, r.proposals)
    preds, targets = evaluation.predictions(model, dataset)
    return {"recall_50": round(metrics.recall_at_iou(preds, targets, 0.5, 100), 6),
            "boxes_50": sum(int((p["scores"] >= 0.5).sum()) for p in preds)}


# ----------------------------------------------------------------------------- live runs of chapters
LOCALIZER_SPLITS = {"train": 512, "val": 256, "test": 300}  # the classification & localization chapter's


@lru_cache(maxsize=1)
def localizer_data():
    """The chapter's single-object splits, rendered once: {"train", "val", "test"} datasets."""
    from .data import make_split
    from .data import SingleObjectTensors
    return {split: SingleObjectTensors(make_split(split, n, config="single"), augment=split == "train")
            for split, n in LOCALIZER_SPLITS.items()}


@lru_cache(maxsize=None)
def localizer_frozen_features(seed: int):
    """One :class:`~lessons_pkg.fine_tuning.FrozenFeatures` per seed: the λ variants of one seed
    share their frozen phase (the same batches through the same fixed backbone), computed once."""
    from .fine_tuning import FrozenFeatures
    return FrozenFeatures()


def localizer_run(workflow: str, box_weight: float, seed: int, weights_out: Path | None = None) -> dict:
    """One of the chapter's 200-step runs (:func:`lessons_pkg.fine_tuning.train_workflow`),
    scored on its val and test splits, with its training loss curve (``curve``: the logged steps
    and the total, classification and box losses, which the chapter draws and tabulates).
    ``weights_out``: save the weights there in float16 first and score what the file holds."""
    from .fine_tuning import train_workflow
    sets = localizer_data()
    frozen = localizer_frozen_features(seed) if workflow == "frozen, then fine-tuned" else None
    model, history = train_workflow(sets["train"], workflow, box_weight=box_weight, seed=seed,
                                    frozen_features=frozen)
    if weights_out is not None:   # scored below as the file holds it
        records.save_weights(model, weights_out)
    return {**{split: evaluation.score(model, sets[split], "localization") for split in ("val", "test")},
            "train_seconds": round(history.seconds, 1),
            "curve": {"steps": history.steps,
                      **{key: [round(v, 5) for v in history.losses[key]] for key in ("total", "loss_cls", "loss_box")}}}


def localizer_model(variant: str) -> torch.nn.Module:
    """The empty model of a λ variant (its box weight is the variant's name)."""
    from .models.localizer import Localizer
    return Localizer(box_weight=float(variant))


def weights_path(name: str, variant: str) -> Path:
    """Where ablation ``name`` keeps the seed-0 weights of ``variant``."""
    return ABLATIONS_DIR / name / f"{variant}.pt"


def kept_model(name: str, variant: str) -> torch.nn.Module:
    """Seed 0 of a variant whose weights ablation ``name`` keeps, loaded (``weights_only=True``),
    in eval mode: the run its record's seed 0 scores."""
    ablation = ABLATIONS[name]
    if variant not in ablation.keep_weights:
        raise ValueError(f"ablation {name!r} keeps the weights of {list(ablation.keep_weights)}, not {variant!r}")
    model = ablation.model(variant)
    model.load_state_dict(records.load_weights(weights_path(name, variant)))
    return model.eval()


UPSAMPLING_STEPS = 200  # 16 crops of 64 x 64 a step, lr 3e-3: the upsampling chapter's live run, longer
UPSAMPLING_KINDS = ("nearest", "bed_of_nails", "bilinear", "transposed", "transposed_2x2", "transposed_bilinear",
                    "transposed_bilinear_learned", "subpixel", "max_unpool", "bilinear, conv first")


def upsampling_model(kind: str):
    """The upsampling chapter's network for one kind: the pretrained-backbone U-Net-style FCN,
    or (for "max_unpool" and its partner "bilinear, conv first", which differ in the upsampling
    alone) the max-pooling :class:`~lessons_pkg.models.fcn.FCN` from scratch."""
    from .models import fcn
    if kind in ("max_unpool", "bilinear, conv first"):
        return fcn.FCN(num_classes=4, widths=(16, 32, 64, 128), skips=True, conv_first=True,
                       upsampling="max_unpool" if kind == "max_unpool" else "bilinear")
    return fcn.BackboneFCN(num_classes=4, upsampling=kind, pretrained_backbone=True)


@lru_cache(maxsize=1)
def upsampling_data():
    """The upsampling chapter's splits: 512 training scenes (random 64 x 64 crops), 64 val, 300 test."""
    from .data import make_split, segmentation_augmentation
    sets = {"train": make_split("train", 512, transforms=segmentation_augmentation((64, 64))),
            "val": make_split("val", 64), "test": make_split("test", 300)}
    for ds in sets.values():
        for i in range(len(ds)):
            ds.scene(i)
    return sets


def upsampling_run(kind: str, seed: int, steps: int = UPSAMPLING_STEPS) -> dict:
    """One of the upsampling chapter's runs at ``steps`` steps, scored on val and test, with
    the stride-2 pattern of its class scores on the 64 val images
    (:func:`lessons_pkg.upsampling.stride_pattern`, scores centred per image and class)."""
    from . import train, upsampling
    sets = upsampling_data()
    torch.manual_seed(seed)
    model = upsampling_model(kind)
    history = train.fit(model, train.make_loader(sets["train"], batch_size=16), steps=steps, lr=3e-3,
                        warmup_steps=10, log_every=50, progress=False, seed=seed, device="cpu")
    scores = {split: evaluation.score(model, sets[split], "segmentation", device="cpu") for split in ("val", "test")}
    model.eval()
    with torch.no_grad():
        images = torch.stack([sets["val"][i][0] for i in range(len(sets["val"]))])
        logits = model.logits(images)
    pattern = upsampling.stride_pattern(logits - logits.mean((2, 3), keepdim=True), 2, border=8)
    print(f"upsampling {kind!r} seed {seed}: val mIoU {scores['val']['miou']:.3f}, "
          f"{history.seconds:.0f} s", file=sys.stderr, flush=True)
    return {**{split: {"miou": s["miou"]} for split, s in scores.items()},
            "pattern": {k: (round(v, 6) if isinstance(v, float) else v) for k, v in pattern.items()},
            "train_seconds": round(history.seconds, 1)}


ABLATIONS = {
    "ssd_negatives": Ablation(("ssd", "ssd_random", "ssd_focal", "ssd_focal_no_alpha"),
                              what="how the background default boxes enter SSD's classification loss",
                              extra=recall_50),
    # the anchor-free chapter's second look; every seed of centernet2 starts from the committed
    # centernet.pt (seed 0 of centernet), so its seeds vary the second stage only
    "centernet_second_stage": Ablation(("centernet", "centernet2"),
                                       what="CenterNet, and a second stage trained on its committed checkpoint"),
    "mask_heads": Ablation(("mask_rcnn", "mask_rcnn_agnostic"),
                           what="one mask per class (the paper's choice) or one class-agnostic mask per RoI"),
    # the chapter trains λ = 1 live and loads the other two (seed 0)
    "localizer_box_weight": Ablation(("0.1", "1.0", "10.0"),
                                     what="the box loss's weight λ, workflow 'frozen, then fine-tuned', 200 steps",
                                     run=lambda variant, seed, **kept: localizer_run("frozen, then fine-tuned",
                                                                                     float(variant), seed, **kept),
                                     keep_weights=("0.1", "10.0"), model=localizer_model),
    "localizer_workflows": Ablation(("scratch", "frozen", "frozen, then fine-tuned", "pretrained, unfrozen"),
                                    what="how the pretrained backbone is used, λ = 1, 200 steps",
                                    run=lambda variant, seed: localizer_run(variant, 1.0, seed)),
    "upsampling": Ablation(UPSAMPLING_KINDS,
                           what=f"the decoder's upsampling, {UPSAMPLING_STEPS} steps of 16 crops, lr 3e-3",
                           run=upsampling_run),
}


def apart(a: dict, b: dict) -> bool:
    """The rule every chapter uses to claim "a scores above b": a's mean minus its spread is
    above b's mean plus its spread (two summaries of :func:`summarize`, ``{"mean", "spread"}``)."""
    return a["mean"] - a["spread"] > b["mean"] + b["spread"]


def path(name: str) -> Path:
    return ABLATIONS_DIR / f"{name}.json"


def summarize(runs: dict[str, dict], split: str) -> dict:
    """{score: {"mean", "spread", "values"}} over the seeds of one recipe (spread: the sample
    standard deviation, 0 for a single seed)."""
    out = {}
    for key in SUMMARY:
        values = [r[split][key] for r in runs.values() if key in r.get(split, {})]
        if values:
            out[key] = {"mean": round(statistics.fmean(values), 6),
                        "spread": round(statistics.stdev(values), 6) if len(values) > 1 else 0.0,
                        "values": values}
    return out


def run(name: str, overwrite: bool = False) -> dict:
    """Train the missing seeds of ablation ``name`` and write its record; returns it."""
    ablation = ABLATIONS[name]
    kept = {variant: weights_path(name, variant) for variant in ablation.keep_weights}
    records.refuse_overwrite(list(kept.values()), overwrite, advice="pass --overwrite to replace it")
    out = records.check_writable(path(name), overwrite)
    result = {"ablation": name, "command": f"python -m lessons_pkg.ablations {name}", "what": ablation.what,
              "seeds": list(ablation.seeds), "torch": torch.__version__, "recipes": {}}
    for recipe in ablation.recipes:
        runs = {}
        for seed in ablation.seeds:
            if ablation.run is not None:
                keep = {"weights_out": kept[recipe]} if recipe in kept and seed == 0 else {}
                runs[str(seed)] = ablation.run(recipe, seed, **keep)
                continue
            extra = {"val": {}, "test": {}}
            if seed == recipes.get(recipe).seed:
                record = records.load_record(records.default_path(recipe))
                if ablation.extra is not None:
                    model, _ = recipes.load(recipe)
                    extra = {split: ablation.extra(recipe, model, split) for split in extra}
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    record = training.make_checkpoint(recipe, Path(tmp) / f"{recipe}.pt", seed=seed)
                    if ablation.extra is not None:
                        model, _ = recipes.load(recipe, Path(tmp) / f"{recipe}.pt")
                        extra = {split: ablation.extra(recipe, model, split) for split in extra}
                record["command"] = recipes.remake_command(recipe, Path(f"/tmp/{recipe}_seed{seed}.pt"), seed=seed)
            runs[str(seed)] = {"command": record["command"], "train_seconds": record["train_seconds"],
                               "val": {**record["val"], **extra["val"]}, "test": {**record["test"], **extra["test"]}}
        result["recipes"][recipe] = {"runs": runs, "val": summarize(runs, "val"), "test": summarize(runs, "test")}
    if kept:   # seed 0's weights, for the chapter that loads them (kept_model)
        result["weights"] = {variant: {"path": records.display_path(p), "sha256": records.sha256(p)}
                             for variant, p in kept.items()}
    records.write_json(out, result)
    return result


def load(name: str) -> dict:
    """The record of ablation ``name`` (FileNotFoundError naming the command when missing)."""
    if name not in ABLATIONS:
        raise ValueError(f"unknown ablation {name!r}; choose from {sorted(ABLATIONS)}")
    if not path(name).exists():
        raise FileNotFoundError(f"{path(name)} is missing; make it with python -m lessons_pkg.ablations {name}")
    return records.read_json(path(name))


if __name__ == "__main__":   # python -m lessons_pkg.ablations: the command is commands/ablations.py
    from lessons_pkg.commands.ablations import main
    sys.exit(main())
