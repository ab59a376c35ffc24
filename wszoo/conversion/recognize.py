"""Which zoo model an MMDetection checkpoint is: from its meta, its file name, or its key shapes.

Signals, strongest first; a model named by the meta or the file name must also agree with the
architecture and class count read off the keys (else :class:`CheckpointError` says both):

1. the exact file name of a published checkpoint;
2. the meta MMDetection writes: 2.x's ``exp_name`` (the config's file name), 3.x's
   ``experiment_name`` (``<config>_<YYYYMMDD_HHMMSS>``), then the ``work_dir`` line of the config
   text (2.x ``meta["config"]``, 3.x ``meta["cfg"]``: the *merged* config, so it has no ``_base_``
   line; ``tools/train.py`` sets ``work_dir = './work_dirs/<config>'`` unless told otherwise);
3. a file name that starts with a zoo config name, v2 or v3 spelling (a published file, a user's
   ``<config>_epoch_12.pth``), or else its folder's name (MMDetection's ``work_dirs/<config>/epoch_12.pth``);
4. the key layout, when exactly one published model has it.

Names are compared in one spelling (lower case, ``-`` as ``_``), so ``mask-rcnn_r50_fpn_gn-ws-all_2x_coco``,
``mask_rcnn_r50_fpn_gn_ws-all_2x_coco`` and the builder name are the same; the longest name followed by
``_``, ``.`` or the end wins, so ``..._2x_coco`` and ``..._20_23_24e_coco`` cannot be confused.
"""

from __future__ import annotations

import os
import re
from pathlib import PurePath
from typing import Any, Iterator, Mapping, Optional, Union

from torch import Tensor

from ..arch import DetectorArch, ResNetArch
from ..checkpoint_io import CheckpointError
from ..registry import entries
from ..zoo import ZooEntry

__all__ = [
    "describe_layout",
    "infer_arch",
    "layout_matches",
    "model_named_by",
    "recognise",
    "source_config_name",
    "unrecognised_message",
]

Arch = Union[DetectorArch, ResNetArch]

# Meta keys whose value is a config's name: mmdet 2.x ``exp_name`` ("<config>.py"), mmengine's
# ``experiment_name`` ("<config>_<timestamp>"), and two spellings older tools wrote.
_NAME_KEYS = ("exp_name", "experiment_name", "config_name", "cfg_name")
# Meta keys holding the config's text: mmdet 2.x ``config``, mmengine (mmdet 3.x) ``cfg``.
_TEXT_KEYS = ("config", "cfg")
_WORK_DIR = re.compile(r"""^\s*work_dir\s*=\s*['"]([^'"]+)['"]""", re.M)


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


def _spelling(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def model_named_by(text: str) -> Optional[ZooEntry]:
    """The zoo entry whose name ``text`` starts with: builder name or MMDetection v2/v3 config name.

    The longest name wins, and it must be followed by ``_``, ``.`` or the end of ``text``
    (``mask_rcnn_r50_fpn_gn_ws-all_2x_coco_20200226-16acb762.pth``,
    ``mask-rcnn_r50_fpn_gn-ws-all_2x_coco_20231005_120000``). None when no name fits.
    """
    key = _spelling(text)
    best: Optional[ZooEntry] = None
    best_length = 0
    for entry in entries():
        for name in (entry.name, entry.mmdet_v2_config, entry.mmdet_v3_config):
            spelt = _spelling(name) if name else ""
            fits = spelt and key.startswith(spelt) and key[len(spelt) : len(spelt) + 1] in ("", "_", ".")
            if fits and len(spelt) > best_length:
                best, best_length = entry, len(spelt)
    return best


def _names_in_meta(meta: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """``(where, text)`` of every meta value that may name the config, strongest first."""
    for key in _NAME_KEYS:
        if isinstance(meta.get(key), str) and meta[key].strip():
            yield f"its meta[{key!r}] ({meta[key]})", PurePath(meta[key].strip()).name
    for key in _TEXT_KEYS:
        text = meta.get(key)
        match = _WORK_DIR.search(text) if isinstance(text, str) else None
        if match and match.group(1).rstrip("/"):
            work_dir = match.group(1).rstrip("/")
            yield f"the work_dir of the config in its meta[{key!r}] ({work_dir})", PurePath(work_dir).name


def _names_in_path(path: Union[str, os.PathLike]) -> Iterator[tuple[str, str]]:
    path = PurePath(path)
    yield f"its file name ({path.name})", path.name
    if path.parent.name:
        yield f"its folder's name ({path.parent.name})", path.parent.name


def source_config_name(meta: Mapping[str, Any]) -> Optional[str]:
    """The config name recorded in an MMDetection checkpoint's meta (strongest signal), if any."""
    return next((name for _, name in _names_in_meta(meta)), None)


def layout_matches(arch: Arch, num_classes: Optional[int]) -> list[ZooEntry]:
    """Published zoo models whose architecture and class count a checkpoint's keys fit."""
    return [e for e in entries() if e.has_weights and _agrees(e, arch, num_classes)]


def _agrees(entry: ZooEntry, arch: Arch, num_classes: Optional[int]) -> bool:
    # Keys cannot tell GN+WS from GN-only convs, so weight_standardization is not compared.
    mine = entry.arch
    if type(mine) is not type(arch) or (mine.depth, mine.groups, mine.base_width) != (
        arch.depth,
        arch.groups,
        arch.base_width,
    ):
        return False
    return not isinstance(arch, DetectorArch) or (mine.with_mask == arch.with_mask and entry.num_classes == num_classes)


def recognise(
    state_dict: Mapping[str, Tensor],
    *,
    meta: Mapping[str, Any] = (),
    file_name: Union[str, os.PathLike, None] = None,
) -> Optional[ZooEntry]:
    """The zoo entry a checkpoint belongs to (see the module's docstring for the order of signals).

    Args:
        state_dict: The checkpoint's tensors, with MMDetection's key names.
        meta: The checkpoint's ``meta`` dict, if it has one.
        file_name: The checkpoint's file name or path (a path lets its folder's name count too).

    Returns:
        The entry, or None when nothing names a model and several (or no) published models have
        the checkpoint's key layout; :func:`unrecognised_message` explains which.

    Raises:
        CheckpointError: The meta or the file name names a zoo model whose architecture or class
            count differs from the checkpoint's keys; or the keys are not a ResNet-based model's.
    """
    arch, num_classes = infer_arch(state_dict)
    if file_name is not None:
        published = next((e for e in entries() if e.file_name == PurePath(file_name).name), None)
        if published is not None:
            return _checked(published, arch, num_classes, where=f"its file name ({PurePath(file_name).name})")
    named = [*_names_in_meta(dict(meta) if meta else {}), *(_names_in_path(file_name) if file_name else ())]
    for where, text in named:
        entry = model_named_by(text)
        if entry is not None:
            return _checked(entry, arch, num_classes, where=where)
    matches = layout_matches(arch, num_classes)
    # Keys cannot tell GN+WS from GN-only backbones, nor a 2x from a 20-23-24e detector: only a
    # unique match is an answer; otherwise the caller must name the model.
    return matches[0] if len(matches) == 1 else None


def _checked(entry: ZooEntry, arch: Arch, num_classes: Optional[int], *, where: str) -> ZooEntry:
    if not _agrees(entry, arch, num_classes):
        raise CheckpointError(
            f"{where} names the zoo model {entry.name}, {describe_layout(entry.arch, entry.num_classes)}, but the "
            f"checkpoint's keys are those of {describe_layout(arch, num_classes)}; name the model it really is "
            "with --model NAME (model= in Python)"
        )
    return entry


def describe_layout(arch: Arch, num_classes: Optional[int]) -> str:
    """An architecture and class count in words, e.g. 'a Mask R-CNN with a ResNet-50 backbone and 80 classes'."""
    family = f"ResNeXt-{arch.depth} {arch.groups}x{arch.base_width}d" if arch.groups > 1 else f"ResNet-{arch.depth}"
    if not isinstance(arch, DetectorArch):
        return f"a {family} ImageNet backbone"
    detector = "Mask R-CNN" if arch.with_mask else "Faster R-CNN"
    classes = f" and {num_classes - 1} classes" if num_classes else ""
    return f"a {detector} with a {family} backbone{classes}"


def unrecognised_message(state_dict: Mapping[str, Tensor], *, name: str) -> str:
    """Why :func:`recognise` found no single model for ``name``, naming the candidates, and what to do."""
    arch, num_classes = infer_arch(state_dict)
    candidates = layout_matches(arch, num_classes)
    layout = describe_layout(arch, num_classes)
    fix = (
        "pass --model NAME (model= in Python), or name the file after its MMDetection config, e.g. "
        "<config>_epoch_12.pth (see `wszoo list`)"
    )
    if not candidates:
        return (
            f"cannot tell which zoo model {name} is: its keys are those of {layout}, which no published zoo model "
            f"has; {fix}"
        )
    listed = ", ".join(e.name for e in candidates)
    return (
        f"cannot tell which zoo model {name} is: its keys are those of {layout}, which {len(candidates)} zoo models "
        f"share (GN+WS and GN-only convs, or schedules, look the same): {listed}; {fix}"
    )
