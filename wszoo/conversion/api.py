"""Whole-checkpoint conversion: recognise the model, convert, write safetensors with metadata."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from torch import Tensor

from ..arch import DetectorArch, ResNetArch
from ..registry import get_entry
from ..zoo import ENTRIES, ZooEntry
from .checkpoint import CheckpointError, read_checkpoint, save_safetensors, source_config_name
from .convert import ConversionReport, convert_state_dict
from .rules import BACKBONE_RULES, DETECTOR_RULES

__all__ = ["CONVERTER_VERSION", "infer_arch", "recognise", "convert_for", "convert_file", "target_shapes"]

# Bump when a change alters converted bytes: cached conversions are keyed by it.
CONVERTER_VERSION = "1"

Arch = Union[DetectorArch, ResNetArch]


def target_shapes(arch: Arch, *, num_classes: Optional[int]) -> dict[str, torch.Size]:
    """Every state-dict key of the native model and its shape (built on the meta device)."""
    from ..models import build_detector, build_resnet

    with torch.device("meta"):
        if isinstance(arch, DetectorArch):
            model = build_detector(arch=arch, num_classes=num_classes or 81)
        else:
            model = build_resnet(arch=arch, num_classes=num_classes)
    return {k: v.shape for k, v in model.state_dict().items()}


def infer_arch(state_dict: Mapping[str, Tensor], *, weight_standardization: bool = True) -> tuple[Arch, Optional[int]]:
    """Architecture and class count (with background) read off MMDetection key names and shapes.

    Whether convs are weight-standardized cannot be read off the keys; it is an argument.
    """
    detector = any(k.startswith("backbone.") for k in state_dict)
    prefix = "backbone." if detector else ""
    blocks = {int(m.group(1)) for k in state_dict if (m := re.match(rf"{re.escape(prefix)}layer3\.(\d+)\.", k))}
    bottleneck = f"{prefix}layer1.0.conv3.weight" in state_dict
    conv2 = state_dict.get(f"{prefix}layer1.0.conv2.weight")
    if not blocks or conv2 is None:
        raise CheckpointError("not a ResNet-based MMDetection checkpoint: no backbone layer1/layer3 keys found")
    depth = {(True, 6): 50, (True, 23): 101, (False, 2): 18, (False, 6): 34}.get((bottleneck, max(blocks) + 1))
    if depth is None:
        raise CheckpointError(f"unsupported ResNet layout: {max(blocks) + 1} blocks in layer3")
    groups = conv2.shape[0] // conv2.shape[1]
    base_width = conv2.shape[0] // groups if groups > 1 else 64
    if not detector:
        fc = state_dict.get("fc.weight")
        return ResNetArch(depth, groups, base_width, weight_standardization), (fc.shape[0] if fc is not None else None)
    with_mask = any(k.startswith("roi_head.mask_head.") for k in state_dict)
    cls = state_dict.get("roi_head.bbox_head.fc_cls.weight")
    num_classes = cls.shape[0] if cls is not None else None
    return DetectorArch(depth, groups, base_width, with_mask, weight_standardization), num_classes


def recognise(
    state_dict: Mapping[str, Tensor], *, meta: Mapping[str, Any] = (), file_name: Optional[str] = None
) -> Optional[ZooEntry]:
    """The zoo entry a checkpoint belongs to, from its file name, its meta, or its key shapes."""
    if file_name:
        for entry in ENTRIES:
            if entry.file_name == file_name:
                return entry
    config = source_config_name(dict(meta)) if meta else None
    if config:
        try:
            return get_entry(config)
        except KeyError:
            pass
    arch, num_classes = infer_arch(state_dict)
    matches = [
        e for e in ENTRIES
        if e.has_weights and e.arch.depth == arch.depth and e.arch.groups == arch.groups
        and type(e.arch) is type(arch) and getattr(e.arch, "with_mask", None) == getattr(arch, "with_mask", None)
        and (e.task == "backbone" or e.num_classes == num_classes)
    ]
    # Keys cannot tell GN+WS from GN-only backbones, nor a 2x from a 20-23-24e detector: only a
    # unique match is an answer; otherwise the caller must name the model.
    return matches[0] if len(matches) == 1 else None


def convert_for(
    state_dict: Mapping[str, Tensor], *, arch: Arch, num_classes: Optional[int], what: str = "the model"
) -> tuple[dict[str, Tensor], ConversionReport]:
    """Converts an MMDetection state dict for ``arch``; see :func:`convert_state_dict`."""
    rules = DETECTOR_RULES if isinstance(arch, DetectorArch) else BACKBONE_RULES
    return convert_state_dict(state_dict, rules=rules, target_shapes=target_shapes(arch, num_classes=num_classes),
                              what=what)


def convert_file(
    source: Union[str, os.PathLike],
    destination: Union[str, os.PathLike],
    *,
    model: Optional[str] = None,
    report: Union[str, os.PathLike, None] = None,
    source_sha256: Optional[str] = None,
) -> tuple[ZooEntry, ConversionReport]:
    """Converts an MMDetection ``.pth`` into a wszoo safetensors file with metadata.

    Args:
        source: The MMDetection checkpoint.
        destination: The ``.safetensors`` file to write (atomically).
        model: Zoo name or alias; recognised from the checkpoint when None.
        report: Where to write every mapping as JSON, if given.
        source_sha256: The source's sha256 when already known (it is computed otherwise).

    Returns:
        The zoo entry converted for, and the report.
    """
    from ..download import sha256_of_file

    source = Path(source)
    state_dict, meta = read_checkpoint(source)
    entry = get_entry(model) if model else recognise(state_dict, meta=meta, file_name=source.name)
    if entry is None:
        arch, num_classes = infer_arch(state_dict)
        raise CheckpointError(
            f"cannot tell which zoo model {source.name} is: its keys have the layout of {arch} with "
            f"{num_classes} classes, which matches no zoo model or several (GN+WS and GN-only backbones, or "
            "2x and 20-23-24e detectors, share a layout); pass --model NAME (see `wszoo list`)"
        )
    arch = entry.arch
    num_classes = entry.num_classes if isinstance(arch, DetectorArch) else infer_arch(state_dict)[1]
    converted, mapping = convert_for(state_dict, arch=arch, num_classes=num_classes, what=entry.name)
    metadata = {
        "format": "pt",
        "wszoo_model": entry.name,
        "wszoo_converter_version": CONVERTER_VERSION,
        "source_file": source.name,
        "source_sha256": source_sha256 or sha256_of_file(source),
        "classes": list(entry.classes),
        "num_classes": num_classes,
    }
    save_safetensors(converted, destination, metadata=metadata)
    if report is not None:
        Path(report).write_text(json.dumps({"model": entry.name, **mapping.to_json_dict()}, indent=1) + "\n")
    return entry, mapping
