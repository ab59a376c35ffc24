"""Weights: what a ``weights=`` argument means, and getting a native state dict for it.

``"DEFAULT"`` (or ``pretrained=True``) means the entry's published checkpoint: downloaded
through :mod:`wszoo.hub.download` (mirrors, sha256 verification, cache), converted once, and cached
as safetensors next to it, keyed by the source hash and the converter version. Later loads read
only that safetensors file. A local ``.pth`` (MMDetection or wszoo layout) or ``.safetensors``
path works too, and so does ``"hf-hub:ORG/REPO[@REVISION]"`` (see :mod:`wszoo.hub.hf_load`).

Weights written by ``wszoo train`` record their model spec (:mod:`wszoo.model_spec`);
:func:`trained_weights` finds it, downloading a Hub repository's file first.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from filelock import FileLock
from torch import Tensor

from ..arch import DetectorArch
from ..checkpoint_io import CheckpointError, load_torch_file, read_safetensors, state_dict_of
from ..conversion.api import CONVERTER_VERSION, convert_file, convert_for, infer_arch
from ..model_spec import read_spec
from ..zoo import ZooEntry
from .download import DownloadError, default_cache_dir, download
from .hf_load import HubWeights, fetch, published_from_hub
from .hf_load import load_state_dict as load_from_hub

__all__ = [
    "WeightsArg",
    "resolve_weights",
    "weights_file",
    "trained_weights",
    "load_state_dict",
    "converted_cache_path",
    "published_weights_file",
]

WeightsArg = Union[None, str, os.PathLike, ZooEntry]


def resolve_weights(entry: ZooEntry, weights: WeightsArg, *, pretrained: bool = False):
    """Turns ``weights`` / ``pretrained`` into None, a zoo entry (published weights), a file path, or a
    :class:`wszoo.hub.hf_load.HubWeights` (``"hf-hub:ORG/REPO[@REVISION]"``)."""
    if pretrained and weights not in (None, "DEFAULT"):
        raise ValueError(f"pass either pretrained=True or weights=..., not both (got weights={weights!r})")
    if pretrained or weights == "DEFAULT":
        weights = entry
    if weights is None:
        return None
    if isinstance(weights, ZooEntry):
        if not weights.has_weights:
            raise ValueError(f"{weights.name} has no published weights; build it with weights=None")
        if weights.arch != entry.arch:
            raise ValueError(f"weights of {weights.name} do not fit {entry.name}: {weights.arch} vs {entry.arch}")
        return weights
    if isinstance(weights, str) and weights.startswith("hf-hub:"):
        return HubWeights.parse(weights)
    if isinstance(weights, (str, os.PathLike)):
        path = Path(weights).expanduser()
        if path.is_file():
            return path
        raise ValueError(
            f"weights={str(weights)!r} is neither 'DEFAULT', a zoo entry, nor an existing file; "
            "pass weights='DEFAULT' for the published weights or the path of a .pth/.safetensors file"
        )
    raise TypeError(f"weights must be None, 'DEFAULT', a ZooEntry or a file path, got {type(weights).__name__}")


def weights_file(entry: ZooEntry, resolved) -> Optional[Path]:
    """The local file behind resolved weights: a file as given, or a Hub repository's weights file
    downloaded into huggingface_hub's cache (its architecture checked); None for the published
    weights and for none."""
    if isinstance(resolved, Path):
        return resolved
    if isinstance(resolved, HubWeights):
        return fetch(entry, resolved)
    return None


def trained_weights(entry: ZooEntry, weights: WeightsArg) -> tuple[WeightsArg, Optional[dict]]:
    """``(weights, spec)``: the model spec that ``weights`` record if ``wszoo train`` wrote them
    (else None), and what to pass as ``weights=`` to build them (a Hub repository becomes its
    downloaded file, so it is fetched once)."""
    file = weights_file(entry, resolve_weights(entry, weights))
    if file is None:
        return weights, None
    return file, read_spec(file)


def converted_cache_path(entry: ZooEntry, cache_dir: Optional[Path] = None) -> Path:
    """Where the converted safetensors of ``entry``'s published checkpoint is cached."""
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return directory / "wszoo" / f"{entry.name}-{entry.sha256_prefix}-v{CONVERTER_VERSION}.safetensors"


def load_state_dict(
    entry: ZooEntry,
    weights,
    *,
    num_classes: Optional[int] = None,
    progress: bool = True,
    cache_dir: Optional[Path] = None,
) -> dict[str, Tensor]:
    """The native state dict for ``entry`` from resolved ``weights``.

    Args:
        entry: The model being built.
        weights: A zoo entry (published weights), a local file or a ``HubWeights``.
        num_classes: Class count of the model (with background), for converting local files.
        progress: Show a download progress bar.
        cache_dir: Download cache (default: ``WSZOO_CACHE`` or torch.hub's checkpoints).
    """
    if isinstance(weights, ZooEntry):
        return read_safetensors(published_weights_file(weights, progress=progress, cache_dir=cache_dir))[0]
    if not isinstance(weights, Path):  # a HubWeights, from "hf-hub:ORG/REPO[@REVISION]"
        return load_from_hub(entry, weights)
    return _local(entry, weights, num_classes=num_classes)


def published_weights_file(entry: ZooEntry, *, progress: bool = True, cache_dir: Optional[Path] = None) -> Path:
    """The converted safetensors of ``entry``'s published checkpoint: downloaded, verified and
    converted on first use, then read from the cache."""
    converted = converted_cache_path(entry, cache_dir)
    if converted.is_file():
        return converted
    try:
        source = download(
            url=entry.model_url,
            file_name=entry.file_name,
            sha256_prefix=entry.sha256_prefix,
            cache_dir=cache_dir,
            legacy_mirrors=entry.mirrors,
            progress=progress,
        )
    except DownloadError:
        if not entry.hf_repo:
            raise
        # Last: the Hub copy's hash is only its metadata's claim.
        return published_from_hub(entry)
    converted.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(converted) + ".lock"):  # DDP ranks convert once
        if not converted.is_file():
            convert_file(source, converted, model=entry.name)
    return converted


def _is_native(entry: ZooEntry, state_dict: dict) -> bool:
    if isinstance(entry.arch, DetectorArch):
        return any(k.startswith(("backbone.body.", "roi_heads.")) for k in state_dict)
    return "norm1.weight" in state_dict


def _not_a_training_checkpoint(obj: object, path: Path) -> object:
    # A resumable training checkpoint holds the model among optimizer and RNG states; point to
    # the reader that understands it rather than failing on its first non-tensor entry.
    if isinstance(obj, dict) and {"model", "optimizer"} <= obj.keys():
        raise CheckpointError(
            f"{path} is a wszoo training checkpoint (resumable state, not weights); load it with "
            "wszoo.training.checkpoints.load_trained(path), or use the run's final.safetensors"
        )
    return obj


def _local(entry: ZooEntry, path: Path, *, num_classes: Optional[int]) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        state_dict, _ = read_safetensors(path)
    else:
        state_dict, _ = state_dict_of(_not_a_training_checkpoint(load_torch_file(path), path), path)
    if _is_native(entry, state_dict):
        return state_dict
    if num_classes is None and not isinstance(entry.arch, DetectorArch):
        num_classes = infer_arch(state_dict)[1]
    return convert_for(state_dict, arch=entry.arch, num_classes=num_classes, what=f"{entry.name} ({path.name})")[0]
