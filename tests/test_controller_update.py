"""Controller firmware over the air: signed bundles flashed into the emulated ATmega328P through its bootloader.

The daemon runs with the simulated camera and the controller configured as a serial board on the
emulator's pty (as in test_controller_daemon.py) and with an update key. ``veriscope-tool update push``
sends a bundle of the real firmware built with a newer version, which the board then runs; then a bundle
of a program that never answers the handshake, after which the daemon flashes the previous image back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from intelhex import IntelHex

from veriscope.device.bench import SimBench
from veriscope.device.controller.avrsim import AvrSim, FirmwarePaths, build_firmware, toolchain_missing
from veriscope.device.controller.emulated import EmulatedBoard
from veriscope.device.controller.serial_board import SerialController
from veriscope.device.controller.simulated import SimulatedController
from veriscope.device.errors import ControllerError, FailedPrecondition
from veriscope.device.launch import DaemonProcess, spawn_daemon
from veriscope.device.types import Lighting
from veriscope.device.updates.firmware import FirmwareUpdater
from veriscope.sdk import Client
from veriscope.tools import bundles
from veriscope.tools.flash import load_image

BIN = Path(sys.executable).parent
TOOL = str(BIN / "veriscope-tool")
REPO = Path(__file__).resolve().parents[1]
ITEM = "tote-classic"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=600, check=False)


def firmware_source(directory: Path, hex_file: Path, meta: dict[str, object] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "firmware.hex").write_bytes(hex_file.read_bytes())
    if meta is not None:
        (directory / "firmware.json").write_text(json.dumps(meta))
    return directory


def build_bundle(keys: Path, source: Path, out: Path, version: str) -> subprocess.CompletedProcess[str]:
    return run(
        TOOL, "bundle", "build", "--kind", "controller-firmware", "--source", str(source), "--version", version,
        "--name", "veriscope-controller", "--sign-key", str(keys / "update.key"), "--out", str(out),
    )  # fmt: skip


def tiny_application(path: Path, *, end: int = 0x100) -> Path:
    """An ATmega328P vector table of jumps into an image ending at ``end``, as Intel HEX (never runs)."""
    ih = IntelHex()
    for i in range(26):
        ih.puts(4 * i, bytes((0x0C, 0x94, 0x34, 0x00)))  # jmp 0x0068
    ih[end - 1] = 0x00
    ih.write_hex_file(str(path))
    return path


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("keys")
    done = run(TOOL, "keys", "generate", "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out


# --- without the board ---------------------------------------------------------------------------------------


def test_build_refuses_a_firmware_source_that_would_not_flash(keys: Path, tmp_path: Path) -> None:
    big = firmware_source(tmp_path / "big", tiny_application(tmp_path / "big.hex", end=0x7E02))
    done = build_bundle(keys, big, tmp_path / "big.vsb", "1.0.0")
    assert done.returncode == 1
    said = " ".join(done.stderr.split())
    assert "does not fit" in said and "0x7E00" in said
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "notes.txt").write_text("no image")
    done = build_bundle(keys, bare, tmp_path / "bare.vsb", "1.0.0")
    assert done.returncode == 1
    assert "firmware.hex" in done.stderr
    wrong = firmware_source(tmp_path / "wrong", tmp_path / "big.hex", {"board": "esp32"})
    done = build_bundle(keys, wrong, tmp_path / "wrong.vsb", "1.0.0")
    assert done.returncode == 1
    assert "esp32" in done.stderr


def test_build_accepts_a_hex_and_metadata_whose_version_is_the_bundles(keys: Path, tmp_path: Path) -> None:
    hex_file = tiny_application(tmp_path / "app.hex")
    source = firmware_source(tmp_path / "src", hex_file, {"firmware_version": "2.0.0", "board": "atmega328p"})
    mismatch = build_bundle(keys, source, tmp_path / "a.vsb", "2.0.1")
    assert mismatch.returncode == 1
    assert "reports version 2.0.0" in mismatch.stderr
    done = build_bundle(keys, source, tmp_path / "b.vsb", "2.0.0")
    assert done.returncode == 0, done.stderr
    manifest = bundles.inspect_bundle(tmp_path / "b.vsb")
    assert manifest.kind == "controller-firmware"
    assert [p.path for p in manifest.payloads] == ["firmware.hex", "firmware.json"]


def test_a_simulated_controller_refuses_firmware_bundles(keys: Path, tmp_path: Path) -> None:
    source = firmware_source(tmp_path / "src", tiny_application(tmp_path / "app.hex"))
    assert build_bundle(keys, source, tmp_path / "fw.vsb", "9.0.0").returncode == 0
    updater = FirmwareUpdater(
        tmp_path / "firmware",
        SimulatedController(SimBench()),
        None,
        trust=bundles.load_trust_key(keys / "update.pub"),
        accepted_hardware=("veriscope-sim", "veriscope-pi"),
    )
    with pytest.raises(FailedPrecondition, match="controller is simulated"):
        updater.verify(tmp_path / "fw.vsb", allow_downgrade=False, is_admin=False)
    assert updater.slots()[0].version == SimulatedController(SimBench()).info.firmware_version


def test_a_paused_driver_refuses_calls_and_resume_handshakes_again() -> None:
    board = EmulatedBoard()
    try:
        with SerialController(opener=board.open, keepalive_s=None) as ctl:
            ctl.set_leds({Lighting.UV: 30})
            ctl.pause()
            assert ctl.paused
            with pytest.raises(ControllerError, match="paused while its firmware is flashed"):
                ctl.temperature_c()
            info = ctl.resume()
            assert not ctl.paused
            assert info.firmware_version == ctl.info.firmware_version
            # The host's LED duties were put back after the reconnect.
            assert ctl.leds()[Lighting.UV] == 30
    finally:
        board.close()


# --- on the emulated board -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def firmware() -> FirmwarePaths:
    reason = toolchain_missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must emulate the firmware: {reason}")
        pytest.skip(reason)
    return build_firmware()


@pytest.fixture(scope="module")
def newer_hex(firmware: FirmwarePaths, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real firmware built as version 1.1.0."""
    out = tmp_path_factory.mktemp("fw-1.1.0")
    target = out / "veriscope-controller.hex"
    done = run("make", "-s", "-C", str(REPO / "device" / "firmware"), f"OUT={out}", "FW_VERSION_MINOR=1", str(target))
    assert done.returncode == 0, done.stdout + done.stderr
    info = load_image(target).info
    assert info is not None and info.version == (1, 1, 0)
    return target


@pytest.fixture(scope="module")
def silent_hex(firmware: FirmwarePaths, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid ATmega328P program that loops forever and never answers HELLO."""
    out = tmp_path_factory.mktemp("silent")
    (out / "loop.c").write_text("int main(void) { for (;;) { } }\n")
    elf, target = out / "loop.elf", out / "loop.hex"
    done = run("avr-gcc", "-mmcu=atmega328p", "-Os", "-o", str(elf), str(out / "loop.c"))
    assert done.returncode == 0, done.stderr
    done = run("avr-objcopy", "-O", "ihex", str(elf), str(target))
    assert done.returncode == 0, done.stderr
    return target


@pytest.fixture(scope="module")
def board(firmware: FirmwarePaths) -> Iterator[AvrSim]:
    with AvrSim(flash=firmware.hex, focus_start_steps=0) as sim:
        yield sim


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("unit-with-board")


@pytest.fixture(scope="module")
def unit(board: AvrSim, keys: Path, root: Path) -> Iterator[DaemonProcess]:
    config = root / "device.toml"
    config.write_text(
        "[controller]\n"
        'kind = "serial"\n'
        f'port = "{board.port}"\n'
        "handshake_timeout_s = 15.0\n"
        "autofocus_min_steps = 0\n"
        "autofocus_max_steps = 800\n"
        "[camera]\n"
        "width = 1014\n"
        "height = 760\n"
    )
    daemon = spawn_daemon(
        root / "data", "--config", str(config), "--update-trust", str(keys / "update.pub"), timeout_s=90
    )
    yield daemon
    assert daemon.stop() == 0, "".join(daemon.output)


def status(unit: DaemonProcess) -> dict[str, list[dict[str, str]]]:
    done = run(TOOL, "update", "status", "--device", unit.address, "--json")
    assert done.returncode == 0, done.stderr
    data: dict[str, list[dict[str, str]]] = json.loads(done.stdout)
    return data


def firmware_slots(unit: DaemonProcess) -> set[tuple[str, str, str]]:
    return {
        (s["slot"], s["version"], s["state"]) for s in status(unit)["slots"] if s["component"] == "controller_firmware"
    }


@pytest.mark.slow
def test_install_is_refused_while_a_scan_owns_the_camera(
    unit: DaemonProcess, keys: Path, newer_hex: Path, tmp_path: Path
) -> None:
    source = firmware_source(tmp_path / "src", newer_hex)
    assert build_bundle(keys, source, tmp_path / "fw.vsb", "1.1.0").returncode == 0
    with Client(unit.address, timeout_s=120) as client:
        client.place_item(ITEM, "genuine", 31)
        scan = client.create_scan(ITEM)
        client.capture_region(scan.scan_id, "canvas")
        done = run(TOOL, "update", "push", "--device", unit.address, str(tmp_path / "fw.vsb"))
        assert done.returncode == 1, done.stdout + done.stderr
        assert "owns the camera" in " ".join(done.stderr.split())
        client.cancel_scan(scan.scan_id)
        controller = client.get_device().hardware.controller
        assert controller is not None and controller.firmware_version == "1.0.0"


@pytest.mark.slow
def test_push_flashes_the_board_which_then_runs_the_new_version(
    unit: DaemonProcess, board: AvrSim, root: Path, firmware: FirmwarePaths, keys: Path, newer_hex: Path, tmp_path: Path
) -> None:
    meta = {"firmware_version": "1.1.0", "protocol_version": 1, "board": "atmega328p"}
    source = firmware_source(tmp_path / "src", newer_hex, meta)
    assert build_bundle(keys, source, tmp_path / "fw-1.1.0.vsb", "1.1.0").returncode == 0
    resets = board.state().resets
    done = run(TOOL, "update", "push", "--device", unit.address, str(tmp_path / "fw-1.1.0.vsb"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1.1.0 is installed and active" in done.stdout
    with Client(unit.address, timeout_s=60) as client:
        controller = client.get_device().hardware.controller
        assert controller is not None and controller.firmware_version == "1.1.0"
        assert client.get_status().focus_steps >= 0  # the driver talks to the new firmware
    # The chip was reset into the bootloader (read back, flash) and the new image runs.
    assert board.state().resets > resets
    assert firmware_slots(unit) == {("board", "1.1.0", "active"), ("previous", "1.0.0", "previous")}
    result = next(r for r in status(unit)["results"] if r["component"] == "controller_firmware")
    assert (result["version"], result["outcome"]) == ("1.1.0", "committed")
    # The fallback was read back through the bootloader: the original image, byte for byte.
    kept = load_image(root / "data" / "firmware" / "previous.hex")
    assert kept.info is not None and kept.info.version == (1, 0, 0)
    original = load_image(firmware.hex)
    assert all(kept.pages[addr] == page for addr, page in original.pages.items())


@pytest.mark.slow
def test_firmware_that_never_answers_is_rolled_back_to_the_previous_image(
    unit: DaemonProcess, root: Path, keys: Path, silent_hex: Path, tmp_path: Path
) -> None:
    source = firmware_source(tmp_path / "src", silent_hex, {"firmware_version": "1.2.0", "board": "atmega328p"})
    assert build_bundle(keys, source, tmp_path / "silent-1.2.0.vsb", "1.2.0").returncode == 0
    done = run(TOOL, "update", "push", "--device", unit.address, str(tmp_path / "silent-1.2.0.vsb"))
    assert done.returncode == 4, done.stdout + done.stderr
    said = " ".join(done.stderr.split())
    assert "rolled back" in said and "does not answer" in said
    with Client(unit.address, timeout_s=60) as client:
        controller = client.get_device().hardware.controller
        assert controller is not None and controller.firmware_version == "1.1.0"
        assert client.get_status().focus_steps >= 0
    result = next(r for r in status(unit)["results"] if r["component"] == "controller_firmware")
    assert (result["version"], result["outcome"]) == ("1.2.0", "rolled_back")
    assert "1.1.0 runs again" in result["message"]
    assert ("board", "1.1.0", "active") in firmware_slots(unit)
    # The restored image is kept as the last good one, so the next update need not read it back.
    restored = load_image(root / "data" / "firmware" / "current.hex")
    assert restored.info is not None and restored.info.version == (1, 1, 0)


@pytest.mark.slow
async def test_revert_flashes_the_previous_firmware_back_and_the_board_answers_with_it_again(
    firmware: FirmwarePaths, keys: Path, newer_hex: Path, tmp_path: Path
) -> None:
    meta = {"firmware_version": "1.1.0", "protocol_version": 1, "board": "atmega328p"}
    source = firmware_source(tmp_path / "src", newer_hex, meta)
    bundle = tmp_path / "fw-1.1.0.vsb"
    assert build_bundle(keys, source, bundle, "1.1.0").returncode == 0
    # A board of its own, so that this test depends on no other test's flashes.
    with AvrSim(flash=firmware.hex, focus_start_steps=0) as sim:
        with SerialController(str(sim.port), handshake_timeout_s=15.0) as board:
            assert board.info.firmware_version == "1.0.0"
            updater = FirmwareUpdater(
                tmp_path / "firmware",
                board,
                None,
                trust=bundles.load_trust_key(keys / "update.pub"),
                accepted_hardware=("veriscope-pi",),
                handshake_timeout_s=15.0,
            )
            await updater.install(updater.verify(bundle, allow_downgrade=False, is_admin=False))
            await updater.wait()
            installed = updater.result()
            assert installed is not None and (installed.version, installed.outcome) == ("1.1.0", "committed")
            assert board.info.firmware_version == "1.1.0"

            undone = await updater.revert("checking the revert")
            assert (undone.version, undone.outcome) == ("1.1.0", "rolled_back"), undone.message
            assert "the previous firmware 1.0.0 runs again" in undone.message
            assert updater.result() == undone
            # The driver reconnected to the old image and talks to it.
            assert board.info.firmware_version == "1.0.0"
            board.set_leds({Lighting.UV: 30})
            assert board.leds()[Lighting.UV] == 30
            assert [(s.label, s.version) for s in updater.slots()] == [("board", "1.0.0"), ("previous", "1.1.0")]
            state = updater.read_state()
            assert state.current is not None and state.current.version == "1.0.0"
            assert state.previous is not None and state.previous.version == "1.1.0"
        # A driver opened afresh (which resets the chip, as a restarted daemon's does) hears 1.0.0 again.
        with SerialController(str(sim.port), handshake_timeout_s=15.0, keepalive_s=None) as again:
            assert again.info.firmware_version == "1.0.0"
    # What the unit keeps as the running image is the original one, byte for byte.
    kept = load_image(tmp_path / "firmware" / "current.hex")
    original = load_image(firmware.hex)
    assert kept.info is not None and kept.info.version == (1, 0, 0)
    assert all(kept.pages[addr] == page for addr, page in original.pages.items())
