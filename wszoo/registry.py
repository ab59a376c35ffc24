"""Lookup in the zoo table: names, aliases, close-match errors and ``list_models`` filters."""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import fnmatch
from typing import Iterable, Iterator, Optional, Sequence, Union

from .zoo import ENTRIES, ZooEntry

__all__ = [
    "TASKS",
    "TASK_ALIASES",
    "UnknownModelError",
    "canonical_task",
    "entries",
    "entry_info",
    "entry_record",
    "get_entry",
    "list_models",
    "model_table",
    "registered",
]

TASKS = ("object_detection", "instance_segmentation", "backbone")
# Shorter names accepted wherever a task is (``list_models(task=...)``, ``wszoo list --task``).
TASK_ALIASES = {
    "detection": "object_detection",
    "det": "object_detection",
    "segmentation": "instance_segmentation",
    "seg": "instance_segmentation",
}

_BY_NAME: dict[str, ZooEntry] = {e.name: e for e in ENTRIES}
_BUILT_IN = frozenset(_BY_NAME)
_BY_ALIAS: dict[str, ZooEntry] = {alias: e for e in ENTRIES for alias in e.aliases}


class UnknownModelError(KeyError):
    """No zoo entry has this name or alias."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


@contextlib.contextmanager
def registered(entry: ZooEntry) -> Iterator[ZooEntry]:
    """Adds ``entry`` to the registry for the duration of a ``with`` block (tests, experiments).

    Inside the block :func:`get_entry`, :func:`list_models`, the builders' lookups, conversion's
    recognition and the CLI know it by name; its aliases are not registered. An entry registered
    this way may be shadowed by a nested registration of the same name (restored on exit).

    Raises:
        ValueError: ``entry`` has the name or an alias of a published zoo entry.
    """
    if entry.name in _BUILT_IN or entry.name in _BY_ALIAS:
        raise ValueError(f"{entry.name!r} is the name of a zoo entry; register an entry under another name")
    previous = _BY_NAME.get(entry.name)
    _BY_NAME[entry.name] = entry
    try:
        yield entry
    finally:
        if previous is None:
            _BY_NAME.pop(entry.name, None)
        else:
            _BY_NAME[entry.name] = previous


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


def canonical_task(task: str) -> str:
    """The task a name or alias means: ``"detection"`` -> ``"object_detection"``.

    Raises:
        ValueError: ``task`` is neither a task nor an alias; the message lists both.
    """
    name = task.strip().lower().replace("-", "_") if isinstance(task, str) else task
    name = TASK_ALIASES.get(name, name)
    if name not in TASKS:
        aliases = ", ".join(f"{a} ({t})" for a, t in TASK_ALIASES.items())
        raise ValueError(f"unknown task {task!r}: give one of {', '.join(TASKS)}, or an alias: {aliases}")
    return name


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
    pretrained: bool = False,
) -> list[str]:
    """Names of zoo models, in table order.

    Args:
        include: Shell-style wildcard(s) a name must match (e.g. ``"mask_rcnn_*"``).
        exclude: Wildcard(s) a name must not match.
        task: ``"object_detection"``, ``"instance_segmentation"`` or ``"backbone"``, or an alias
            (``"detection"``/``"det"``, ``"segmentation"``/``"seg"``; see :data:`TASK_ALIASES`).
        backbone: Published backbone name, case-insensitive, wildcards allowed (``"X-101*"``).
        has_weights: Keep only entries with (True) or without (False) published weights.
        pretrained: True keeps only entries with published weights (timm's ``list_models``
            argument; the same as ``has_weights=True``).
    """
    if task is not None:
        task = canonical_task(task)
    if pretrained:
        if has_weights is False:
            raise ValueError("pretrained=True and has_weights=False contradict each other; pass one of them")
        has_weights = True
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


# ---- presentation: `wszoo list` and the README table ----

JSON_FIELDS = (
    "name",
    "task",
    "backbone",
    "normalization",
    "lr_schedule",
    "train_mem_gb",
    "inf_fps",
    "box_ap",
    "mask_ap",
    "model_url",
    "file_name",
    "sha256_prefix",
    "sha256",
    "config_url",
    "log_url",
    "mmdet_v2_config",
    "mmdet_v3_config",
)


def entry_record(entry: ZooEntry) -> dict:
    """The JSON object of ``wszoo list --json`` for one entry.

    ``schedule`` and ``url`` repeat ``lr_schedule`` and ``model_url`` for scripts written against
    wszoo 0.1; :func:`entry_info` (``wszoo info``) has each field once.
    """
    record = {field: getattr(entry, field) for field in JSON_FIELDS}
    record["schedule"] = entry.lr_schedule
    record["url"] = entry.model_url
    record["aliases"] = list(entry.aliases)
    return record


def entry_info(entry: ZooEntry) -> dict:
    """The JSON object of ``wszoo info``: every field of the entry once, as data.

    ``arch`` is the architecture dataclass as a dict (``DetectorArch(**info["arch"])`` rebuilds
    it); ``num_classes``, ``file_name`` and ``sha256_prefix`` are derived; ``classes`` comes last.
    Unlike :func:`entry_record` there are no second names for a field (``schedule``, ``url``) and
    no ``aliases`` list (``mmdet_v2_config``, ``mmdet_v3_config`` and ``openmmlab_key`` are they).
    """
    info: dict = {}
    for field in dataclasses.fields(entry):
        value = getattr(entry, field.name)
        if dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)
        info[field.name] = list(value) if isinstance(value, tuple) else value
    info.update(num_classes=entry.num_classes, file_name=entry.file_name, sha256_prefix=entry.sha256_prefix)
    info["classes"] = info.pop("classes")
    return info


def _fmt(value) -> str:
    return "-" if value is None else str(value)


def model_table(entries: Sequence[ZooEntry]) -> str:
    """A Markdown table of entries (the README's model table is this, for the published rows)."""
    header = "| name | task | backbone | norm | schedule | mem (GB) | fps | box AP | mask AP | sha256 |"
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    for e in entries:
        lines.append(
            f"| {e.name} | {e.task} | {e.backbone} | {e.normalization} | {_fmt(e.lr_schedule)} | "
            f"{_fmt(e.train_mem_gb)} | {_fmt(e.inf_fps)} | {_fmt(e.box_ap)} | {_fmt(e.mask_ap)} | "
            f"{_fmt(e.sha256_prefix)} |"
        )
    return "\n".join(lines)
