"""Which zoo model an MMDetection checkpoint is: from its file name, its meta, or its key shapes."""

from __future__ import annotations

import re
from typing import Any, Mapping, Optional, Union

from torch import Tensor

from ..arch import DetectorArch, ResNetArch
from ..checkpoint_io import CheckpointError
from ..registry import UnknownModelError, entries, get_entry
from ..zoo import ZooEntry

__all__ = ["infer_arch", "recognise", "source_config_name"]

Arch = Union[DetectorArch, ResNetArch]


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
        for entry in entries():
            if entry.file_name == file_name:
                return entry
    config = source_config_name(dict(meta)) if meta else None
    if config:
        try:
            return get_entry(config)
        except UnknownModelError:
            pass
    arch, num_classes = infer_arch(state_dict)
    matches = [
        e
        for e in entries()
        if e.has_weights
        and e.arch.depth == arch.depth
        and e.arch.groups == arch.groups
        and type(e.arch) is type(arch)
        and getattr(e.arch, "with_mask", None) == getattr(arch, "with_mask", None)
        and (e.task == "backbone" or e.num_classes == num_classes)
    ]
    # Keys cannot tell GN+WS from GN-only backbones, nor a 2x from a 20-23-24e detector: only a
    # unique match is an answer; otherwise the caller must name the model.
    return matches[0] if len(matches) == 1 else None


def source_config_name(meta: Mapping[str, Any]) -> Optional[str]:
    """The MMDetection config file name recorded in a checkpoint's meta, if any."""
    config = meta.get("config")
    if isinstance(config, str):
        for line in config.splitlines():
            # mmdet v2 records the config text; the model name only appears in paths in it.
            if "work_dir" in line and "=" in line:
                return line.split("=", 1)[1].strip().strip("'\"").rsplit("/", 1)[-1] or None
    for key in ("config_name", "cfg_name"):
        if isinstance(meta.get(key), str):
            return meta[key]
    return None
