"""``python -m lessons_pkg.figures DIR`` (``make figures``): the command lives in
:mod:`lessons_pkg.commands.figures`; this name keeps the command line."""
import sys

if __name__ == "__main__":
    from lessons_pkg.commands.figures import main
    sys.exit(main())
