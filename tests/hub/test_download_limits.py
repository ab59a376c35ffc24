"""Download limits and failure handling, against the loopback server: oversize and trickling bodies,
a corrupt resumed body, unreachable hosts, the offline switch, one report per failure, no stray locks."""

from __future__ import annotations

import hashlib
import logging
import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from http_server import Request, Server, serve

from wszoo.arch import ResNetArch
from wszoo.cli import main
from wszoo.hub.download import DownloadError, download
from wszoo.zoo import ZooEntry

PATH = "/mmdetection/v2.0/gn%2Bws/limits/limits.pth"
NAME = "limits.pth"
PAYLOAD = random.Random(20261201).randbytes(300 * 1024)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WSZOO_MIRROR", "WSZOO_CACHE", "WSZOO_OFFLINE", "HF_HUB_OFFLINE", "WSZOO_DEBUG"):
        monkeypatch.delenv(name, raising=False)


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
        sha256_prefix=DIGEST[:8],
        cache_dir=cache,
        progress=False,
        backoff=0,
        timeout=5,
    )
    kwargs.update(overrides)
    return download(**kwargs)


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# ---- size ----


def test_endless_body_is_cut_off_at_max_bytes(server, cache):
    server.endless(PATH)
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"sent more than the 1048576 bytes allowed \(max_bytes\)"):
        fetch(server, cache, max_bytes=1024 * 1024, retries=3)
    assert time.monotonic() - start < 10
    assert len(server.requests_for(PATH)) == 1  # not retried: the source is broken
    assert leftovers(cache) == []  # neither the 1 MB partial nor a lock


def test_announced_size_above_max_bytes_is_refused_before_the_body(server, cache):
    with pytest.raises(DownloadError, match=f"announces {len(PAYLOAD)} bytes, more than the 100000 allowed"):
        fetch(server, cache, max_bytes=100_000)
    assert leftovers(cache) == []


def test_entry_max_bytes_reaches_the_cli_download(server, cache, register_entry, capsys):
    file_name = f"limited-{DIGEST[:8]}.pth"
    server.add(f"/x/{file_name}", PAYLOAD)
    register_entry(
        ZooEntry(
            name="limited_backbone",
            task="backbone",
            arch=ResNetArch(depth=18),
            backbone="R-18",
            model_url=server.url_for(f"/x/{file_name}"),
            max_bytes=1000,
        )
    )
    assert main(["download", "limited_backbone", "--cache-dir", str(cache), "--quiet"]) == 2
    assert "more than the 1000 allowed" in capsys.readouterr().err


# ---- throughput ----


def test_trickling_body_is_abandoned_after_the_window(server, cache):
    server.throttle(PATH, 40_000)  # the whole file would take 7.5 s
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"too slow: .* below the minimum of 195\.3 KiB/s") as info:
        fetch(server, cache, min_rate=200_000, min_rate_window=0.5, retries=3)
    assert time.monotonic() - start < 5
    assert len(server.requests_for(PATH)) == 1 and len(info.value.failures) == 1
    assert leftovers(cache) == []


def test_a_fast_source_passes_the_minimum_rate(server, cache):
    assert fetch(server, cache, min_rate=1000, min_rate_window=0.01).read_bytes() == PAYLOAD


# ---- a corrupt resumed body ----


def test_corrupt_resumed_body_retries_the_same_source_once_from_zero(server, cache):
    server.drop_after(PATH, 100_000, times=1)  # first answer: cut after 100 kB
    server.corrupt(PATH, times=1)  # the resumed (206) answer: one byte flipped
    path = fetch(server, cache)
    assert path.read_bytes() == PAYLOAD
    first, resumed, fresh = server.requests_for(PATH)
    assert first == fresh == Request(PATH, None)  # the third starts from byte zero
    assert resumed.range.startswith("bytes=") and resumed.range != "bytes=0-"
    assert leftovers(cache) == [NAME, NAME + ".sha256"]


def test_a_source_corrupt_from_zero_is_not_asked_forever(server, cache):
    server.drop_after(PATH, 100_000, times=1)
    server.corrupt(PATH, times=None)  # every later answer corrupt
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        fetch(server, cache)
    ranges = [r.range for r in server.requests_for(PATH)]
    assert len(ranges) == 3 and ranges[0] is None and ranges[1].startswith("bytes=") and ranges[2] is None
    assert leftovers(cache) == []


# ---- unreachable hosts ----


def test_unresolvable_and_refusing_hosts_are_not_retried(server, cache, monkeypatch, caplog):
    resolved: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host == "mirror.invalid":
            resolved.append(host)
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setenv("WSZOO_MIRROR", "http://mirror.invalid,http://mirror.invalid:8080/other")
    server.fail(PATH, status=404)
    refusing = closed_port_url()
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="wszoo"), pytest.raises(DownloadError) as info:
        fetch(server, cache, retries=3, backoff=1.0, legacy_mirrors=[refusing, refusing + "/again"])
    assert time.monotonic() - start < 2  # before: 1 + 2 + 4 s of backoff per host
    assert resolved == ["mirror.invalid"]
    reasons = [reason for _, reason in info.value.failures]
    assert "the host name does not resolve; not retried" in reasons[0]
    assert reasons[1] == "not tried: mirror.invalid is unreachable (above)"
    assert reasons[2] == "HTTP 404 Not Found"
    assert "the host refused the connection; not retried" in reasons[3]
    assert reasons[4].startswith("not tried: 127.0.0.1:")
    message = str(info.value)
    assert all(message.count(url) == 1 for url, _ in info.value.failures)  # each failure reported once
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []  # and not logged again
    assert leftovers(cache) == []


# ---- offline ----


@pytest.mark.parametrize("switch", ["WSZOO_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_switch_fails_at_once_with_one_message(server, cache, monkeypatch, no_network, switch):
    monkeypatch.setenv(switch, "1")
    start = time.monotonic()
    with pytest.raises(DownloadError) as info:
        fetch(server, cache, retries=3, backoff=1.0, legacy_mirrors=["https://openmmlab.example"])
    assert time.monotonic() - start < 0.5
    message = str(info.value)
    assert f"downloads are off ({switch}=1)" in message and "wszoo import-weights FILE" in message
    assert "WSZOO_MIRROR" in message and server.url_for(PATH) in message
    assert server.requests == [] and leftovers(cache) == []


def test_offline_still_reads_the_cache(server, cache, monkeypatch):
    fetch(server, cache)
    monkeypatch.setenv("WSZOO_OFFLINE", "1")
    assert fetch(server, cache).read_bytes() == PAYLOAD
    assert len(server.requests) == 1


def test_offline_cli_download_is_one_line(server, cache, monkeypatch, register_entry, capsys, no_network):
    register_entry(
        ZooEntry(
            name="offline_backbone",
            task="backbone",
            arch=ResNetArch(depth=18),
            backbone="R-18",
            model_url=f"https://download.example/x/offline-{DIGEST[:8]}.pth",
            hf_repo="org/offline-backbone",
        )
    )
    monkeypatch.setenv("WSZOO_OFFLINE", "1")
    start = time.monotonic()
    assert main(["download", "offline_backbone", "--cache-dir", str(cache), "--quiet"]) == 2
    assert time.monotonic() - start < 0.5
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("wszoo download: error: ") and "import-weights" in err[0]
