"""``python -m lessons_pkg.train``: the command lives in :mod:`lessons_pkg.commands.train`
(``train/`` itself holds only the training library: the loop and the process group)."""
import sys

if __name__ == "__main__":
    from lessons_pkg.commands.train import main
    sys.exit(main())
