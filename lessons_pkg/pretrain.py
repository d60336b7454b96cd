"""``python -m lessons_pkg.pretrain``: the command that pretrains the backbone lives in
:mod:`lessons_pkg.commands.pretrain`; this name keeps the command line the README uses."""
import sys

if __name__ == "__main__":
    from lessons_pkg.commands.pretrain import main
    sys.exit(main())
