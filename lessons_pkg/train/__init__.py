"""Training: the loop every chapter uses (``fit``, ``evaluate``, ``predict``: :mod:`.loop`), and
the command that trains any model of the course on any COCO-format data, on one CPU or, under
``torchrun``, on many processes (``python -m lessons_pkg.train``: :mod:`.__main__`, with
:mod:`.distributed`).
"""
# _lr_factor is private, imported here for its tests (train._lr_factor)
from .loop import (BatchStream, History, _lr_factor, default_device, evaluate, fit, make_loader, move_to, predict,
                   rng_state, seed_everything, set_rng_state)

__all__ = ["BatchStream", "History", "default_device", "evaluate", "fit", "make_loader", "move_to", "predict",
           "rng_state", "seed_everything", "set_rng_state"]
