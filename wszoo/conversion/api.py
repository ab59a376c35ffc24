"""Whole-checkpoint conversion: recognise the model, convert, write safetensors with metadata."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Optional, Union

import torch
from torch import Tensor

from ..arch import DetectorArch, ResNetArch
from ..checkpoint_io import CheckpointError, read_checkpoint, save_safetensors, sha256_of_file, write_file_atomic
from ..modeling.detector import build_detector, build_resnet
from ..registry import get_entry
from ..zoo import ZooEntry
from .convert import ConversionReport, convert_state_dict
from .recognize import infer_arch, recognise, unrecognised_message
from .rules import BACKBONE_RULES, DETECTOR_RULES

__all__ = ["CONVERTER_VERSION", "infer_arch", "recognise", "convert_for", "convert_file", "target_shapes"]

# Bump when a change alters converted bytes: cached conversions are keyed by it.
CONVERTER_VERSION = "1"

Arch = Union[DetectorArch, ResNetArch]


def target_shapes(arch: Arch, *, num_classes: Optional[int]) -> dict[str, torch.Size]:
    """Every state-dict key of the native model and its shape (built on the meta device)."""
    with torch.device("meta"):
        if isinstance(arch, DetectorArch):
            model = build_detector(arch=arch, num_classes=num_classes or 81)
        else:
            model = build_resnet(arch=arch, num_classes=num_classes)
    return {k: v.shape for k, v in model.state_dict().items()}


def convert_for(
    state_dict: Mapping[str, Tensor], *, arch: Arch, num_classes: Optional[int], what: str = "the model"
) -> tuple[dict[str, Tensor], ConversionReport]:
    """Converts an MMDetection state dict for ``arch``; see :func:`convert_state_dict`."""
    rules = DETECTOR_RULES if isinstance(arch, DetectorArch) else BACKBONE_RULES
    return convert_state_dict(
        state_dict, rules=rules, target_shapes=target_shapes(arch, num_classes=num_classes), what=what
    )


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
        model: Zoo name or alias; when None, recognised from the checkpoint's meta, its file or
            folder name, or its key layout (:mod:`wszoo.conversion.recognize`).
        report: Where to write every mapping as JSON, if given.
        source_sha256: The source's sha256 when already known (it is computed otherwise).

    Returns:
        The zoo entry converted for, and the report.
    """
    source = Path(source)
    state_dict, meta = read_checkpoint(source)
    entry = get_entry(model) if model else recognise(state_dict, meta=meta, file_name=source)
    if entry is None:
        raise CheckpointError(unrecognised_message(state_dict, name=source.name))
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
        text = json.dumps({"model": entry.name, **mapping.to_json_dict()}, indent=1) + "\n"
        write_file_atomic(report, text.encode())
    return entry, mapping
