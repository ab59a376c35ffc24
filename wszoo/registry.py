"""Lookup in the zoo table: names, aliases, close-match errors and ``list_models`` filters."""

from __future__ import annotations

import difflib
import fnmatch
from typing import Iterable, Optional, Sequence, Union

from .zoo import ENTRIES, ZooEntry

__all__ = ["UnknownModelError", "entries", "get_entry", "list_models", "TASKS"]

TASKS = ("object_detection", "instance_segmentation", "backbone")

_BY_NAME: dict[str, ZooEntry] = {e.name: e for e in ENTRIES}
_BY_ALIAS: dict[str, ZooEntry] = {alias: e for e in ENTRIES for alias in e.aliases}


class UnknownModelError(KeyError):
    """No zoo entry has this name or alias."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def entries() -> tuple[ZooEntry, ...]:
    """Every zoo entry, in table order (the registry's view of :data:`wszoo.zoo.ENTRIES`)."""
    return tuple(_BY_NAME.values())


def _normalise(name: str) -> str:
    # Accept MMDetection config file names and paths: "configs/gn+ws/x.py" -> "x".
    name = name.strip()
    if name.endswith(".py"):
        name = name[:-3]
    if "/" in name and not name.startswith("open-mmlab://"):
        name = name.rsplit("/", 1)[-1]
    return name


def get_entry(name: str) -> ZooEntry:
    """The zoo entry of a builder name or an alias (MMDetection v2/v3 config name, open-mmlab key).

    Raises:
        UnknownModelError: With the closest names and a pointer to ``wszoo list``.
    """
    if not isinstance(name, str):
        raise TypeError(f"a model name must be a string, got {type(name).__name__}")
    key = _normalise(name)
    entry = _BY_NAME.get(key) or _BY_ALIAS.get(key)
    if entry is not None:
        return entry
    candidates = list(_BY_NAME) + list(_BY_ALIAS)
    close = difflib.get_close_matches(key, candidates, n=5, cutoff=0.5)
    names = list(dict.fromkeys((_BY_NAME.get(c) or _BY_ALIAS[c]).name for c in close))
    hint = f" Did you mean: {', '.join(names)}?" if names else ""
    raise UnknownModelError(f"unknown model {name!r}.{hint} Run `wszoo list` to see every model.")


def _as_patterns(value: Union[str, Sequence[str], None]) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def list_models(
    include: Union[str, Sequence[str], None] = None,
    *,
    exclude: Union[str, Sequence[str], None] = None,
    task: Optional[str] = None,
    backbone: Optional[str] = None,
    has_weights: Optional[bool] = None,
) -> list[str]:
    """Names of zoo models, in table order.

    Args:
        include: Shell-style wildcard(s) a name must match (e.g. ``"mask_rcnn_*"``).
        exclude: Wildcard(s) a name must not match.
        task: ``"object_detection"``, ``"instance_segmentation"`` or ``"backbone"``.
        backbone: Published backbone name, case-insensitive, wildcards allowed (``"X-101*"``).
        has_weights: Keep only entries with (True) or without (False) published weights.
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    return [e.name for e in _select(entries(), include, exclude, task, backbone, has_weights)]


def _select(entries: Iterable[ZooEntry], include, exclude, task, backbone, has_weights) -> list[ZooEntry]:
    includes, excludes = _as_patterns(include), _as_patterns(exclude)
    selected = []
    for e in entries:
        if includes and not any(fnmatch.fnmatchcase(e.name, p) for p in includes):
            continue
        if any(fnmatch.fnmatchcase(e.name, p) for p in excludes):
            continue
        if task is not None and e.task != task:
            continue
        if backbone is not None and not fnmatch.fnmatch(e.backbone.lower(), backbone.lower()):
            continue
        if has_weights is not None and e.has_weights != has_weights:
            continue
        selected.append(e)
    return selected
