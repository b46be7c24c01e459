"""``veriscope-tool diagnose``, ``logs`` and ``discover`` against a simulated daemon in its own process, which
requires tokens: reports with images, exit codes per class of failure, log filters, and discovery on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from veriscope.device.launch import DaemonProcess, spawn_daemon
from veriscope.sdk import Client
from veriscope.sdk._models import LogEntry, LogLevel
from veriscope.tools import _diagnose_cli
from veriscope.tools.cli import main

TOOL = str(Path(sys.executable).with_name("veriscope-tool"))


def _token(data_dir: Path, role: str) -> str:
    argv = [TOOL, "tokens", "create", "--data-dir", str(data_dir), "--role", role, "--name", role, "--json"]
    created: dict[str, Any] = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
    return str(created["token"])


class Unit:
    """A simulated unit that requires tokens, with a technician's and an operator's."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True)
        self.technician = _token(data_dir, "technician")
        self.operator = _token(data_dir, "operator")
        self.process: DaemonProcess = spawn_daemon(data_dir, "--auth", "required")
        self.address = self.process.address
        with Client(self.address, token=self.technician) as client:
            client.place_item("tote-classic", "genuine", 5)


@pytest.fixture(scope="module")
def unit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Unit]:
    u = Unit(tmp_path_factory.mktemp("diagnose") / "data")
    yield u
    assert u.process.stop() == 0


def _tool(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TOOL, *argv], capture_output=True, text=True, timeout=180, env=env)


def test_diagnose_writes_a_report_with_images_and_exits_0(unit: Unit, tmp_path: Path) -> None:
    out = tmp_path / "report"
    done = _tool("diagnose", unit.address, "--out", str(out), "--json", "--token", unit.technician)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    written = json.loads((out / "report.json").read_text())
    assert printed == written
    assert written["passed"] is True and written["failed"] == []
    assert [c["name"] for c in written["checks"]] == [
        "camera",
        "controller",
        "leds",
        "focus",
        "temperature",
        "model_checksums",
        "storage",
    ]
    assert {c["status"] for c in written["checks"]} == {"PASS"}
    leds = next(c for c in written["checks"] if c["name"] == "leds")
    files = [i["file"] for i in leds["images"]]
    assert sorted(files) == ["leds-dark.png", "leds-raking.png", "leds-uv.png", "leds-white_ring.png"]
    markdown = (out / "report.md").read_text()
    assert "| leds | **PASS** |" in markdown
    for name in files:
        assert (out / name).read_bytes().startswith(b"\x89PNG")
        assert f"]({name})" in markdown
    assert "all checks passed" in done.stderr


def test_diagnose_takes_the_token_from_the_environment(unit: Unit, tmp_path: Path) -> None:
    env = {"VERISCOPE_TOKEN": unit.technician, "PATH": "/usr/bin:/bin"}
    done = _tool("diagnose", unit.address, "--out", str(tmp_path / "r"), env=env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r" / "report.md").is_file()


def test_diagnose_exits_4_on_auth_problems(unit: Unit, tmp_path: Path) -> None:
    missing = _tool("diagnose", unit.address, "--out", str(tmp_path / "a"), env={"PATH": "/usr/bin:/bin"})
    assert missing.returncode == 4, missing.stderr
    assert "authentication" in missing.stderr
    operator = _tool("diagnose", unit.address, "--out", str(tmp_path / "b"), "--token", unit.operator)
    assert operator.returncode == 4, operator.stderr
    assert "technician" in operator.stderr


def test_diagnose_exits_3_when_the_unit_is_unreachable(tmp_path: Path) -> None:
    done = _tool("diagnose", "127.0.0.1:9", "--out", str(tmp_path / "r"), "--token", "x", "--timeout", "5")
    assert done.returncode == 3, done.stderr
    assert "unreachable" in done.stderr
    assert not (tmp_path / "r").exists()


def test_diagnose_exits_1_when_a_check_fails(unit: Unit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The report and exit status follow the unit's findings; a failing check is simulated at the SDK boundary.
    real = Client.run_self_test

    def failing(self: Client, **kwargs: Any) -> Iterator[Any]:
        import dataclasses

        from veriscope.sdk import SelfTestStatus

        for check in real(self, **kwargs):
            if check.name == "storage":
                check = dataclasses.replace(check, status=SelfTestStatus.FAIL, message="probe file read back wrong")
            yield check

    monkeypatch.setattr(Client, "run_self_test", failing)
    out = tmp_path / "r"
    code = main(["diagnose", unit.address, "--out", str(out), "--token", unit.technician])
    assert code == 1
    report = json.loads((out / "report.json").read_text())
    assert report["failed"] == ["storage"]
    assert "| storage | **FAIL** | probe file read back wrong |" in (out / "report.md").read_text()


def test_help_documents_the_exit_codes() -> None:
    done = _tool("diagnose", "--help")
    assert done.returncode == 0
    for line in (
        "0    every check passed",
        "1    a check FAILED",
        "3    the unit is unreachable",
        "4    authentication",
    ):
        assert line in done.stdout
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert "## Exit codes" in readme and "veriscope-tool diagnose" in readme


def test_logs_print_filtered_lines_as_json(unit: Unit) -> None:
    # The self-test logs at INFO and, per failed check, WARNING; the daemon's start logs at INFO too.
    done = _tool("logs", unit.address, "--json", "--since", "1h", "--token", unit.technician)
    assert done.returncode == 0, done.stderr
    entries = [json.loads(line) for line in done.stdout.splitlines()]
    assert any(e["message"] == "self-test started" for e in entries)
    assert {"sequence", "time", "level", "logger", "message"} <= set(entries[0])
    warnings = _tool("logs", unit.address, "--json", "--level", "warning", "--token", unit.technician)
    assert warnings.returncode == 0, warnings.stderr
    levels = {json.loads(line)["level"] for line in warnings.stdout.splitlines()}
    assert levels <= {"WARNING", "ERROR", "CRITICAL"}
    assert _tool("logs", unit.address, "--level", "loud", "--token", unit.technician).returncode == 2
    assert _tool("logs", unit.address, "--token", unit.operator).returncode == 4


def test_logs_follow_resumes_after_the_last_line_when_the_link_drops() -> None:
    from veriscope.sdk import DeviceUnavailableError

    def entry(n: int) -> LogEntry:
        return LogEntry(sequence=n, time=None, level=LogLevel.INFO, logger="veriscope.device", message=f"line {n}")

    class FlakyClient:
        def __init__(self) -> None:
            self.calls = 0

        def read_logs(self, **kwargs: Any) -> Iterator[LogEntry]:
            self.calls += 1
            if self.calls == 1:
                yield from (entry(1), entry(2))
                raise DeviceUnavailableError("Socket closed", method="ReadLogs")
            yield from (entry(1), entry(2), entry(3))

    slept: list[float] = []
    client = FlakyClient()
    got = list(
        _diagnose_cli.follow_logs(
            client,  # type: ignore[arg-type]
            since=None,
            min_level=None,
            follow=True,
            err=Console(stderr=True),
            sleep=slept.append,
        )
    )
    assert [e.sequence for e in got] == [1, 2, 3]
    assert client.calls == 2 and slept == [2.0]


@pytest.mark.slow
def test_discover_lists_the_unit_as_json(tmp_path: Path) -> None:
    unit = spawn_daemon(tmp_path / "data")
    try:
        deadline = time.monotonic() + 30
        while not any("advertising " in line for line in unit.output) and time.monotonic() < deadline:
            time.sleep(0.05)
        with Client(unit.address) as client:
            device_id = client.get_device().device_id
        done = _tool("discover", "--timeout", "2", "--json", "--interface", "127.0.0.1")
        assert done.returncode == 0, done.stderr
        found = [d for d in json.loads(done.stdout) if d["device_id"] == device_id]
        assert len(found) == 1 and found[0]["address"] == unit.address
        table = _tool("discover", "--timeout", "2", "--interface", "127.0.0.1")
        assert device_id in table.stdout
    finally:
        assert unit.stop() == 0
