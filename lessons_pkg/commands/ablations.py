"""``python -m lessons_pkg.ablations NAME``: train the missing seeds of an ablation of
:mod:`lessons_pkg.ablations` and write its record (scores only)."""
from __future__ import annotations

import argparse
import sys

from ..ablations import ABLATIONS, run


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
        shown = "   ".join(f"{key} {s['mean']:.3f} ± {s['spread']:.3f}" for key, s in r["test"].items())
        print(f"{recipe:<24} test {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
