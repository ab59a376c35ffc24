"""Checkpoint files in and out: safe ``torch.load`` and safetensors read/write.

Nothing here knows what a checkpoint is for (MMDetection weights, wszoo training state): it
reads tensors without executing pickled code, refuses state dicts holding NaN or infinite values
(naming the first such key), and writes safetensors atomically and reproducibly.
"""

from __future__ import annotations

import hashlib
import json
import math
import mmap
import os
import pickle
import secrets
from pathlib import Path
from typing import Any, BinaryIO, Mapping, Optional

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

__all__ = [
    "CheckpointError",
    "UnsafeCheckpointError",
    "NonFiniteWeightsError",
    "first_non_finite",
    "check_finite",
    "load_torch_file",
    "read_checkpoint",
    "state_dict_of",
    "save_safetensors",
    "read_safetensors",
    "read_safetensors_metadata",
    "sha256_of_file",
    "write_file_atomic",
]

# Large reads keep hashing CPU-bound rather than syscall-bound; hashlib releases
# the GIL on big buffers, so other threads keep running meanwhile.
_HASH_CHUNK_SIZE = 8 * 1024 * 1024


class CheckpointError(ValueError):
    """A checkpoint file cannot be used: truncated, corrupt, or not a state dict."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint needs arbitrary pickled Python objects; it was refused, not executed."""


class NonFiniteWeightsError(CheckpointError):
    """A state dict holds NaN or infinite values; ``key`` is the first such tensor."""

    def __init__(self, message: str, *, key: str) -> None:
        super().__init__(message)
        self.key = key


def first_non_finite(state_dict: Mapping[str, Tensor]) -> Optional[str]:
    """The first key (in order) whose tensor holds a NaN or an infinity, or None.

    One vectorised pass: each floating tensor is reduced to its sum (NaN and infinities
    propagate through a sum) and one ``isfinite`` runs over all sums; only when a sum is not
    finite are those tensors checked element by element, which also clears a sum that merely
    overflowed. ``benchmarks/finite_check.py`` measures its cost against loading the weights.
    """
    keys = [k for k, v in state_dict.items() if v.is_floating_point() and v.device.type != "meta"]
    if not keys:
        return None
    sums = torch.stack([state_dict[k].sum().float() for k in keys])
    if bool(torch.isfinite(sums).all()):
        return None
    for key, total in zip(keys, sums.tolist()):
        if not math.isfinite(total) and not bool(torch.isfinite(state_dict[key]).all()):
            return key
    return None


def check_finite(state_dict: Mapping[str, Tensor], *, what: str) -> None:
    """Raises :class:`NonFiniteWeightsError` naming the first tensor of ``what`` with NaN or infinite values."""
    key = first_non_finite(state_dict)
    if key is None:
        return
    tensor = state_dict[key]
    bad = int((~torch.isfinite(tensor)).sum())
    nans = int(torch.isnan(tensor).sum())
    raise NonFiniteWeightsError(
        f"{what} holds non-finite weights: {key!r} has {bad} of {tensor.numel()} values NaN or infinite "
        f"({nans} NaN); weights must be finite. The file is damaged or its training diverged: "
        "download it again or use an earlier checkpoint",
        key=key,
    )


def load_torch_file(path: os.PathLike | str) -> Any:
    """``torch.load`` of ``path`` that never executes code (``weights_only=True``, on the CPU).

    Raises:
        UnsafeCheckpointError: The file needs other pickled objects (it is never executed).
        CheckpointError: Missing, truncated or corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist or is not a file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
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


def read_checkpoint(path: os.PathLike | str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Reads a ``.pth`` state dict without executing code: ``(state_dict, meta)``.

    Accepts MMDetection's ``{'meta': ..., 'state_dict': ...}`` layout and bare state dicts, in
    the zip and the legacy torch formats; a leading ``module.`` (DataParallel) is stripped.
    Only tensors and plain containers are unpickled (``weights_only=True``).

    Raises:
        UnsafeCheckpointError: The file needs other pickled objects (it is never executed).
        CheckpointError: Truncated, corrupt, or not a state dict.
    """
    return state_dict_of(load_torch_file(path), Path(path))


def state_dict_of(obj: Any, path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``(state_dict, meta)`` of what :func:`load_torch_file` returned (see :func:`read_checkpoint`)."""
    meta: dict[str, Any] = {}
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        meta = dict(obj.get("meta") or {})
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict of tensors")
    state_dict = {}
    for key, value in obj.items():
        if not isinstance(value, Tensor):
            raise CheckpointError(
                f"{path} is not a state dict: its entry {key!r} is a {type(value).__name__}, not a tensor "
                f"(top-level keys: {sorted(map(str, obj))[:8]}); pass a weights file (.pth state dict or .safetensors)"
            )
        state_dict[key[len("module.") :] if key.startswith("module.") else key] = value
    check_finite(state_dict, what=str(path))
    return state_dict, meta


def write_file_atomic(path: os.PathLike | str, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically: a temporary file beside it, then a rename.

    Readers (and a run interrupted half-way) see the old file or the whole new one, never a part.
    """
    path = Path(path)
    tmp = _new_temp_file(path)  # 0666 minus the umask, as every file wszoo writes
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_safetensors(state_dict: Mapping[str, Tensor], path: os.PathLike | str, *, metadata: Mapping[str, Any]) -> None:
    """Writes ``state_dict`` as safetensors, atomically (temporary file, then rename).

    Non-string metadata values are stored as JSON. The output is a pure function of the input:
    the same tensors and metadata give the same bytes. The file's mode is 0666 minus the umask
    (0644 usually), as ``torch.save`` makes it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text_meta = {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in metadata.items()}
    tensors = {k: v.detach().contiguous() for k, v in state_dict.items()}
    tmp = _new_temp_file(path)
    try:
        mode = os.stat(tmp).st_mode & 0o777  # 0666 minus the umask
        save_file(tensors, tmp, metadata=text_meta)
        os.chmod(tmp, mode)  # safetensors writes through a file of its own, 0600
        _canonicalise_header(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _new_temp_file(path: Path) -> str:
    """Creates an empty, uniquely named file beside ``path`` and returns its name.

    Unlike ``tempfile.mkstemp`` (always 0600) it is created 0666 minus the umask, as ``open()``
    and ``torch.save`` create files, so its mode is the one the result should have: readable
    by others (0644 under the usual umask 022), as every other file in a cache or output folder.
    """
    for _ in range(100):
        name = str(path.with_name(f"{path.name}.{secrets.token_hex(6)}.tmp"))
        try:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return name
    raise FileExistsError(f"could not create a temporary file beside {path}")


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
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err})") from None


def read_safetensors(path: os.PathLike | str, *, check: bool = True) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Reads a safetensors file: ``(state_dict, metadata)``.

    ``check=False`` skips :func:`check_finite`, for a file whose tensors were checked when it
    was written and whose bytes are vouched for since (wszoo's converted cache and its record).

    Raises:
        NonFiniteWeightsError: A tensor holds NaN or infinite values (the first is named).
        CheckpointError: Not a readable safetensors file.
    """
    metadata = read_safetensors_metadata(path)
    try:
        # load_file reads all tensors in one pass, faster than get_tensor() key by key.
        state_dict = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err})") from None
    if check:
        check_finite(state_dict, what=str(path))
    return state_dict, metadata


def sha256_of_file(path: str | os.PathLike[str], *, chunk_size: int = _HASH_CHUNK_SIZE) -> str:
    """Computes the SHA-256 hex digest of a file.

    Args:
        path: The file to hash.
        chunk_size: Bytes read per system call.

    Returns:
        The lowercase hex digest.
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    hasher = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            return hasher.hexdigest()
        try:
            mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # e.g. a file system without mmap
            _hash_until_eof(hasher, fh, chunk_size)
            return hasher.hexdigest()
        # Hashing the page cache in place skips the copy a read() makes: verification then
        # runs at hashlib's in-memory speed (benchmarks/verify_throughput.py).
        with mapped, memoryview(mapped) as view:
            for start in range(0, size, chunk_size):
                hasher.update(view[start : start + chunk_size])
    return hasher.hexdigest()


def _hash_until_eof(hasher: hashlib._Hash, fh: BinaryIO, chunk_size: int) -> int:
    # One preallocated buffer, read into and hashed through a memoryview slice,
    # so no bytes object is created per chunk.
    buffer = bytearray(chunk_size)
    view = memoryview(buffer)
    total = 0
    while n := fh.readinto(buffer):
        hasher.update(view[:n])
        total += n
    return total
