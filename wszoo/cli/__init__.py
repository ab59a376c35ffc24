"""The ``wszoo`` command: argparse only; each command group lives in its own module.

* :mod:`wszoo.cli.zoo`: ``list``, ``info``, ``download``, ``verify``, ``import-weights``, ``convert``;
* :mod:`wszoo.cli.predict`: ``predict``, ``push-to-hub``;
* :mod:`wszoo.cli.train`: ``train``, ``eval``;
* :mod:`wszoo.cli.export`: ``export``.

:func:`main` is the one error boundary: an expected failure (bad input, a refused or corrupt
checkpoint, a damaged file, a failed download, an I/O or OpenCV error) prints one line
``wszoo <command>: error: <what was wrong and what to do>`` on stderr and exits with status 2;
``--debug`` (or ``WSZOO_DEBUG=1``) lets the traceback through instead. Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import warnings
from typing import Optional, Sequence

from .. import registry
from . import export, predict, train, zoo

__all__ = ["DEBUG_ENV", "EXPECTED_ERRORS", "build_parser", "main"]

DEBUG_ENV = "WSZOO_DEBUG"

# Failures a user can cause and fix; their messages say what was wrong. ValueError covers
# CheckpointError (refused pickles included), ConversionError, ImageError and the Hub's errors;
# RuntimeError covers DownloadError, NonFiniteLossError and torch's load_state_dict mismatches.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    KeyError,
    RuntimeError,
    OSError,
    EOFError,
    ArithmeticError,
    pickle.UnpicklingError,
)

# A DataLoader worker's exception comes back re-raised with its worker traceback in the message.
_WORKER_TRACEBACK = "Original Traceback (most recent call last):"


def build_parser() -> argparse.ArgumentParser:
    """The ``wszoo`` argument parser with every command."""
    parser = argparse.ArgumentParser(prog="wszoo", description="MMDetection's GN+WS detectors, natively in PyTorch.")
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"show the full traceback of an error instead of one line (or set {DEBUG_ENV}=1)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    zoo.register(sub)
    predict.register(sub)
    train.register(sub)
    export.register(sub)
    return parser


def _debug(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENV, "").strip().lower() not in (
        "",
        "0",
        "false",
        "no",
    )


def _is_expected(err: BaseException) -> bool:
    # cv2.error: OpenCV is optional, so it is recognised by its module rather than imported.
    return isinstance(err, EXPECTED_ERRORS) or type(err).__module__.split(".")[0] == "cv2"


def error_message(err: BaseException) -> str:
    """What to print for an expected failure: its message, without a worker's traceback."""
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    if _WORKER_TRACEBACK in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        name, sep, message = last.partition(": ")
        text = message if sep and name.rsplit(".", 1)[-1].isidentifier() else last
    return text.strip() or type(err).__name__


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the ``wszoo`` command; returns its exit status (2 for an expected failure)."""
    args = build_parser().parse_args(predict.legacy_argv(sys.argv[1:] if argv is None else argv))
    try:
        return args.func(args)
    except Exception as err:
        if _debug(args) or not _is_expected(err):
            raise
        message = error_message(err)
        print(f"wszoo {args.command}: error: {message}", file=sys.stderr)
        return 2


def __getattr__(name: str):
    # wszoo 0.1 had these in the flat ``wszoo.cli`` module; they now live in ``wszoo.registry``.
    if name in ("JSON_FIELDS", "entry_record", "model_table"):
        warnings.warn(
            f"wszoo.cli.{name} moved to wszoo.registry.{name}; the old path is deprecated and will be "
            "removed in wszoo 0.3",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    sys.exit(main())
