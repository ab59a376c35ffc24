"""Safe reading of MMDetection checkpoints and writing of converted safetensors."""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import Tensor

__all__ = ["CheckpointError", "UnsafeCheckpointError", "read_checkpoint", "save_safetensors", "read_safetensors", "read_safetensors_metadata"]


class CheckpointError(ValueError):
    """A checkpoint file cannot be used: truncated, corrupt, or not a state dict."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint needs arbitrary pickled Python objects; it was refused, not executed."""


def read_checkpoint(path: os.PathLike | str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Reads a ``.pth`` checkpoint without executing code: ``(state_dict, meta)``.

    Accepts MMDetection's ``{'meta': ..., 'state_dict': ...}`` layout and bare state dicts, in
    the zip and the legacy torch formats; a leading ``module.`` (DataParallel) is stripped.
    Only tensors and plain containers are unpickled (``weights_only=True``).

    Raises:
        UnsafeCheckpointError: The file needs other pickled objects (it is never executed).
        CheckpointError: Truncated, corrupt, or not a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist or is not a file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # The weights-only unpickler names the global it refused; anything else is damage.
        refused = [line.strip() for line in str(err).splitlines() if "GLOBAL" in line or "global" in line.split()]
        if refused:
            raise UnsafeCheckpointError(
                f"refused to load {path}: it needs arbitrary pickled Python objects, which could run code "
                f"({refused[0]}). wszoo only unpickles tensors and plain containers and never ran it. "
                "If you trust the file, re-save its state dict (torch.save(ckpt['state_dict'], ...)) "
                "in an environment you control, then convert that."
            ) from None
        raise CheckpointError(f"{path} is corrupt or truncated and cannot be read; download it again") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is corrupt or truncated and cannot be read ({err}); download it again") from None
    return _unwrap(obj, path)


def _unwrap(obj: Any, path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    meta: dict[str, Any] = {}
    if isinstance(obj, Mapping) and "model_spec" in obj and "model" in obj:
        raise CheckpointError(f"{path} is a wszoo training checkpoint (resumable state, not weights); load it with "
                              "wszoo.engine.load_trained(path), or use the run's final.safetensors")
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        meta = dict(obj.get("meta") or {})
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict of tensors")
    state_dict = {}
    for key, value in obj.items():
        if not isinstance(value, Tensor):
            raise CheckpointError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        state_dict[key[len("module."):] if key.startswith("module.") else key] = value
    return state_dict, meta


def save_safetensors(state_dict: Mapping[str, Tensor], path: os.PathLike | str, *, metadata: Mapping[str, Any]) -> None:
    """Writes ``state_dict`` as safetensors, atomically (temporary file, then rename).

    Non-string metadata values are stored as JSON. The output is a pure function of the input:
    the same tensors and metadata give the same bytes.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text_meta = {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in metadata.items()}
    tensors = {k: v.detach().contiguous() for k, v in state_dict.items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=text_meta)
        _canonicalise_header(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _canonicalise_header(path: Path) -> None:
    """Rewrites the JSON header with sorted keys, in place.

    safetensors writes ``__metadata__`` from a hash map, so its key order -- and the file's
    bytes -- change from run to run. Every tensor's offsets are explicit in the header, so
    reordering keys (same length, same content) keeps the file valid and makes it reproducible.
    """
    with open(path, "r+b") as f:
        length = int.from_bytes(f.read(8), "little")
        raw = f.read(length)
        header = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()
        if len(header) > length:  # cannot happen for the same content; never corrupt the file
            raise RuntimeError("safetensors header grew while canonicalising")
        f.seek(8)
        f.write(header + b" " * (length - len(header)))


def read_safetensors_metadata(path: os.PathLike | str) -> dict[str, str]:
    """The metadata of a safetensors file, without reading its tensors."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err})") from None


def read_safetensors(path: os.PathLike | str) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Reads a safetensors file: ``(state_dict, metadata)``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    metadata = read_safetensors_metadata(path)
    try:
        # load_file reads all tensors in one pass, faster than get_tensor() key by key.
        return load_file(str(path), device="cpu"), metadata
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err})") from None


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
