"""LAN discovery end to end: a daemon in its own process announces itself over mDNS on loopback, the SDK and the
``veriscope devices`` command find it with its TXT record, and after SIGTERM it is gone.

Everything runs on 127.0.0.1: a daemon listening there announces on the loopback interface only, and the browses
here are pinned to it (``interfaces=["127.0.0.1"]``), so nothing leaves this machine. Multicast on loopback works
on Linux although ``lo`` lacks the MULTICAST flag: zeroconf sends with IP_MULTICAST_IF=127.0.0.1 and joins the
group there, so the kernel loops packets back to every socket on the host. Other units advertising on this host
at the same time (other test runs) may be found too, so the checks look for this unit by its id.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from veriscope.device import __version__ as device_version
from veriscope.device.launch import DaemonProcess, spawn_daemon
from veriscope.sdk import Client, DeviceUnavailableError, DiscoveredDevice, discover, discover_async
from veriscope.sdk import _cli as sdk_cli

CLI = str(Path(sys.executable).with_name("veriscope"))
LOOPBACK = ["127.0.0.1"]
_BROWSES = 5
T = TypeVar("T")


def _wait_for_line(unit: DaemonProcess, text: str, timeout_s: float = 60.0) -> str:
    """The first line of the daemon's output holding ``text``; fails with the output when none comes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in list(unit.output):
            if text in line:
                return line
        if unit.process.poll() is not None:
            break
        time.sleep(0.05)
    pytest.fail(f"the daemon never logged {text!r}:\n{''.join(unit.output)}")


def _ours(devices: list[DiscoveredDevice], device_id: str) -> list[DiscoveredDevice]:
    return [device for device in devices if device.device_id == device_id]


def _browse_until_found(browse: Callable[[], list[T]]) -> list[T]:
    """The first non-empty result of a few browses for this unit: on a busy host one two-second window can close
    before a late answer arrives (a unit that never answers still fails every browse)."""
    found: list[T] = []
    for _ in range(_BROWSES):
        found = browse()
        if found:
            break
    return found


def _cli_devices(device_id: str) -> list[dict[str, object]]:
    """This unit's entries in ``veriscope devices --json``."""
    done = subprocess.run([CLI, "devices", "--json", "--timeout", "2"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [entry for entry in json.loads(done.stdout) if entry["device_id"] == device_id]


@pytest.mark.slow
def test_daemon_is_found_over_mdns_and_gone_after_sigterm(tmp_path: Path) -> None:
    unit = spawn_daemon(tmp_path / "data")
    try:
        _wait_for_line(unit, "advertising ")
        with Client(unit.address) as client:
            info = client.get_device()
        assert info.model is not None

        found = _browse_until_found(lambda: _ours(discover(2.0, interfaces=LOOPBACK), info.device_id))
        assert len(found) == 1, found
        device = found[0]
        assert device.address == unit.address  # usable as --device as it is
        assert device.addresses == ("127.0.0.1",)
        assert device.port == int(unit.address.rpartition(":")[2])
        assert device.model == info.hardware.model == "veriscope-sim"
        assert device.software_version == info.software_version == device_version
        assert device.api_version == info.api_version == "v1"
        assert device.model_version == f"{info.model.name}@{info.model.version}"
        assert device.tls is False
        assert device.simulated is True

        # The asyncio form finds the same unit, with the same fields.
        again = _browse_until_found(lambda: _ours(asyncio.run(discover_async(2.0, interfaces=["lo"])), info.device_id))
        assert again == [device]

        # The CLI needs no --device, and prints the same record as JSON.
        listed = _browse_until_found(lambda: _cli_devices(info.device_id))
        assert listed == [device.to_dict()]
        assert listed[0]["address"] == unit.address
    finally:
        code = unit.stop()
    output = "".join(unit.output)
    assert code == 0, output
    assert "not advertising" not in output and "could not" not in output, output
    assert _ours(discover(2.0, interfaces=LOOPBACK), info.device_id) == []


@pytest.mark.slow
def test_no_advertise_keeps_the_unit_off_the_network(tmp_path: Path) -> None:
    unit = spawn_daemon(tmp_path / "data", "--no-advertise")
    try:
        _wait_for_line(unit, "mDNS discovery is disabled")
        with Client(unit.address) as client:
            device_id = client.get_device().device_id
        assert _ours(discover(1.5, interfaces=LOOPBACK), device_id) == []
    finally:
        assert unit.stop() == 0


def test_devices_with_none_found_exits_0_and_says_what_to_check(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    timeouts: list[float] = []

    def nothing(timeout: float = 2.0, **_: object) -> list[DiscoveredDevice]:
        timeouts.append(timeout)
        return []

    monkeypatch.setattr(sdk_cli, "discover", nothing)
    assert sdk_cli.main(["devices"]) == 0
    text = capsys.readouterr().out
    assert "no Veriscope units answered within 2 s" in text
    assert "multicast" in text and "same local network" in text and "[discovery] enabled" in text

    assert sdk_cli.main(["devices", "--json", "--timeout", "0.5"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == []
    assert "no Veriscope units answered within 0.5 s" in captured.err
    assert timeouts == [2.0, 0.5]


def test_discover_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="timeout"):
        discover(0)
    with pytest.raises(ValueError, match="no network interface 'no-such-if0'"):
        discover(1.0, interfaces=["no-such-if0"])
    with pytest.raises(TypeError):
        discover(1.0, interfaces="127.0.0.1")
    # An address this host does not have: mDNS cannot run there, which is an SDK error, not an OSError.
    with pytest.raises(DeviceUnavailableError, match=r"cannot browse for units over mDNS on 198\.51\.100\.77"):
        discover(1.0, interfaces=["198.51.100.77"])
