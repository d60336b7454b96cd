"""``python -m lessons_pkg.commands.proposals``: the evaluation sets' selective-search proposals,
made once and committed (``data/proposals/``), so that scoring R-CNN and Fast R-CNN does not run
selective search on every image again (a fraction of a second an image on a laptop CPU).

    python -m lessons_pkg.commands.proposals                   # val (64 images) and test (300)
    python -m lessons_pkg.commands.proposals --split test --num-images 300 --overwrite

tests/test_evaluation.py checks each file's SHA-256 against its record and recomputes a sample.
"""
from __future__ import annotations

import argparse
import sys

from .. import evaluation
from ..cli import positive_int


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lessons_pkg.commands.proposals",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=("val", "test"), nargs="*", default=["val", "test"])
    parser.add_argument("--num-images", type=positive_int, default=None,
                        help="default: the records' (VAL_IMAGES or TEST_IMAGES)")
    parser.add_argument("--config", default="default", help="the shapes preset")
    parser.add_argument("--overwrite", action="store_true", help="replace a committed file")
    args = parser.parse_args(argv)
    for split in args.split:
        try:
            path = evaluation.write_stored_proposals(split, args.num_images or evaluation.split_size(split),
                                                     args.config, overwrite=args.overwrite)
        except FileExistsError as error:
            parser.error(str(error))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
