"""Facts about MMDetection's published checkpoints, kept in ``tests/data`` (part of the repository).

``mmdet_keys/<config>.json``: every state-dict key, shape and parameter count of the 12 published
detectors; ``backbones.json``: the ImageNet GN+WS backbones' URLs and keys;
``published_gn_ws_table.md``: the rows of MMDetection's ``configs/gn+ws`` README, verbatim.
A missing file fails the test that needs it: these are not optional.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).resolve().parent / "data"


def data_file(name: str) -> Path:
    """The path of ``tests/data/<name>``; fails the calling test when it is missing."""
    path = DATA / name
    if not path.is_file():
        pytest.fail(f"test data file {path} is missing; it is part of the repository (git checkout tests/data)")
    return path


def mmdet_keys(config: str) -> dict[str, Any]:
    """The key list of a published MMDetection checkpoint (``num_keys``, ``num_params``, ``keys``)."""
    return json.loads(data_file(f"mmdet_keys/{config}.json").read_text())


def backbones() -> dict[str, Any]:
    """``backbones.json`` without its ``_comment``-style entries."""
    data = json.loads(data_file("backbones.json").read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}
