"""The training library: the loop every chapter uses (``fit``, ``evaluate``, ``predict``,
``lr_factor``: :mod:`.loop`) and torchrun's process group (:mod:`.distributed`). The command
that trains any model of the course on any data (``python -m lessons_pkg.train``) lives in
:mod:`lessons_pkg.commands.train`, above the library; it trains through
:func:`lessons_pkg.training.run_training`.
"""
from .loop import (BatchStream, History, default_device, evaluate, fit, lr_factor, make_loader, move_to, predict,
                   rng_state, seed_everything, set_rng_state)

__all__ = ["BatchStream", "History", "default_device", "evaluate", "fit", "lr_factor", "make_loader", "move_to",
           "predict", "rng_state", "seed_everything", "set_rng_state"]
