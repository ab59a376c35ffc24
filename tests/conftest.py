"""Fixtures shared by the whole suite: no network, an isolated cache, a loopback server, test entries.

This folder is on ``sys.path`` (pytest puts a rootdir conftest's folder there), so test modules
import the helpers beside it: :mod:`http_server` (a fault-injecting server on 127.0.0.1),
:mod:`synthetic_coco` (a small COCO-format dataset) and :mod:`reference_data` (MMDetection's
checkpoint key lists in ``tests/data``).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from http_server import Server, serve

from wszoo import registry
from wszoo.zoo import ZooEntry


class NetworkBlocked(AssertionError):
    """A test tried to reach the network."""


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection (or resolve a name) fails the test."""

    def refuse(*args, **kwargs):
        raise NetworkBlocked(f"network access attempted: {args[1:] or kwargs}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture
def isolated_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A fresh, empty ``WSZOO_CACHE`` (and ``TORCH_HOME``), no mirrors; returns the cache folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("WSZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("WSZOO_MIRROR", raising=False)
    return tmp_path / "cache"


@pytest.fixture
def http_server() -> Iterator[Server]:
    """A running, empty loopback server; add files with ``server.add``."""
    with serve() as running:
        yield running


@pytest.fixture
def register_entry() -> Iterator:
    """``register_entry(entry)`` adds a zoo entry for the rest of the test (through
    :func:`wszoo.registry.registered`, the public way)."""
    with contextlib.ExitStack() as stack:

        def register(entry: ZooEntry) -> ZooEntry:
            return stack.enter_context(registry.registered(entry))

        yield register
