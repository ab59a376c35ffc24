"""Weights: what a ``weights=`` argument means, and getting a native state dict for it.

``"DEFAULT"`` (or ``pretrained=True``, or a member of the entry's weights enum, see
:mod:`wszoo.hub.pretrained`) means the entry's published checkpoint: downloaded
through :mod:`wszoo.hub.download` (mirrors, sha256 verification, cache), converted once, and cached
as safetensors next to it, keyed by the source hash and the converter version. Later loads read
only that safetensors file, after two cheap checks: its recorded digest (``<file>.sha256``, see
:func:`wszoo.hub.download.trusted_digest`: size and mtime unchanged, else it is re-hashed) and the
``source_sha256`` in its metadata, which must be the digest of the verified source (the full
pinned ``ZooEntry.sha256`` when the table knows it). A converted file that fails either is
converted again from the verified source, never used. A local ``.pth`` (MMDetection or wszoo layout) or ``.safetensors``
path works too, and so does ``"hf-hub:ORG/REPO[@REVISION]"`` (see :mod:`wszoo.hub.hf_load`).

Weights written by ``wszoo train`` record their model spec (:mod:`wszoo.model_spec`);
:func:`trained_weights` finds it, downloading a Hub repository's file first.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Optional, Union

from torch import Tensor

from ..arch import DetectorArch
from ..checkpoint_io import (
    CheckpointError,
    load_torch_file,
    read_safetensors,
    read_safetensors_metadata,
    sha256_of_file,
    state_dict_of,
)
from ..conversion.api import CONVERTER_VERSION, convert_file, convert_for, infer_arch
from ..model_spec import read_spec
from ..zoo import ZooEntry
from .download import (
    DownloadError,
    cache_lock,
    default_cache_dir,
    download,
    is_offline,
    read_digest_record,
    record_digest,
    trusted_digest,
)
from .hf_load import HubWeights, fetch, published_from_hub
from .hf_load import load_state_dict as load_from_hub
from .pretrained import WeightsEnum, entry_of, get_model_weights, get_weight

__all__ = [
    "WeightsArg",
    "means_default",
    "resolve_weights",
    "weights_file",
    "trained_weights",
    "load_state_dict",
    "converted_cache_path",
    "converted_is_current",
    "published_weights_file",
]

logger = logging.getLogger(__name__)

WeightsArg = Union[None, str, os.PathLike, ZooEntry, WeightsEnum]

_MEMBER = re.compile(r"[A-Z][A-Z0-9_]*")


def means_default(entry: ZooEntry, weights: WeightsArg) -> bool:
    """Whether ``weights`` asks for ``entry``'s own published weights (what ``pretrained=True`` means):
    ``"DEFAULT"``, the entry itself, or a member of its weights enum (or the member's name)."""
    if isinstance(weights, str):
        if weights == "DEFAULT":
            return True
        try:
            weights = _named_weights(entry, weights)
        except (ValueError, KeyError):  # names no member (UnknownModelError is a KeyError)
            return False
    if isinstance(weights, WeightsEnum):
        return entry_of(weights) == entry
    return weights is entry


def _named_weights(entry: ZooEntry, weights: str) -> Optional[WeightsEnum]:
    """The enum member a string names (``"COCO_V1"``, ``"<model or enum>.COCO_V1"``), or None.

    A string that names no member (a file name such as ``final.PTH`` that does not exist, a
    path) is left to the file branch, whose message says what ``weights=`` takes.
    """
    if Path(weights).expanduser().exists() or "/" in weights or "\\" in weights:  # a path
        return None
    name = f"{entry.name}.{weights}" if _MEMBER.fullmatch(weights) else weights
    if "." not in name or not _MEMBER.fullmatch(name.rsplit(".", 1)[1]):
        return None
    try:
        return get_weight(name)
    except (ValueError, KeyError):  # no such model, enum or member (UnknownModelError is a KeyError)
        return None


def resolve_weights(entry: ZooEntry, weights: WeightsArg, *, pretrained: bool = False):
    """Turns ``weights`` / ``pretrained`` into None, a zoo entry (published weights), a file path, or a
    :class:`wszoo.hub.hf_load.HubWeights` (``"hf-hub:ORG/REPO[@REVISION]"``).

    ``weights`` may be a member of a weights enum (``wszoo.get_model_weights(name).DEFAULT``) or
    its name (``"COCO_V1"``, ``"<model>.COCO_V1"``): the published weights of that entry.
    ``pretrained=True`` with ``weights=None`` means the published weights here; the builders
    refuse an *explicit* ``weights=None`` with ``pretrained=True``.
    """
    if pretrained and weights is not None and not means_default(entry, weights):
        raise ValueError(
            f"pass either pretrained=True or weights=..., not both (got weights={_shown(weights)}); "
            "pretrained=True means weights='DEFAULT'"
        )
    if pretrained or weights == "DEFAULT":
        weights = entry
    if weights is None:
        return None
    if isinstance(weights, str) and (named := _named_weights(entry, weights)) is not None:
        weights = named
    if isinstance(weights, WeightsEnum):
        weights = entry_of(weights)
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
            f"weights={str(weights)!r} is neither 'DEFAULT', a weights enum member, nor an existing file; "
            "pass weights='DEFAULT' for the published weights, a member such as "
            f"'{entry.name}.{_member_hint(entry)}', or the path of a .pth/.safetensors file"
        )
    raise TypeError(
        "weights must be None, 'DEFAULT', a weights enum member (wszoo.get_model_weights(name).DEFAULT), "
        f"a ZooEntry, a file path or 'hf-hub:ORG/REPO', got {type(weights).__name__}"
    )


def _member_hint(entry: ZooEntry) -> str:
    members = list(get_model_weights(entry.name).__members__)
    return members[0] if members else "DEFAULT"


def _shown(weights: WeightsArg) -> str:
    return repr(weights) if isinstance(weights, WeightsEnum) else repr(str(weights) if weights is not None else None)


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
        path = published_weights_file(weights, progress=progress, cache_dir=cache_dir)
        # Converted from a source whose every tensor was checked, and unchanged since (its record
        # was just re-checked): the finite check is not repeated on this hot path.
        record = read_digest_record(path)
        return read_safetensors(path, check=not (record and record.get("finite") is True))[0]
    if not isinstance(weights, Path):  # a HubWeights, from "hf-hub:ORG/REPO[@REVISION]"
        return load_from_hub(entry, weights)
    return _local(entry, weights, num_classes=num_classes)


def published_weights_file(entry: ZooEntry, *, progress: bool = True, cache_dir: Optional[Path] = None) -> Path:
    """The converted safetensors of ``entry``'s published checkpoint: downloaded, verified and
    converted on first use, then read from the cache once it passes :func:`converted_is_current`."""
    converted = converted_cache_path(entry, cache_dir)
    if converted_is_current(entry, converted, cache_dir=cache_dir):
        return converted
    try:
        source = download(
            url=entry.model_url,
            file_name=entry.file_name,
            sha256_prefix=entry.expected_sha256,
            cache_dir=cache_dir,
            legacy_mirrors=entry.mirrors,
            progress=progress,
            max_bytes=entry.max_bytes,
        )
    except DownloadError:
        if not entry.hf_repo or is_offline():
            raise
        # Last: the Hub copy's hash is only its metadata's claim.
        return published_from_hub(entry)
    converted.parent.mkdir(parents=True, exist_ok=True)
    with cache_lock(str(converted) + ".lock"):  # DDP ranks convert once
        if not converted_is_current(entry, converted, cache_dir=cache_dir):
            source_sha256 = trusted_digest(source, expected=entry.expected_sha256) or sha256_of_file(source)
            convert_file(source, converted, model=entry.name, source_sha256=source_sha256)  # checks finiteness
            record_digest(converted, sha256_of_file(converted), finite=True)
    return converted


def converted_is_current(entry: ZooEntry, converted: Path, *, cache_dir: Optional[Path] = None) -> bool:
    """Whether the cached conversion of ``entry`` may be used as is.

    It must exist, still have its recorded digest (cheap while size and mtime are unchanged;
    re-hashed otherwise; a file without a record is hashed and recorded on first use), and its
    metadata must name the entry, this converter version and a ``source_sha256`` that is the
    digest of the verified source: the pinned ``entry.sha256``, the digest recorded beside the
    cached source, or at least the file name's prefix. A file that fails is removed (with its
    record), so it is converted again.
    """
    if not converted.is_file():
        return False
    record = read_digest_record(converted)
    if record is not None and trusted_digest(converted, expected=record["sha256"]) is None:
        # Changed since its digest was recorded (and re-hashed): removed, so it is converted again.
        logger.warning("%s changed since it was converted; converting again", converted)
        return False
    try:
        metadata = read_safetensors_metadata(converted)
    except CheckpointError:
        _discard(converted)
        return False
    source_sha256 = metadata.get("source_sha256", "")
    source_record = read_digest_record(Path(cache_dir or default_cache_dir()) / entry.file_name)
    wanted = entry.expected_sha256 or ""
    ok = (
        metadata.get("wszoo_model") == entry.name
        and metadata.get("wszoo_converter_version") == CONVERTER_VERSION
        and len(source_sha256) == 64
        and source_sha256.startswith(wanted)
        and (source_record is None or source_record["sha256"] == source_sha256)
    )
    if not ok:
        logger.warning(
            "%s does not record the verified source of %s (source_sha256 %r); converting again",
            converted,
            entry.name,
            source_sha256[:16],
        )
        _discard(converted)
    elif record is None:  # trust on first use: a conversion cached before digests were recorded
        record_digest(converted, sha256_of_file(converted))
    return ok


def _discard(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".sha256").unlink(missing_ok=True)


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
