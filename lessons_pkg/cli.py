"""Argument types shared by the package's command lines.

A count of 0 or less (``--steps 0``, ``--images -1``, ``--repeats 0``) is refused by argparse
itself, before anything is rendered or trained, with a message naming the option.
"""
from __future__ import annotations

import argparse


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse ``type=``: an int >= 1."""
    return _whole_number(text, 1)


def nonnegative_int(text: str) -> int:
    """argparse ``type=``: an int >= 0."""
    return _whole_number(text, 0)


def positive_float(text: str) -> float:
    """argparse ``type=``: a finite float > 0 (a learning rate)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {value}")
    return value
