"""Access control end to end: ``veriscope-device serve --auth required``, tokens from ``veriscope-tool``,
and the SDK and ``veriscope`` CLI calling with them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from veriscope.device.launch import DaemonProcess, spawn_daemon
from veriscope.sdk import (
    AsyncClient,
    Client,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
)
from veriscope.sdk._cli import main as veriscope_main

TOOL = Path(sys.executable).with_name("veriscope-tool")


def _create(data_dir: Path, role: str, *extra: str) -> dict[str, Any]:
    argv = [str(TOOL), "tokens", "create", "--data-dir", str(data_dir), "--role", role, "--json", *extra]
    return json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)  # type: ignore[no-any-return]


class Unit:
    def __init__(self, data_dir: Path, *extra: str) -> None:
        data_dir.mkdir(parents=True)
        self.data_dir = data_dir
        self.tokens = {role: _create(data_dir, role)["token"] for role in ("operator", "technician", "admin")}
        self.process: DaemonProcess = spawn_daemon(data_dir, "--auth", "required", "--no-advertise", *extra)
        self.address = self.process.address


@pytest.fixture(scope="module")
def unit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Unit]:
    u = Unit(tmp_path_factory.mktemp("auth") / "data")
    yield u
    assert u.process.stop() == 0, "".join(u.process.output)


def test_the_sdk_calls_with_its_token(unit: Unit) -> None:
    with Client(unit.address, token=unit.tokens["operator"]) as client:
        assert client.get_device().device_id
    with Client(unit.address) as client, pytest.raises(UnauthenticatedError) as info:
        client.get_device()
    assert "veriscope-tool tokens create" in info.value.details


async def test_the_async_client_calls_with_its_token(unit: Unit) -> None:
    async with AsyncClient(unit.address, token=unit.tokens["operator"]) as client:
        assert (await client.get_status()).state
    async with AsyncClient(unit.address, token="vs_00000000_" + "A" * 43) as client:
        with pytest.raises(UnauthenticatedError, match="not known to this unit"):
            await client.get_status()


def test_a_role_too_low_is_permission_denied_naming_the_role_needed(unit: Unit) -> None:
    with Client(unit.address, token=unit.tokens["operator"]) as client, pytest.raises(PermissionDeniedError) as info:
        client.calibrate()
    assert (info.value.required_role, info.value.role) == ("technician", "operator")
    assert "needs the technician role; your token" in str(info.value)
    assert info.value.method.endswith("CalibrationService/Calibrate")


def test_a_token_revoked_with_the_tool_is_refused_by_the_running_unit(unit: Unit) -> None:
    created = _create(unit.data_dir, "operator", "--name", "temp", "--expires", "1h")
    with Client(unit.address, token=created["token"]) as client:
        assert client.get_device().device_id
        subprocess.run(
            [str(TOOL), "tokens", "revoke", "--data-dir", str(unit.data_dir), created["id"]],
            check=True,
            capture_output=True,
        )
        with pytest.raises(UnauthenticatedError, match="revoked"):
            client.get_device()


def test_the_cli_takes_token_from_the_flag_or_the_environment(
    unit: Unit, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VERISCOPE_TOKEN", raising=False)
    assert veriscope_main(["--device", unit.address, "info", "--json"]) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err

    assert veriscope_main(["--device", unit.address, "--token", unit.tokens["operator"], "info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["device_id"]
    assert veriscope_main(["--device", unit.address, "status", "--token", unit.tokens["operator"]]) == 0
    capsys.readouterr()

    monkeypatch.setenv("VERISCOPE_TOKEN", unit.tokens["operator"])
    assert veriscope_main(["--device", unit.address, "info", "--json"]) == 0
    capsys.readouterr()
    assert veriscope_main(["--device", unit.address, "calibrate"]) == 1
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("veriscope: error: PERMISSION_DENIED:") and "needs the technician role" in last


def test_the_sdk_checks_tokens_before_sending_them() -> None:
    with pytest.raises(ValueError, match="printable ASCII"):
        Client("127.0.0.1:1", token="vs_1 2")
    with pytest.raises(TypeError, match="token"):
        Client("127.0.0.1:1", token=b"vs_1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not both"):
        Client("127.0.0.1:1", token="vs_1", metadata=[("authorization", "Bearer vs_2")])


def test_a_burst_over_the_rate_limit_tells_the_sdk_when_to_retry(tmp_path: Path) -> None:
    config = tmp_path / "device.toml"
    config.write_text("[auth]\nrate_per_s = 0.01\nburst = 2\n")
    unit = Unit(tmp_path / "data", "--config", str(config))
    try:
        with Client(unit.address, token=unit.tokens["operator"]) as client:
            client.get_status()
            client.get_status()
            with pytest.raises(ResourceExhaustedError) as info:
                client.get_status()
        assert info.value.retry_after_s is not None and 1 < info.value.retry_after_s <= 100
        assert "rate limit" in info.value.details
        with Client(unit.address, token=unit.tokens["technician"]) as client:
            assert client.get_status().state  # another token, its own bucket
    finally:
        assert unit.process.stop() == 0
