"""Checkers for the book's "try it" exercises, one module per chapter.

Each ``check_*`` runs the reader's function on cases it keeps to itself, compares with the
package's answer and reports the first mismatch clearly. It returns True/False and prints a
verdict, so a wrong attempt in a notebook shows what to fix instead of a traceback.
Notebooks use ``from lessons_pkg import exercises`` then ``exercises.check_...``.
"""
from .shapes import check_masks_to_boxes  # noqa: F401
from .boxes import check_iou  # noqa: F401
from .localization import check_multitask_loss  # noqa: F401
from .segmentation import check_bilinear_upsample, check_conv_transpose1d, check_miou  # noqa: F401
from .sliding_window import check_linear_to_conv  # noqa: F401
from .rcnn import check_encode_boxes  # noqa: F401
from .speed import check_pareto_front  # noqa: F401
from .single_shot import check_hard_negatives  # noqa: F401
from .mask_rcnn import check_mask_target  # noqa: F401
