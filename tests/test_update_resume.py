"""``veriscope-tool update push`` over a link that drops mid-upload: it resumes at the unit's committed offset.

A TCP proxy between the tool and a daemon process forwards both ways and cuts its connections once a set number
of bytes went towards the unit; later connections pass untouched. The push must resume from the offset the unit
committed (not from byte 0), send only the rest of the file, and end with the bundle installed and active.
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
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from veriscope.device.launch import DaemonProcess, spawn_daemon
from veriscope.tools import bundles

BIN = Path(sys.executable).parent
TOOL = str(BIN / "veriscope-tool")
DEMO = Path(__file__).resolve().parents[1] / "models" / "bundles" / "veriscope-demo"
MIB = 1024 * 1024
CUT_AFTER_BYTES = int(2.5 * MIB)
"""Bytes towards the unit after which the proxy drops the link: mid-way through the tool's third 1 MiB chunk."""
PAUSE_S = 0.01
"""The slow link's pause before each piece of at most 64 KiB towards the unit: at most 6.4 MiB/s."""


class DroppingProxy:
    """Forwards 127.0.0.1:port to ``upstream`` over a slow link (pieces of 64 KiB, each after a pause); drops every
    open connection once, after ``cut_after`` bytes sent towards the upstream, and counts the bytes sent towards
    it before and after the drop.

    The pauses keep the unit's reads level with what crossed the link, so that the chunks before the cut are
    committed by the unit rather than still in flight in its transport's buffers."""

    def __init__(self, upstream: tuple[str, int], cut_after: int) -> None:
        self.upstream = upstream
        self.cut_after = cut_after
        self.before_cut = 0
        self.after_cut = 0
        self.cut = threading.Event()
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
                if upstream:
                    with self._lock:
                        if self.cut.is_set():
                            self.after_cut += len(data)
                        elif self.before_cut + len(data) > self.cut_after:
                            self._drop_all()
                            return
                        else:
                            self.before_cut += len(data)
                    time.sleep(PAUSE_S)
                sink.sendall(data)
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

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
    proxy = DroppingProxy((host, int(port)), CUT_AFTER_BYTES)
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
    assert "connection lost" in done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["version"] == "0.4.0"
    # It resumed once, at a whole number of chunks the unit had committed: not at 0, not past the cut.
    [offset] = report["resumed_at"]
    assert 0 < offset <= CUT_AFTER_BYTES and offset % MIB == 0, offset
    assert f"resuming the upload at byte {offset} of {size}" in " ".join(done.stderr.split())
    # After the drop only the rest of the file went through (plus headers and the install and status calls).
    assert size - offset <= proxy.after_cut < size - offset + 256 * 1024, (proxy.after_cut, size, offset)
    status = subprocess.run(
        [TOOL, "update", "status", "--device", daemon.address, "--json"], capture_output=True, text=True, timeout=60
    )
    model = next(r for r in json.loads(status.stdout)["results"] if r["component"] == "model")
    assert (model["version"], model["outcome"]) == ("0.4.0", "committed")
    assert list((tmp_path / "data" / "updates" / "incoming").iterdir()) == []
