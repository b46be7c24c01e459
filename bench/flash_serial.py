"""Flashing a full application image through the bootloader of the emulated board, against the line rate.

The board is the simavr harness of the firmware tests (``AvrSim``: the real
Optiboot and the built firmware on an emulated ATmega328P in real time, its
UART on a pseudo-terminal). The image is the built firmware padded with
pseudo-random pages up to the bootloader (0x7E00 bytes, the largest image the
chip takes; "32 KiB" less the 512-byte bootloader). The limit is those bytes at
115200 baud 8N1, 10 bits a byte: ``bytes / 11520`` s. The flash writes every
page and then reads every page back to verify, so a write-then-verify flash
cannot go below twice the limit; the write phase alone is reported beside it.
Then the round trip of one controller command (PING) over the same port.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from _common import FIRMWARE_DIR, percentiles_ms

from veriscope.device.controller.avrsim import AvrSim, toolchain_missing
from veriscope.device.controller.serial_board import SerialController
from veriscope.tools.flash import APP_LIMIT, PAGE_SIZE, FirmwareImage, flash_image, load_image, open_port

BAUD = 115200
BYTES_PER_S = BAUD / 10  # 8N1: a start bit, 8 data bits, a stop bit


def padded_image() -> FirmwareImage:
    """The built firmware with every free page up to the bootloader filled, so all 0x7E00 bytes are written."""
    image = load_image(FIRMWARE_DIR / "veriscope-controller.hex")
    rng = np.random.default_rng(5)
    pages = dict(image.pages)
    for addr in range(0, APP_LIMIT, PAGE_SIZE):
        if addr not in pages:
            pages[addr] = rng.integers(0, 256, PAGE_SIZE, dtype=np.uint8).tobytes()
    return FirmwareImage(pages, APP_LIMIT, image.info)


def unavailable() -> str | None:
    """Why the emulated board cannot run here, or None when it can."""
    missing = toolchain_missing()
    if missing:
        return missing
    for name in ("veriscope-avr-sim", "veriscope-controller.hex"):
        if not (FIRMWARE_DIR / name).exists():
            return f"{FIRMWARE_DIR / name} is missing; run make firmware"
    return None


def measure(pings: int) -> dict[str, Any]:
    """Flash seconds, the line-rate limit and their ratio; then PING round trips in ms."""
    image = padded_image()
    with AvrSim(flash=None) as sim:
        port = open_port(str(sim.port), BAUD)
        try:
            report = flash_image(port, image, port_name=str(sim.port))
        finally:
            port.close()
        limit_s = report.bytes_written / BYTES_PER_S
        with SerialController(str(sim.port), keepalive_s=None, handshake_timeout_s=15) as ctl:
            ctl.ping()
            times = []
            for _ in range(pings):
                start = time.perf_counter()
                ctl.ping()
                times.append(time.perf_counter() - start)
    rtt = percentiles_ms(times)
    return {
        "baud": BAUD,
        "bytes_written": report.bytes_written,
        "pages": report.pages,
        "retries": report.retries,
        "flash_s": report.seconds,
        "write_s": report.write_seconds,
        "line_rate_limit_s": limit_s,
        "flash_line_rate_ratio": report.seconds / limit_s,
        "write_line_rate_ratio": report.write_seconds / limit_s,
        "command_rtt_p50_ms": rtt["p50_ms"],
        "command_rtt_p95_ms": rtt["p95_ms"],
    }
