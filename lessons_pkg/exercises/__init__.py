"""Checkers for the book's "try it" exercises, one module per chapter.

Each ``check_*`` runs the reader's function on cases it keeps to itself, compares with the
package's answer and reports the first mismatch clearly. It returns True/False and prints a
verdict, so a wrong attempt in a notebook shows what to fix instead of a traceback.
Notebooks use ``from lessons_pkg import exercises`` then ``exercises.check_...``. A function
that still raises NotImplementedError (a stub) is reported as "not implemented yet"; worked
solutions are in :mod:`lessons_pkg.exercises.solutions`, never in the cell after an exercise:
a chapter shows them at its end with :func:`show_solution`, folded.

A checker's module is imported when the checker is first used (PEP 562's module
``__getattr__``): checking an IoU function loads the box ops, not every model of the course.
"""
from __future__ import annotations

import importlib
import inspect

CHECKERS = {  # checker -> the module (one per chapter) that defines it
    "check_visible_boxes": "shapes",
    "check_diou": "boxes",
    "check_soft_nms": "boxes",
    "check_multitask_loss": "localization",
    "check_bilinear_upsample": "segmentation",
    "check_conv_transpose1d": "segmentation",
    "check_miou": "segmentation",
    "check_linear_to_conv": "sliding_window",
    "check_encode_boxes": "rcnn",
    "check_roi_pool_box": "rcnn",
    "check_anchor_labels": "rcnn",
    "check_pareto_front": "speed",
    "check_hard_negatives": "single_shot",
    "check_yolo_targets": "single_shot",
    "check_mask_target": "mask_rcnn",
    "check_centernet_heatmap": "centernet",
    "check_shard": "distributed",
}
__all__ = sorted(CHECKERS)


def show_solution(checker: str):
    """The worked solution of ``checker`` for the end of a chapter: runs the checker on it (its
    verdict is printed) and returns the solution's source, with any helper it calls, as a
    Markdown code block (the book highlights it like any code). Raises AssertionError if the
    solution does not pass: a chapter can never show a wrong answer."""
    from IPython.display import Markdown

    from . import solutions

    if checker not in solutions.SOLUTIONS:
        raise ValueError(f"no worked solution for {checker!r}; the checkers with one are {sorted(solutions.SOLUTIONS)}")
    fn = solutions.SOLUTIONS[checker]
    if not __getattr__(checker)(fn):
        raise AssertionError(f"the worked solution of {checker} does not pass its checker")
    helpers = solutions.HELPERS.get(checker, ())
    source = "\n\n".join(inspect.getsource(f).rstrip() for f in (*helpers, fn))
    return Markdown(f"```python\n{source}\n```")


def __getattr__(name: str):
    if name not in CHECKERS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}; the checkers are {__all__}")
    return getattr(importlib.import_module(f".{CHECKERS[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
