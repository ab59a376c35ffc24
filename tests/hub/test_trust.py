"""Trust on first use of the full digest: the record beside a cached download, re-checked cheaply,
re-hashed when the file changed, and a pinned full sha256 in the zoo table."""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from http_server import Server, serve

from wszoo.arch import ResNetArch
from wszoo.cli import main
from wszoo.hub import download as download_module
from wszoo.hub.download import DownloadError, download, read_digest_record, trusted_digest
from wszoo.zoo import ZooEntry

PATH = "/x/trust.pth"
NAME = "trust.pth"
PAYLOAD = random.Random(20261202).randbytes(200 * 1024)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WSZOO_MIRROR", "WSZOO_CACHE", "WSZOO_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[Server]:
    with serve({PATH: PAYLOAD}) as running:
        yield running


def fetch(server: Server, cache: Path, prefix: str = DIGEST[:8]) -> Path:
    return download(
        url=server.url_for(PATH), file_name=NAME, sha256_prefix=prefix, cache_dir=cache, progress=False, backoff=0
    )


def flip_byte(path: Path, *, keep_mtime: bool = False) -> None:
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x01
    path.write_bytes(bytes(data))
    if keep_mtime:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def count_hashes(monkeypatch) -> list[Path]:
    hashed: list[Path] = []
    real = download_module.sha256_of_file

    def counting(path, **kwargs):
        hashed.append(Path(path))
        return real(path, **kwargs)

    monkeypatch.setattr(download_module, "sha256_of_file", counting)
    return hashed


def test_a_verified_download_records_its_full_digest_and_later_loads_do_not_rehash(server, tmp_path, monkeypatch):
    path = fetch(server, tmp_path)
    record = read_digest_record(path)
    assert record["sha256"] == DIGEST and record["size"] == len(PAYLOAD)
    assert record["mtime_ns"] == path.stat().st_mtime_ns
    hashed = count_hashes(monkeypatch)
    assert fetch(server, tmp_path) == path and hashed == []  # size + mtime + recorded digest: cheap
    assert len(server.requests) == 1


def test_a_tampered_cached_file_is_rehashed_discarded_and_downloaded_again(server, tmp_path, monkeypatch):
    path = fetch(server, tmp_path)
    flip_byte(path)
    hashed = count_hashes(monkeypatch)
    assert fetch(server, tmp_path).read_bytes() == PAYLOAD  # never the tampered bytes
    assert hashed == [path] and len(server.requests) == 2
    assert read_digest_record(path)["sha256"] == DIGEST


def test_a_record_that_does_not_match_the_expected_digest_is_not_trusted(server, tmp_path):
    path = fetch(server, tmp_path)
    record_file = path.with_name(NAME + ".sha256")
    record = json.loads(record_file.read_text())
    record["sha256"] = "0" * 64  # a forged record cannot vouch for the file
    record_file.write_text(json.dumps(record))
    assert fetch(server, tmp_path).read_bytes() == PAYLOAD
    assert len(server.requests) == 2 and read_digest_record(path)["sha256"] == DIGEST


def test_a_cached_file_without_a_record_is_hashed_once_and_recorded(server, tmp_path, monkeypatch):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / NAME).write_bytes(PAYLOAD)  # e.g. cached by an older wszoo
    hashed = count_hashes(monkeypatch)
    assert fetch(server, tmp_path) == tmp_path / NAME
    assert hashed == [tmp_path / NAME] and server.requests == []
    assert read_digest_record(tmp_path / NAME)["sha256"] == DIGEST
    assert trusted_digest(tmp_path / NAME, expected=DIGEST[:8]) == DIGEST and len(hashed) == 1


def test_verify_rehashes_and_catches_what_the_cheap_check_cannot(server, tmp_path, register_entry, capsys):
    file_name = f"trusted-{DIGEST[:8]}.pth"
    server.add(f"/x/{file_name}", PAYLOAD)
    entry = register_entry(
        ZooEntry(
            name="trusted_backbone",
            task="backbone",
            arch=ResNetArch(depth=18),
            backbone="R-18",
            model_url=server.url_for(f"/x/{file_name}"),
        )
    )
    assert main(["download", entry.name, "--cache-dir", str(tmp_path), "--quiet"]) == 0
    cached = tmp_path / file_name
    flip_byte(cached, keep_mtime=True)  # same size, same mtime: only a full re-hash sees it
    capsys.readouterr()
    assert main(["verify", entry.name, "--cache-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().out.startswith(f"FAIL {cached}")


def test_a_pinned_full_sha256_is_checked_in_full(server, tmp_path, register_entry):
    file_name = f"pinned-{DIGEST[:8]}.pth"
    server.add(f"/x/{file_name}", PAYLOAD)
    wrong = DIGEST[:8] + ("0" if DIGEST[8] != "0" else "1") + DIGEST[9:]  # same prefix, other digest
    fields = dict(
        task="backbone", arch=ResNetArch(depth=18), backbone="R-18", model_url=server.url_for(f"/x/{file_name}")
    )
    forged = ZooEntry(name="pinned_backbone", sha256=wrong, **fields)
    assert forged.expected_sha256 == wrong
    with pytest.raises(DownloadError, match=f"sha256 mismatch: expected prefix {wrong}"):
        download(
            url=forged.model_url,
            file_name=file_name,
            sha256_prefix=forged.expected_sha256,
            cache_dir=tmp_path,
            progress=False,
            backoff=0,
        )
    assert not (tmp_path / file_name).exists()
    # The prefix alone would have accepted these bytes; a cached copy is refused too.
    path = download(
        url=forged.model_url, file_name=file_name, sha256_prefix=DIGEST[:8], cache_dir=tmp_path, progress=False
    )
    assert trusted_digest(path, expected=wrong) is None and not path.exists()
    pinned = ZooEntry(name="pinned_backbone", sha256=DIGEST.upper(), **fields)
    assert pinned.expected_sha256 == DIGEST
    with pytest.raises(ValueError, match="does not start with"):
        ZooEntry(name="bad", sha256="f" * 64 if DIGEST[0] != "f" else "e" * 64, **fields)
    with pytest.raises(ValueError, match="64 hex digits"):
        ZooEntry(name="bad", sha256=DIGEST[:40], **fields)
