"""``python -m lessons_pkg.train.throughput`` (``make bench``): the benchmark command lives in
:mod:`lessons_pkg.commands.throughput`; this name keeps the command line."""
import sys

if __name__ == "__main__":
    from lessons_pkg.commands.throughput import main
    sys.exit(main())
