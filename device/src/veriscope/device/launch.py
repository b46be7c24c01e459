"""Start ``veriscope-device serve`` as a child process and learn its address.

Used by the demo, the end-to-end tests and integrators who want a simulated
unit from Python::

    unit = spawn_daemon(Path("/tmp/vs"))
    try:
        ...  # talk to unit.address with the SDK
    finally:
        unit.stop()
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class DaemonProcess:
    """A running daemon process and the address it serves on."""

    process: subprocess.Popen[str]
    address: str
    output: list[str] = field(default_factory=list)

    def stop(self, timeout_s: float = 30.0) -> int:
        """Send SIGTERM and wait for the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout_s)


def spawn_daemon(
    data_dir: Path,
    *extra: str,
    simulate: bool = True,
    timeout_s: float = 60.0,
    command: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> DaemonProcess:
    """Start a daemon on a free loopback port and wait until it prints its address.

    ``extra`` arguments are appended to ``veriscope-device serve``. ``command`` is
    what runs ``veriscope-device`` (default: the script beside this interpreter),
    for a daemon in another environment. ``VERISCOPE_*`` variables of this process
    are not passed on, so the child runs on its defaults and flags alone; ``env``
    adds variables. Raises RuntimeError with the daemon's output when it exits or
    stays silent for ``timeout_s`` seconds.
    """
    program = list(command) if command is not None else [str(Path(sys.executable).with_name("veriscope-device"))]
    cmd = [
        *program,
        "serve",
        *(["--simulate"] if simulate else []),
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        str(data_dir),
        *extra,
    ]
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("VERISCOPE_")} | dict(env or {})
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=child_env)
    lines: queue.Queue[str | None] = queue.Queue()
    output: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            raise RuntimeError(f"daemon exited with {proc.wait()} before serving:\n{''.join(output)}")
        if "serving on " in line:
            return DaemonProcess(proc, line.rsplit("serving on ", 1)[1].strip(), output)
    proc.kill()
    raise RuntimeError(f"daemon did not start within {timeout_s} s:\n{''.join(output)}")
