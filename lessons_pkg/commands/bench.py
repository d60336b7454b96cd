"""``python -m lessons_pkg.bench ops`` (``make bench``): the course's ops against torchvision's,
measured by :mod:`lessons_pkg.bench`."""
from __future__ import annotations

import argparse

import torch

from .. import bench
from ..bench import GROUPS, Row, format_table, measure
from ..cli import nonnegative_int, positive_int


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(prog="python -m lessons_pkg.bench", description=bench.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="group", required=True)
    for name, fn in GROUPS.items():
        p = sub.add_parser(name, help=(fn.__doc__ or "").strip().splitlines()[0])
        p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
        p.add_argument("--repeats", type=positive_int, default=7)
        p.add_argument("--warmup", type=nonnegative_int, default=2)
        p.add_argument("--tiny", action="store_true", help="tiny sizes: a smoke test")
        p.add_argument("--only", default="", help="run cases whose name contains this")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    import torchvision
    print(f"device: {device} ({torch.get_num_threads()} CPU threads), torch {torch.__version__}"
          f", torchvision {torchvision.__version__}", flush=True)
    rows = []
    for case in GROUPS[args.group](device, tiny=args.tiny):
        if args.only in case.name:
            rows.append(measure(case, device, args.repeats, args.warmup))
    print(format_table(rows), flush=True)
    return rows


if __name__ == "__main__":
    main()   # returns what it measured (for the tests), exits 0
