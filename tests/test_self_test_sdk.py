"""``Client.run_self_test`` / ``read_logs`` and their ``AsyncClient`` mirrors against a simulated daemon process."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from veriscope.device.launch import DaemonProcess
from veriscope.sdk import AsyncClient, Client, LogLevel, SelfTestCheck, SelfTestStatus

CHECKS = ["camera", "controller", "leds", "focus", "temperature", "model_checksums", "storage"]


def _check_results(checks: list[SelfTestCheck]) -> None:
    assert [c.name for c in checks] == CHECKS
    assert [c.check_number for c in checks] == list(range(1, 8))
    assert {c.total_checks for c in checks} == {7}
    assert all(c.status in (SelfTestStatus.PASS, SelfTestStatus.WARN) for c in checks), checks
    leds = checks[2]
    assert {i.name for i in leds.images} == {"white_ring", "raking", "uv", "dark"}
    assert all(i.png.startswith(b"\x89PNG") for i in leds.images)
    assert checks[1].images == () and leds.measurements["uv_change"] > 0


def test_the_client_runs_the_self_test_and_reads_the_log(sim_daemon: DaemonProcess) -> None:
    with Client(sim_daemon.address) as client:
        client.place_item("tote-classic", "genuine", 2)
        checks = list(client.run_self_test())
        _check_results(checks)
        assert checks[3].status is SelfTestStatus.PASS  # an item under the lens: focus can be judged
        entries = list(client.read_logs(since=datetime.now(UTC) - timedelta(minutes=5)))
        assert "self-test started" in [e.message for e in entries]
        assert all(e.level is not None and e.time is not None for e in entries)
        assert all(e.level in (LogLevel.ERROR, LogLevel.CRITICAL) for e in client.read_logs(min_level=LogLevel.ERROR))
        with pytest.raises(TypeError, match="aware datetime"):
            list(client.read_logs(since=datetime(2030, 1, 1)))


async def test_the_async_client_runs_the_self_test_and_follows_the_log(sim_daemon: DaemonProcess) -> None:
    async with AsyncClient(sim_daemon.address) as client:
        checks = [check async for check in client.run_self_test()]
        _check_results(checks)
        stream = client.read_logs(follow=True, since=datetime.now(UTC) - timedelta(minutes=5))
        async for entry in stream:
            if entry.message == "self-test started":
                break
        await stream.aclose()
