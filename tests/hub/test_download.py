"""Tests for wszoo.download, offline, against local servers on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from http_server import Request, Server, serve  # noqa: E402

from wszoo.hub.download import (  # noqa: E402
    DownloadError,
    candidate_urls,
    default_cache_dir,
    download,
    sha256_of_file,
    verify_file,
)

# Percent-encoded like the real OpenMMLab URLs, to check it survives untouched.
PATH = "/mmdetection/v2.0/gn%2Bws/faster_rcnn_r50_fpn_gn_ws.pth"
NAME = "faster_rcnn_r50_fpn_gn_ws.pth"
PAYLOAD = random.Random(20240601).randbytes(300 * 1024)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()
PREFIX = DIGEST[:16]


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's own settings must not leak into the tests.
    monkeypatch.delenv("WSZOO_MIRROR", raising=False)
    monkeypatch.delenv("WSZOO_CACHE", raising=False)


@pytest.fixture
def server() -> Iterator[Server]:
    with serve({PATH: PAYLOAD}) as running:
        yield running


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def fetch(server: Server, cache: Path, **overrides) -> Path:
    kwargs = dict(
        url=server.url_for(PATH),
        file_name=NAME,
        sha256_prefix=PREFIX,
        cache_dir=cache,
        progress=False,
        backoff=0,
        timeout=5,
    )
    kwargs.update(overrides)
    return download(**kwargs)


def cache_contents(cache: Path) -> set[str]:
    """The cache's files, less the digest record beside the verified file; never a stray lock."""
    if not cache.exists():
        return set()
    names = {p.name for p in cache.iterdir()}
    assert NAME + ".lock" not in names, "the lock file must be removed when released"
    if NAME + ".sha256" in names:
        assert NAME in names, "a digest record without its file"
    return names - {NAME + ".sha256"}


def range_offset(request: Request) -> int:
    assert request.range is not None and request.range.startswith("bytes=")
    return int(request.range.removeprefix("bytes=").split("-")[0])


def closed_port_url() -> str:
    # Bind then release a port, so connecting to it is refused.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- happy path ---------------------------------------------------------------


def test_good_download_lands_in_cache_and_second_call_makes_no_request(server, cache):
    path = fetch(server, cache)

    assert path == cache / NAME
    assert path.read_bytes() == PAYLOAD
    assert cache_contents(cache) == {NAME}
    record = json.loads((cache / f"{NAME}.sha256").read_text())
    assert record["sha256"] == DIGEST and record["size"] == len(PAYLOAD)  # the full digest, trusted from now on
    assert server.requests == [Request(PATH, None)]

    assert fetch(server, cache) == path
    assert len(server.requests) == 1


def test_cache_dir_defaults_to_wszoo_cache(server, cache, monkeypatch):
    monkeypatch.setenv("WSZOO_CACHE", str(cache))

    assert fetch(server, cache, cache_dir=None) == cache / NAME


# -- verification ---------------------------------------------------------------


def test_wrong_hash_is_rejected_and_nothing_is_cached(server, cache):
    corrupt = bytearray(PAYLOAD)
    corrupt[1000] ^= 0xFF
    server.add(PATH, bytes(corrupt))

    with pytest.raises(DownloadError) as info:
        fetch(server, cache)

    message = str(info.value)
    assert "sha256 mismatch" in message
    assert PREFIX in message
    assert hashlib.sha256(corrupt).hexdigest() in message
    assert cache_contents(cache) == set()


def test_uppercase_prefix_is_accepted(server, cache):
    assert fetch(server, cache, sha256_prefix=PREFIX.upper()).read_bytes() == PAYLOAD


# -- resuming -------------------------------------------------------------------


def test_dropped_connection_is_retried_with_range_and_verifies(server, cache):
    server.drop_after(PATH, 200_000, times=1)

    path = fetch(server, cache, retries=1)

    assert path.read_bytes() == PAYLOAD
    first, second = server.requests
    assert first.range is None
    assert 0 < range_offset(second) <= 200_000
    assert server.full_bodies(PATH) == 0  # The second answer was a 206.
    assert cache_contents(cache) == {NAME}


def test_partial_from_exhausted_retries_is_resumed_by_next_call(server, cache):
    # Each attempt gets 70 kB further, so three attempts end short of the end.
    server.drop_after(PATH, 70_000, times=3)

    with pytest.raises(DownloadError, match="gave up after 3 attempts"):
        fetch(server, cache, retries=2)
    partial = cache / (NAME + ".partial")
    kept = partial.stat().st_size
    assert cache_contents(cache) == {partial.name}
    assert 0 < kept <= 3 * 70_000
    offsets = [range_offset(r) for r in server.requests[1:]]
    assert all(a < b for a, b in zip(offsets, offsets[1:]))  # Each retry resumed further.

    assert fetch(server, cache).read_bytes() == PAYLOAD
    assert range_offset(server.requests[-1]) == kept
    assert cache_contents(cache) == {NAME}


def test_partial_left_by_killed_run_is_resumed_at_its_size(server, cache):
    cache.mkdir()
    (cache / (NAME + ".partial")).write_bytes(PAYLOAD[:123_456])

    assert fetch(server, cache).read_bytes() == PAYLOAD
    assert server.requests == [Request(PATH, "bytes=123456-")]
    assert cache_contents(cache) == {NAME}


def test_server_ignoring_range_restarts_from_zero(server, cache):
    cache.mkdir()
    (cache / (NAME + ".partial")).write_bytes(PAYLOAD[:50_000])
    server.accept_ranges = False  # Answers 200 with the whole file.

    assert fetch(server, cache).read_bytes() == PAYLOAD
    assert server.requests == [Request(PATH, "bytes=50000-")]
    assert server.full_bodies(PATH) == 1


def test_416_restarts_from_zero(server, cache):
    cache.mkdir()
    (cache / (NAME + ".partial")).write_bytes(PAYLOAD + b"trailing junk")

    assert fetch(server, cache).read_bytes() == PAYLOAD
    assert server.requests == [
        Request(PATH, f"bytes={len(PAYLOAD) + 13}-"),
        Request(PATH, None),
    ]


def test_stale_partial_with_wrong_bytes_is_discarded_and_refetched(server, cache):
    cache.mkdir()
    (cache / (NAME + ".partial")).write_bytes(b"\0" * 1000)

    assert fetch(server, cache).read_bytes() == PAYLOAD
    assert server.requests == [Request(PATH, "bytes=1000-"), Request(PATH, None)]


# -- sources and fallbacks --------------------------------------------------------


def test_mirror_404_falls_back_to_original_at_once(server, cache, monkeypatch):
    with serve({}) as mirror:  # Has nothing: 404 for every path.
        monkeypatch.setenv("WSZOO_MIRROR", mirror.url + "/base/")

        assert fetch(server, cache, retries=3).read_bytes() == PAYLOAD

    assert mirror.requests == [Request("/base" + PATH, None)]  # No retry on 404.
    assert server.requests == [Request(PATH, None)]


def test_mirror_serving_file_is_used_before_original(server, cache, monkeypatch):
    with serve({"/base" + PATH: PAYLOAD}) as mirror:
        monkeypatch.setenv("WSZOO_MIRROR", mirror.url + "/base")

        assert fetch(server, cache).read_bytes() == PAYLOAD

    assert mirror.requests == [Request("/base" + PATH, None)]
    assert server.requests == []


def test_mirror_500_is_retried_then_falls_back(server, cache, monkeypatch):
    with serve({PATH: PAYLOAD}) as mirror:
        mirror.fail(PATH, status=500)  # Every time.
        monkeypatch.setenv("WSZOO_MIRROR", mirror.url)

        assert fetch(server, cache, retries=2).read_bytes() == PAYLOAD

    assert mirror.requests == [Request(PATH, None)] * 3
    assert server.requests == [Request(PATH, None)]


def test_transient_500_recovers_on_same_source(server, cache):
    server.fail(PATH, status=503, times=2)

    assert fetch(server, cache, retries=2).read_bytes() == PAYLOAD
    assert len(server.requests) == 3


def test_all_sources_failing_lists_every_url(server, cache, monkeypatch):
    server.fail(PATH, status=500)
    legacy = closed_port_url() + "/legacy"
    with serve({}) as mirror:
        monkeypatch.setenv("WSZOO_MIRROR", mirror.url)
        with pytest.raises(DownloadError) as info:
            fetch(server, cache, retries=1, legacy_mirrors=[legacy])

    mirror_url, origin_url, legacy_url = mirror.url + PATH, server.url_for(PATH), legacy + PATH
    error = info.value
    assert isinstance(error, RuntimeError)
    assert [url for url, _ in error.failures] == [mirror_url, origin_url, legacy_url]
    message = str(error)
    for url in (mirror_url, origin_url, legacy_url):
        assert url in message
    assert "HTTP 404" in message
    assert "HTTP 500" in message
    assert "ConnectionError" in message
    assert "wszoo import-weights FILE" in message
    assert str(cache / NAME) in message
    assert "WSZOO_MIRROR" in message
    assert cache_contents(cache) == set()


def test_candidate_urls_mirror_path_rule(monkeypatch):
    url = "https://download.openmmlab.com/mmdetection/v2.0/gn%2Bws/x/y.pth"
    assert candidate_urls(url) == [url]

    monkeypatch.setenv("WSZOO_MIRROR", " http://m/base/ , ,https://m2//,\thttp://m/base ")
    assert candidate_urls(url, legacy_mirrors=["http://old.example/a/", "http://m/base"]) == [
        "http://m/base/mmdetection/v2.0/gn%2Bws/x/y.pth",
        "https://m2/mmdetection/v2.0/gn%2Bws/x/y.pth",
        url,
        "http://old.example/a/mmdetection/v2.0/gn%2Bws/x/y.pth",
    ]

    monkeypatch.setenv("WSZOO_MIRROR", "http://m")
    assert candidate_urls("https://h/p%20q/f.pth?dl=1") == [
        "http://m/p%20q/f.pth?dl=1",
        "https://h/p%20q/f.pth?dl=1",
    ]


# -- processes ------------------------------------------------------------------


def _download_in_worker(barrier, url: str, cache_dir: str) -> None:
    # Start together, so the others really meet the lock held by the first.
    barrier.wait(timeout=60)
    download(
        url=url,
        file_name=NAME,
        sha256_prefix=PREFIX,
        cache_dir=Path(cache_dir),
        progress=False,
        backoff=0,
    )


@pytest.mark.slow
def test_concurrent_processes_share_one_download(server, cache):
    # A slow answer keeps the first download running while the others arrive.
    server.delay(PATH, 0.3)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    workers = [
        context.Process(target=_download_in_worker, args=(barrier, server.url_for(PATH), str(cache))) for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)

    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
    assert server.requests == [Request(PATH, None)]
    assert server.full_bodies(PATH) == 1
    assert cache_contents(cache) == {NAME}
    assert verify_file(cache / NAME, sha256_prefix=PREFIX)


# -- hashing, cache location, imports -------------------------------------------------


def test_sha256_of_file_and_verify_file(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(PAYLOAD)

    assert sha256_of_file(path) == DIGEST
    assert sha256_of_file(path, chunk_size=4096) == DIGEST  # Many chunks, short last one.
    assert verify_file(path, sha256_prefix=PREFIX)
    assert verify_file(path, sha256_prefix=DIGEST.upper())
    wrong = f"{(int(DIGEST[0], 16) + 1) % 16:x}" + DIGEST[1:16]
    assert not verify_file(path, sha256_prefix=wrong)
    with pytest.raises(ValueError):
        sha256_of_file(path, chunk_size=0)


def test_default_cache_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WSZOO_CACHE", "~/weights")

    assert default_cache_dir() == tmp_path / "weights"


def test_default_cache_dir_is_torch_hub_checkpoints(monkeypatch, tmp_path):
    monkeypatch.delenv("WSZOO_CACHE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "hub" / "checkpoints"


# -- bad input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        ({"sha256_prefix": "abc123"}, ValueError, "sha256_prefix"),
        ({"sha256_prefix": "not-hex-at-all"}, ValueError, "sha256_prefix"),
        ({"sha256_prefix": "a" * 65}, ValueError, "sha256_prefix"),
        ({"sha256_prefix": 12345678}, TypeError, "sha256_prefix"),
        ({"file_name": "sub/model.pth"}, ValueError, "file_name"),
        ({"file_name": ".."}, ValueError, "file_name"),
        ({"file_name": ""}, ValueError, "file_name"),
        ({"url": "ftp://example.com/model.pth"}, ValueError, "http"),
        ({"url": "model.pth"}, ValueError, "http"),
        ({"legacy_mirrors": "http://old.example"}, TypeError, "legacy_mirrors"),
        ({"retries": -1}, ValueError, "retries"),
        ({"backoff": -1.0}, ValueError, "backoff"),
        ({"timeout": 0}, ValueError, "timeout"),
    ],
)
def test_bad_input_is_rejected_before_any_work(server, cache, overrides, error, match):
    with pytest.raises(error, match=match):
        fetch(server, cache, **overrides)

    assert server.requests == []
    assert not cache.exists()


def test_malformed_mirror_is_rejected(server, cache, monkeypatch):
    monkeypatch.setenv("WSZOO_MIRROR", "mirror.local/base")

    with pytest.raises(ValueError, match="mirror"):
        fetch(server, cache)
    assert server.requests == []
