"""Detectors trained longer than a notebook can afford, by our own command, offline.

    python -m lessons_pkg.checkpoints ssd                       # remakes data/pretrained/ssd.pt
    python -m lessons_pkg.checkpoints ssd --out /tmp/ssd.pt     # the same recipe, elsewhere
    python -m lessons_pkg.checkpoints ssd --out /tmp/s.pt --steps 300 --seed 1   # a variation
    python -m lessons_pkg.checkpoints ssd --rescore             # score the committed weights again

A chapter trains its model live for a few hundred steps (to show the loss falling) and loads
the checkpoint for the numbers that need a longer training (``recipes.load("ssd")``). Each
recipe (:data:`lessons_pkg.recipes.RECIPES`) holds everything its checkpoint needs, so the
command with no flag but the recipe's name remakes the committed checkpoint (it refuses to
replace an existing file unless given ``--overwrite``). It trains with
:func:`lessons_pkg.training.run_training`, as ``python -m lessons_pkg.train`` does, and writes the
``state_dict`` in float16 and, beside it, a JSON record: the command, the settings, the torch
version, the training time and the scores of the float16 weights (:mod:`lessons_pkg.evaluation`)
on the first ``VAL_IMAGES`` images of the ``val`` split (what development looked at) and on the
first ``TEST_IMAGES`` of the ``test`` split (the headline numbers and the quality bars), with the
time-to-quality curve; tests/test_checkpoints.py recomputes the scores.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..cli import positive_int
from ..recipes import RECIPES
from ..training import make_checkpoint, rescore


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
