"""Measure the SDK's own overhead against the scripted in-process unit of the tests (no camera, no model).

Usage: .venv/bin/python host_sdk/benchmarks/bench_sdk.py

Prints the time of a guided scan (5 RPCs), of uploading a 12 MP-sized image
through ``analyze()``, and of receiving a 24 MiB frame from ``capture()``, for
both clients. The numbers bound what the SDK adds on top of the device's work.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from sdk_fakes import ITEM_TYPE, FakeUnit, MiB, png_bytes, start_server

from veriscope.sdk import AsyncClient, Client

IMAGE = png_bytes(12_000_000)


def _median_s(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    unit = FakeUnit(capture_size_bytes=24 * MiB)
    server = start_server(unit)
    try:
        with Client(server.address) as client:
            client.get_device()  # connect first
            scan_s = _median_s(lambda: client.scan(ITEM_TYPE), 20)
            upload_s = _median_s(lambda: client.analyze(ITEM_TYPE, [("canvas", IMAGE)]), 5)
            capture_s = _median_s(client.capture, 5)
        print(
            f"Client       scan() {scan_s * 1e3:6.1f} ms   analyze(12 MB) {upload_s * 1e3:6.1f} ms "
            f"({len(IMAGE) / upload_s / 1e6:5.0f} MB/s)   capture(24 MiB) {capture_s * 1e3:6.1f} ms"
        )

        async def run_async() -> tuple[float, float, float]:
            async with AsyncClient(server.address) as aclient:
                await aclient.get_device()

                async def median(make: Callable[[], object], repeats: int) -> float:
                    times = []
                    for _ in range(repeats):
                        start = time.perf_counter()
                        await make()  # type: ignore[misc]
                        times.append(time.perf_counter() - start)
                    return statistics.median(times)

                return (
                    await median(lambda: aclient.scan(ITEM_TYPE), 20),
                    await median(lambda: aclient.analyze(ITEM_TYPE, [("canvas", IMAGE)]), 5),
                    await median(aclient.capture, 5),
                )

        scan_s, upload_s, capture_s = asyncio.run(run_async())
        print(
            f"AsyncClient  scan() {scan_s * 1e3:6.1f} ms   analyze(12 MB) {upload_s * 1e3:6.1f} ms "
            f"({len(IMAGE) / upload_s / 1e6:5.0f} MB/s)   capture(24 MiB) {capture_s * 1e3:6.1f} ms"
        )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
