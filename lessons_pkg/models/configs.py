"""How a model of the course takes its settings: a dataclass config, or its fields as keywords.

Every model's constructor reads ``(num_classes, pretrained_backbone=None, config=None,
**settings)``. ``SSD(num_classes=4, negatives="focal")`` and ``SSD(num_classes=4,
config=SSDConfig(negatives="focal"))`` build the same model; the recipes
(``lessons_pkg.recipes.RECIPES``) use the keywords, so a record's settings are plain JSON. Both
at once, an unknown setting or a class count below 1 is a ValueError that names the argument.
"""
from __future__ import annotations

import dataclasses


def check_num_classes(num_classes: int) -> int:
    """``num_classes`` (C: object classes, labels 1..C), or a ValueError when it is below 1."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return num_classes


def resolve_config(config_class: type, config, settings: dict):
    """``config`` when given, else ``config_class(**settings)``.

    Raises ValueError when both are given, or when a keyword is not a field of ``config_class``
    (naming it and the fields there are), rather than the dataclass's TypeError.
    """
    name = config_class.__name__
    if config is not None and settings:
        raise ValueError(f"give either config={name}(...) or keyword settings, not both")
    if config is not None:
        if not isinstance(config, config_class):
            raise ValueError(f"config must be an instance of {name}, got {type(config).__name__}")
        return config
    fields = [f.name for f in dataclasses.fields(config_class)]
    unknown = sorted(set(settings) - set(fields))
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(map(repr, unknown))} for {name}; "
                         f"choose from {', '.join(fields)}")
    return config_class(**settings)
