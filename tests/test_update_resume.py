"""``veriscope-tool update push`` over a link that drops mid-upload: it resumes at the unit's committed offset.

A TCP proxy between the tool and a daemon process forwards both ways. Once a set number of bytes went towards the
unit it holds back the rest, waits until the unit's upload store holds every whole chunk that crossed, and only
then cuts its connections; later connections pass untouched. What the unit committed before the cut is therefore
known exactly, however loaded the machine: the push must resume from that offset (not from byte 0), send only the
rest of the file, and end with the bundle installed and active.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from veriscope.device.launch import DaemonProcess, spawn_daemon
from veriscope.device.updates import UploadStore
from veriscope.tools import bundles

BIN = Path(sys.executable).parent
TOOL = str(BIN / "veriscope-tool")
DEMO = Path(__file__).resolve().parents[1] / "models" / "bundles" / "veriscope-demo"
MIB = 1024 * 1024
CUT_AFTER_BYTES = int(2.5 * MIB)
"""Bytes towards the unit after which the proxy drops the link: mid-way through the tool's third 1 MiB chunk."""
COMMITTED_AT_CUT = 2 * MIB
"""What the unit holds when the link drops: the two whole chunks that crossed it (the third is cut off midway)."""
HOLD_TIMEOUT_S = 120.0
"""How long the proxy waits for the unit to commit what crossed before it gives up (a hang guard, not a measure)."""


class DroppingProxy:
    """Forwards 127.0.0.1:port to ``upstream`` (in pieces of at most 64 KiB); drops every open connection once, and
    counts the bytes sent towards the upstream before and after the drop.

    The piece that would take the bytes towards the upstream past ``cut_after`` is held back, and the drop waits
    until ``committed()`` reaches ``hold_until``: the unit has then committed what crossed the link, and is
    waiting for the rest of a chunk that never comes. ``held`` records whether it got there in time.
    """

    def __init__(
        self, upstream: tuple[str, int], cut_after: int, committed: Callable[[], int], hold_until: int
    ) -> None:
        self.upstream = upstream
        self.cut_after = cut_after
        self.committed = committed
        self.hold_until = hold_until
        self.before_cut = 0
        self.after_cut = 0
        self.held: bool | None = None
        self.cut = threading.Event()
        self._cutting = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(64 * 1024):
                cut_here = False
                if upstream:
                    with self._lock:
                        if self.cut.is_set():
                            self.after_cut += len(data)
                        elif self._cutting:
                            return
                        elif self.before_cut + len(data) > self.cut_after:
                            self._cutting = True
                            cut_here = True
                        else:
                            self.before_cut += len(data)
                    if cut_here:
                        self.held = self._hold()
                        with self._lock:
                            self._drop_all()
                        return
                sink.sendall(data)
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def _hold(self) -> bool:
        """Wait, without forwarding anything more towards the unit, until it has committed ``hold_until`` bytes."""
        deadline = time.monotonic() + HOLD_TIMEOUT_S
        while self.committed() < self.hold_until:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def _drop_all(self) -> None:
        """Reset every connection open now (the lock is held)."""
        self.cut.set()
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()
        self._sockets.clear()

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.close()


@pytest.fixture
def unit(tmp_path: Path) -> Iterator[tuple[DaemonProcess, Path]]:
    key, pub = bundles.generate_keys(tmp_path / "keys")
    daemon = spawn_daemon(tmp_path / "data", "--update-trust", str(pub))
    yield daemon, key
    assert daemon.stop() == 0, "".join(daemon.output)


def test_push_resumes_from_the_units_offset_after_the_link_drops(
    unit: tuple[DaemonProcess, Path], tmp_path: Path
) -> None:
    daemon, key = unit
    source = tmp_path / "src"
    shutil.copytree(DEMO, source)
    # A model bundle of about 4 MiB: several of the tool's 1 MiB chunks, so some are committed before the cut.
    (source / "calibration-frames.bin").write_bytes(np.random.default_rng(7).bytes(4 * MIB))
    bundle = tmp_path / "demo-0.4.0.vsb"
    bundles.build_bundle(
        source, bundle, kind="model", version="0.4.0", name="veriscope-demo", signing_key=bundles.load_signing_key(key)
    )
    size = bundle.stat().st_size
    host, _, port = daemon.address.rpartition(":")
    incoming = tmp_path / "data" / "updates" / "incoming"

    def committed() -> int:
        """The largest offset the unit's upload store holds (what GetUpload reports)."""
        store = UploadStore(incoming)
        return max((store.get(header.stem).committed_bytes for header in incoming.glob("*.json")), default=0)

    proxy = DroppingProxy((host, int(port)), CUT_AFTER_BYTES, committed, COMMITTED_AT_CUT)
    try:
        done = subprocess.run(
            [TOOL, "update", "push", "--device", f"127.0.0.1:{proxy.port}", "--json", str(bundle)],
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        proxy.close()
    assert done.returncode == 0, done.stdout + done.stderr
    assert proxy.cut.is_set(), "the link was never dropped"
    assert proxy.held, f"the unit did not commit {COMMITTED_AT_CUT} bytes before the cut (it holds {committed()})"
    assert "connection lost" in done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["version"] == "0.4.0"
    # It resumed once, at exactly what the unit had committed: not at 0, not past the cut.
    [offset] = report["resumed_at"]
    assert offset == COMMITTED_AT_CUT, offset
    assert f"resuming the upload at byte {offset} of {size}" in " ".join(done.stderr.split())
    # After the drop only the rest of the file went through (plus headers and the install and status calls).
    assert size - offset <= proxy.after_cut < size - offset + 256 * 1024, (proxy.after_cut, size, offset)
    status = subprocess.run(
        [TOOL, "update", "status", "--device", daemon.address, "--json"], capture_output=True, text=True, timeout=60
    )
    model = next(r for r in json.loads(status.stdout)["results"] if r["component"] == "model")
    assert (model["version"], model["outcome"]) == ("0.4.0", "committed")
    assert list((tmp_path / "data" / "updates" / "incoming").iterdir()) == []
