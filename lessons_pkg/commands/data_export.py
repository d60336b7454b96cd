"""Command line: ``python -m lessons_pkg.data export DIR [--split val] [--num-images 32] [--preset default]``.

Writes the shapes data in COCO format (PNG images + annotations.json with RLE masks). The
committed copy under ``data/shapes_coco`` is made by::

    python -m lessons_pkg.data export data/shapes_coco --split val --num-images 24
"""
from __future__ import annotations

import argparse

from ..cli import positive_int
from ..data.coco import check_export_folder, export_coco
from ..data.dataset import SPLIT_SEEDS, make_split


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lessons_pkg.data", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="write a split of the shapes data in COCO format")
    export.add_argument("out_dir")
    export.add_argument("--split", default="val", choices=sorted(SPLIT_SEEDS))
    export.add_argument("--num-images", type=positive_int, default=24)
    export.add_argument("--preset", default="default", help="easy, default, hard, single or pretrain")
    export.add_argument("--overwrite", action="store_true", help="replace a dataset already in OUT_DIR")
    args = parser.parse_args(argv)

    try:  # before rendering anything
        check_export_folder(args.out_dir, args.overwrite)
    except (FileExistsError, NotADirectoryError) as error:
        parser.error(str(error))
    dataset = make_split(args.split, args.num_images, config=args.preset)
    # The folder is left out of the recorded command so that exports are byte-identical wherever written.
    command = (f"python -m lessons_pkg.data export OUT_DIR --split {args.split} "
               f"--num-images {args.num_images} --preset {args.preset}")
    try:
        path = export_coco(dataset, args.out_dir, command=command, overwrite=args.overwrite)
    except (FileExistsError, NotADirectoryError) as error:
        parser.error(str(error))
    print(f"wrote {len(dataset)} images and {path}")


if __name__ == "__main__":
    main()
