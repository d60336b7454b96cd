"""The course's models, one file per family (``localizer``, ``sliding_window``, ``rcnn``, ...).

Each model follows the target contract (README): ``model(images, targets)`` returns a dict of
named losses in train mode; ``model(images)`` returns one dict of predictions per image in eval
mode. Import the module, not its names: ``from lessons_pkg.models import localizer``.
"""
