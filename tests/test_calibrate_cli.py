"""End to end: a technician calibrates a simulated unit (its own daemon process) with ``veriscope calibrate``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from veriscope.device.launch import DaemonProcess, spawn_daemon

CLI = str(Path(sys.executable).with_name("veriscope"))


def cli(unit: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, "--device", unit.address, *args], capture_output=True, text=True, timeout=300)


def cli_json(unit: DaemonProcess, *args: str) -> Any:
    done = cli(unit, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_technician_calibrates_on_the_white_reference_and_a_specimen_is_refused(tmp_path: Path) -> None:
    # Its own unit: a calibrated shared daemon would correct the captures of every other end-to-end test.
    unit = spawn_daemon(tmp_path / "data")
    try:
        assert cli_json(unit, "calibrate", "--show")["state"] == "UNCALIBRATED"
        assert cli(unit, "sim", "place", "--item-type", "white-reference").returncode == 0

        done = cli(unit, "calibrate", "--frames", "2", "--json")
        assert done.returncode == 0, done.stderr
        assert "place the white reference target" in done.stderr
        made = json.loads(done.stdout)
        assert made["state"] == "CALIBRATED" and made["frames"] == 2
        assert 0.2 < made["vignetting_depth"] < 0.35
        gains = made["white_balance_gains"]
        assert gains["green"] == 1.0 and gains["blue"] > gains["red"] > 1.0
        assert Path(made["storage_path"]).is_file() and Path(made["storage_path"]).is_relative_to(tmp_path)
        shown = cli(unit, "calibrate", "--show")
        assert shown.returncode == 0 and made["calibration_id"] in shown.stdout and "white_ring" in shown.stdout

        assert cli(unit, "sim", "place", "--item-type", "tote-classic").returncode == 0
        refused = cli(unit, "calibrate", "--frames", "2", "-q")
        assert refused.returncode == 1 and refused.stdout == ""
        (line,) = refused.stderr.splitlines()
        assert line.startswith("veriscope: error: FAILED_PRECONDITION: target ") and "white" in line
        assert cli_json(unit, "calibrate", "--show")["calibration_id"] == made["calibration_id"]
    finally:
        assert unit.stop() == 0, "".join(unit.output)
