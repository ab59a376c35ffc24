"""Weights from the Hugging Face Hub: ``weights="hf-hub:ORG/REPO[@REVISION]"``.

A wszoo repository on the Hub (made by :mod:`wszoo.hub.hf_publish`) holds ``model.safetensors``
with the metadata :func:`wszoo.conversion.api.convert_file` writes (``wszoo_model``,
``source_sha256``, ``wszoo_converter_version``, ``classes``), a ``config.json`` and a model card.

Downloads go through huggingface_hub's cache, so ``HF_HUB_OFFLINE``, ``HF_HUB_CACHE`` and
``HF_ENDPOINT`` work as for any Hub model; ``WSZOO_OFFLINE=1`` also keeps it to its cache.
huggingface_hub is imported only when used.

A Hub copy of a *published* checkpoint is trusted only as far as its metadata ties it to the
original: :func:`verify_published` requires ``wszoo_model`` to name the entry, ``source_sha256`` to
start with the hash OpenMMLab put in the original file name (to equal ``ZooEntry.sha256`` when the
table pins the full digest), and the current converter version.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from torch import Tensor

from .._version import __version__
from ..checkpoint_io import read_safetensors, read_safetensors_metadata
from ..conversion.api import CONVERTER_VERSION
from ..registry import UnknownModelError, get_entry
from ..zoo import ZooEntry
from .download import OFFLINE_ENV, is_offline

__all__ = [
    "HUB_PREFIX",
    "WEIGHTS_FILE",
    "HubWeights",
    "HubWeightsError",
    "is_hub_spec",
    "download",
    "fetch",
    "load_state_dict",
    "published_from_hub",
    "verify_published",
]

HUB_PREFIX = "hf-hub:"
WEIGHTS_FILE = "model.safetensors"


class HubWeightsError(ValueError):
    """Weights from the Hub cannot be used: missing, unreachable, or not the model's."""


@dataclass(frozen=True)
class HubWeights:
    """A Hub repository as a ``weights=`` value: ``"hf-hub:ORG/REPO"`` or ``"hf-hub:ORG/REPO@REVISION"``."""

    repo_id: str
    revision: Optional[str] = None

    @classmethod
    def parse(cls, spec: str) -> HubWeights:
        """Parses ``"hf-hub:ORG/REPO[@REVISION]"`` (the prefix is optional)."""
        text = spec[len(HUB_PREFIX) :] if spec.startswith(HUB_PREFIX) else spec
        repo_id, _, revision = text.partition("@")
        if not repo_id or repo_id.count("/") != 1 or "" in repo_id.split("/") or (_ and not revision):
            raise HubWeightsError(
                f"{spec!r} is not a Hub weights name; expected 'hf-hub:ORG/REPO' or 'hf-hub:ORG/REPO@REVISION'"
            )
        return cls(repo_id, revision or None)

    def __str__(self) -> str:
        return f"{HUB_PREFIX}{self.repo_id}" + (f"@{self.revision}" if self.revision else "")


def is_hub_spec(value: Any) -> bool:
    """Whether a ``weights=`` value names a Hub repository."""
    return isinstance(value, str) and value.startswith(HUB_PREFIX)


# ---- loading ----


def download(weights: HubWeights, filename: str = WEIGHTS_FILE, *, cache_dir: Optional[Path] = None) -> Path:
    """A file of a Hub repository, through huggingface_hub's cache (which honours ``HF_HUB_OFFLINE``).

    Raises:
        HubWeightsError: Saying whether the repository, the revision or the file is missing, or
            that the file is not cached while offline.
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        HFValidationError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(
            hf_hub_download(
                weights.repo_id,
                filename,
                revision=weights.revision,
                cache_dir=cache_dir,
                library_name="wszoo",
                library_version=__version__,
                local_files_only=is_offline(),  # WSZOO_OFFLINE=1 switches the Hub off too
            )
        )
    except LocalEntryNotFoundError:  # before the Hub's errors: it is a FileNotFoundError, not an HTTP error
        hint = (
            "HF_HUB_OFFLINE is set and it is not in huggingface_hub's cache; download it once online"
            if constants.HF_HUB_OFFLINE
            else f"{OFFLINE_ENV} is set and it is not in huggingface_hub's cache; download it once online"
            if is_offline()
            else "the Hub cannot be reached and it is not in huggingface_hub's cache"
        )
        raise HubWeightsError(f"{weights}: cannot get {filename}: {hint}") from None
    except RevisionNotFoundError:
        raise HubWeightsError(f"{weights}: the repository has no revision {weights.revision!r}") from None
    except RepositoryNotFoundError:
        raise HubWeightsError(
            f"{weights}: no Hub repository {weights.repo_id!r} (or it is private: log in with `hf auth login`)"
        ) from None
    except RemoteEntryNotFoundError:
        raise HubWeightsError(
            f"{weights}: the repository has no {filename}; is it a wszoo repository (made with `wszoo push-to-hub`)?"
        ) from None
    except HFValidationError as err:
        raise HubWeightsError(f"{weights}: {err}") from None


def _metadata(path: Path) -> dict[str, str]:
    return read_safetensors_metadata(path)


def fetch(entry: ZooEntry, weights: HubWeights, *, cache_dir: Optional[Path] = None) -> Path:
    """The weights file of Hub ``weights`` in huggingface_hub's cache, after checking its metadata fits.

    The file's ``wszoo_model`` (when recorded) must have ``entry``'s architecture.
    """
    path = download(weights, cache_dir=cache_dir)
    _check_architecture(entry, _metadata(path), what=str(weights))
    return path


def load_state_dict(entry: ZooEntry, weights: HubWeights, *, cache_dir: Optional[Path] = None) -> dict[str, Tensor]:
    """The native state dict of Hub ``weights`` for ``entry``, after checking its metadata fits
    (:func:`fetch`); the strict ``load_state_dict`` of the caller checks every key and shape."""
    return read_safetensors(fetch(entry, weights, cache_dir=cache_dir))[0]


def _check_architecture(entry: ZooEntry, metadata: Mapping[str, str], *, what: str) -> None:
    name = metadata.get("wszoo_model")
    if not name or name == entry.name:
        return
    try:
        source = get_entry(name)
    except UnknownModelError:
        return  # a model this wszoo does not know: the strict load decides
    if source.arch != entry.arch:
        raise HubWeightsError(
            f"{what} holds weights of {source.name} ({source.arch}), which do not fit "
            f"{entry.name} ({entry.arch}); build {source.name} instead"
        )


def verify_published(entry: ZooEntry, metadata: Mapping[str, str], *, what: str) -> None:
    """Checks that converted weights claim to be ``entry``'s published checkpoint, converted by this wszoo.

    Raises:
        HubWeightsError: Naming the metadata field that disagrees, its value and the expected one.
    """
    expected = {
        "wszoo_model": (metadata.get("wszoo_model"), entry.name, lambda got, want: got == want),
        "source_sha256": (
            metadata.get("source_sha256"),
            entry.sha256 or f"{entry.sha256_prefix}...",
            lambda got, want: bool(got and entry.expected_sha256 and got.startswith(entry.expected_sha256)),
        ),
        "wszoo_converter_version": (
            metadata.get("wszoo_converter_version"),
            CONVERTER_VERSION,
            lambda got, want: got == want,
        ),
    }
    for field, (got, want, ok) in expected.items():
        if not ok(got, want):
            raise HubWeightsError(
                f"{what} is not {entry.name}'s published checkpoint as this wszoo converts it: "
                f"metadata {field}={got!r}, expected {want!r}"
            )


def published_from_hub(entry: ZooEntry, *, cache_dir: Optional[Path] = None) -> Path:
    """The converted published weights of ``entry`` from its Hub repository (``entry.hf_repo``), verified.

    ``cache_dir`` is huggingface_hub's cache (default: its own, ``HF_HUB_CACHE``).
    """
    if not entry.hf_repo:
        raise HubWeightsError(f"{entry.name} names no Hub repository")
    weights = HubWeights.parse(entry.hf_repo)
    path = download(weights, cache_dir=cache_dir)
    verify_published(entry, _metadata(path), what=str(weights))
    return path
