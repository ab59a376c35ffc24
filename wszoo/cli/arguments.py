"""Argument types and shared options of the ``wszoo`` command: one vocabulary for every command.

argparse calls the types on the text given; a value out of range becomes argparse's usage error
(``wszoo <cmd>: error: argument --x: ...``, exit status 2) before any work is done.

The shared options mean the same in every command that has them:

* ``--image-scale LONGxSHORT``: the keep-ratio resize (:func:`image_scale`);
* ``--score-threshold``: a probability in [0, 1] (:func:`probability`);
* ``--no-progress``: no progress bars; everything else is still printed;
* ``--quiet`` / ``-q``: nothing printed but errors (implies ``--no-progress``);
  see :func:`add_output_options`, :func:`show_progress` and :func:`say`.

Old spellings stay accepted, hidden from ``--help``, through :class:`DeprecatedAlias`, which
prints one line on stderr naming the new spelling.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from ..registry import TASK_ALIASES, TASKS, canonical_task

__all__ = [
    "DeprecatedAlias",
    "HelpFormatter",
    "TASK_HELP",
    "add_output_options",
    "existing_file",
    "image_scale",
    "non_negative_int",
    "positive_int",
    "probability",
    "say",
    "show_progress",
    "task",
]


def _task_help() -> str:
    aliases = {task: [a for a, t in TASK_ALIASES.items() if t == task] for task in TASKS}
    names = [f"{task} (or {', '.join(aliases[task])})" if aliases[task] else task for task in TASKS]
    return ", ".join(names[:-1]) + f" or {names[-1]}"


TASK_HELP = _task_help()


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, except that an epilog starting with ``examples:`` keeps its lines."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


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


def task(text: str) -> str:
    """A task name or alias (``detection`` -> ``object_detection``); see :data:`wszoo.registry.TASK_ALIASES`."""
    try:
        return canonical_task(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


class DeprecatedAlias(argparse.Action):
    """An old spelling of an option: hidden from ``--help``, stores into the new option's ``dest``
    and prints ``wszoo <cmd>: <old> is deprecated; use <new>`` on stderr.

    Use as ``p.add_argument("--score-thresh", dest="score_thresh", action=DeprecatedAlias,
    new="--score-threshold", type=probability)``; ``nargs=0`` with ``const=`` makes a flag.
    """

    def __init__(self, option_strings: Sequence[str], dest: str, *, new: str, **kwargs: Any) -> None:
        kwargs["help"] = argparse.SUPPRESS
        kwargs.setdefault("default", argparse.SUPPRESS)  # the new option's default stays in charge
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Union[str, Sequence[Any], None],
        option_string: Optional[str] = None,
    ) -> None:
        print(f"{parser.prog}: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def add_output_options(parser: argparse.ArgumentParser, *, progress: bool = True) -> None:
    """Adds ``--quiet``/``-q`` and, when the command draws progress bars, ``--no-progress``."""
    if progress:
        parser.add_argument(
            "--no-progress", action="store_true", help="no progress bars (everything else is still printed)"
        )
    implies = " (implies --no-progress)" if progress else ""
    parser.add_argument("-q", "--quiet", action="store_true", help=f"print nothing but errors{implies}")


def show_progress(args: argparse.Namespace) -> bool:
    """Whether to draw progress bars: neither ``--no-progress`` nor ``--quiet`` was given."""
    return not (getattr(args, "no_progress", False) or getattr(args, "quiet", False))


def say(args: argparse.Namespace, *lines: str) -> None:
    """Prints ``lines`` on stdout unless ``--quiet`` was given."""
    if not getattr(args, "quiet", False):
        for line in lines:
            print(line)
