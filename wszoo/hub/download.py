"""Verified, resilient downloads of checkpoint files.

A checkpoint is identified by its file name and a prefix of its SHA-256 digest.
:func:`download` fetches it into a cache directory and guarantees that the cache
only ever holds files whose digest matched: bytes are hashed while they stream
to ``<name>.partial``, and only a verified partial is renamed (atomically) to its
final name.

Resilience:

* Sources are tried in order (see :func:`candidate_urls`): mirrors from
  ``WSZOO_MIRROR``, the original URL, then legacy mirrors.
* Dropped connections, timeouts and 5xx answers are retried on the same source
  with exponential backoff, resuming with an HTTP ``Range`` request from what
  was already written. A ``.partial`` left behind by a killed process is resumed
  the same way.
* 4xx answers and wrong digests move on to the next source at once; a host whose
  name does not resolve or that refuses the connection is not asked again (nor
  are later sources on it).
* A digest mismatch after resuming (a corrupt 206 body) retries the same source
  once from byte zero.
* Limits: a body longer than announced (``Content-Length``) or than ``max_bytes``
  is cut off as soon as it passes the limit; a transfer slower than ``min_rate``
  bytes/s over ``min_rate_window`` seconds is abandoned.
* An inter-process lock (``<name>.lock``, removed when released) lets concurrent
  processes (e.g. DDP ranks) share one download: one fetches, the others wait
  and then find the verified file in the cache.

Trust on first use of the full digest: beside every verified file the cache
records ``<name>.sha256`` (JSON: full sha256, size, mtime; written atomically).
A later call trusts the file only while its size and mtime match the record and
the recorded digest matches what is expected (cheap: no re-hashing); a file that
changed is re-hashed, and one whose digest no longer matches is downloaded
again, never returned. ``verify_cached`` (``wszoo verify``) re-hashes on demand.

Environment variables:
    WSZOO_MIRROR: Comma-separated base URLs tried before the original URL. The
        path of the original URL (everything after its host) is appended to
        each base, e.g. ``WSZOO_MIRROR=http://mirror.local/openmmlab``.
    WSZOO_CACHE: Directory for downloaded checkpoints. Defaults to torch.hub's
        checkpoint directory (``$TORCH_HOME/hub/checkpoints``).
    WSZOO_OFFLINE, HF_HUB_OFFLINE: When set (``1``), nothing is downloaded: a file
        missing from the cache fails at once, with one message that says how to
        bring it in by hand.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import socket
import string
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO
from urllib.parse import SplitResult, urlsplit

import requests
import torch.hub
import urllib3
from filelock import FileLock
from tqdm import tqdm

from ..checkpoint_io import _HASH_CHUNK_SIZE, _hash_until_eof, sha256_of_file

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: filelock's lock, whose file stays
    fcntl = None

__all__ = [
    "CACHE_ENV",
    "MIRROR_ENV",
    "OFFLINE_ENV",
    "DEFAULT_MAX_BYTES",
    "DownloadError",
    "cache_lock",
    "candidate_urls",
    "default_cache_dir",
    "download",
    "is_offline",
    "read_digest_record",
    "record_digest",
    "sha256_of_file",
    "trusted_digest",
    "verify_file",
]

logger = logging.getLogger(__name__)

MIRROR_ENV = "WSZOO_MIRROR"
CACHE_ENV = "WSZOO_CACHE"
OFFLINE_ENV = "WSZOO_OFFLINE"
_OFFLINE_ENVS = (OFFLINE_ENV, "HF_HUB_OFFLINE")
# No published checkpoint comes near this; a body past it is a broken or hostile source.
DEFAULT_MAX_BYTES = 2 * 1024**3
DIGEST_SUFFIX = ".sha256"

# urllib3 discards a partly filled read when the connection drops, so this is
# also the most an interruption can cost; per-chunk overhead is negligible.
_NET_CHUNK_SIZE = 64 * 1024
# Shorter prefixes make accidental matches (e.g. a truncated file) plausible.
_MIN_PREFIX_LEN = 8
_HEX_DIGITS = frozenset(string.hexdigits.lower())

# Failures after which the same source may well succeed; everything that
# escapes iter_content when a connection dies mid-body is listed, because
# requests does not wrap every urllib3 exception.
_TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.IncompleteRead,
    urllib3.exceptions.ReadTimeoutError,
    http.client.IncompleteRead,
    ConnectionError,
    TimeoutError,
)


# urllib3 >= 2 names the failure; 1.26 leaves a socket.gaierror in the chain.
_NAME_RESOLUTION_ERROR = getattr(urllib3.exceptions, "NameResolutionError", socket.gaierror)


class DownloadError(RuntimeError):
    """Every source failed to deliver a verified file.

    Attributes:
        path: Where the verified file would have been stored.
        failures: ``(url, reason)`` for each source tried, in order.
    """

    def __init__(self, message: str, *, path: Path, failures: Sequence[tuple[str, str]]) -> None:
        super().__init__(message)
        self.path = path
        self.failures = list(failures)


class _SourceFailed(Exception):
    """This source cannot deliver the file; move on to the next one."""


class _TransientFailure(Exception):
    """The same source may succeed if asked again (resuming)."""


class _HostUnreachable(_SourceFailed):
    """The host's name does not resolve or it refuses connections: skip every source on it."""


def is_offline() -> bool:
    """Whether ``WSZOO_OFFLINE`` or ``HF_HUB_OFFLINE`` forbids downloads."""
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on") for name in _OFFLINE_ENVS)


def _offline_switch() -> str:
    return next(f"{n}={os.environ[n]}" for n in _OFFLINE_ENVS if os.environ.get(n, "").strip())


# --------------------------------------------------------------------------
# Sources and cache location
# --------------------------------------------------------------------------


def candidate_urls(url: str, *, legacy_mirrors: Sequence[str] = ()) -> list[str]:
    """Lists the URLs to try for ``url``, best first, without duplicates.

    Order: each base URL in ``WSZOO_MIRROR``, then ``url`` itself, then each of
    ``legacy_mirrors``. A mirror URL is its base (trailing slashes removed)
    followed by everything after the host of ``url``, byte for byte, so
    percent-encoding such as ``gn%2Bws`` is kept.

    Args:
        url: The canonical http(s) URL of the file.
        legacy_mirrors: Base URLs tried after ``url``.

    Returns:
        The candidate URLs.

    Raises:
        ValueError: If ``url`` or a mirror base is not an absolute http(s) URL.
        TypeError: If ``legacy_mirrors`` is a single string.
    """
    if isinstance(legacy_mirrors, str):
        # A bare string would silently be iterated character by character.
        raise TypeError("legacy_mirrors must be a sequence of base URLs, not a single string")
    tail = _path_after_host(url)
    mirrored = [_join_base(base, tail) for base in _mirror_bases()]
    legacy = [_join_base(base, tail) for base in legacy_mirrors]
    # dict keeps first occurrences in order.
    return list(dict.fromkeys([*mirrored, url, *legacy]))


def default_cache_dir() -> Path:
    """Returns the directory where verified checkpoints are cached.

    ``WSZOO_CACHE`` if set (``~`` expanded), otherwise torch.hub's checkpoint
    directory, so files are shared with ``torch.hub.load_state_dict_from_url``.
    """
    override = os.environ.get(CACHE_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    return Path(torch.hub.get_dir()) / "checkpoints"


def _mirror_bases() -> list[str]:
    raw = os.environ.get(MIRROR_ENV, "")
    return [part.strip() for part in raw.split(",") if part.strip()]


def _path_after_host(url: str) -> str:
    parts = _check_http_url(url, what="url")
    # Slice the original text instead of re-assembling it from urlsplit's
    # pieces, which could normalise the encoding.
    return url.split("://", 1)[1][len(parts.netloc) :]


def _join_base(base: str, tail: str) -> str:
    _check_http_url(base, what=f"mirror base URL {base!r}")
    return base.rstrip("/") + tail


def _check_http_url(url: str, *, what: str) -> SplitResult:
    if not isinstance(url, str):
        raise TypeError(f"{what} must be a str, got {type(url).__name__}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{what} must be an absolute http(s) URL, got {url!r}")
    return parts


# --------------------------------------------------------------------------
# Hashing
# --------------------------------------------------------------------------


def verify_file(path: str | os.PathLike[str], *, sha256_prefix: str) -> bool:
    """Tells whether the SHA-256 digest of ``path`` starts with ``sha256_prefix``.

    Args:
        path: The file to check.
        sha256_prefix: At least 8 hex digits (case-insensitive).

    Returns:
        True if the digest matches.
    """
    prefix = _check_sha256_prefix(sha256_prefix)
    return sha256_of_file(path).startswith(prefix)


# --------------------------------------------------------------------------
# Trust on first use: the full digest recorded beside a verified file
# --------------------------------------------------------------------------


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + DIGEST_SUFFIX)


def record_digest(path: str | os.PathLike[str], sha256: str, **facts: object) -> None:
    """Records ``path``'s full sha256, size and mtime in ``<path>.sha256`` (JSON, written atomically).

    ``facts`` are stored too (e.g. ``finite=True`` for weights checked when they were written);
    they hold as long as the record does.
    """
    path = Path(path)
    stat = path.stat()
    record = {**facts, "sha256": sha256.lower(), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "file": path.name}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "w") as fh:
            json.dump(record, fh, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, _record_path(path))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_digest_record(path: str | os.PathLike[str]) -> dict | None:
    """The record :func:`record_digest` wrote for ``path``, or None if missing or unreadable."""
    try:
        record = json.loads(_record_path(Path(path)).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), str) or len(record["sha256"]) != 64:
        return None
    return record


def trusted_digest(path: str | os.PathLike[str], *, expected: str | None = None) -> str | None:
    """The full sha256 of a cached file, trusting its record while size and mtime are unchanged.

    A file without a record, or whose size or mtime differ from it, is hashed in full and the
    record (re)written. Returns None (and removes the file and its record) when the digest
    does not start with ``expected`` (a prefix or a full digest) or the file is gone.
    """
    path = Path(path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    record = read_digest_record(path)
    if record and record.get("size") == stat.st_size and record.get("mtime_ns") == stat.st_mtime_ns:
        digest = record["sha256"]
    else:
        if record:
            logger.info("%s changed since it was verified (size or mtime); hashing it again", path)
        digest = sha256_of_file(path)
        if expected is None or digest.startswith(expected.lower()):
            record_digest(path, digest)
    if expected is not None and not digest.startswith(expected.lower()):
        logger.warning("%s does not match its expected sha256 (%s...); it is discarded", path, expected[:16])
        _discard(path)
        return None
    return digest


def _discard(path: Path) -> None:
    path.unlink(missing_ok=True)
    _record_path(path).unlink(missing_ok=True)


@contextlib.contextmanager
def cache_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """An inter-process exclusive lock on ``path`` (a ``.lock`` file), removed when released.

    Unlinking a lock file is safe here: after ``flock`` succeeds, the holder checks that the
    path still names the file it locked, and starts over if a releasing holder removed it in
    between; so no two processes ever hold locks on different files of one name. Where
    ``fcntl`` is missing (Windows), ``filelock.FileLock`` is used and its file stays.
    """
    path = Path(path)
    if fcntl is None:  # pragma: no cover - Windows
        with FileLock(str(path)):
            yield
        return
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # removed or replaced while we waited: lock the current file
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


# --------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------


def download(
    *,
    url: str,
    file_name: str,
    sha256_prefix: str,
    cache_dir: str | os.PathLike[str] | None = None,
    legacy_mirrors: Sequence[str] = (),
    progress: bool = True,
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float = 30.0,
    session: requests.Session | None = None,
    max_bytes: int | None = None,
    min_rate: float = 10 * 1024,
    min_rate_window: float = 30.0,
) -> Path:
    """Returns the path of a verified copy of a file, downloading it if needed.

    A file already at ``cache_dir/file_name`` is returned when its recorded full digest
    (``<file_name>.sha256``, see :func:`trusted_digest`) still matches ``sha256_prefix`` and its
    size and mtime are unchanged; a cached file without a record is hashed once and recorded; one
    that no longer matches is discarded and downloaded again. Otherwise, holding the lock
    ``cache_dir/file_name.lock``, each candidate URL (see :func:`candidate_urls`) is tried until
    one delivers bytes whose SHA-256 starts with ``sha256_prefix``.

    Args:
        url: Canonical http(s) URL of the file.
        file_name: Name of the file in the cache; a bare name, no directories.
        sha256_prefix: At least 8 hex digits the SHA-256 digest must start with
            (case-insensitive); 64 pins the full digest.
        cache_dir: Cache directory; defaults to :func:`default_cache_dir`.
        legacy_mirrors: Base URLs tried after ``url``.
        progress: Show a tqdm progress bar.
        retries: Extra attempts per source after dropped connections,
            timeouts and 5xx answers (so ``retries + 1`` attempts in all).
        backoff: Seconds before the first retry; doubled for each further one.
        timeout: Seconds to wait for a connection or for the next bytes.
        session: Session to send requests with; a private one by default.
        max_bytes: The most bytes a source may send (default :data:`DEFAULT_MAX_BYTES`); a body
            longer than this, or than its ``Content-Length``, is cut off at once.
        min_rate: Bytes per second below which a transfer is abandoned (0: no minimum)...
        min_rate_window: ...when it stays below it for this many seconds.

    Returns:
        Path of the verified file in the cache.

    Raises:
        DownloadError: If no source delivered a verified file, or downloads are switched off
            (``WSZOO_OFFLINE=1`` / ``HF_HUB_OFFLINE=1``). The message lists each URL with the
            reason it failed and how to provide the file by hand.
        ValueError: For malformed arguments.
        TypeError: For arguments of the wrong type.
    """
    prefix = _check_sha256_prefix(sha256_prefix)
    _check_file_name(file_name)
    _check_retry_settings(retries=retries, backoff=backoff, timeout=timeout)
    limits = _Limits.of(max_bytes=max_bytes, min_rate=min_rate, min_rate_window=min_rate_window)
    # Resolve sources first, so a malformed mirror fails before any disk work.
    sources = candidate_urls(url, legacy_mirrors=legacy_mirrors)
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = directory / file_name
    if final.is_file() and trusted_digest(final, expected=prefix):
        return final
    if is_offline():
        raise DownloadError(_offline_message(final, prefix, sources), path=final, failures=[])

    directory.mkdir(parents=True, exist_ok=True)
    with cache_lock(directory / f"{file_name}.lock"):
        # Another process may have finished the download while we waited.
        if final.is_file() and trusted_digest(final, expected=prefix):
            return final
        client = requests.Session() if session is None else session
        try:
            failures = _fetch_first_verified(
                client,
                sources,
                final,
                prefix=prefix,
                retries=retries,
                backoff=backoff,
                timeout=timeout,
                progress=progress,
                limits=limits,
            )
        finally:
            if session is None:  # Only close what we opened.
                client.close()
        if not failures:
            return final
    raise DownloadError(_failure_message(final, prefix, failures), path=final, failures=failures)


class _Limits:
    """Size and throughput limits of one transfer."""

    def __init__(self, max_bytes: int, min_rate: float, min_rate_window: float) -> None:
        self.max_bytes, self.min_rate, self.min_rate_window = max_bytes, min_rate, min_rate_window

    @classmethod
    def of(cls, *, max_bytes: int | None, min_rate: float, min_rate_window: float) -> _Limits:
        if max_bytes is None:
            max_bytes = DEFAULT_MAX_BYTES
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ValueError(f"max_bytes must be an int >= 1, got {max_bytes!r}")
        if not min_rate >= 0:
            raise ValueError(f"min_rate must be >= 0 bytes/s, got {min_rate!r}")
        if not min_rate_window > 0:
            raise ValueError(f"min_rate_window must be > 0 seconds, got {min_rate_window!r}")
        return cls(max_bytes, float(min_rate), float(min_rate_window))


def _check_sha256_prefix(sha256_prefix: str) -> str:
    if not isinstance(sha256_prefix, str):
        raise TypeError(f"sha256_prefix must be a str, got {type(sha256_prefix).__name__}")
    prefix = sha256_prefix.lower()
    if not _MIN_PREFIX_LEN <= len(prefix) <= 64 or not set(prefix) <= _HEX_DIGITS:
        raise ValueError(f"sha256_prefix must be {_MIN_PREFIX_LEN} to 64 hex digits, got {sha256_prefix!r}")
    return prefix


def _check_file_name(file_name: str) -> None:
    if not isinstance(file_name, str):
        raise TypeError(f"file_name must be a str, got {type(file_name).__name__}")
    separators = {"/", os.sep, os.altsep} - {None}
    if file_name in ("", ".", "..") or "\0" in file_name or any(sep in file_name for sep in separators):
        raise ValueError(f"file_name must be a bare file name without directories, got {file_name!r}")


def _check_retry_settings(*, retries: int, backoff: float, timeout: float) -> None:
    # bool is an int subclass; retries=True is surely a mistake.
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be an int >= 0, got {retries!r}")
    if not backoff >= 0:  # also rejects NaN
        raise ValueError(f"backoff must be >= 0, got {backoff!r}")
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0, got {timeout!r}")


def _fetch_first_verified(
    client: requests.Session,
    sources: Sequence[str],
    final: Path,
    *,
    prefix: str,
    retries: int,
    backoff: float,
    timeout: float,
    progress: bool,
    limits: _Limits,
) -> list[tuple[str, str]]:
    """Fills ``final`` from the first source that works; returns the failures.

    An empty list means success. Each failure is logged at INFO level only: the
    :class:`DownloadError` that follows lists them all, so each is shown once.
    """
    partial = final.with_name(final.name + ".partial")
    failures: list[tuple[str, str]] = []
    unreachable: dict[str, str] = {}  # host -> why
    for url in sources:
        host = urlsplit(url).netloc
        if host in unreachable or urlsplit(url).hostname in unreachable:
            failures.append((url, f"not tried: {unreachable.get(host) or unreachable[urlsplit(url).hostname]}"))
            continue
        try:
            digest = _fetch_verified_partial(
                client,
                url,
                partial,
                prefix=prefix,
                retries=retries,
                backoff=backoff,
                timeout=timeout,
                progress=progress,
                limits=limits,
            )
        except _HostUnreachable as err:
            logger.info("Download of %s failed: %s", url, err)
            failures.append((url, str(err)))
            name_failed = "resolve" in str(err)
            unreachable[urlsplit(url).hostname if name_failed else host] = f"{host} is unreachable (above)"
            continue
        except _SourceFailed as err:
            logger.info("Download of %s failed: %s", url, err)
            failures.append((url, str(err)))
            continue
        os.replace(partial, final)  # Atomic: readers see no file or a whole one.
        _fsync_directory(final.parent)
        record_digest(final, digest)
        return []
    return failures


def _fetch_verified_partial(
    client: requests.Session,
    url: str,
    partial: Path,
    *,
    prefix: str,
    retries: int,
    backoff: float,
    timeout: float,
    progress: bool,
    limits: _Limits,
) -> str:
    """Makes ``partial`` a complete, verified copy of the file at ``url``; returns its sha256.

    Raises:
        _SourceFailed: With the reason, if this source cannot deliver it.
    """
    # Bytes present before we start may come from another source or a file
    # that changed since, and a resumed (206) body may itself be corrupt; if
    # the digest is wrong after resuming, one fresh start from byte zero is fair.
    may_restart_fresh = True
    attempt = 0
    while True:
        try:
            digest, resumed = _transfer(client, url, partial, timeout=timeout, progress=progress, limits=limits)
        except _TransientFailure as err:
            if attempt >= retries:
                raise _SourceFailed(f"{err} (gave up after {attempt + 1} attempts)") from None
            delay = backoff * 2**attempt
            logger.info("Retrying %s in %.1f s after: %s", url, delay, err)
            time.sleep(delay)
            attempt += 1
            continue
        if digest.startswith(prefix):
            return digest
        partial.unlink(missing_ok=True)  # Wrong bytes must not seed a later resume.
        if may_restart_fresh and resumed:
            logger.info("Digest mismatch after resuming %s; downloading it from the start", url)
            may_restart_fresh = False
            continue
        raise _SourceFailed(f"sha256 mismatch: expected prefix {prefix}, got {digest}")


def _transfer(
    client: requests.Session, url: str, partial: Path, *, timeout: float, progress: bool, limits: _Limits
) -> tuple[str, bool]:
    """Completes ``partial`` from ``url`` in one request; returns its digest and whether it resumed (206).

    Raises:
        _HostUnreachable: The host's name does not resolve or it refuses connections.
        _TransientFailure: If asking again may help; ``partial`` keeps what arrived.
        _SourceFailed: If this source cannot deliver the file.
    """
    while True:
        offset = _size_of(partial)
        # identity: Range offsets and Content-Length count the stored bytes,
        # which a compressed transfer encoding would not.
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            with client.get(url, headers=headers, stream=True, timeout=timeout) as response:
                if not (offset and response.status_code == 416):
                    return _receive(response, partial, offset, progress=progress, limits=limits)
        except requests.exceptions.SSLError as err:
            # A certificate problem will not fix itself; retrying only wastes time.
            raise _SourceFailed(_describe(err)) from err
        except requests.exceptions.ConnectionError as err:
            reason = _unreachable_reason(err)
            if reason is not None:  # asking again will not help; neither will other sources on this host
                raise _HostUnreachable(f"{reason}; not retried ({_describe(err)})") from err
            raise _TransientFailure(_describe(err)) from err
        except _TRANSIENT_ERRORS as err:
            raise _TransientFailure(_describe(err)) from err
        except requests.exceptions.RequestException as err:
            raise _SourceFailed(_describe(err)) from err
        # 416: the partial is not a prefix of this file (it is as long as the
        # whole file or longer), so its bytes are useless.
        logger.info("%s cannot resume at byte %d (HTTP 416); starting over", url, offset)
        partial.unlink(missing_ok=True)


def _unreachable_reason(err: BaseException) -> str | None:
    """Why a connection could not be made at all (name resolution, refused), or None."""
    seen: set[int] = set()
    pending: list[object] = [err]
    while pending:
        current = pending.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, (socket.gaierror, _NAME_RESOLUTION_ERROR)):
            return "the host name does not resolve"
        if isinstance(current, ConnectionRefusedError):
            return "the host refused the connection"
        pending.extend([current.__cause__, current.__context__, getattr(current, "reason", None), *current.args])
    return None


def _receive(
    response: requests.Response, partial: Path, offset: int, *, progress: bool, limits: _Limits
) -> tuple[str, bool]:
    """Appends the body of ``response`` to ``partial``; returns the digest of it all and whether it resumed."""
    status = response.status_code
    if status >= 500:
        raise _TransientFailure(f"HTTP {status} {response.reason}")
    if status not in (200, 206):
        raise _SourceFailed(f"HTTP {status} {response.reason}")
    if status == 200:
        if offset:
            logger.info("%s ignored the Range request; starting over", response.url)
        offset = 0
        expected = _int_header(response, "Content-Length")
    else:
        start, total = _parse_content_range(response.headers.get("Content-Range"))
        if start != offset:
            # The body would not continue our bytes; start over on the next try.
            partial.unlink(missing_ok=True)
            raise _TransientFailure(
                f"asked for bytes from {offset}, got Content-Range {response.headers.get('Content-Range')!r}"
            )
        length = _int_header(response, "Content-Length")
        expected = total if total is not None else (None if length is None else offset + length)
    if expected is not None and expected > limits.max_bytes:
        raise _SourceFailed(f"announces {expected} bytes, more than the {limits.max_bytes} allowed (max_bytes)")
    limit = expected if expected is not None else limits.max_bytes

    hasher = hashlib.sha256()
    with open(partial, "r+b" if offset else "wb") as fh:
        if offset:
            # Hash the bytes we already have, leaving the position at their end.
            _hash_until_eof(hasher, fh, _HASH_CHUNK_SIZE)
        try:
            received = _stream_body(
                response, fh, hasher, offset, expected, progress=progress, limits=limits, limit=limit
            )
        except _SourceFailed:
            fh.close()
            partial.unlink(missing_ok=True)  # bytes past a limit, or a trickle's: not worth resuming
            raise
        if expected is None or received == expected:
            fh.flush()
            os.fsync(fh.fileno())  # The rename that follows must not expose a hole.
    _check_length(partial, received, expected)
    return hasher.hexdigest(), status == 206


def _stream_body(
    response: requests.Response,
    fh: BinaryIO,
    hasher: hashlib._Hash,
    offset: int,
    expected: int | None,
    *,
    progress: bool,
    limits: _Limits,
    limit: int,
) -> int:
    """Writes and hashes the body; stops as soon as it passes ``limit`` bytes or trickles.

    Raises:
        _SourceFailed: The body is longer than ``limit`` (what was announced, else
            ``max_bytes``), or slower than ``min_rate`` over ``min_rate_window`` seconds.
    """
    # Hash while writing so every byte passes through memory once.
    received = offset
    window_start, window_bytes = time.monotonic(), received
    with tqdm(
        total=expected,
        initial=offset,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=Path(fh.name).name.removesuffix(".partial"),
        disable=not progress,
        leave=False,
    ) as bar:
        for chunk in response.iter_content(chunk_size=_NET_CHUNK_SIZE):
            if received + len(chunk) > limit:
                what = "announced" if expected is not None else "allowed (max_bytes)"
                raise _SourceFailed(f"sent more than the {limit} bytes {what}; transfer aborted")
            fh.write(chunk)
            hasher.update(chunk)
            received += len(chunk)
            bar.update(len(chunk))
            elapsed = time.monotonic() - window_start
            if elapsed >= limits.min_rate_window:
                rate = (received - window_bytes) / elapsed
                if rate < limits.min_rate:
                    raise _SourceFailed(
                        f"too slow: {rate / 1024:.1f} KiB/s over {elapsed:.0f} s, below the minimum of "
                        f"{limits.min_rate / 1024:.1f} KiB/s; transfer abandoned"
                    )
                window_start, window_bytes = time.monotonic(), received
    return received


def _check_length(partial: Path, received: int, expected: int | None) -> None:
    if expected is None or received == expected:
        return
    if received < expected:
        # Keep the bytes: the next attempt resumes after them.
        raise _TransientFailure(f"connection closed after {received} of {expected} bytes")
    partial.unlink(missing_ok=True)
    raise _SourceFailed(f"received {received} bytes, more than the {expected} announced")


def _int_header(response: requests.Response, name: str) -> int | None:
    value = response.headers.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise _SourceFailed(f"malformed {name} header {value!r}") from None


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """Parses ``bytes <start>-<end>/<total>``; returns ``(start, total)``.

    Unparseable parts come back as None (``*`` total included), which callers
    treat as "does not continue our bytes" or "length unknown".
    """
    if not value or not value.startswith("bytes "):
        return None, None
    span, _, total_text = value[len("bytes ") :].partition("/")
    start_text = span.partition("-")[0].strip()
    start = int(start_text) if start_text.isdigit() else None
    total_text = total_text.strip()
    total = int(total_text) if total_text.isdigit() else None
    return start, total


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _fsync_directory(directory: Path) -> None:
    # Persists the rename itself; not possible on every platform (Windows).
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def _offline_message(final: Path, prefix: str, sources: Sequence[str]) -> str:
    return (
        f"{final.name} is not in the cache ({final.parent}) and downloads are off ({_offline_switch()}). "
        f"To import the weights by hand, download {sources[0] if sources else final.name} on a machine that "
        f"is online and run `wszoo import-weights FILE` here (accepted if its sha256 starts with {prefix}); "
        f"or unset {OFFLINE_ENV}/HF_HUB_OFFLINE and set {MIRROR_ENV} to a reachable mirror."
    )


def _failure_message(final: Path, prefix: str, failures: Sequence[tuple[str, str]]) -> str:
    tried = "\n".join(f"  - {url}\n      {reason}" for url, reason in failures)
    return (
        f"Could not download {final.name} (sha256 starting with {prefix}) from any source:\n"
        f"{tried}\n"
        "To bring the file in by hand, download it yourself (e.g. from one of the URLs above) "
        "and run\n"
        f"    wszoo import-weights FILE\n"
        f"or place it at {final} (its sha256 must start with {prefix}).\n"
        f"Or set {MIRROR_ENV} to comma-separated base URLs of mirrors serving the same paths."
    )
