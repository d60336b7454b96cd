"""``python -m lessons_pkg.detector_speed``: the speed/accuracy table of every detector (batch 1,
mAP from the same run), or with ``--train-cost`` the training cost per step of each, side by
side in one run (:mod:`lessons_pkg.detector_speed`)."""
from __future__ import annotations

import argparse

import torch

from .. import evaluation, train
from ..cli import positive_int
from ..detector_speed import DETECTORS, Measurement, StepCost, cost_per_step, format_costs, format_table, measure


def main(argv: list[str] | None = None) -> list[Measurement] | dict[str, StepCost]:
    parser = argparse.ArgumentParser(prog="python -m lessons_pkg.detector_speed", description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=positive_int, default=evaluation.VAL_IMAGES)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--only", nargs="*", default=list(DETECTORS), choices=list(DETECTORS))
    parser.add_argument("--train-cost", type=positive_int, default=None, metavar="STEPS",
                        help="instead: the training cost per step of the detectors, STEPS timed steps "
                             "each after one untimed, side by side in one run (cost_per_step)")
    args = parser.parse_args(argv)
    if args.train_cost:
        costs = cost_per_step(args.only, steps=args.train_cost, warmup=1, device=args.device or "cpu")
        print(f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}")
        print(format_costs(costs))
        return costs
    rows = measure(args.only, args.images, args.device)
    print(f"device: {args.device or train.default_device()}, {torch.get_num_threads()} CPU threads, "
          f"torch {torch.__version__}")
    print(format_table(rows))
    return rows


if __name__ == "__main__":
    main()   # returns what it measured (for the tests), exits 0
