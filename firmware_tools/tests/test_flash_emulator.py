"""``veriscope-tool flash-controller`` against the emulated chip's real Optiboot, checked by avrdude.

Needs the AVR toolchain, simavr, avrdude and Optiboot (Debian's arduino-core-avr); without
them the tests are skipped, except under CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from intelhex import IntelHex

from veriscope.device.controller.avrsim import BOOTLOADER_HEX, AvrSim, FirmwarePaths, build_firmware, toolchain_missing
from veriscope.device.controller.serial_board import SerialController
from veriscope.device.errors import ControllerError
from veriscope.tools.flash import APP_LIMIT, load_image

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def firmware() -> FirmwarePaths:
    reason = toolchain_missing() or (None if shutil.which("avrdude") else "missing Debian package: avrdude")
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must emulate the firmware: {reason}")
        pytest.skip(reason)
    return build_firmware()


@pytest.fixture
def blank_chip() -> Iterator[AvrSim]:
    with AvrSim(flash=None) as sim:
        yield sim


def flash_command(port: Path, image: Path) -> list[str]:
    return [sys.executable, "-m", "veriscope.tools.cli", "flash-controller", "--port", str(port), str(image)]


def optiboot_bytes() -> bytes:
    """Debian's Optiboot image as the chip holds it (its records overlap, so intelhex refuses the file)."""
    flash = bytearray(b"\xff" * 0x8100)
    for line in BOOTLOADER_HEX.read_text().split():
        raw = bytes.fromhex(line[1:])
        if raw[3] == 0:
            addr = raw[1] << 8 | raw[2]
            flash[addr : addr + raw[0]] = raw[4 : 4 + raw[0]]
    return bytes(flash)


def avrdude_read(port: Path, out: Path) -> bytes:
    """Read the whole flash back with avrdude, as a technician would, and return it (0xFF where unread)."""
    result = subprocess.run(
        ["avrdude", "-c", "arduino", "-p", "m328p", "-P", str(port), "-b", "115200", "-U", f"flash:r:{out}:i"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return bytes(IntelHex(str(out)).tobinarray(start=0, size=0x8000))


def test_flash_then_avrdude_reads_back_the_same_bytes(
    firmware: FirmwarePaths, blank_chip: AvrSim, tmp_path: Path
) -> None:
    result = subprocess.run(
        flash_command(blank_chip.port, firmware.hex), capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "done: wrote and verified" in result.stderr
    assert "verify: " in result.stderr  # progress was shown

    flash = avrdude_read(blank_chip.port, tmp_path / "readback.hex")
    image = IntelHex(str(firmware.hex))
    size = max(image.addresses()) + 1
    assert flash[:size] == bytes(image.tobinarray(start=0, size=size))
    assert flash[size:APP_LIMIT].strip(b"\xff") == b""  # nothing else written
    # The bootloader is untouched.
    assert flash[APP_LIMIT:0x7FFE] == optiboot_bytes()[APP_LIMIT:0x7FFE]

    # And the firmware we flashed is what now runs.
    info = load_image(firmware.hex).info
    assert info is not None
    with SerialController(str(blank_chip.port), keepalive_s=None, handshake_timeout_s=15) as ctl:
        assert ctl.info.build_id == info.build_id


def test_unplug_while_flashing_is_reported_and_a_reflash_recovers(firmware: FirmwarePaths, blank_chip: AvrSim) -> None:
    proc = subprocess.Popen(flash_command(blank_chip.port, firmware.hex), stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    mark = blank_chip.mark()
    head = []
    for line in proc.stderr:
        head.append(line)
        if line.startswith("write: ") and "(25%)" in line:
            blank_chip.unplug(300)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 1, "".join(head) + rest
    assert "HALF-WRITTEN" in rest, "".join(head) + rest
    # It names what was written, from the page after the vector page, and says the vector page is blank.
    said = " ".join(rest.split())
    assert "pages written (bytes 0x0080..0x" in said, said
    assert "page 0x0000 (the reset vector) is blank" in said, said
    blank_chip.wait_for("ready", since=mark)
    # The half image never runs: its reset vector is blank, so no firmware answers HELLO.
    with pytest.raises(ControllerError, match="handshake timeout"):
        SerialController(str(blank_chip.port), keepalive_s=None, handshake_timeout_s=2.5)
    result = subprocess.run(
        flash_command(blank_chip.port, firmware.hex), capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    with SerialController(str(blank_chip.port), keepalive_s=None, handshake_timeout_s=15) as ctl:
        assert ctl.info.kind == "atmega328p"
