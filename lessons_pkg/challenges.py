"""The open challenges that end each part of the book, and the one function that scores each.

A challenge is a goal with a number: beat a bar the course itself measured, on the ``test``
split (images no choice of the course looked at), under a stated constraint. A bar that the
course measured is read from its committed record (a checkpoint's or an ablation's), never
typed here, so it moves when the course retrains; two goals are fixed numbers instead: a
speed-up above 1 over the course's NMS, and 1.8 times one process's throughput. Each ``score_*`` function evaluates what the reader built,
prints a verdict and returns the numbers::

    from lessons_pkg import challenges
    challenges.score_detector(my_model)          # the object-detection part's challenge

The constraint that a score cannot see (a training budget, no pretrained weights from outside
the course) is the reader's to keep; the verdict repeats it.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from . import ablations, evaluation, records

BENCH_DIR = records.PRETRAINED_DIR.parent / "bench"


@dataclass(frozen=True)
class Challenge:
    part: str        # the part of the book it ends
    title: str
    goal: str        # what to beat, in words; the number comes from ``bar()``
    rules: str       # what the score cannot check
    score: str       # how to call the score
    hints: str       # where to start


CHALLENGES: dict[str, Challenge] = {
    "nms": Challenge(
        "Getting started", "An exact NMS faster than the course's",
        "the same kept indices as torchvision.ops.nms on 5000 random boxes, in less time than "
        "lessons_pkg.ops.nms on this machine's CPU",
        "pure PyTorch (no torchvision.ops, no compiled extension of your own)",
        "challenges.score_nms(your_nms)",
        "read `lessons_pkg.ops.nms` first: it already decides the boxes block by block in score "
        "order. Profile it (`torch.profiler`) on 5000 boxes and attack what dominates: the block "
        "size, the work per block, the boxes it could skip."),
    "localizer": Challenge(
        "Classification & localization", "Better boxes in the same 200 steps",
        "a test mean IoU above the chapter's best run, every λ and every workflow (its mean + "
        "spread over three seeds)",
        "200 optimizer steps of at most 32 images, from the course's pretrained backbone; choose "
        "your settings on the validation split and score the test split once, at the end",
        "challenges.score_localizer(your_model)",
        "the learning rates of the two phases, the box head (the chapter's regresses from cell "
        "centres), the box loss (GIoU, L1 or both), stronger augmentation."),
    "detector": Challenge(
        "Object detection", "Beat SSD on the hard preset at its budget",
        "a test mAP@0.5 on the 'hard' preset above SSD's recipe trained on that preset",
        "1500 steps of 8 images of the hard preset's train split, the course's pretrained backbone",
        "challenges.score_detector(your_model)",
        "the hard preset has more, smaller and more overlapping objects: a finer feature map, default "
        "boxes sized for them, CenterNet's heatmap, or a focal loss; train on "
        "`data.make_split('train', 2000, config='hard')`."),
    "instance": Challenge(
        "Instance segmentation", "Sharper masks at Mask R-CNN's budget",
        "a test mask mAP@[.5:.95] above the Mask R-CNN checkpoint's",
        "1500 steps of 8 images, the course's pretrained backbone",
        "challenges.score_instance(your_model)",
        "the mask branch's resolution and depth, RoI Align's sampling, the mask loss's weight; the "
        "strict mAP rewards masks that follow the outline to the pixel."),
    "segmentation": Challenge(
        "Semantic segmentation", "The FCN's mIoU with half its parameters",
        "a test mIoU above the FCN checkpoint's, with at most half its parameters",
        "at most the FCN recipe's 1500 steps of 32 crops",
        "challenges.score_segmentation(your_model)",
        "the upsampling comparison that closes this part ranks the decoders early in training "
        "only, three seeds each: start from a kind that no other kind is above there, then narrow "
        "the channels or use depthwise-separable convolutions, and check each choice at the full "
        "budget; count with `sum(p.numel() for p in model.parameters())`."),
    "throughput": Challenge(
        "Beyond the course", "Make a second process pay",
        "two processes (DDP, gloo) training at least 1.8 times the images per second of one "
        "process with one thread, measured by python -m lessons_pkg.train.throughput",
        "the benchmark's model, batch and steps; any change to the training loop or the loader",
        "challenges.score_throughput('your_throughput.json')",
        "each step pays one all-reduce and one Python loop per process: fewer synchronisations "
        "(`no_sync` with gradient accumulation), the loader in worker processes, `channels_last`; "
        "profile first (`torch.profiler`)."),
}


def _verdict(name: str, value: float, bar: float, what: str) -> dict:
    c = CHALLENGES[name]
    beaten = value > bar
    print(f"{c.title}: {what} {value:.4f} against the bar {bar:.4f}: "
          f"{'beaten' if beaten else 'not yet'} (rules: {c.rules}).")
    return {"challenge": name, "value": value, "bar": bar, "beaten": beaten}


# ----------------------------------------------------------------------------- the bars
def bar(name: str) -> float:
    """The number to beat, read from the course's committed records."""
    if name == "nms":
        return 1.0   # a speed-up over lessons_pkg.ops.nms
    if name == "localizer":
        # the best of the chapter's seeded runs, both ablations (the weight λ, the four workflows)
        summaries = [ablations.summarize(r["runs"], "test")["mean_iou"]
                     for name in ("localizer_box_weight", "localizer_workflows")
                     for r in ablations.load(name)["recipes"].values()]
        top = max(summaries, key=lambda s: s["mean"])
        return top["mean"] + top["spread"]
    if name == "detector":
        return records.load_record(records.default_path("ssd_hard"))["test"]["map_50"]
    if name == "instance":
        return records.load_record(records.default_path("mask_rcnn"))["test"]["segm"]["map"]
    if name == "segmentation":
        return records.load_record(records.default_path("fcn"))["test"]["miou"]
    if name == "throughput":
        return 1.8
    raise ValueError(f"unknown challenge {name!r}; choose from {sorted(CHALLENGES)}")


# ----------------------------------------------------------------------------- the scores
def score_nms(nms: Callable, num_boxes: int = 5000, repeats: int = 5, seed: int = 0) -> dict:
    """``nms(boxes Tensor[N, 4], scores Tensor[N], iou_threshold) -> int64 Tensor[K]`` must keep
    exactly torchvision's indices on three random sets of ``num_boxes`` boxes (IoU 0.5; many
    overlaps); its median time over ``repeats`` runs is compared with ``lessons_pkg.ops.nms``'s."""
    import torchvision

    from . import ops

    g = torch.Generator().manual_seed(seed)
    cases = []
    for _ in range(3):
        xy = torch.rand(num_boxes, 2, generator=g) * 500
        boxes = torch.cat([xy, xy + 10 + torch.rand(num_boxes, 2, generator=g) * 60], dim=1)
        cases.append((boxes, torch.rand(num_boxes, generator=g)))
    for i, (boxes, scores) in enumerate(cases):
        expected = torchvision.ops.nms(boxes, scores, 0.5)
        got = torch.as_tensor(nms(boxes.clone(), scores.clone(), 0.5))
        if got.shape != expected.shape or not torch.equal(got.long(), expected):
            print(f"{CHALLENGES['nms'].title}: set {i} keeps {len(got)} boxes where torchvision keeps "
                  f"{len(expected)} (or not the same ones, best first): not exact, so not scored.")
            return {"challenge": "nms", "value": 0.0, "bar": bar("nms"), "beaten": False}

    def median_ms(fn) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            for boxes, scores in cases:
                fn(boxes, scores, 0.5)
            times.append((time.perf_counter() - start) * 1e3 / len(cases))
        return statistics.median(times)

    yours, course = median_ms(nms), median_ms(ops.nms)
    print(f"your NMS: {yours:.1f} ms per {num_boxes} boxes; lessons_pkg.ops.nms: {course:.1f} ms")
    return _verdict("nms", course / yours, bar("nms"), "speed-up over the course's NMS")


def score_localizer(model: nn.Module) -> dict:
    """Mean IoU of a localizer (the chapter's contract) on the chapter's 300 single-object test images."""
    test = ablations.localizer_data()["test"]
    scores = evaluation.score(model, test, "localization")
    return _verdict("localizer", scores["mean_iou"], bar("localizer"), "test mean IoU")


def score_detector(model: nn.Module) -> dict:
    """Test mAP@0.5 of a detector (the course's contract) on the hard preset's 300 test images."""
    scored = evaluation.split_scores("detection", model, "test", config="hard")
    return _verdict("detector", scored["map_50"], bar("detector"), "hard-preset test mAP@0.5")


def score_instance(model: nn.Module) -> dict:
    """Test mask mAP@[.5:.95] of an instance-segmentation model on the 300 test images."""
    scored = evaluation.split_scores("instance", model, "test")
    return _verdict("instance", scored["segm"]["map"], bar("instance"), "test mask mAP")


def score_segmentation(model: nn.Module) -> dict:
    """Test mIoU of a semantic-segmentation model on the 300 test images; a model with more than
    half the FCN checkpoint's parameters is not scored."""
    limit = records.load_record(records.default_path("fcn"))["parameters"] // 2
    parameters = sum(p.numel() for p in model.parameters())
    if parameters > limit:
        print(f"{CHALLENGES['segmentation'].title}: {parameters:,} parameters, over the limit of {limit:,} "
              "(half the FCN's): not scored.")
        return {"challenge": "segmentation", "value": 0.0, "bar": bar("segmentation"), "beaten": False}
    scored = evaluation.split_scores("segmentation", model, "test")
    return _verdict("segmentation", scored["miou"], bar("segmentation"), f"test mIoU ({parameters:,} parameters)")


def score_throughput(path: str | Path = BENCH_DIR / "train_throughput.json") -> dict:
    """The speed-up of 2 processes x 1 thread over 1 process x 1 thread in a throughput record
    (``python -m lessons_pkg.train.throughput --out PATH``; default: the committed one)."""
    runs = {(r["processes"], r["threads_per_process"]): r["images_per_second"] for r in records.read_json(Path(path))["runs"]}
    if (1, 1) not in runs or (2, 1) not in runs:
        raise ValueError(f"{path}: needs a run of 1 process x 1 thread and one of 2 processes x 1 thread")
    return _verdict("throughput", runs[(2, 1)] / runs[(1, 1)], bar("throughput"), "2-process speed-up")


def announce(name: str) -> None:
    """Print a challenge: title, goal, the bar, the rules."""
    c = CHALLENGES[name]
    print(f"{c.part}: {c.title}\n  goal: {c.goal}\n  bar: {bar(name):.4f}\n  rules: {c.rules}")


def describe(name: str) -> str:
    """A challenge as the end of a part of the book shows it (Markdown), its bar read now."""
    if name not in CHALLENGES:
        raise ValueError(f"unknown challenge {name!r}; choose from {sorted(CHALLENGES)}")
    c = CHALLENGES[name]
    return (f"## Open challenge: {c.title}\n\n"
            f"This ends the part *{c.part}*. **Goal**: {c.goal}; the bar today is **{bar(name):.3f}**. "
            f"**Rules**: {c.rules}. **Score it** with `from lessons_pkg import challenges` and "
            f"`{c.score}`: it measures and prints the verdict. "
            f"**Where to start**: {c.hints}")
