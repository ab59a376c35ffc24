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
* 4xx answers and wrong digests move on to the next source at once.
* An inter-process file lock (``<name>.lock``) lets concurrent processes (e.g.
  DDP ranks) share one download: one fetches, the others wait and then find the
  verified file in the cache.

Environment variables:
    WSZOO_MIRROR: Comma-separated base URLs tried before the original URL. The
        path of the original URL (everything after its host) is appended to
        each base, e.g. ``WSZOO_MIRROR=http://mirror.local/openmmlab``.
    WSZOO_CACHE: Directory for downloaded checkpoints. Defaults to torch.hub's
        checkpoint directory (``$TORCH_HOME/hub/checkpoints``).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import string
import time
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO
from urllib.parse import SplitResult, urlsplit

import requests
import torch.hub
import urllib3
from filelock import FileLock
from tqdm import tqdm

from ..checkpoint_io import _HASH_CHUNK_SIZE, _hash_until_eof, sha256_of_file

__all__ = [
    "CACHE_ENV",
    "MIRROR_ENV",
    "DownloadError",
    "candidate_urls",
    "default_cache_dir",
    "download",
    "sha256_of_file",
    "verify_file",
]

logger = logging.getLogger(__name__)

MIRROR_ENV = "WSZOO_MIRROR"
CACHE_ENV = "WSZOO_CACHE"

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
) -> Path:
    """Returns the path of a verified copy of a file, downloading it if needed.

    A file already at ``cache_dir/file_name`` is returned as is: the cache only
    ever receives verified files. Otherwise, holding the lock
    ``cache_dir/file_name.lock``, each candidate URL (see
    :func:`candidate_urls`) is tried until one delivers bytes whose SHA-256
    starts with ``sha256_prefix``.

    Args:
        url: Canonical http(s) URL of the file.
        file_name: Name of the file in the cache; a bare name, no directories.
        sha256_prefix: At least 8 hex digits the SHA-256 digest must start with
            (case-insensitive).
        cache_dir: Cache directory; defaults to :func:`default_cache_dir`.
        legacy_mirrors: Base URLs tried after ``url``.
        progress: Show a tqdm progress bar.
        retries: Extra attempts per source after dropped connections,
            timeouts and 5xx answers (so ``retries + 1`` attempts in all).
        backoff: Seconds before the first retry; doubled for each further one.
        timeout: Seconds to wait for a connection or for the next bytes.
        session: Session to send requests with; a private one by default.

    Returns:
        Path of the verified file in the cache.

    Raises:
        DownloadError: If no source delivered a verified file. The message
            lists each URL with the reason it failed and how to provide the
            file by hand.
        ValueError: For malformed arguments.
        TypeError: For arguments of the wrong type.
    """
    prefix = _check_sha256_prefix(sha256_prefix)
    _check_file_name(file_name)
    _check_retry_settings(retries=retries, backoff=backoff, timeout=timeout)
    # Resolve sources first, so a malformed mirror fails before any disk work.
    sources = candidate_urls(url, legacy_mirrors=legacy_mirrors)
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = directory / file_name
    if final.is_file():
        return final

    directory.mkdir(parents=True, exist_ok=True)
    # The lock file stays behind on purpose: unlinking a lock file another
    # process may be about to open lets two processes hold "the" lock at once.
    with FileLock(str(directory / f"{file_name}.lock")):
        # Another process may have finished the download while we waited.
        if final.is_file():
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
            )
        finally:
            if session is None:  # Only close what we opened.
                client.close()
        if not failures:
            return final
    raise DownloadError(_failure_message(final, prefix, failures), path=final, failures=failures)


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
) -> list[tuple[str, str]]:
    """Fills ``final`` from the first source that works; returns the failures.

    An empty list means success.
    """
    partial = final.with_name(final.name + ".partial")
    failures: list[tuple[str, str]] = []
    for url in sources:
        try:
            _fetch_verified_partial(
                client,
                url,
                partial,
                prefix=prefix,
                retries=retries,
                backoff=backoff,
                timeout=timeout,
                progress=progress,
            )
        except _SourceFailed as err:
            logger.warning("Download of %s failed: %s", url, err)
            failures.append((url, str(err)))
            continue
        os.replace(partial, final)  # Atomic: readers see no file or a whole one.
        _fsync_directory(final.parent)
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
) -> None:
    """Makes ``partial`` a complete, verified copy of the file at ``url``.

    Raises:
        _SourceFailed: With the reason, if this source cannot deliver it.
    """
    # Bytes present before we start may come from another source or a file
    # that changed since; if they spoil the digest, one fresh start is fair.
    may_restart_fresh = _size_of(partial) > 0
    attempt = 0
    while True:
        try:
            digest = _transfer(client, url, partial, timeout=timeout, progress=progress)
        except _TransientFailure as err:
            if attempt >= retries:
                raise _SourceFailed(f"{err} (gave up after {attempt + 1} attempts)") from None
            delay = backoff * 2**attempt
            logger.info("Retrying %s in %.1f s after: %s", url, delay, err)
            time.sleep(delay)
            attempt += 1
            continue
        if digest.startswith(prefix):
            return
        partial.unlink(missing_ok=True)  # Wrong bytes must not seed a later resume.
        if may_restart_fresh:
            logger.info("Digest mismatch after resuming %s; downloading it from the start", url)
            may_restart_fresh = False
            continue
        raise _SourceFailed(f"sha256 mismatch: expected prefix {prefix}, got {digest}")


def _transfer(client: requests.Session, url: str, partial: Path, *, timeout: float, progress: bool) -> str:
    """Completes ``partial`` from ``url`` in one request; returns its digest.

    Raises:
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
                    return _receive(response, partial, offset, progress=progress)
        except requests.exceptions.SSLError as err:
            # A certificate problem will not fix itself; retrying only wastes time.
            raise _SourceFailed(_describe(err)) from err
        except _TRANSIENT_ERRORS as err:
            raise _TransientFailure(_describe(err)) from err
        except requests.exceptions.RequestException as err:
            raise _SourceFailed(_describe(err)) from err
        # 416: the partial is not a prefix of this file (it is as long as the
        # whole file or longer), so its bytes are useless.
        logger.info("%s cannot resume at byte %d (HTTP 416); starting over", url, offset)
        partial.unlink(missing_ok=True)


def _receive(response: requests.Response, partial: Path, offset: int, *, progress: bool) -> str:
    """Appends the body of ``response`` to ``partial``; returns the digest of it all."""
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

    hasher = hashlib.sha256()
    with open(partial, "r+b" if offset else "wb") as fh:
        if offset:
            # Hash the bytes we already have, leaving the position at their end.
            _hash_until_eof(hasher, fh, _HASH_CHUNK_SIZE)
        received = _stream_body(response, fh, hasher, offset, expected, progress=progress)
        if expected is None or received == expected:
            fh.flush()
            os.fsync(fh.fileno())  # The rename that follows must not expose a hole.
    _check_length(partial, received, expected)
    return hasher.hexdigest()


def _stream_body(
    response: requests.Response,
    fh: BinaryIO,
    hasher: hashlib._Hash,
    offset: int,
    expected: int | None,
    *,
    progress: bool,
) -> int:
    # Hash while writing so every byte passes through memory once.
    received = offset
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
            fh.write(chunk)
            hasher.update(chunk)
            received += len(chunk)
            bar.update(len(chunk))
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
