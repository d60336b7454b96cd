"""Speed against accuracy for every detector of the course, measured one way.

    python -m lessons_pkg.detector_speed --images 64
    python -m lessons_pkg.detector_speed --train-cost 4     # training cost per step, side by side

Each detector is loaded from its committed checkpoint (:func:`recipes.load`, weights
only) and run on the first ``images`` validation images one at a time, batch 1, as a camera
would feed it. Every image is timed on this machine (CUDA synchronized around each call), and
the same predictions give COCO mAP, so the two axes of the chart come from one run. The time
is the whole pipeline from pixels to boxes: R-CNN and Fast R-CNN include their selective search,
the sliding window its image pyramid. The first ``warmup`` images run twice, the first time
untimed (one-off allocations and kernel choices).

R-CNN and Fast R-CNN search the same images with the same selective search (deterministic: a
fixed seed), so the search runs once per image, timed alone, and each of the two is timed on
the rest of its work given those proposals: its time per image is the search's plus the rest's
(:func:`search_proposals`, :func:`time_detector`). Its detections are those of its own search
(checked on the first image of every measurement).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torch import nn

from . import evaluation, metrics, records, train
from .models import proposals as proposal_methods
from .models import rcnn
from .recipes import get, load
from .train.distributed import Context
from .training import make_train_loader, shapes_training_set
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
    "centernet2": ("CenterNet + 2nd stage", "two-stage"),   # CenterNet's frozen peaks, re-scored by RoIHeads
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
    ms_quartiles: tuple[float, float] = (0.0, 0.0)   # the timed images' first and third quartiles
    test_map_50: float = 0.0  # the record's scores on the 300 test images (the accuracy claims)
    test_map: float = 0.0


def search_proposals(images: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[float]]:
    """Selective search on each Tensor[3, H, W] of ``images`` alone, as R-CNN and Fast R-CNN run
    it on an image they are given without proposals (on the CPU: the search has no device code).

    Returns (each image's proposals Tensor[K_i, 4], best first; milliseconds per image).
    """
    found, times = [], []
    for image in images:
        start = time.perf_counter()
        found.append(proposal_methods.selective_search(image.cpu())[0])
        times.append((time.perf_counter() - start) * 1e3)
    return found, times


@torch.no_grad()
def time_detector(model: nn.Module, images: list[torch.Tensor], device: torch.device | str,
                  warmup: int = 2, proposals: tuple[list[torch.Tensor], list[float]] | None = None
                  ) -> tuple[list[dict], list[float]]:
    """Run ``model`` (eval mode) on each Tensor[3, H, W] of ``images`` alone.

    ``proposals``: :func:`search_proposals`'s result for ``images``, for a model that reads
    proposals (``model(x, proposals=[Tensor[K, 4]])``): each image's proposals are given to it
    and the search's milliseconds added to its own, the time of the model searching itself.

    Returns (predictions on the CPU, one dict per image; milliseconds per image).
    """
    device = torch.device(device)
    model.eval().to(device)
    found, search_ms = proposals if proposals is not None else (None, [0.0] * len(images))
    if found is not None and len(found) != len(images):
        raise ValueError(f"proposals: got {len(found)} images' proposals for {len(images)} images")

    def run(i: int):
        x = images[i][None].to(device)
        return model(x) if found is None else model(x, proposals=[found[i].to(device)])

    for i in range(min(warmup, len(images))):
        run(i)
    predictions, times = [], []
    for i in range(len(images)):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        out = run(i)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1e3 + search_ms[i])
        predictions.append(train.move_to(out[0], torch.device("cpu")))
    return predictions, times


def measure(recipes=tuple(DETECTORS), num_images: int = evaluation.VAL_IMAGES,
            device: torch.device | str | None = None, directory: Path = PRETRAINED,
            warmup: int = 2) -> list[Measurement]:
    """Load each recipe's checkpoint from ``directory`` and measure it on the val images.

    The recipes that read proposals share one selective search per image (timed once, added to
    each one's time: see the module docstring); that a recipe's own search gives the same
    detections is checked on the first image (a RuntimeError otherwise)."""
    device = torch.device(device) if device is not None else train.default_device()
    unknown = [r for r in recipes if r not in DETECTORS]
    if unknown:
        raise ValueError(f"unknown detector(s) {unknown}; choose from {list(DETECTORS)}")
    dataset = make_split("val", num_images)
    samples = [dataset[i] for i in range(len(dataset))]
    images, targets = [s[0] for s in samples], [s[1] for s in samples]
    searched = None   # (proposals, ms) per image, for every recipe that reads proposals
    rows = []
    for recipe in recipes:
        model, record = load(recipe, Path(directory) / f"{recipe}.pt")
        if get(recipe).proposals:
            if searched is None:
                searched = search_proposals(images)
            predictions, times = time_detector(model, images, device, warmup, proposals=searched)
            _check_own_search(model, images[0], predictions[0], device, recipe)
        else:
            predictions, times = time_detector(model, images, device, warmup)
        scores = metrics.mean_average_precision(predictions, targets)
        name, family = DETECTORS[recipe]
        q1, _, q3 = statistics.quantiles(times, n=4) if len(times) > 1 else (times[0],) * 3
        rows.append(Measurement(recipe, name, family, statistics.median(times), scores["map"], scores["map_50"],
                                sum(p.numel() for p in model.parameters()), record["val"]["map_50"], (q1, q3),
                                record["test"]["map_50"], record["test"]["map"]))
    return rows


@torch.no_grad()
def _check_own_search(model: nn.Module, image: torch.Tensor, given: dict, device: torch.device,
                      recipe: str) -> None:
    """Raise RuntimeError unless ``model`` searching ``image`` itself detects what ``given``
    (its detections on the shared search's proposals) holds."""
    own = train.move_to(model(image[None].to(device))[0], torch.device("cpu"))
    if not all(torch.equal(own[k], given[k]) for k in ("boxes", "labels", "scores")):
        raise RuntimeError(f"{recipe}: its detections on the shared selective search differ from those "
                           "of its own search; the shared search no longer runs as the model's does")


def format_table(rows: list[Measurement]) -> str:
    head = f"{'detector':<22}{'family':<18}{'ms/image':>10}{'mAP@0.5':>9}{'mAP':>8}{'params':>10}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.name:<22}{r.family:<18}{r.ms_per_image:>10.1f}{r.map_50:>9.3f}{r.map:>8.3f}"
                     f"{r.parameters / 1e6:>9.2f}M")
    return "\n".join(lines)


def plot(rows: list[Measurement], ax: plt.Axes | None = None, key: str = "map_50", legend: bool = True) -> plt.Axes:
    """Milliseconds per image (log scale) against mAP (``key``: "map_50" or "map" of the timed
    images, "test_map_50" or "test_map" of the record's test images): up and to the left is
    better. One marker shape per family."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.2))
    for r in rows:
        ax.scatter(r.ms_per_image, getattr(r, key), s=70, marker=FAMILY_MARKERS[r.family],
                   color=colour(r.recipe), label=f"{r.name} ({r.family})", zorder=3)
        ax.annotate(r.name, (r.ms_per_image, getattr(r, key)), textcoords="offset points", xytext=(6, 5),
                    fontsize=9)
    return _finish_axes(ax, "milliseconds per image (batch 1, log scale)",
                        {"map_50": "mAP@0.5", "map": "mAP@[.5:.95]", "test_map_50": "test mAP@0.5",
                         "test_map": "test mAP@[.5:.95]"}[key], legend, "best")


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
    """recipe -> its record's time-to-quality curve (:class:`lessons_pkg.training.QualityCurve`): points
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


def steps_to_reach(curve: list[dict], level: float, key: str = "map_50") -> tuple[int, int] | None:
    """(the step of the last recorded point below ``level``, or 0; the step of the first point at
    or above it): the interval in which the curve crossed ``level`` (None if it never does)."""
    before = 0
    for p in curve:
        if p[key] >= level:
            return before, p["step"]
        before = p["step"]
    return None


def seconds_to_reach(curve: list[dict], level: float, key: str = "map_50") -> float | None:
    """The training seconds of the first recorded point whose ``key`` is at least ``level`` (None
    if no point reaches it): an upper bound on the time to that quality, at the curve's spacing."""
    return next((p["seconds"] for p in curve if p[key] >= level), None)


def plot_time_to_quality(curves: dict[str, list[dict]], ax: plt.Axes | None = None, key: str = "map_50",
                         legend: bool = True, xlabel: str = "training seconds (log scale)") -> plt.Axes:
    """Test-split quality (``key``) against training seconds (log scale), one line per detector,
    its markers at the recorded points; the same colours and marker shapes as :func:`plot`.
    Give it :func:`in_measured_seconds`'s curves: the records' own seconds do not compare."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.2))
    for recipe, curve in curves.items():
        name, family = DETECTORS[recipe]
        ax.plot([p["seconds"] for p in curve], [p[key] for p in curve], marker=FAMILY_MARKERS[family],
                color=colour(recipe), label=name, markersize=5)
    return _finish_axes(ax, xlabel,
                        {"map_50": "test mAP@0.5", "map": "test mAP@[.5:.95]"}[key], legend, "lower right")


# ----------------------------------------------------------------------------- cost per step
@dataclass
class StepCost:
    """One recipe's training cost on this machine, measured beside the others in one run."""
    recipe: str
    batch_size: int
    ms_per_step: float          # median of the timed optimizer steps
    step_ms: list[float]        # every timed step, in the order taken
    one_off_ms_per_image: dict  # {"render": ..., "proposals": ...}: once per training image
    num_train_images: int       # the recipe's: how many images pay the one-off costs
    threads: int

    @property
    def one_off_seconds(self) -> float:
        """What the recipe pays once, before its first step: every training image rendered
        (and, with proposals, searched), at the measured cost per image."""
        return sum(self.one_off_ms_per_image.values()) * self.num_train_images / 1e3

    def seconds(self, steps: int, one_off: bool = True) -> float:
        """Training seconds of ``steps`` steps in this currency (plus the one-off costs)."""
        return steps * self.ms_per_step / 1e3 + (self.one_off_seconds if one_off else 0.0)


def cost_per_step(recipes=tuple(DETECTORS), steps: int = 4, warmup: int = 2, num_images: int = 16,
                  device: torch.device | str = "cpu") -> dict[str, StepCost]:
    """The training cost per optimizer step of several recipes, measured side by side in one run
    on this machine (the same process, threads and load), so that the costs compare.

    ``recipes``: names in :data:`lessons_pkg.recipes.RECIPES`, or a dict name -> :class:`lessons_pkg.recipes.Recipe`.
    Each recipe's model is built as its recipe builds it (``Recipe.build(pretrained=True)``,
    seeded with its seed) and trained by ``train.fit`` with its optimizer settings on batches of
    its batch size from the first ``num_images`` images of its training data (rendered, and with
    ``proposals`` searched, up front: those are one-off costs, timed per image and kept apart).
    ``warmup`` untimed steps each, then ``steps`` timed steps each, interleaved: one step of
    every recipe per round, the order rotated each round, so a change of the machine's load
    falls on every recipe alike. Returns name -> :class:`StepCost` (``ms_per_step``: the median).
    """

    if steps < 1 or warmup < 0 or num_images < 1:
        raise ValueError(f"steps >= 1, warmup >= 0 and num_images >= 1 needed; got {steps}, {warmup}, {num_images}")
    chosen = dict(recipes) if isinstance(recipes, dict) else {}
    for name in ([] if isinstance(recipes, dict) else recipes):
        chosen[name] = get(name)
    device = torch.device(device)
    datasets: dict[tuple, tuple] = {}   # recipes that train on the same images share them
    runs = {}
    for name, recipe in chosen.items():
        key = (recipe.config, recipe.crop_size, recipe.proposals, min(num_images, recipe.num_train_images))
        if key not in datasets:
            dataset = shapes_training_set(recipe, key[-1])
            start = time.perf_counter()
            for i in range(len(dataset)):
                dataset[i]
            one_off = {"render": (time.perf_counter() - start) * 1e3 / len(dataset)}
            if recipe.proposals:
                dataset = rcnn.WithProposals(dataset)
                start = time.perf_counter()
                for i in range(len(dataset)):
                    dataset[i]
                one_off["proposals"] = (time.perf_counter() - start) * 1e3 / len(dataset)
            datasets[key] = dataset, one_off
        dataset, one_off = datasets[key]
        train.seed_everything(recipe.seed)
        model = recipe.build(pretrained=True).to(device)
        params = [p for p in model.parameters() if p.requires_grad]
        runs[name] = {"recipe": recipe, "model": model, "one_off": one_off, "done": 0, "times": [],
                      "optimizer": torch.optim.AdamW(params, lr=recipe.lr, weight_decay=1e-4),
                      "batches": train.BatchStream(make_train_loader(dataset, recipe.batch_size, recipe.seed,
                                                                     Context(), workers=0))}

    def one_step(run: dict) -> float:
        """The recipe's next step (its warm-up schedule) by ``train.fit``; its milliseconds."""
        recipe, done = run["recipe"], run["done"]
        start = time.perf_counter()
        train.fit(run["model"], None, steps=done + 1, start_step=done, lr=recipe.lr, optimizer=run["optimizer"],
                  schedule="constant", warmup_steps=recipe.warmup_steps, device=device, seed=None,
                  progress=False, batches=run["batches"])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        run["done"] += 1
        return (time.perf_counter() - start) * 1e3

    order = list(runs)
    for round_ in range(warmup + steps):
        shift = round_ % len(order)
        for name in order[shift:] + order[:shift]:
            ms = one_step(runs[name])
            if round_ >= warmup:
                runs[name]["times"].append(ms)
    return {name: StepCost(name, run["recipe"].batch_size, statistics.median(run["times"]), run["times"],
                           run["one_off"], run["recipe"].num_train_images, torch.get_num_threads())
            for name, run in runs.items()}


def format_costs(costs: dict[str, StepCost]) -> str:
    """A table of :func:`cost_per_step`'s result."""
    head = f"{'recipe':<16}{'batch':>6}{'ms/step':>9}{'range':>15}{'one-off s':>11}"
    lines = [head, "-" * len(head)]
    for c in costs.values():
        lines.append(f"{c.recipe:<16}{c.batch_size:>6}{c.ms_per_step:>9.1f}"
                     f"{f'{min(c.step_ms):.0f}-{max(c.step_ms):.0f}':>15}{c.one_off_seconds:>11.1f}")
    return "\n".join(lines)


def in_measured_seconds(curves: dict[str, list[dict]], costs: dict[str, StepCost],
                        one_off: bool = True) -> dict[str, list[dict]]:
    """Each curve's points with ``"seconds"`` recomputed in one currency: the point's step times
    the recipe's cost per step of ``costs`` (plus its one-off costs when ``one_off``). The
    recorded seconds (one run's wall time, its machine and load) are kept as ``"recorded_seconds"``."""
    return {r: [{**p, "recorded_seconds": p.get("seconds"), "seconds": costs[r].seconds(p["step"], one_off)}
                for p in curve] for r, curve in curves.items()}


if __name__ == "__main__":   # python -m lessons_pkg.detector_speed: the command is commands/detector_speed.py
    from lessons_pkg.commands.detector_speed import main
    main()
