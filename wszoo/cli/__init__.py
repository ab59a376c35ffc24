"""The ``wszoo`` command: argparse only; each command group lives in its own module.

* :mod:`wszoo.cli.zoo`: ``list``, ``info``, ``download``, ``verify``, ``import-weights``, ``convert``;
* :mod:`wszoo.cli.predict`: ``predict``, ``push-to-hub``;
* :mod:`wszoo.cli.train`: ``train``, ``eval``;
* :mod:`wszoo.cli.export`: ``export``.

:func:`main` is the one error boundary: an expected failure (bad input, a refused or corrupt
checkpoint, a damaged file, a failed download, an I/O or OpenCV error) prints one line
``wszoo <command>: error: <what was wrong and what to do>`` on stderr and exits with status 2;
``--debug`` (or ``WSZOO_DEBUG=1``) lets the traceback through instead. Anything else is a bug and
keeps its traceback. When stdout is a pipe whose reader has gone (``wszoo list | head -1``), the
command stops quietly with status 141 (128 + SIGPIPE, what a shell reports for ``cat`` or ``git``
in the same pipe), as Python's documentation on SIGPIPE recommends: no traceback, no message.

Every command has a description (``wszoo <command> --help``); the shared options mean the same
everywhere (:mod:`wszoo.cli.arguments`).
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
from .arguments import HelpFormatter

__all__ = ["BROKEN_PIPE_STATUS", "DEBUG_ENV", "EXPECTED_ERRORS", "build_parser", "main"]

DEBUG_ENV = "WSZOO_DEBUG"
# Exit status when stdout's reader has gone: 128 + SIGPIPE (13), as a shell reports a process
# that SIGPIPE killed; Python ignores SIGPIPE and gets BrokenPipeError instead.
BROKEN_PIPE_STATUS = 141

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
    parser = argparse.ArgumentParser(
        prog="wszoo",
        description="MMDetection's GN+WS detectors, natively in PyTorch. `wszoo COMMAND --help` explains a command.",
        epilog="examples:\n  wszoo list --task segmentation\n  wszoo info mask_rcnn_r50_fpn_gn_ws_all_2x_coco\n"
        "  wszoo predict mask_rcnn_r50_fpn_gn_ws_all_2x_coco photo.jpg",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"show the full traceback of an error instead of one line (or set {DEBUG_ENV}=1)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help="one of:")
    zoo.register(sub)
    predict.register(sub)
    train.register(sub)
    export.register(sub)
    _describe_commands(sub)
    return parser


def _describe_commands(sub: argparse._SubParsersAction) -> None:
    # A command registered without a description gets its one-line summary, so that
    # `wszoo <command> --help` always says what the command does.
    summaries = {action.dest: action.help for action in sub._choices_actions}
    for name, command in sub.choices.items():
        if not command.description and summaries.get(name):
            summary = summaries[name]
            command.description = summary[0].upper() + summary[1:] + ("" if summary.endswith(".") else ".")


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
    """Runs the ``wszoo`` command; returns its exit status.

    0 on success, 1 when a command reports failures of its own (``verify``), 2 for an expected
    failure or a usage error, :data:`BROKEN_PIPE_STATUS` (141) when stdout's reader has gone.
    """
    try:
        try:
            args = build_parser().parse_args(predict.legacy_argv(sys.argv[1:] if argv is None else argv))
        except SystemExit:  # --help, or a usage error: what argparse printed must reach the pipe too
            sys.stdout.flush()
            raise
        try:
            status = args.func(args)
        except BrokenPipeError:
            raise
        except Exception as err:
            if _debug(args) or not _is_expected(err):
                raise
            message = error_message(err)
            print(f"wszoo {args.command}: error: {message}", file=sys.stderr)
            return 2
        sys.stdout.flush()  # a closed pipe shows here, inside the boundary, not at interpreter exit
        return status
    except BrokenPipeError:
        _silence_stdout()
        return BROKEN_PIPE_STATUS


def _silence_stdout() -> None:
    # Python's docs (signal, "Note on SIGPIPE"): point stdout at devnull so that the flush at
    # interpreter exit does not raise a second BrokenPipeError.
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # stdout replaced by an object without a file
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives until exit
    finally:
        os.close(devnull)


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
