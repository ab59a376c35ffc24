"""Conversion of an MMDetection state dict into a wszoo state dict: a pure function.

Every source key must be renamed by exactly one rule and every target key produced, with the
shape the model expects, or :class:`ConversionError` lists what is left over. No key is matched
by suffix and nothing is skipped silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor

from ..modeling.detector import CLASS_TENSORS

__all__ = ["ConversionError", "ConversionReport", "KeyMapping", "ROW_OPS", "convert_state_dict"]


def _background_last_to_first(t: Tensor) -> Tensor:
    # MMDetection's fc_cls puts background at the last row; torchvision's cls_score at row 0.
    return torch.cat([t[-1:], t[:-1]])


def _prepend_background_rows(count: int) -> Callable[[Tensor], Tensor]:
    # MMDetection's class-specific regression and mask logits have no background rows;
    # torchvision's have them at the front. They are never used at test time: zeros.
    def pad(t: Tensor) -> Tensor:
        return torch.cat([t.new_zeros((count, *t.shape[1:])), t])

    pad.__name__ = f"prepend_{count}_background_rows"
    return pad


# Target key pattern -> transformation of the class rows, for every class-specific layer of the
# detectors. Applied after renaming.
ROW_OPS: list[tuple[str, Callable[[Tensor], Tensor]]] = [
    (
        rf"{re.escape(c.module)}\.(weight|bias)",
        _background_last_to_first if c.mmdet_background else _prepend_background_rows(c.rows_per_class),
    )
    for c in CLASS_TENSORS
]


@dataclass(frozen=True)
class KeyMapping:
    """One converted tensor: where it came from, where it went, and what was done to it."""

    source: str
    target: str
    source_shape: tuple[int, ...]
    target_shape: tuple[int, ...]
    transform: str


@dataclass
class ConversionReport:
    """Every mapping of a conversion, in source order."""

    mappings: list[KeyMapping] = field(default_factory=list)

    def to_json_dict(self) -> dict:
        return {
            "num_tensors": len(self.mappings),
            "mappings": [
                {
                    "source": m.source,
                    "target": m.target,
                    "source_shape": list(m.source_shape),
                    "target_shape": list(m.target_shape),
                    "transform": m.transform,
                }
                for m in self.mappings
            ],
        }


class ConversionError(ValueError):
    """A checkpoint does not fit the model; the message lists every key that does not fit."""

    def __init__(self, *, unconsumed: Sequence[str], missing: Sequence[str], mismatched: Sequence[str], what: str):
        self.unconsumed, self.missing, self.mismatched = list(unconsumed), list(missing), list(mismatched)
        lines = [f"the checkpoint does not fit {what}:"]
        for title, items in (
            ("source keys no rule converts", self.unconsumed),
            ("model keys the checkpoint does not provide", self.missing),
            ("shape mismatches (source -> target: got, expected)", self.mismatched),
        ):
            if items:
                shown = items[:20] + ([f"... and {len(items) - 20} more"] if len(items) > 20 else [])
                lines.append(f"  {title} ({len(items)}):")
                lines.extend(f"    {item}" for item in shown)
        lines.append("Check that the checkpoint is one of this model's (see `wszoo list`), or pass --model.")
        super().__init__("\n".join(lines))


def _rename(key: str, rules: Sequence[tuple[re.Pattern, str]]) -> str | None:
    for pattern, replacement in rules:
        if pattern.fullmatch(key):
            return pattern.sub(replacement, key)
    return None


def _row_op(target: str):
    for pattern, op in ROW_OPS:
        if re.fullmatch(pattern, target):
            return op
    return None


def convert_state_dict(
    source: Mapping[str, Tensor],
    *,
    rules: Sequence[tuple[str, str]],
    target_shapes: Mapping[str, Sequence[int]],
    what: str = "the model",
) -> tuple[dict[str, Tensor], ConversionReport]:
    """Renames and reshapes ``source`` into exactly the keys of ``target_shapes``.

    Args:
        source: The MMDetection state dict (tensors).
        rules: Ordered ``(regex, replacement)`` rename rules; the first full match wins.
        target_shapes: Every key the model expects, with its shape.
        what: How to name the model in errors.

    Returns:
        The converted state dict (in ``target_shapes`` order) and the report of every mapping.

    Raises:
        ConversionError: A source key is not converted, a target key is not produced, two
            sources map to one target, or a shape differs.
    """
    compiled = [(re.compile(p), r) for p, r in rules]
    converted: dict[str, Tensor] = {}
    report = ConversionReport()
    unconsumed, mismatched, mismatched_targets = [], [], set()
    for key, tensor in source.items():
        target = _rename(key, compiled)
        if target is None or target not in target_shapes or target in converted:
            unconsumed.append(key if target is None else f"{key} -> {target}")
            continue
        op = _row_op(target)
        value = op(tensor) if op is not None else tensor
        expected = tuple(target_shapes[target])
        if tuple(value.shape) != expected:
            mismatched.append(f"{key} -> {target}: {tuple(tensor.shape)} -> {tuple(value.shape)}, expected {expected}")
            mismatched_targets.add(target)
            continue
        converted[target] = value
        report.mappings.append(
            KeyMapping(key, target, tuple(tensor.shape), expected, op.__name__.strip("_") if op else "copy")
        )
    missing = [k for k in target_shapes if k not in converted and k not in mismatched_targets]
    if unconsumed or missing or mismatched:
        raise ConversionError(unconsumed=unconsumed, missing=missing, mismatched=mismatched, what=what)
    return {k: converted[k] for k in target_shapes}, report
