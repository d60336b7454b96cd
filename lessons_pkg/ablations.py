"""Ablations over seeds: when two variants differ by little, one training run each says nothing.

    python -m lessons_pkg.ablations ssd_negatives      # trains seeds 1 and 2 of each variant
    python -m lessons_pkg.ablations mask_heads

An ablation (``ABLATIONS``) is a few recipes of :mod:`lessons_pkg.checkpoints` that change one
thing, trained with several seeds at the recipe's budget. Seed 0 of each is the committed
checkpoint (its record's scores are reused); the other seeds are trained into a temporary folder
and only their scores are kept: ``data/ablations/NAME.json`` holds, for every recipe and seed,
the val and test scores and the command that remakes them, and for every score the mean and the
spread (sample standard deviation) over the seeds. A chapter claims a difference between two
variants only where it is larger than the spread.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from . import checkpoints, records

ABLATIONS_DIR = records.PRETRAINED_DIR.parent / "ablations"
SUMMARY = ("map_50", "map", "map_75", "mar_100", "miou")


@dataclass(frozen=True)
class Ablation:
    """Recipes that differ in one setting, and the seeds each is trained with."""

    recipes: tuple[str, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    what: str = ""


ABLATIONS = {
    "ssd_negatives": Ablation(("ssd", "ssd_random", "ssd_focal"),
                              what="how the background default boxes enter SSD's classification loss"),
    "mask_heads": Ablation(("mask_rcnn", "mask_rcnn_agnostic"),
                           what="one mask per class (the paper's choice) or one class-agnostic mask per RoI"),
}


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
    out = path(name)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    result = {"ablation": name, "what": ablation.what, "seeds": list(ablation.seeds), "torch": torch.__version__,
              "recipes": {}}
    for recipe in ablation.recipes:
        runs = {}
        for seed in ablation.seeds:
            if seed == checkpoints.RECIPES[recipe].seed:
                record = records.load_record(records.default_path(recipe))
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    record = checkpoints.make_checkpoint(recipe, Path(tmp) / f"{recipe}.pt", seed=seed)
                record["command"] = checkpoints.command_line(recipe, Path(f"/tmp/{recipe}_seed{seed}.pt"),
                                                             checkpoints.RECIPES[recipe].steps, seed)
            runs[str(seed)] = {"command": record["command"], "train_seconds": record["train_seconds"],
                               "val": record["val"], "test": record["test"]}
        result["recipes"][recipe] = {"runs": runs, "val": summarize(runs, "val"), "test": summarize(runs, "test")}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def load(name: str) -> dict:
    """The record of ablation ``name`` (FileNotFoundError naming the command when missing)."""
    if name not in ABLATIONS:
        raise ValueError(f"unknown ablation {name!r}; choose from {sorted(ABLATIONS)}")
    if not path(name).exists():
        raise FileNotFoundError(f"{path(name)} is missing; make it with python -m lessons_pkg.ablations {name}")
    return json.loads(path(name).read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lessons_pkg.ablations", description=__doc__.split("\n")[0])
    parser.add_argument("ablation", choices=sorted(ABLATIONS))
    parser.add_argument("--overwrite", action="store_true", help="replace the ablation's record if it exists")
    args = parser.parse_args(argv)
    try:
        result = run(args.ablation, args.overwrite)
    except FileExistsError as error:
        parser.error(str(error))
    for recipe, r in result["recipes"].items():
        test = r["test"]
        print(f"{recipe:<12} test mAP@0.5 {test['map_50']['mean']:.3f} ± {test['map_50']['spread']:.3f}   "
              f"mAP {test['map']['mean']:.3f} ± {test['map']['spread']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
