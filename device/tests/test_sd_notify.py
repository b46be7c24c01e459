"""The daemon under a service manager: READY=1 once serving, WATCHDOG=1 while its loop runs, STOPPING=1 on SIGTERM.

The manager is played by a unix datagram socket named in ``NOTIFY_SOCKET``, as systemd does for ``Type=notify``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from veriscope.device import sdnotify
from veriscope.device.launch import spawn_daemon
from veriscope.device.server import EXIT_PROVISIONED


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket and its path (kept short: unix socket paths hold 107 bytes)."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(30)
        yield sock, str(path)


def receive_until(sock: socket.socket, field: str, into: list[str]) -> None:
    """Receive messages into ``into`` until one carries ``field``; fails on the socket's timeout."""
    while True:
        message = sock.recv(4096).decode()
        into.append(message)
        if field in message.splitlines():
            return


def test_the_daemon_notifies_ready_then_watchdog_then_stopping(
    manager: tuple[socket.socket, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = manager
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    unit = spawn_daemon(tmp_path / "data")
    try:
        received: list[str] = []
        receive_until(sock, "READY=1", received)
        ready = received[-1].splitlines()
        assert f"STATUS=serving on {unit.address}" in ready
        assert f"MAINPID={unit.process.pid}" in ready
        # Fed from the event loop while it runs: several pings, and nothing else, while the daemon serves.
        pings: list[str] = []
        for _ in range(3):
            pings.append(sock.recv(4096).decode())
        assert pings == ["WATCHDOG=1"] * 3
        unit.process.send_signal(signal.SIGTERM)
        after: list[str] = []
        receive_until(sock, "STOPPING=1", after)
        assert set(after[:-1]) <= {"WATCHDOG=1"}
        assert unit.process.wait(timeout=30) == 0
    finally:
        unit.stop()


def test_without_a_watchdog_the_daemon_only_notifies_ready_and_stopping(
    manager: tuple[socket.socket, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = manager
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    unit = spawn_daemon(tmp_path / "data")
    try:
        received: list[str] = []
        receive_until(sock, "READY=1", received)
        assert unit.stop() == 0
        receive_until(sock, "STOPPING=1", received)
        assert not any("WATCHDOG=1" in m for m in received)
    finally:
        unit.stop()


def test_an_abstract_socket_is_reached_by_its_at_name() -> None:
    name = f"veriscope-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert sdnotify.Notifier("@" + name).notify("READY=1", "STATUS=ok")
        assert sock.recv(4096) == b"READY=1\nSTATUS=ok"


def test_the_watchdog_interval_is_half_the_timeout_and_only_for_this_process() -> None:
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000"}
    assert sdnotify.Notifier.from_env(env).watchdog_interval_s == 15.0
    assert sdnotify.Notifier.from_env({**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_interval_s == 15.0
    assert sdnotify.Notifier.from_env({**env, "WATCHDOG_PID": "1"}).watchdog_interval_s is None
    assert sdnotify.Notifier.from_env({**env, "WATCHDOG_USEC": "soon"}).watchdog_interval_s is None
    assert sdnotify.Notifier.from_env({"WATCHDOG_USEC": "30000000"}).watchdog_interval_s is None


def test_outside_systemd_nothing_is_sent_and_a_dead_socket_is_not_an_error(tmp_path: Path) -> None:
    assert not sdnotify.Notifier.from_env({}).notify("READY=1")
    assert not sdnotify.Notifier(str(tmp_path / "gone")).notify("READY=1")

    async def body() -> None:
        async with sdnotify.serving("serving", sdnotify.Notifier(None, 1000)) as notifier:
            assert not notifier.enabled

    asyncio.run(body())


def test_the_shipped_unit_waits_for_ready_feeds_a_watchdog_and_restarts_after_provisioning() -> None:
    unit = Path(__file__).resolve().parents[1] / "packaging" / "systemd" / "veriscope-device.service"
    service: dict[str, str] = {}
    section = ""
    for line in unit.read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line and not line.startswith("#") and section == "Service":
            key, _, value = line.partition("=")
            service[key] = value
    assert service["Type"] == "notify"
    assert int(service["WatchdogSec"]) > 0
    assert service["Restart"] == "on-failure"
    assert str(EXIT_PROVISIONED) in service["RestartForceExitStatus"].split()
    assert str(EXIT_PROVISIONED) in service["SuccessExitStatus"].split()
    assert service["ProtectSystem"] == "strict" and "/var/lib/veriscope" in service["ReadWritePaths"]
    assert "--data-dir /var/lib/veriscope" in service["ExecStart"] and "--first-boot" in service["ExecStart"]
    assert (service["User"], service["NoNewPrivileges"], service["PrivateTmp"]) == ("veriscope", "yes", "yes")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_every_line_of_the_shipped_unit(tmp_path: Path) -> None:
    # systemd ignores a line it cannot parse with only a warning, so any output at all is a defect. The unit's
    # interpreter lives in the Pi's install; an existing one stands in for it, as systemd checks ExecStart exists.
    unit = Path(__file__).resolve().parents[1] / "packaging" / "systemd" / "veriscope-device.service"
    text = unit.read_text().replace("/opt/veriscope/venv/bin/python", sys.executable)
    assert _systemd_complaints(tmp_path, text) == ""
    # The check itself can fail: one mistyped value is reported.
    assert "Failed to parse sec value" in _systemd_complaints(tmp_path, text.replace("WatchdogSec=", "WatchdogSec=x"))


def _systemd_complaints(directory: Path, text: str) -> str:
    path = directory / "veriscope-device.service"
    path.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    return (result.stdout + result.stderr).strip() + ("" if result.returncode == 0 else f" (exit {result.returncode})")
