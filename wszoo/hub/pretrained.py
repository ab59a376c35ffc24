"""Published weights as objects, in torchvision's shape: ``Weights(url, transforms, meta)`` in an enum.

Each zoo entry with published weights has an enum (its name from the entry's, e.g.
``MaskRcnnR50FpnGnWsAll2xCoco_Weights``) with one member, ``COCO_V1`` for detectors or
``IMAGENET_V1`` for backbones, and ``DEFAULT`` as an alias of it; entries without published
weights have an empty enum. The enums are derived from the zoo table, not a second table:

    >>> from wszoo import get_model_weights
    >>> weights = get_model_weights("mask_rcnn_r50_fpn_gn_ws-all_2x_coco").DEFAULT
    >>> weights.meta["_metrics"]["COCO-val2017"]["mask_map"]
    36.6

A member is accepted wherever ``weights=`` is (it means the entry's published checkpoint, as
``"DEFAULT"`` does); ``weights.transforms()`` builds the input preset
(:mod:`wszoo.modeling.presets`); ``weights.meta`` is :func:`wszoo.meta.entry_meta`.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any, Callable, Union

from ..meta import entry_meta
from ..modeling.presets import BackbonePreset, DetectionPreset
from ..registry import get_entry
from ..zoo import ENTRIES, ZooEntry

__all__ = [
    "Weights",
    "WeightsEnum",
    "entry_of",
    "enum_name",
    "get_model_weights",
    "get_weight",
    "member_name",
]


@dataclass(frozen=True)
class Weights:
    """Published weights: where they are, the input preset they expect, and what is known of them.

    Attributes:
        url: The original download URL (downloads also try mirrors and verify the sha256).
        transforms: Builds the input preset (call it: ``weights.transforms()``).
        meta: See :func:`wszoo.meta.entry_meta`; treat it as read-only.
    """

    url: str
    transforms: Callable[[], Any]
    meta: dict[str, Any]

    __hash__ = None  # meta is a dict; enum members are found by equality


class WeightsEnum(enum.Enum):
    """Base of the per-entry enums; members are :class:`Weights` (``.url``, ``.transforms``, ``.meta``)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}.{self.name}"

    @property
    def url(self) -> str:
        return self.value.url

    @property
    def transforms(self) -> Callable[[], Any]:
        return self.value.transforms

    @property
    def meta(self) -> dict[str, Any]:
        return self.value.meta


def enum_name(name: str) -> str:
    """The weights enum's class name of a zoo name (``resnet50_gn_ws`` -> ``Resnet50GnWs_Weights``)."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_")) + "_Weights"


def member_name(entry: ZooEntry) -> str:
    """The member of ``entry``'s published weights: ``COCO_V1`` (detectors) or ``IMAGENET_V1`` (backbones)."""
    return "IMAGENET_V1" if entry.task == "backbone" else "COCO_V1"


def _weights(entry: ZooEntry) -> Weights:
    preset = BackbonePreset if entry.task == "backbone" else DetectionPreset
    return Weights(url=entry.model_url, transforms=preset, meta=entry_meta(entry))


def _make_enum(entry: ZooEntry) -> type[WeightsEnum]:
    members = {}
    if entry.has_weights:
        weights = _weights(entry)
        members = {member_name(entry): weights, "DEFAULT": weights}  # equal values: DEFAULT is an alias
    cls = WeightsEnum(enum_name(entry.name), members, module=__name__, qualname=enum_name(entry.name))
    cls.__doc__ = f"Published weights of :func:`wszoo.{entry.name}`."
    cls.model_name = entry.name  # the zoo entry (not a member: set after the enum is made)
    return cls


# Keyed by the entry itself: an entry registered at run time under a name gets its own enum.
_ENUMS: dict[ZooEntry, type[WeightsEnum]] = {entry: _make_enum(entry) for entry in ENTRIES}
_BY_CLASS_NAME: dict[str, type[WeightsEnum]] = {cls.__name__: cls for cls in _ENUMS.values()}


def __getattr__(name: str) -> type[WeightsEnum]:
    # The enums are found by name here, so pickle (which stores the class by module and name) and
    # ``from wszoo.hub.pretrained import FasterRcnnR50FpnGnWsAll1xCoco_Weights`` work.
    try:
        return _BY_CLASS_NAME[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_BY_CLASS_NAME))


def get_model_weights(name: Union[str, Callable[..., Any]]) -> type[WeightsEnum]:
    """The weights enum of a zoo model: a name, an alias (MMDetection config name) or a builder.

    Its members are the published weights (``COCO_V1`` / ``IMAGENET_V1``) and ``DEFAULT``; it is
    empty for an entry without published weights.

    Raises:
        wszoo.UnknownModelError: No zoo entry has that name.
    """
    if callable(name) and not isinstance(name, str):
        name = getattr(name, "__name__", repr(name))
    entry = get_entry(name)
    if entry not in _ENUMS:  # registered at run time (tests, experiments)
        _ENUMS[entry] = _make_enum(entry)
    return _ENUMS[entry]


_QUALIFIED = re.compile(r"(?P<owner>.+)\.(?P<member>[A-Z][A-Z0-9_]*)")


def get_weight(name: str) -> WeightsEnum:
    """Weights by full name: ``"<enum class>.<MEMBER>"`` or ``"<model name or alias>.<MEMBER>"``.

    Example: ``get_weight("MaskRcnnR50FpnGnWsAll2xCoco_Weights.DEFAULT")`` or
    ``get_weight("mask_rcnn_r50_fpn_gn_ws_all_2x_coco.COCO_V1")``.

    Raises:
        ValueError: The name has no ``.MEMBER`` part, or the enum has no such member.
        wszoo.UnknownModelError: The part before the dot names no enum and no model.
    """
    match = _QUALIFIED.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        raise ValueError(f"expected '<model or enum name>.<MEMBER>' (e.g. 'resnet50_gn_ws.IMAGENET_V1'), got {name!r}")
    owner, member = match.group("owner"), match.group("member")
    cls = _BY_CLASS_NAME.get(owner) or get_model_weights(owner)
    try:
        return cls[member]
    except KeyError:
        known = ", ".join(cls.__members__) or "none: the model has no published weights"
        raise ValueError(f"{cls.__name__} has no member {member!r}; its members are {known}") from None


def entry_of(weights: WeightsEnum) -> ZooEntry:
    """The zoo entry whose published checkpoint ``weights`` are."""
    return get_entry(type(weights).model_name)
