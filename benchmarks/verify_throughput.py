#!/usr/bin/env python
"""Throughput of checkpoint verification and single-pass hashing of downloads.

1. ``wszoo.hub.download.sha256_of_file`` on a random file already in the page cache, against
   ``hashlib.sha256`` over the same bytes already in memory (a bytes object): the ratio of
   throughputs (goal >= 0.9). The two are interleaved; medians of ``--repeats``.
2. ``wszoo.hub.download.download`` of the same file from an in-process threaded ``http.server`` on
   127.0.0.1 into a temporary cache, instrumented to prove the bytes are hashed in one pass:
   ``hashlib.sha256`` inside ``wszoo.hub.download`` is replaced by a counting wrapper (bytes passed
   to ``update`` must equal the file size), ``sha256_of_file`` and ``_hash_until_eof`` raise /
   count if called (the written file must not be read back), and ``open`` inside
   ``wszoo.hub.download`` records its modes (no read mode allowed). Its throughput is compared with
   a baseline that streams the same URL with ``requests`` into a file (same 64 KiB chunks,
   fsync at the end) without hashing.

Default 170 MB (the size of an R-50 Mask R-CNN checkpoint); ``--size-mb`` to change.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import os
import shutil
import tempfile
import threading
from pathlib import Path
from unittest import mock

from _common import median, print_environment, print_table, timed


class _CountingSha256:
    """hashlib.sha256 that counts the bytes it is fed."""

    total = 0
    instances = 0

    def __init__(self, data: bytes = b"") -> None:
        type(self).instances += 1
        self._h = hashlib.sha256()
        if data:
            self.update(data)

    def update(self, data) -> None:
        type(self).total += memoryview(data).nbytes
        self._h.update(data)

    def hexdigest(self) -> str:
        return self._h.hexdigest()

    def digest(self) -> bytes:
        return self._h.digest()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the table readable
        pass


def make_random_file(path: Path, size: int) -> None:
    chunk = 16 * 1024 * 1024
    with open(path, "wb") as fh:
        left = size
        while left:
            n = min(chunk, left)
            fh.write(os.urandom(n))
            left -= n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=float, default=170.0, help="file size in MB (10^6 bytes)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions of the hashing comparison")
    parser.add_argument("--download-repeats", type=int, default=3, help="timed downloads (and baselines)")
    parser.add_argument("--dir", default=None, help="where to create the temporary files (default: TMPDIR)")
    args = parser.parse_args()

    import requests

    import wszoo.hub.download as wd

    size = int(args.size_mb * 1e6)
    print_environment(
        {
            "file size": f"{size} bytes ({size / 1e6:.1f} MB)",
            "hash chunk": f"{wd._HASH_CHUNK_SIZE} bytes",
            "openssl": __import__("ssl").OPENSSL_VERSION,
        }
    )
    work = Path(tempfile.mkdtemp(prefix="wszoo-verify-", dir=args.dir))
    try:
        source = work / "serve" / "checkpoint.pth"
        source.parent.mkdir()
        make_random_file(source, size)
        data = source.read_bytes()  # Also puts the file in the page cache.
        expected = hashlib.sha256(data).hexdigest()

        # ---- 1. hashing throughput ----------------------------------------------------------
        assert wd.sha256_of_file(source) == expected

        def sha256_mmap() -> str:
            # An alternative, not wszoo's: hash the page cache through mmap (no copy into a buffer).
            import mmap

            with open(source, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                return hashlib.sha256(mapped).hexdigest()

        assert sha256_mmap() == expected
        file_times, mem_times, mmap_times = [], [], []
        for _ in range(args.repeats):
            file_times.append(timed(lambda: wd.sha256_of_file(source)))
            mem_times.append(timed(lambda: hashlib.sha256(data).hexdigest()))
            mmap_times.append(timed(sha256_mmap))
        t_file, t_mem = median(file_times), median(mem_times)
        print("== hashing a page-cached file vs bytes in memory ==")
        print_table(
            ["method", "median s", "min s", "MB/s (median)"],
            [
                ["hashlib.sha256(bytes) (baseline)", t_mem, min(mem_times), size / 1e6 / t_mem],
                ["wszoo.hub.download.sha256_of_file", t_file, min(file_times), size / 1e6 / t_file],
                [
                    "(alternative) hashlib over mmap of the file",
                    median(mmap_times),
                    min(mmap_times),
                    size / 1e6 / median(mmap_times),
                ],
            ],
        )
        ratio = t_mem / t_file
        paired = median([m / f for m, f in zip(mem_times, file_times)])
        print(
            f"\nthroughput(sha256_of_file) / throughput(hashlib on bytes) = {ratio:.4f} "
            f"(median of per-rep ratios {paired:.4f}, best-of-run {min(mem_times) / min(file_times):.4f}); "
            f"goal >= 0.9: {'MET' if ratio >= 0.9 else 'MISSED'}"
        )
        print(f"(alternative) mmap: {t_mem / median(mmap_times):.4f} of the in-memory throughput\n")

        # ---- 2. download: single pass ---------------------------------------------------------
        handler = lambda *a, **k: _QuietHandler(*a, directory=str(source.parent), **k)  # noqa: E731
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{server.server_address[1]}/{source.name}"
        try:
            cache = work / "cache"
            opened: list[tuple[str, str]] = []
            real_open = open
            rehashed = {"bytes": 0}
            real_hash_until_eof = wd._hash_until_eof

            def recording_open(file, mode="r", *a, **k):
                opened.append((Path(file).name, mode))
                return real_open(file, mode, *a, **k)

            def counting_hash_until_eof(*a, **k):
                n = real_hash_until_eof(*a, **k)
                rehashed["bytes"] += n
                return n

            def forbidden_sha256_of_file(*a, **k):
                raise AssertionError("download re-read the file to hash it (sha256_of_file called)")

            def run_download() -> Path:
                _CountingSha256.total = _CountingSha256.instances = 0
                opened.clear()
                rehashed["bytes"] = 0
                shutil.rmtree(cache, ignore_errors=True)
                with (
                    mock.patch.object(wd, "hashlib", mock.Mock(sha256=_CountingSha256)),
                    mock.patch.object(wd, "sha256_of_file", forbidden_sha256_of_file),
                    mock.patch.object(wd, "_hash_until_eof", counting_hash_until_eof),
                    mock.patch.object(wd, "open", recording_open, create=True),
                ):
                    return wd.download(
                        url=url,
                        file_name=source.name,
                        sha256_prefix=expected[:16],
                        cache_dir=cache,
                        progress=False,
                        retries=0,
                    )

            def run_baseline() -> None:
                target = work / "baseline.bin"
                with requests.get(url, stream=True, headers={"Accept-Encoding": "identity"}) as response:
                    response.raise_for_status()
                    with open(target, "wb") as fh:
                        for chunk in response.iter_content(chunk_size=wd._NET_CHUNK_SIZE):
                            fh.write(chunk)
                        fh.flush()
                        os.fsync(fh.fileno())
                assert target.stat().st_size == size
                target.unlink()

            run_download()  # warm-up (connection setup, imports)
            run_baseline()
            dl_times, base_times = [], []
            for _ in range(args.download_repeats):
                dl_times.append(timed(run_download))
                checks = (_CountingSha256.instances, _CountingSha256.total, rehashed["bytes"], list(opened))
                base_times.append(timed(run_baseline))
            instances, hashed, reread, modes = checks
            final = cache / source.name
            assert final.stat().st_size == size
            assert wd.sha256_of_file(final) == expected  # (unpatched; outside the timed region)
        finally:
            server.shutdown()
            server.server_close()

        print("== download of the file from 127.0.0.1 (http.server, threaded) ==")
        print(
            f"hasher instances: {instances}; bytes passed to sha256.update: {hashed} (file size {size}); "
            f"bytes re-hashed from disk (_hash_until_eof): {reread}; sha256_of_file calls: 0 (it raises)"
        )
        print(f"files opened by wszoo.hub.download: {modes}")
        single_pass = hashed == size and reread == 0 and all("r" not in m and "+" not in m for _, m in modes)
        print(f"single pass over the bytes: {'YES' if single_pass else 'NO'}\n")
        t_dl, t_base = median(dl_times), median(base_times)
        print_table(
            ["method", "median s", "min s", "MB/s (median)"],
            [
                ["requests stream -> file + fsync, no hash (baseline)", t_base, min(base_times), size / 1e6 / t_base],
                ["wszoo.hub.download.download (hash while writing)", t_dl, min(dl_times), size / 1e6 / t_dl],
            ],
        )
        print(f"\nthroughput(download) / throughput(baseline) = {t_base / t_dl:.4f}")
        if not single_pass:
            raise SystemExit("FAILED: the download did not pass over its bytes exactly once")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
