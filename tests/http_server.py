"""A threaded HTTP server on 127.0.0.1 for offline tests, with fault injection.

Serves files from a dict or a directory, honours single HTTP ``Range``
requests (206 with ``Content-Range``, 416 when unsatisfiable) and can, per
path, answer an error status, cut the connection after some body bytes or
flip a byte of the body, for the first N requests or forever; trickle a body
at a set rate; or send an endless body without ``Content-Length``.

Example::

    with serve({"/models/a.pth": payload}) as server:
        server.fail("/models/a.pth", status=500, times=2)   # first two: 500
        server.drop_after("/models/a.pth", 1000)            # third: cut at 1000 B
        requests.get(server.url + "/models/a.pth")
        server.requests  # [Request(path="/models/a.pth", range=None), ...]

Faults on a path are used up in the order they were added. Paths are matched
against the request path as sent (still percent-encoded) and then decoded, so
``"/gn%2Bws/x"`` and ``"/gn+ws/x"`` both work as keys.

The ``http_server`` fixture of ``conftest.py`` yields a running, empty :class:`Server`;
add files with :meth:`Server.add`.
"""

from __future__ import annotations

import collections
import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

__all__ = ["Request", "Server", "serve"]

_WRITE_CHUNK = 64 * 1024


class Request(NamedTuple):
    """One GET request as the server saw it."""

    path: str
    """Request path as sent, still percent-encoded, without the query."""
    range: str | None
    """The ``Range`` header, or None."""


@dataclass
class _Fault:
    status: int | None  # Answer with this status...
    drop_after: int | None  # ...or cut the connection after this many body bytes...
    remaining: int | None  # Requests left to affect; None: all.
    corrupt: bool = False  # ...or flip one byte in the middle of the body sent.


class Server:
    """A running local HTTP server; see the module docstring.

    Attributes:
        requests: Every GET received, in order.
        accept_ranges: When False, ``Range`` headers are ignored (200 with the
            whole file), like servers without range support.
    """

    def __init__(self, files: Mapping[str, bytes] | str | os.PathLike[str] | None = None) -> None:
        """Starts serving on an ephemeral port of 127.0.0.1.

        Args:
            files: Path -> content, or a directory whose files are served.
        """
        self._lock = threading.Lock()
        self._files: dict[str, bytes] = {}
        self._root: Path | None = None
        if isinstance(files, Mapping):
            for path, data in files.items():
                self.add(path, data)
        elif files is not None:
            self._root = Path(files).resolve()
        self._faults: dict[str, list[_Fault]] = collections.defaultdict(list)
        self._delays: dict[str, float] = {}
        self._rates: dict[str, float] = {}
        self._endless: set[str] = set()
        self._full_bodies: collections.Counter[str] = collections.Counter()
        self.requests: list[Request] = []
        self.accept_ranges = True

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True  # A stuck client must not block close().
        self._httpd.owner = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    # -- configuration -----------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (no trailing slash)."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def url_for(self, path: str) -> str:
        """Absolute URL of ``path``."""
        return self.url + _key(path)

    def add(self, path: str, data: bytes) -> None:
        """Serves ``data`` at ``path`` (replacing any earlier content)."""
        with self._lock:
            self._files[_key(path)] = bytes(data)

    def fail(self, path: str, *, status: int = 404, times: int | None = None) -> None:
        """Answers ``status`` to the next ``times`` requests of ``path`` (None: all)."""
        self._add_fault(path, _Fault(status=status, drop_after=None, remaining=times))

    def drop_after(self, path: str, nbytes: int, *, times: int | None = 1) -> None:
        """Cuts the connection after ``nbytes`` body bytes, for ``times`` requests."""
        self._add_fault(path, _Fault(status=None, drop_after=nbytes, remaining=times))

    def corrupt(self, path: str, *, times: int | None = 1) -> None:
        """Flips one byte in the middle of the body sent, for ``times`` requests."""
        self._add_fault(path, _Fault(status=None, drop_after=None, remaining=times, corrupt=True))

    def throttle(self, path: str, bytes_per_second: float) -> None:
        """Sends the body of ``path`` at about ``bytes_per_second`` (in 1 kB writes)."""
        with self._lock:
            self._rates[_key(path)] = bytes_per_second

    def endless(self, path: str) -> None:
        """Answers ``path`` with 200, no ``Content-Length``, and bytes until the client goes away."""
        with self._lock:
            self._endless.add(_key(path))

    def delay(self, path: str, seconds: float) -> None:
        """Waits ``seconds`` before answering each request of ``path``."""
        with self._lock:
            self._delays[_key(path)] = seconds

    def full_bodies(self, path: str) -> int:
        """How many complete 200 responses with the whole file were sent for ``path``."""
        key = _key(path)
        with self._lock:
            return sum(n for p, n in self._full_bodies.items() if key in (p, unquote(p)))

    def requests_for(self, path: str) -> list[Request]:
        """The logged requests of ``path``."""
        key = _key(path)
        with self._lock:
            return [r for r in self.requests if key in (r.path, unquote(r.path))]

    # -- lifecycle ---------------------------------------------------------

    def close(self) -> None:
        """Stops serving and frees the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- used by the handler -------------------------------------------------

    def _add_fault(self, path: str, fault: _Fault) -> None:
        with self._lock:
            self._faults[_key(path)].append(fault)

    def _begin(self, raw_path: str, range_header: str | None) -> tuple[_Fault | None, float]:
        """Logs a request; returns the fault to apply (used up) and the delay."""
        with self._lock:
            self.requests.append(Request(raw_path, range_header))
            delay = max((self._delays.get(k, 0.0) for k in _keys(raw_path)), default=0.0)
            for key in _keys(raw_path):
                for fault in self._faults.get(key, ()):
                    if fault.remaining is None or fault.remaining > 0:
                        if fault.remaining is not None:
                            fault.remaining -= 1
                        return fault, delay
            return None, delay

    def _content(self, raw_path: str) -> bytes | None:
        with self._lock:
            for key in _keys(raw_path):
                if key in self._files:
                    return self._files[key]
        if self._root is None:
            return None
        target = (self._root / unquote(raw_path).lstrip("/")).resolve()
        # Refuse ../ escapes out of the served directory.
        if not target.is_relative_to(self._root) or not target.is_file():
            return None
        return target.read_bytes()

    def _rate(self, raw_path: str) -> float | None:
        with self._lock:
            return next((self._rates[k] for k in _keys(raw_path) if k in self._rates), None)

    def _is_endless(self, raw_path: str) -> bool:
        with self._lock:
            return any(k in self._endless for k in _keys(raw_path))

    def _count_full_body(self, raw_path: str) -> None:
        with self._lock:
            self._full_bodies[raw_path] += 1


def _key(path: str) -> str:
    return "/" + path.lstrip("/")


def _keys(raw_path: str) -> list[str]:
    decoded = unquote(raw_path)
    return [raw_path] if decoded == raw_path else [raw_path, decoded]


_UNSATISFIABLE = (-1, -1)


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Returns ``(start, end_exclusive)``, None to ignore it, or ``_UNSATISFIABLE``."""
    unit, _, spec = header.partition("=")
    # Multiple ranges are legal to ignore (RFC 9110): answer with the whole file.
    if unit.strip() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    try:
        if not dash:
            return None
        if not first:  # bytes=-N: the last N bytes.
            n = int(last)
            return _UNSATISFIABLE if n == 0 or size == 0 else (max(0, size - n), size)
        start = int(first)
        end = size if not last else min(int(last) + 1, size)
    except ValueError:
        return None
    if start >= size:
        return _UNSATISFIABLE
    if end <= start:
        return None
    return start, end


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # Keep-alive, like real servers.

    def do_GET(self) -> None:  # noqa: N802 - name fixed by BaseHTTPRequestHandler
        owner: Server = self.server.owner  # type: ignore[attr-defined]
        raw_path = urlsplit(self.path).path
        range_header = self.headers.get("Range")
        fault, delay = owner._begin(raw_path, range_header)
        if delay:
            time.sleep(delay)
        if fault is not None and fault.status is not None:
            self._send_status(fault.status)
            return
        if owner._is_endless(raw_path):
            self._send_endless()
            return
        data = owner._content(raw_path)
        if data is None:
            self._send_status(404)
            return

        status, start, end = 200, 0, len(data)
        if range_header and owner.accept_ranges:
            parsed = _parse_range(range_header, len(data))
            if parsed == _UNSATISFIABLE:
                self._send_status(416, extra={"Content-Range": f"bytes */{len(data)}"})
                return
            if parsed is not None:
                status, (start, end) = 206, parsed

        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        if owner.accept_ranges:
            self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        self.end_headers()

        body = memoryview(data)[start:end]
        if fault is not None and fault.corrupt and len(body):
            flipped = bytearray(body)
            flipped[len(flipped) // 2] ^= 0xFF
            body = memoryview(bytes(flipped))
        if fault is not None and fault.drop_after is not None:
            self._write(body[: fault.drop_after])
            self._drop_connection()
        elif self._write(body, rate=owner._rate(raw_path)) and status == 200:
            owner._count_full_body(raw_path)

    def _write(self, body: memoryview, *, rate: float | None = None) -> bool:
        """Writes ``body`` (at ``rate`` bytes/s if given); False if the client went away."""
        step = _WRITE_CHUNK if rate is None else 1024
        try:
            for i in range(0, len(body), step):
                self.wfile.write(body[i : i + step])
                if rate is not None:
                    self.wfile.flush()
                    time.sleep(step / rate)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            return False
        return True

    def _send_endless(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        block = bytes(range(256)) * 256
        try:
            for _ in range(100_000):  # 6.5 GB at most, should a client never stop
                self.wfile.write(block)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass

    def _drop_connection(self) -> None:
        # Shut the socket down now so the client sees EOF mid-body at once,
        # instead of waiting for more bytes promised by Content-Length.
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send_status(self, status: int, *, extra: Mapping[str, str] | None = None) -> None:
        body = f"{status} {self.responses.get(status, ('',))[0]}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self._write(memoryview(body))

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # Keep test output clean; Server.requests is the log.


@contextmanager
def serve(files: Mapping[str, bytes] | str | os.PathLike[str] | None = None) -> Iterator[Server]:
    """Runs a :class:`Server` for the duration of a ``with`` block.

    Args:
        files: Path -> content, or a directory whose files are served.

    Yields:
        The running server.
    """
    server = Server(files)
    try:
        yield server
    finally:
        server.close()
