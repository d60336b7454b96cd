"""Companion package of the "Detection & Segmentation" course.

Primitives (``boxes``, ``ops``, ``anchors``, ``metrics``, ``data``, ``train``, ``viz``) never
import models; each file in ``models/`` imports primitives and at most the model it extends.
Notebooks import modules, not names: ``from lessons_pkg import boxes, ops``.
"""

__version__ = "0.1.0"
