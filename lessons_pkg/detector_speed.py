"""Speed against accuracy for every detector of the course, measured one way.

    python -m lessons_pkg.detector_speed --images 64

Each detector is loaded from its committed checkpoint (:func:`checkpoints.load`, weights
only) and run on the first ``images`` validation images one at a time, batch 1, as a camera
would feed it. Every image is timed on this machine (CUDA synchronized around each call), and
the same predictions give COCO mAP, so the two axes of the chart come from one run. The time
is the whole pipeline from pixels to boxes: R-CNN and Fast R-CNN include their selective search,
the sliding window its image pyramid. The first ``warmup`` images run twice, the first time
untimed (one-off allocations and kernel choices).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torch import nn

from . import checkpoints, metrics, records, train
from .cli import positive_int
from .data import make_split

PRETRAINED = Path(__file__).resolve().parents[1] / "data" / "pretrained"

# recipe -> (name in the chart, family), in the order of the course.
DETECTORS: dict[str, tuple[str, str]] = {
    "sliding_window": ("Sliding window", "classify windows"),
    "rcnn": ("R-CNN", "two-stage"),
    "fast_rcnn": ("Fast R-CNN", "two-stage"),
    "faster_rcnn": ("Faster R-CNN", "two-stage"),
    "yolo": ("YOLO", "one-stage"),
    "ssd": ("SSD", "one-stage"),
    "centernet": ("CenterNet", "anchor-free"),
    "ssdlite": ("torchvision SSDLite", "reference"),
}
FAMILY_MARKERS = {"classify windows": "s", "two-stage": "o", "one-stage": "^", "anchor-free": "P", "reference": "D"}


@dataclass
class Measurement:
    """One detector's point on the chart."""
    recipe: str
    name: str
    family: str
    ms_per_image: float      # median over the timed images
    map: float               # COCO mAP@[.5:.95]
    map_50: float
    parameters: int
    recorded_map_50: float   # what the checkpoint's record says (computed in batches)


@torch.no_grad()
def time_detector(model: nn.Module, images: list[torch.Tensor], device: torch.device | str,
                  warmup: int = 2) -> tuple[list[dict], list[float]]:
    """Run ``model`` (eval mode) on each Tensor[3, H, W] of ``images`` alone.

    Returns (predictions on the CPU, one dict per image; milliseconds per image).
    """
    device = torch.device(device)
    model.eval().to(device)
    for image in images[:warmup]:
        model(image[None].to(device))
    predictions, times = [], []
    for image in images:
        x = image[None].to(device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        out = model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
        predictions.append(train.move_to(out[0], torch.device("cpu")))
    return predictions, times


def measure(recipes=tuple(DETECTORS), num_images: int = checkpoints.VAL_IMAGES,
            device: torch.device | str | None = None, directory: Path = PRETRAINED,
            warmup: int = 2) -> list[Measurement]:
    """Load each recipe's checkpoint from ``directory`` and measure it on the val images."""
    device = torch.device(device) if device is not None else train.default_device()
    unknown = [r for r in recipes if r not in DETECTORS]
    if unknown:
        raise ValueError(f"unknown detector(s) {unknown}; choose from {list(DETECTORS)}")
    dataset = make_split("val", num_images)
    samples = [dataset[i] for i in range(len(dataset))]
    images, targets = [s[0] for s in samples], [s[1] for s in samples]
    rows = []
    for recipe in recipes:
        model, record = checkpoints.load(recipe, Path(directory) / f"{recipe}.pt")
        predictions, times = time_detector(model, images, device, warmup)
        scores = metrics.mean_average_precision(predictions, targets)
        name, family = DETECTORS[recipe]
        rows.append(Measurement(recipe, name, family, statistics.median(times), scores["map"], scores["map_50"],
                                sum(p.numel() for p in model.parameters()), record["val"]["map_50"]))
    return rows


def format_table(rows: list[Measurement]) -> str:
    head = f"{'detector':<22}{'family':<18}{'ms/image':>10}{'mAP@0.5':>9}{'mAP':>8}{'params':>10}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.name:<22}{r.family:<18}{r.ms_per_image:>10.1f}{r.map_50:>9.3f}{r.map:>8.3f}"
                     f"{r.parameters / 1e6:>9.2f}M")
    return "\n".join(lines)


def plot(rows: list[Measurement], ax: plt.Axes | None = None, key: str = "map_50", legend: bool = True) -> plt.Axes:
    """Milliseconds per image (log scale) against mAP (``key``: "map_50" or "map"): up and to
    the left is better. One marker shape per family."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.2))
    for r in rows:
        ax.scatter(r.ms_per_image, getattr(r, key), s=70, marker=FAMILY_MARKERS[r.family],
                   color=colour(r.recipe), label=f"{r.name} ({r.family})", zorder=3)
        ax.annotate(r.name, (r.ms_per_image, getattr(r, key)), textcoords="offset points", xytext=(6, 5),
                    fontsize=9)
    return _finish_axes(ax, "milliseconds per image (batch 1, log scale)",
                        {"map_50": "mAP@0.5", "map": "mAP@[.5:.95]"}[key], legend, "best")


def colour(recipe: str):
    """One colour per detector, the same in every chart of the course."""
    return plt.get_cmap("tab10")(list(DETECTORS).index(recipe))


def _finish_axes(ax: plt.Axes, xlabel: str, ylabel: str, legend: bool, loc: str) -> plt.Axes:
    """A log-scale x axis, its labels, a grid and (optionally) the legend."""
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    if legend:
        ax.legend(fontsize=8, loc=loc)
    return ax


# ----------------------------------------------------------------------------- time to quality
def time_to_quality(recipes=tuple(DETECTORS), directory: Path = PRETRAINED) -> dict[str, list[dict]]:
    """recipe -> its record's time-to-quality curve (:class:`checkpoints.QualityCurve`): points
    {"step", "seconds", "map_50", "map", ...} on the test split. Nothing is trained or run here.
    Raises ValueError naming the record that has no curve and the command that adds one."""
    curves = {}
    for recipe in recipes:
        record = records.load_record(Path(directory) / f"{recipe}.pt")
        if not record.get("curve"):
            raise ValueError(f"{Path(directory) / recipe}.json has no time-to-quality curve; add one with "
                             f"python -m lessons_pkg.checkpoints {recipe} --curve")
        curves[recipe] = record["curve"]
    return curves


def seconds_to_reach(curve: list[dict], level: float, key: str = "map_50") -> float | None:
    """The training seconds of the first recorded point whose ``key`` is at least ``level`` (None
    if no point reaches it): an upper bound on the time to that quality, at the curve's spacing."""
    return next((p["seconds"] for p in curve if p[key] >= level), None)


def plot_time_to_quality(curves: dict[str, list[dict]], ax: plt.Axes | None = None, key: str = "map_50",
                         legend: bool = True) -> plt.Axes:
    """Test-split quality (``key``) against training seconds (log scale), one line per detector,
    its markers at the recorded points; the same colours and marker shapes as :func:`plot`."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.2))
    for recipe, curve in curves.items():
        name, family = DETECTORS[recipe]
        ax.plot([p["seconds"] for p in curve], [p[key] for p in curve], marker=FAMILY_MARKERS[family],
                color=colour(recipe), label=name, markersize=5)
    return _finish_axes(ax, "training seconds (log scale)",
                        {"map_50": "test mAP@0.5", "map": "test mAP@[.5:.95]"}[key], legend, "lower right")


def main(argv: list[str] | None = None) -> list[Measurement]:
    parser = argparse.ArgumentParser(prog="python -m lessons_pkg.detector_speed", description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=positive_int, default=checkpoints.VAL_IMAGES)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--only", nargs="*", default=list(DETECTORS), choices=list(DETECTORS))
    args = parser.parse_args(argv)
    rows = measure(args.only, args.images, args.device)
    print(f"device: {args.device or train.default_device()}, {torch.get_num_threads()} CPU threads, "
          f"torch {torch.__version__}")
    print(format_table(rows))
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
