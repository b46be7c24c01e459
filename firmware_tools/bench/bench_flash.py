"""Benchmark: flash time for a full image against the line-rate limit, and one command's round trip.

    .venv/bin/python firmware_tools/bench/bench_flash.py [--pings 200]

Runs against the emulated board (``veriscope-avr-sim``: the real firmware and the real
Optiboot on a simulated ATmega328P, paced to real time, bytes delivered at the real line
rate), so it needs ``make firmware`` and the Debian packages the tests need.

Flash: the largest image that fits below the bootloader (0x7E00 = 32,256 bytes, 252 pages:
the firmware padded with filler) is written and verified with ``flash_image``. The limit is
what the line can carry: 32 KiB at 11,520 B/s (115200 baud, 10 bits a byte) = 2.84 s. The
write time is scaled from 252 to 256 pages to compare with 32 KiB; the ratio is measured /
limit (1.0 would be a line never idle and no protocol overhead).

Round trip: PING through the driver (``SerialController.ping``), on the emulated firmware
and on the pure-Python emulated board. The wire time of a PING (6 bytes out, 7 back) is
1.13 ms.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from intelhex import IntelHex

from veriscope.device.controller.avrsim import AvrSim, build_firmware, toolchain_missing
from veriscope.device.controller.emulated import EmulatedBoard
from veriscope.device.controller.serial_board import SerialController
from veriscope.tools.flash import APP_LIMIT, PAGE_SIZE, flash_image, load_image, open_port

LINE_RATE_BPS = 11_520
"""Bytes per second at 115200 baud, 8N1."""
KIB32 = 32 * 1024


def full_image(firmware_hex: Path, out: Path) -> Path:
    """The firmware padded with filler up to the bootloader: the largest image that can be flashed."""
    ih = IntelHex(str(firmware_hex))
    end = max(ih.addresses()) + 1
    rng = random.Random(0)
    ih.frombytes(bytes(rng.randrange(256) for _ in range(APP_LIMIT - end)), offset=end)
    ih.write_hex_file(str(out))
    return out


def chip_speed(sim: AvrSim, wall_s: float) -> float:
    """Chip time per wall time over ``wall_s`` seconds (1.0 = real time)."""
    first = sim.state()
    t = time.monotonic()
    time.sleep(wall_s)
    last = sim.state()
    return (last.t_us - first.t_us) / 1e6 / (time.monotonic() - t)


def bench_flash(sim: AvrSim, image_path: Path) -> dict[str, float]:
    image = load_image(image_path)
    with open_port(str(sim.port)) as port:
        report = flash_image(port, image)
    pages = report.pages
    write_32k = report.write_seconds * (KIB32 / PAGE_SIZE) / pages
    verify_s = report.seconds - report.write_seconds
    limit = KIB32 / LINE_RATE_BPS
    return {
        "pages": pages,
        "bytes": report.bytes_written,
        "total_s": report.seconds,
        "write_s": report.write_seconds,
        "verify_and_sync_s": verify_s,
        "write_32k_s": write_32k,
        "total_32k_s": report.seconds * (KIB32 / PAGE_SIZE) / pages,
        "limit_s": limit,
        "write_ratio": write_32k / limit,
        "total_ratio": report.seconds * (KIB32 / PAGE_SIZE) / pages / limit,
        "retries": report.retries,
    }


def bench_rtt(ctl: SerialController, n: int) -> dict[str, float]:
    for _ in range(10):
        ctl.ping()
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        ctl.ping()
        samples.append(time.perf_counter() - t)
    samples.sort()
    return {
        "median_ms": statistics.median(samples) * 1e3,
        "p95_ms": samples[int(0.95 * (n - 1))] * 1e3,
        "min_ms": samples[0] * 1e3,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pings", type=int, default=200, help="round trips to time (default 200)")
    args = parser.parse_args()
    reason = toolchain_missing()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    paths = build_firmware()
    with tempfile.TemporaryDirectory() as tmp:
        image = full_image(paths.hex, Path(tmp) / "full.hex")
        with AvrSim(flash=None) as sim:
            speed = chip_speed(sim, 1.0)
            flash = bench_flash(sim, image)
        print(f"emulator speed before flashing: {speed:.2f} x real time (below 1.0 the machine is too busy)")
        print(f"flash, {flash['pages']:.0f} pages ({flash['bytes']:.0f} bytes), {flash['retries']:.0f} retries:")
        print(
            f"  write {flash['write_s']:.2f} s, verify and handshakes {flash['verify_and_sync_s']:.2f} s, total {flash['total_s']:.2f} s"
        )
        print(f"  scaled to 32 KiB: write {flash['write_32k_s']:.2f} s, total {flash['total_32k_s']:.2f} s")
        print(f"  line-rate limit for 32 KiB at {LINE_RATE_BPS} B/s: {flash['limit_s']:.2f} s")
        print(f"  ratio write / limit = {flash['write_ratio']:.2f}, write+verify / limit = {flash['total_ratio']:.2f}")

    with (
        AvrSim(flash=paths.hex) as sim,
        SerialController(str(sim.port), keepalive_s=None, handshake_timeout_s=15) as ctl,
    ):
        firmware_rtt = bench_rtt(ctl, args.pings)
    board = EmulatedBoard()
    try:
        with SerialController(opener=board.open, keepalive_s=None) as ctl:
            python_rtt = bench_rtt(ctl, args.pings)
    finally:
        board.close()
    wire_ms = 13 / LINE_RATE_BPS * 1e3
    print(f"round trip of one PING ({args.pings} samples; {wire_ms:.2f} ms of it is wire time):")
    for name, rtt in (("emulated firmware (simavr)", firmware_rtt), ("pure-Python emulated board", python_rtt)):
        print(f"  {name}: median {rtt['median_ms']:.2f} ms, p95 {rtt['p95_ms']:.2f} ms, min {rtt['min_ms']:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
