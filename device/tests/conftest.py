"""Fixtures of the device tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from device_daemon import InProcessDaemon


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessDaemon]:
    """One in-process daemon per test module."""
    srv = InProcessDaemon(tmp_path_factory.mktemp("daemon") / "data")
    yield srv
    srv.close()
