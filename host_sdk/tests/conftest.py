"""Fixtures of the SDK tests: a scripted in-process Veriscope unit (see sdk_fakes)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from sdk_fakes import FakeServer, FakeUnit, start_server


@pytest.fixture
def unit() -> FakeUnit:
    return FakeUnit()


@pytest.fixture
def server(unit: FakeUnit) -> Iterator[FakeServer]:
    running = start_server(unit)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def address(server: FakeServer) -> str:
    return server.address


@pytest.fixture
def unused_address() -> str:
    """An address where nothing listens (the port was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"
