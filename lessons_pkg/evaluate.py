"""``python -m lessons_pkg.evaluate MODEL --images DIR --annotations FILE``: score a checkpoint on a
COCO-format set as COCO scores it. The command lives in :mod:`lessons_pkg.commands.evaluate`; this
name keeps the command line that the README and the book use."""
import sys

if __name__ == "__main__":
    from lessons_pkg.commands.evaluate import main
    sys.exit(main())
