"""Argument types of the ``wszoo`` command: each checks its range at the edge and says it.

argparse calls them on the text given; a value out of range becomes argparse's usage error
(``wszoo <cmd>: error: argument --x: ...``, exit status 2) before any work is done.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

__all__ = ["probability", "positive_int", "non_negative_int", "image_scale", "existing_file"]


def _number(text: str, kind: type, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def probability(text: str) -> float:
    """A float in [0, 1] (score thresholds)."""
    value = _number(text, float, "a number")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is out of range: give a number in [0, 1]")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (batch sizes, image sides, counts)."""
    value = _number(text, int, "an integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is out of range: give an integer >= 1")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (DataLoader workers)."""
    value = _number(text, int, "an integer")
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is out of range: give an integer >= 0")
    return value


def image_scale(text: str) -> tuple[int, int]:
    """``LONGxSHORT`` (or ``LONG,SHORT``): two integers >= 1."""
    parts = text.lower().replace(",", "x").split("x")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"{text!r} is not LONGxSHORT, e.g. 1333x800")
    long_side, short_side = (positive_int(part.strip()) for part in parts)
    return long_side, short_side


def existing_file(text: str) -> str:
    """The path of an existing file."""
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"{text} does not exist or is not a file")
    return text
