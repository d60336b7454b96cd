"""Checkers for the book's "try it" exercises, one module per chapter.

Each ``check_*`` runs the reader's function on cases it keeps to itself, compares with the
package's answer and reports the first mismatch clearly. It returns True/False and prints a
verdict, so a wrong attempt in a notebook shows what to fix instead of a traceback.
Notebooks use ``from lessons_pkg import exercises`` then ``exercises.check_...``. A function
that still raises NotImplementedError (a stub) is reported as "not implemented yet"; worked
solutions of the stub exercises are in :mod:`lessons_pkg.exercises.solutions`.

A checker's module is imported when the checker is first used (PEP 562's module
``__getattr__``): checking an IoU function loads the box ops, not every model of the course.
"""
from __future__ import annotations

import importlib

CHECKERS = {  # checker -> the module (one per chapter) that defines it
    "check_masks_to_boxes": "shapes",
    "check_iou": "boxes",
    "check_nms": "boxes",
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
}
__all__ = sorted(CHECKERS)


def __getattr__(name: str):
    if name not in CHECKERS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}; the checkers are {__all__}")
    return getattr(importlib.import_module(f".{CHECKERS[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
