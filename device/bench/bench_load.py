"""Load on one unit: concurrent clients authenticating uploaded images, and what it costs the daemon.

Run: ``.venv/bin/python device/bench/bench_load.py [--clients 4] [--seconds 60] [--json FILE]``.
Prints a table; asserts nothing.

Starts ``veriscope-device serve --simulate`` in its own process (simulated
hardware, the demo bundle ``models/bundles/veriscope-demo``) on a fresh data
directory, renders the images of one three-region item once with the specimen
renderer (two per region, a PNG and a JPEG, at the unit's capture size), then
runs ``--clients`` SDK clients side by side, each calling ``analyze`` (create a
scan, upload the six images, complete it) in a loop for ``--seconds``. Reported:

- scans/s, and the p50 and p99 latency of one whole ``analyze``;
- failed scans (a call raised) and lost scans: scans a client saw COMPLETED
  that the daemon no longer lists with the same verdict and score at the end
  (every one is checked, through ListScans and then GetScan);
- the daemon's resident memory (``/proc/PID/status``, sampled every 0.25 s): at
  launch, at the start of the timed run (warm), and idle at its end; its peak
  (VmHWM); and its growth over the second half of the run: the peak of the
  last quarter minus the peak of the second quarter, both under full load
  (resident memory swings with the scans in flight, so peaks are compared).
  It stays near zero when memory is bounded.

Other benchmark scripts call :func:`run_load` and get the same numbers as a dict.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from veriscope.device import codec
from veriscope.device.launch import DaemonProcess, spawn_daemon
from veriscope.device.specimen import imaging
from veriscope.device.specimen.surface import VirtualItem
from veriscope.device.types import Lighting
from veriscope.sdk import Client, VeriscopeError

ITEM = "tote-classic"
REGIONS = ("canvas", "trim", "lining")
CAPTURE_SIZE = (2028, 1520)
"""The unit's default capture size (the IMX477's 2x2-binned mode), in pixels."""
RSS_SAMPLE_S = 0.25


def render_item_images(
    width: int = CAPTURE_SIZE[0], height: int = CAPTURE_SIZE[1], seed: int = 7
) -> list[tuple[str, bytes]]:
    """(region, encoded image) pairs of one genuine item: per region a PNG and a JPEG, as a unit would capture them."""
    item = VirtualItem(ITEM, "genuine", seed)
    optics = imaging.Optics(sensor_width_px=width, sensor_height_px=height)
    images = []
    for k, region in enumerate(REGIONS):
        surface = item.surface(region)
        for j, fmt in enumerate((codec.ImageFormat.PNG, codec.ImageFormat.JPEG)):
            rng = np.random.default_rng(seed * 100 + 10 * k + j)
            pose = imaging.good_pose(rng)
            pixels = imaging.render(
                surface,
                pose,
                duties={Lighting.WHITE_RING: 60},
                exposure_us=8000,
                analogue_gain=1.0,
                focus_steps=imaging.in_focus_steps(pose, optics),
                rng=rng,
                optics=optics,
            )
            images.append((region, codec.encode(pixels, fmt)))
    return images


def _status_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


class _MemorySampler(threading.Thread):
    """Samples a process's VmRSS every ``RSS_SAMPLE_S`` seconds as (monotonic time, KiB)."""

    def __init__(self, pid: int) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self._pid = pid
        self._stop_event = threading.Event()
        self.samples: list[tuple[float, int]] = []

    def run(self) -> None:
        while True:
            self.samples.append((time.monotonic(), _status_kib(self._pid)["VmRSS"]))
            if self._stop_event.wait(RSS_SAMPLE_S):
                return

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def peak_kib(self, start: float, end: float) -> int:
        """The highest sample taken from ``start`` to ``end`` (the nearest one when none was), in KiB."""
        inside = [kib for when, kib in self.samples if start <= when <= end]
        return max(inside) if inside else min(self.samples, key=lambda s: abs(s[0] - (start + end) / 2))[1]


@dataclass
class _Tally:
    """What the clients saw, shared between their threads under ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    completed: dict[str, tuple[str, float]] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)
    failed: int = 0
    errors: Counter[str] = field(default_factory=Counter)


def _client_loop(address: str, images: list[tuple[str, bytes]], deadline: float, tally: _Tally) -> None:
    with Client(address, timeout_s=300) as client:
        while time.monotonic() < deadline:
            start = time.perf_counter()
            try:
                result = client.analyze(ITEM, images)
            except VeriscopeError as exc:
                with tally.lock:
                    tally.failed += 1
                    tally.errors[f"{exc.code}: {exc.details}"[:160]] += 1
                continue
            elapsed = time.perf_counter() - start
            with tally.lock:
                tally.completed[result.scan_id] = (result.verdict.value, result.score)
                tally.latencies_s.append(elapsed)


def _lost_scans(client: Client, completed: dict[str, tuple[str, float]]) -> list[str]:
    """The scans seen COMPLETED that the daemon no longer returns COMPLETED with the same verdict and score."""
    listed = {
        scan.scan_id: scan
        for scan in client.iter_scans(filter="state = COMPLETED", page_size=1000)
        if scan.result is not None
    }
    lost = []
    for scan_id, seen in completed.items():
        scan = listed.get(scan_id)
        if scan is None or scan.result is None:
            try:
                scan = client.get_scan(scan_id)
            except VeriscopeError:
                lost.append(scan_id)
                continue
        if scan.result is None or (scan.result.verdict.value, scan.result.score) != seen:
            lost.append(scan_id)
    return lost


def run_load(
    clients: int = 4,
    seconds: float = 60.0,
    *,
    image_size: tuple[int, int] = CAPTURE_SIZE,
    images: list[tuple[str, bytes]] | None = None,
    data_dir: Path | None = None,
) -> dict[str, Any]:
    """Run ``clients`` concurrent ``analyze`` loops for ``seconds`` against a fresh simulated daemon.

    ``images`` are the (region, encoded image) pairs every scan uploads; by
    default those of :func:`render_item_images` at ``image_size``. ``data_dir``
    keeps the daemon's data there (default: a temporary directory, removed
    afterwards). Returns the measurements as a JSON-ready dict (see the
    module's docstring); memory figures are in MiB, latencies in seconds.
    Raises RuntimeError when the daemon does not start.
    """
    if clients < 1 or seconds <= 0:
        raise ValueError(f"need at least 1 client and a positive duration, got {clients} and {seconds}")
    images = images if images is not None else render_item_images(*image_size)
    scratch = None
    if data_dir is None:
        scratch = Path(tempfile.mkdtemp(prefix="veriscope-load-"))
        data_dir = scratch / "data"
    unit: DaemonProcess = spawn_daemon(data_dir)
    try:
        pid = unit.process.pid
        launch_kib = _status_kib(pid)["VmRSS"]
        with Client(unit.address, timeout_s=300) as client:
            warm = client.analyze(ITEM, images)  # loads the model and warms every path before the clock starts
        tally = _Tally()
        sampler = _MemorySampler(pid)
        sampler.start()
        start = time.monotonic()
        deadline = start + seconds
        workers = [
            threading.Thread(target=_client_loop, args=(unit.address, images, deadline, tally), name=f"client-{k}")
            for k in range(clients)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        end = time.monotonic()
        sampler.stop()
        memory_end = _status_kib(pid)
        with Client(unit.address, timeout_s=300) as client:
            completed = {**tally.completed, warm.scan_id: (warm.verdict.value, warm.score)}
            lost = _lost_scans(client, completed)
        exit_code = unit.stop()
    finally:
        if unit.process.poll() is None:
            unit.process.kill()
            unit.process.wait()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    latencies = np.array(tally.latencies_s) if tally.latencies_s else np.array([np.nan])
    peak_sampled = max(kib for _, kib in sampler.samples)
    # Resident memory swings by hundreds of MiB with the scans in flight, so the trend is read from peaks:
    # that of the quarter before half-time against that of the last quarter, both under full load.
    second_quarter_kib = sampler.peak_kib(start + 0.25 * seconds, start + 0.5 * seconds)
    last_quarter_kib = sampler.peak_kib(start + 0.75 * seconds, deadline)
    return {
        "clients": clients,
        "seconds": seconds,
        "wall_s": end - start,
        "image_size": list(image_size),
        "images_per_scan": len(images),
        "upload_bytes_per_scan": sum(len(data) for _, data in images),
        "scans_completed": len(tally.latencies_s),
        "scans_per_s": len(tally.latencies_s) / (end - start),
        "latency_p50_s": float(np.percentile(latencies, 50)),
        "latency_p99_s": float(np.percentile(latencies, 99)),
        "latency_max_s": float(np.max(latencies)),
        "scans_failed": tally.failed,
        "errors": dict(tally.errors),
        "scans_checked": len(completed),
        "scans_lost": len(lost),
        "lost_scan_ids": lost,
        "rss_launch_mib": launch_kib / 1024,
        "rss_start_mib": sampler.samples[0][1] / 1024,
        "rss_peak_second_quarter_mib": second_quarter_kib / 1024,
        "rss_peak_last_quarter_mib": last_quarter_kib / 1024,
        "rss_end_mib": memory_end["VmRSS"] / 1024,
        "rss_peak_sampled_mib": peak_sampled / 1024,
        "rss_hwm_mib": memory_end["VmHWM"] / 1024,
        "rss_growth_second_half_mib": (last_quarter_kib - second_quarter_kib) / 1024,
        "rss_samples": [[round(when - start, 2), round(kib / 1024, 1)] for when, kib in sampler.samples],
        "daemon_exit_code": exit_code,
    }


def format_table(result: dict[str, Any]) -> str:
    """The measurements of :func:`run_load` as a two-column table."""
    rows = [
        ("clients", f"{result['clients']}"),
        ("duration", f"{result['wall_s']:.1f} s"),
        (
            "images per scan",
            f"{result['images_per_scan']} at {result['image_size'][0]}x{result['image_size'][1]}, "
            f"{result['upload_bytes_per_scan'] / 1e6:.1f} MB",
        ),
        ("scans completed", f"{result['scans_completed']}"),
        ("throughput", f"{result['scans_per_s']:.2f} scans/s"),
        ("latency p50", f"{result['latency_p50_s']:.2f} s"),
        ("latency p99", f"{result['latency_p99_s']:.2f} s"),
        ("latency max", f"{result['latency_max_s']:.2f} s"),
        ("failed scans", f"{result['scans_failed']}"),
        ("lost scans", f"{result['scans_lost']} of {result['scans_checked']} checked"),
        ("daemon RSS at launch", f"{result['rss_launch_mib']:.0f} MiB"),
        ("daemon RSS at start (warm)", f"{result['rss_start_mib']:.0f} MiB"),
        ("daemon RSS peak, 2nd quarter", f"{result['rss_peak_second_quarter_mib']:.0f} MiB"),
        ("daemon RSS peak, last quarter", f"{result['rss_peak_last_quarter_mib']:.0f} MiB"),
        ("daemon RSS at end (idle)", f"{result['rss_end_mib']:.0f} MiB"),
        ("daemon RSS peak (sampled)", f"{result['rss_peak_sampled_mib']:.0f} MiB"),
        ("daemon RSS peak (VmHWM)", f"{result['rss_hwm_mib']:.0f} MiB"),
        ("RSS growth, second half", f"{result['rss_growth_second_half_mib']:+.1f} MiB (peak to peak)"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    lines += [f"error x{count}: {message}" for message, count in result["errors"].items()]
    return "\n".join(lines)


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    return int(width), int(height)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark from the command line; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clients", type=int, default=4, help="concurrent SDK clients (default 4)")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the clients run (default 60)")
    parser.add_argument(
        "--image-size",
        type=_size,
        default=CAPTURE_SIZE,
        metavar="WxH",
        help=f"size of the uploaded images (default {CAPTURE_SIZE[0]}x{CAPTURE_SIZE[1]})",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the measurements to FILE as JSON")
    args = parser.parse_args(argv)
    print(f"rendering the images of one {ITEM} at {args.image_size[0]}x{args.image_size[1]}...", file=sys.stderr)
    images = render_item_images(*args.image_size)
    print(f"running {args.clients} clients for {args.seconds:g} s...", file=sys.stderr)
    result = run_load(args.clients, args.seconds, image_size=args.image_size, images=images)
    print(format_table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
