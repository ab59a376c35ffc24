"""The ``wszoo`` command: argparse only; each command group lives in its own module.

* :mod:`wszoo.cli.zoo`: ``list``, ``info``, ``download``, ``verify``, ``import-weights``, ``convert``;
* :mod:`wszoo.cli.predict`: ``predict``, ``push-to-hub``;
* :mod:`wszoo.cli.train`: ``train``, ``eval``;
* :mod:`wszoo.cli.export`: ``export``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Optional, Sequence

from .. import registry
from . import export, predict, train, zoo

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``wszoo`` argument parser with every command."""
    parser = argparse.ArgumentParser(prog="wszoo", description="MMDetection's GN+WS detectors, natively in PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True)
    zoo.register(sub)
    predict.register(sub)
    train.register(sub)
    export.register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the ``wszoo`` command; returns its exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, KeyError, RuntimeError, OSError) as err:
        print(f"wszoo {args.command}: error: {err}", file=sys.stderr)
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
