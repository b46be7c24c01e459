"""The daemon drives the real firmware on the emulated ATmega328P during a scan, and the pins show it.

The daemon runs with the simulated camera and the controller configured as a
serial board on the emulator's pty; the test reads LED duty and step pulses
from the emulator and pulls the cable mid-scan.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from veriscope.device.controller.avrsim import AvrSim, FirmwarePaths, build_firmware, toolchain_missing
from veriscope.device.launch import DaemonProcess, spawn_daemon
from veriscope.sdk import Client, DeviceUnavailableError

pytestmark = pytest.mark.slow
ITEM = "tote-classic"


@pytest.fixture(scope="module")
def firmware() -> FirmwarePaths:
    reason = toolchain_missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must emulate the firmware: {reason}")
        pytest.skip(reason)
    return build_firmware()


@pytest.fixture(scope="module")
def board(firmware: FirmwarePaths) -> Iterator[AvrSim]:
    with AvrSim(flash=firmware.hex, focus_start_steps=0) as sim:
        yield sim


@pytest.fixture(scope="module")
def unit(board: AvrSim, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    root = tmp_path_factory.mktemp("unit-with-board")
    config = root / "device.toml"
    config.write_text(
        "[controller]\n"
        'kind = "serial"\n'
        f'port = "{board.port}"\n'
        "handshake_timeout_s = 20.0\n"
        "autofocus_min_steps = 0\n"
        "autofocus_max_steps = 800\n"
        "[camera]\n"
        "width = 1014\n"
        "height = 760\n"
    )
    daemon = spawn_daemon(root / "data", "--config", str(config), timeout_s=90)
    yield daemon
    assert daemon.stop() == 0, "".join(daemon.output)


def test_scan_drives_leds_and_focus_on_the_board(unit: DaemonProcess, board: AvrSim) -> None:
    before = board.state()
    mark = board.mark()
    with Client(unit.address, timeout_s=120) as client:
        device = client.get_device()
        assert device.hardware.controller is not None
        assert device.hardware.controller.kind == "atmega328p"
        client.place_item(ITEM, "genuine", 21)
        result = client.scan(ITEM)
        status = client.get_status()
    assert [r.region for r in result.regions] == ["canvas", "trim", "lining"]
    # The white ring was lit at its capture duty while the camera exposed.
    lit = board.of_kind("led", since=mark)
    assert any(abs(o.as_float("white") - 60.0) < 0.5 for o in lit), lit[-5:]
    after = board.state()
    # Autofocus moved the motor: step pulses were counted and the board ends where the daemon says.
    assert after.step_count > before.step_count
    assert after.focus_steps == status.focus_steps
    assert 250 <= after.focus_steps <= 550
    # Lights are off again after the last capture.
    assert after.led_duty_pct == {"white": 0.0, "raking": 0.0, "uv": 0.0}


def test_unplug_mid_scan_then_the_scan_continues(unit: DaemonProcess, board: AvrSim) -> None:
    with Client(unit.address, timeout_s=120) as client:
        client.place_item(ITEM, "genuine", 22)
        scan = client.create_scan(ITEM)
        first = client.capture_region(scan.scan_id, "canvas")
        assert first.image.quality is not None
        board.unplug(400)
        # While the board is away a capture either waits for the reconnect or fails with a clear
        # UNAVAILABLE; either way the scan survives and the next capture works.
        try:
            client.capture_region(scan.scan_id, "canvas")
        except DeviceUnavailableError as exc:
            assert "controller" in str(exc).lower() or "board" in str(exc).lower()
        board.wait_for("client", lambda o: "open" in o.flags, timeout_s=30)
        again = client.capture_region(scan.scan_id, "canvas")
        assert again.scan.state.value == "IN_PROGRESS"
        done = client.complete_scan(scan.scan_id)
        assert done.state.value == "COMPLETED"
