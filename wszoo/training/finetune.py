"""Fine-tuning: a zoo detector or backbone as the start of a detector with other classes.

Class-specific tensors are the rows of the classifier (``cls_score``), the class-specific box
regression (``bbox_pred``) and the mask logits (``mask_fcn_logits``). Changing the class count
re-initialises them and loads every other tensor strictly (equal names and shapes, nothing
left over). Alternatively, ``classes=[...]`` keeps the pretrained rows of a subset of the
source classes, by name, in the order given.

    >>> model, report = build_finetune_model("mask_rcnn_r50_fpn_gn_ws_all_2x_coco", num_classes=4)  # doctest: +SKIP
    >>> model, report = build_finetune_model(
    ...     "faster_rcnn_r50_fpn_gn_ws_all_1x_coco", classes=["person", "car"])  # doctest: +SKIP
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from ..arch import DetectorArch
from ..hub.weights import WeightsArg, load_state_dict, resolve_weights
from ..modeling.detector import CLASS_TENSORS, build_detector, class_specific_keys
from ..registry import get_entry

__all__ = ["CLASS_SPECIFIC_KEYS", "FinetuneReport", "class_rows", "load_for_finetuning", "build_finetune_model"]

# Tensors whose first dimension is indexed by class (label 0 = background).
CLASS_SPECIFIC_KEYS = class_specific_keys()


@dataclass
class FinetuneReport:
    """What :func:`load_for_finetuning` did.

    Attributes:
        loaded: Keys copied unchanged from the source.
        reinitialised: Class-specific keys left at their fresh initialisation.
        subset: Class-specific keys built from the selected source rows.
        classes: Names of labels 1..K of the new model, when known.
    """

    loaded: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)
    subset: list[str] = field(default_factory=list)
    classes: tuple[str, ...] = ()


def class_rows(key: str, labels: Sequence[int]) -> Tensor:
    """Rows of class-specific tensor ``key`` that belong to source ``labels`` (with 0 first)."""
    labels = torch.as_tensor(list(labels), dtype=torch.int64)
    per_class = next(c.rows_per_class for c in CLASS_TENSORS if key.startswith(c.module + "."))
    return (labels[:, None] * per_class + torch.arange(per_class)).reshape(-1)


def load_for_finetuning(
    model: nn.Module, state_dict: dict[str, Tensor], *, source_labels: Optional[Sequence[int]] = None
) -> FinetuneReport:
    """Loads ``state_dict`` into a detector whose class count may differ.

    Args:
        model: The new detector.
        state_dict: The source detector's native state dict.
        source_labels: For a class subset: the source label of each new label 1..K; the new
            class-specific rows are those rows of the source (background row kept). None
            re-initialises class-specific tensors whose shape differs.

    Raises:
        ValueError: Names differ, or a tensor that is not class-specific has another shape.
    """
    target = model.state_dict()
    missing, unexpected = sorted(set(target) - set(state_dict)), sorted(set(state_dict) - set(target))
    if missing or unexpected:
        raise ValueError(
            f"the source does not fit the model: missing {missing[:10]} ({len(missing)}), unexpected "
            f"{unexpected[:10]} ({len(unexpected)}); is it the same architecture (Faster vs Mask R-CNN, depth)?"
        )
    report, new = FinetuneReport(), {}
    for key, value in state_dict.items():
        if key in CLASS_SPECIFIC_KEYS and source_labels is not None:
            new[key] = value[class_rows(key, [0, *source_labels])]
            report.subset.append(key)
        elif key in CLASS_SPECIFIC_KEYS and value.shape != target[key].shape:
            report.reinitialised.append(key)
            continue
        else:
            new[key] = value
            report.loaded.append(key)
        if new[key].shape != target[key].shape:
            raise ValueError(f"{key}: source shape {tuple(new[key].shape)} != model shape {tuple(target[key].shape)}")
    model.load_state_dict(new, strict=False)
    return report


class ClassRowsError(ValueError):
    """Class rows cannot be kept by name: the weights do not have the entry's classes."""


def load_backbone(model: nn.Module, state_dict: dict[str, Tensor]) -> list[str]:
    """Loads an ImageNet ResNet state dict (its ``fc`` dropped) into ``model.backbone.body`` strictly."""
    body = model.backbone.body
    weights = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
    body.load_state_dict(weights, strict=True)
    return [f"backbone.body.{k}" for k in weights]


def build_finetune_model(
    name: str,
    *,
    num_classes: Optional[int] = None,
    classes: Optional[Sequence[str]] = None,
    weights: WeightsArg = "DEFAULT",
    backbone: Optional[str] = None,
    backbone_weights: WeightsArg = "DEFAULT",
    progress: bool = True,
    **build_kwargs: Any,
) -> tuple[nn.Module, FinetuneReport]:
    """A detector of zoo architecture ``name`` initialised from pretrained weights for new classes.

    Args:
        name: Zoo detector name or alias (its architecture).
        num_classes: Classes with background of the new model (re-initialises class layers).
        classes: Instead of ``num_classes``: names of source classes to keep, in the new order.
        weights: Detector weights: ``"DEFAULT"`` (published), a local file, or None (with
            ``backbone``).
        backbone: A zoo backbone name (e.g. ``"resnet50_gn_ws"``) to initialise only the backbone
            from, with ``weights=None``.
        backbone_weights: The backbone's weights (``"DEFAULT"`` or a local file).
        progress: Show download progress.
        **build_kwargs: Passed to :func:`wszoo.modeling.detector.build_detector`.
    """
    entry = get_entry(name)
    if not isinstance(entry.arch, DetectorArch):
        raise ValueError(f"{entry.name} is a backbone; give a detector name and backbone={entry.name!r}")
    if (num_classes is None) == (classes is None):
        raise ValueError("give exactly one of num_classes (re-initialise class layers) or classes (keep a subset)")
    source_labels = None
    if classes is not None:
        source_labels = _labels_of(entry.classes, classes, entry.name)
        num_classes = len(classes) + 1
    model = build_detector(arch=entry.arch, num_classes=num_classes, **build_kwargs)
    report = FinetuneReport(classes=tuple(classes or ()))
    if weights is not None:
        resolved = resolve_weights(entry, weights)
        state = load_state_dict(entry, resolved, num_classes=entry.num_classes, progress=progress)
        rows = state["roi_heads.box_predictor.cls_score.weight"].shape[0]
        if source_labels is not None and rows != entry.num_classes:
            # Rows are picked by the entry's (COCO) class names: only its own class layout fits.
            raise ClassRowsError(
                f"these weights have {rows - 1} classes, not {entry.name}'s {entry.num_classes - 1}, so their rows "
                "cannot be picked by COCO class name; pass num_classes=... to re-initialise the class layers"
            )
        loaded = load_for_finetuning(model, state, source_labels=source_labels)
        loaded.classes = report.classes
        report = loaded
    if backbone is not None:
        if weights is not None:
            raise ValueError("backbone=... initialises the backbone only; pass weights=None with it")
        if source_labels is not None:
            raise ValueError("a class subset needs pretrained detector weights, not only a backbone")
        body_entry = get_entry(backbone)
        if body_entry.arch != entry.arch.backbone:
            raise ValueError(
                f"{body_entry.name} ({body_entry.arch}) is not the backbone of {entry.name} ({entry.arch.backbone})"
            )
        state = load_state_dict(body_entry, resolve_weights(body_entry, backbone_weights), progress=progress)
        report.loaded = load_backbone(model, state)
    return model, report


def _labels_of(source_classes: Sequence[str], wanted: Sequence[str], source: str) -> list[int]:
    if not source_classes:
        raise ValueError(f"{source} has no class names; use num_classes instead of classes")
    unknown = [c for c in wanted if c not in source_classes]
    if unknown:
        hints = {c: difflib.get_close_matches(c, source_classes, n=3) for c in unknown}
        raise ValueError(f"classes {unknown} are not classes of {source} (close matches: {hints})")
    if len(set(wanted)) != len(wanted):
        raise ValueError(f"classes contains duplicates: {list(wanted)}")
    return [list(source_classes).index(c) + 1 for c in wanted]
