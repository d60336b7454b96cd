"""``python -m lessons_pkg.checkpoints NAME``: the command that makes a committed checkpoint.

It lives in :mod:`lessons_pkg.commands.checkpoints`; the recipes and ``load`` in
:mod:`lessons_pkg.recipes`. This name only keeps the command line that the book and the README
use.
"""
import sys

if __name__ == "__main__":
    from lessons_pkg.commands.checkpoints import main
    sys.exit(main())
