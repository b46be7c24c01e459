"""Fixtures shared by the cross-package tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from veriscope.device.launch import DaemonProcess, spawn_daemon


@pytest.fixture(scope="session")
def sim_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """``veriscope-device serve --simulate`` in its own process on a free port; SIGTERM must end it with 0."""
    unit = spawn_daemon(tmp_path_factory.mktemp("unit") / "data")
    yield unit
    code = unit.stop()
    assert code == 0, "daemon did not exit 0 on SIGTERM:\n" + "".join(unit.output)
