"""SIGKILL the daemon at random moments of busy scanning, restart it on the same data, and check nothing was lost.

Each cycle starts ``veriscope-device serve --simulate`` on one data directory,
drives scans with the SDK from a thread (camera scans that capture regions,
and upload scans with fresh PNG and JPEG files, each then completed), kills
the daemon with SIGKILL after a random delay, and restarts it. Then:

- the SQLite database passes ``PRAGMA integrity_check``, before and after the restart;
- every scan the client saw COMPLETED is still COMPLETED with the identical verdict and score;
- every image the client saw stored is still in its scan, and every image of every stored scan is on disk
  with the SHA-256 its record names; every file under a final image name hashes to that name;
- every scan the client left in progress is INTERRUPTED (or COMPLETED, when the kill came after the
  commit but before the reply), and none is left IN_PROGRESS;
- no temporary file of an interrupted image write survives the restart.

The first cycle's kill waits until a scan has completed, so every run has completed scans to check whatever the
host's speed; every other kill comes at a random moment after scanning starts.

``VERISCOPE_CRASH_CYCLES`` sets the number of cycles (default 10, under a minute) and
``VERISCOPE_CRASH_SEED`` the seed of the random delays and scan mix.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import random
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from veriscope.device import codec
from veriscope.device.launch import DaemonProcess, spawn_daemon
from veriscope.sdk import Client, DeviceUnavailableError, ScanState

CYCLES = int(os.environ.get("VERISCOPE_CRASH_CYCLES", "10"))
SEED = int(os.environ.get("VERISCOPE_CRASH_SEED", "20261128"))
ITEM = "tote-classic"
REGIONS = ("canvas", "trim", "lining")
MIN_DELAY_S, MAX_DELAY_S = 0.2, 2.5
"""The daemon is killed this long (uniformly drawn) after the client starts scanning."""


@dataclass
class ClientView:
    """What the client was told, over every cycle: the facts the daemon must keep."""

    completed: dict[str, tuple[str, float]] = field(default_factory=dict)
    """scan_id -> (verdict, score) of every scan the client saw COMPLETED."""
    images: dict[str, dict[str, str]] = field(default_factory=dict)
    """scan_id -> {image_id: sha256} of every image the client saw stored."""
    open: set[str] = field(default_factory=set)
    """Scans the client created and did not see end."""
    killed_during: collections.Counter[str] = field(default_factory=collections.Counter)
    """What the client was doing when the daemon died, per kind of call."""


class Scanner(threading.Thread):
    """Scans without pause until the daemon dies, recording every acknowledged fact in a :class:`ClientView`."""

    def __init__(self, address: str, view: ClientView, rng: random.Random, *, camera_share: float) -> None:
        super().__init__(name="crash-scanner", daemon=True)
        self._address = address
        self._view = view
        self._rng = rng
        self._camera_share = camera_share
        self._doing = "connecting"
        self.error: BaseException | None = None
        self.completed_one = threading.Event()
        """Set once a scan of this thread's has completed."""

    def run(self) -> None:
        try:
            with Client(self._address, timeout_s=60) as client:
                while True:
                    self._scan(client, camera=self._rng.random() < self._camera_share)
        except BaseException as exc:
            self.error = exc
            self._view.killed_during[self._doing] += 1

    def _scan(self, client: Client, *, camera: bool) -> None:
        self._doing = "create_scan"
        scan = client.create_scan(ITEM)
        self._view.open.add(scan.scan_id)
        stored = self._view.images.setdefault(scan.scan_id, {})
        for region in REGIONS:
            if camera:
                self._doing = "capture_region"
                image = client.capture_region(scan.scan_id, region).image
                stored[image.image_id] = image.sha256
                continue
            for k in range(2):
                self._doing = "upload_image"
                fmt = codec.ImageFormat.PNG if k == 0 else codec.ImageFormat.JPEG
                image = client.upload_image(scan.scan_id, region, _noise(self._rng, fmt)).image
                stored[image.image_id] = image.sha256
        self._doing = "complete_scan"
        done = client.complete_scan(scan.scan_id)
        assert done.state is ScanState.COMPLETED and done.result is not None, done
        self._view.completed[scan.scan_id] = (done.result.verdict.value, done.result.score)
        self._view.open.discard(scan.scan_id)
        self.completed_one.set()


def _noise(rng: random.Random, fmt: codec.ImageFormat) -> bytes:
    """A fresh 320x240 image of mid-grey noise (the quality gate accepts it), so every upload writes a new file."""
    pixels = np.random.default_rng(rng.randrange(2**32)).integers(60, 200, (240, 320, 3), np.uint8)
    return codec.encode(pixels, fmt)


# ---- checks ----------------------------------------------------------------------------------------


def check_database(data_dir: Path) -> dict[str, dict[str, object]]:
    """Integrity-check the database and return every stored record by scan id."""
    db = sqlite3.connect(data_dir / "scans.sqlite3")
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        records = {row[0]: json.loads(row[1]) for row in db.execute("SELECT scan_id, record FROM scans")}
    finally:
        db.close()
    return records


def check_images(data_dir: Path, records: dict[str, dict[str, object]]) -> int:
    """Every image of every stored scan is on disk with its SHA-256, and no file under a final name is partial."""
    images = data_dir / "images"
    referenced = 0
    for scan_id, record in records.items():
        for image in record["images"]:  # type: ignore[attr-defined]
            suffix = "png" if image["format"] == "png" else "jpg"
            path = images / image["sha256"][:2] / f"{image['sha256']}.{suffix}"
            assert path.is_file(), f"scans/{scan_id} image {image['image_id']} is missing: {path}"
            assert hashlib.sha256(path.read_bytes()).hexdigest() == image["sha256"], path
            referenced += 1
    for path in images.glob("*/*"):
        if ".tmp" not in path.name:
            assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name.split(".")[0], f"partial image {path}"
    return referenced


def check_client_view(client: Client, view: ClientView) -> collections.Counter[str]:
    """Every fact the client was told still holds after the restart; returns the states of the open scans."""
    for scan_id, (verdict, score) in view.completed.items():
        scan = client.get_scan(scan_id)
        assert scan.state is ScanState.COMPLETED, (scan_id, scan.state)
        assert scan.result is not None
        assert (scan.result.verdict.value, scan.result.score) == (verdict, score), scan_id
    for scan_id, acknowledged in view.images.items():
        stored = {image.image_id: image.sha256 for image in client.get_scan(scan_id).images}
        lost = {k: v for k, v in acknowledged.items() if stored.get(k) != v}
        assert not lost, f"scans/{scan_id} lost acknowledged images {lost}; it holds {stored}"
    states: collections.Counter[str] = collections.Counter()
    for scan_id in sorted(view.open):
        scan = client.get_scan(scan_id)
        states[scan.state.value] += 1
        assert scan.state in (ScanState.INTERRUPTED, ScanState.COMPLETED), (scan_id, scan.state)
        if scan.state is ScanState.INTERRUPTED:
            assert scan.error_message, scan_id
        else:
            # The kill came between the commit and the reply: the scan is complete, and stays so.
            assert scan.result is not None
            view.completed[scan_id] = (scan.result.verdict.value, scan.result.score)
    view.open.clear()
    in_progress = list(client.iter_scans(filter="state = IN_PROGRESS"))
    assert not in_progress, [s.scan_id for s in in_progress]
    return states


def _start(data_dir: Path, config: Path) -> DaemonProcess:
    unit = spawn_daemon(data_dir, "--config", str(config), timeout_s=60)
    # The store removed what the killed daemon was writing before it started serving.
    leftovers = [p for p in (data_dir / "images").glob("*/*") if ".tmp" in p.name]
    assert not leftovers, leftovers
    return unit


@pytest.mark.slow
@pytest.mark.timeout(max(300, 15 * CYCLES))
def test_sigkill_at_random_moments_loses_nothing(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    config = tmp_path / "device.toml"
    config.write_text("[camera]\nwidth = 640\nheight = 480\n")
    data_dir = tmp_path / "data"
    view = ClientView()
    interrupted: collections.Counter[str] = collections.Counter()
    started = time.monotonic()
    for cycle in range(CYCLES + 1):
        unit = _start(data_dir, config)
        try:
            with Client(unit.address, timeout_s=60) as client:
                interrupted += check_client_view(client, view)
            referenced = check_images(data_dir, check_database(data_dir))
            if cycle == CYCLES:
                break
            # Half the cycles mix in camera scans; placing the item takes a moment, so it is done before the clock runs.
            camera_share = 0.0
            if cycle % 2:
                with Client(unit.address, timeout_s=60) as client:
                    client.place_item(ITEM, "genuine", rng.randrange(1000))
                camera_share = 0.4
            scanner = Scanner(unit.address, view, random.Random(rng.randrange(2**32)), camera_share=camera_share)
            scanner.start()
            if cycle == 0:
                # However slow the host, later cycles have completed scans to keep: the first kill waits for one.
                assert scanner.completed_one.wait(120), f"no scan completed: {scanner.error!r}"
            time.sleep(rng.uniform(MIN_DELAY_S, MAX_DELAY_S))
            unit.process.kill()
            unit.process.wait(30)
            scanner.join(60)
            assert not scanner.is_alive()
            # The client stopped because the daemon died, not because a call it made went wrong.
            assert isinstance(scanner.error, DeviceUnavailableError), repr(scanner.error)
            # The database as the kill left it, before any daemon recovers it.
            check_images(data_dir, check_database(data_dir))
        finally:
            if unit.process.poll() is None:
                assert unit.stop() == 0, "".join(unit.output)
    print(
        f"\n{CYCLES} SIGKILL cycles in {time.monotonic() - started:.0f} s: {len(view.completed)} scans completed and "
        f"kept, {referenced} stored images verified; open scans after restarts: {dict(interrupted)}; "
        f"killed during: {dict(view.killed_during)}"
    )
    assert len(view.completed) > 0
