"""Camera calibration in the SDK and the CLI: ``calibrate()``/``get_calibration()``, sync and async, and ``veriscope calibrate``."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
import pytest_asyncio
from sdk_fakes import CALIBRATION_PATH, FakeUnit, stamp

from veriscope.sdk import (
    AsyncClient,
    CalibrationState,
    Client,
    FailedPreconditionError,
    LightingChannel,
    WhiteBalanceGains,
)
from veriscope.sdk._cli import main
from veriscope.sdk._convert import metadata_from_pb
from veriscope.v1 import calibration_service_pb2, common_pb2

TARGET_NOT_UNIFORM = "target not uniform under white_ring: corner/centre ratio 0.31; place the white reference flat"


@pytest.fixture
def client(address: str) -> Iterator[Client]:
    with Client(address) as client:
        yield client


@pytest_asyncio.fixture
async def aclient(address: str) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(address) as client:
        yield client


def _sent(unit: FakeUnit) -> calibration_service_pb2.CalibrateRequest:
    assert unit.calibrate_requests, unit.calls
    return unit.calibrate_requests[-1]


# --- Client ------------------------------------------------------------------------------------------------------


def test_get_calibration_of_an_uncalibrated_unit(client: Client) -> None:
    current = client.get_calibration()
    assert current.state is CalibrationState.UNCALIBRATED and not current.calibrated
    assert current.calibration_id is None and current.create_time is None and current.white_balance_gains is None
    assert current.storage_path == CALIBRATION_PATH and current.channels == ()


def test_calibrate_sends_the_channels_and_frames_and_maps_the_result(client: Client, unit: FakeUnit) -> None:
    made = client.calibrate(lighting_channels=[LightingChannel.WHITE_RING, LightingChannel.RAKING], frames=16)
    sent = _sent(unit)
    assert sent.name == "calibration" and sent.frames == 16
    assert list(sent.lighting_channels) == [common_pb2.LIGHTING_CHANNEL_WHITE_RING, common_pb2.LIGHTING_CHANNEL_RAKING]
    assert made.calibrated and made.calibration_id == "20260528T101500Z-3fa2c1d0"
    assert made.create_time == stamp(20).ToDatetime(tzinfo=UTC)
    assert (made.device_id, made.camera_model, made.frames) == ("VS-0001", "imx477", 16)
    assert made.white_balance_gains == WhiteBalanceGains(red=1.031, green=1.0, blue=pytest.approx(1.064))
    assert made.vignetting_depth == pytest.approx(0.29)
    assert [c.lighting for c in made.channels] == [LightingChannel.WHITE_RING, LightingChannel.RAKING]
    assert made.channels[1].vignetting_depth == pytest.approx(0.49) and made.channels[1].exposure_us == 7700
    assert client.get_calibration() == made


def test_calibrate_defaults_leave_the_choice_to_the_unit(client: Client, unit: FakeUnit) -> None:
    client.calibrate()
    sent = _sent(unit)
    assert list(sent.lighting_channels) == [] and sent.frames == 0


def test_calibrate_refused_by_the_unit_raises_with_its_message(client: Client, unit: FakeUnit) -> None:
    unit.faults["Calibrate"] = (grpc.StatusCode.FAILED_PRECONDITION, TARGET_NOT_UNIFORM)
    with pytest.raises(FailedPreconditionError, match=r"corner/centre ratio 0\.31"):
        client.calibrate()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"frames": 0}, ValueError, r"frames must be 1\.\.64"),
        ({"frames": 65}, ValueError, r"frames must be 1\.\.64"),
        ({"frames": 2.5}, TypeError, "frames must be an int"),
        ({"lighting_channels": "WHITE_RING"}, TypeError, "iterable of LightingChannel"),
        ({"lighting_channels": [1]}, TypeError, "LightingChannel members"),
    ],
)
def test_calibrate_checks_its_arguments_before_any_call(
    client: Client, unit: FakeUnit, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        client.calibrate(**kwargs)
    assert "Calibrate" not in unit.calls


def test_image_metadata_names_the_calibration_applied() -> None:
    wire = common_pb2.ImageMetadata(width=640, calibration_id="20260528T101500Z-3fa2c1d0", calibration_time=stamp(20))
    meta = metadata_from_pb(wire)
    assert meta.calibration_id == "20260528T101500Z-3fa2c1d0"
    assert meta.calibration_time == datetime(2026, 5, 28, 20, 27, 0, 500_000, tzinfo=UTC)
    assert meta.to_dict()["calibration_time"] == "2026-05-28T20:27:00.500000Z"
    plain = metadata_from_pb(common_pb2.ImageMetadata(width=640))
    assert (plain.calibration_id, plain.calibration_time) == (None, None)
    assert plain.to_dict()["calibration_id"] is None


# --- AsyncClient (mirrors the Client tests) ----------------------------------------------------------------------


async def test_async_get_calibration_of_an_uncalibrated_unit(aclient: AsyncClient) -> None:
    current = await aclient.get_calibration()
    assert current.state is CalibrationState.UNCALIBRATED and not current.calibrated
    assert current.storage_path == CALIBRATION_PATH and current.channels == ()


async def test_async_calibrate_sends_the_channels_and_frames_and_maps_the_result(
    aclient: AsyncClient, unit: FakeUnit
) -> None:
    made = await aclient.calibrate(lighting_channels=(LightingChannel.RAKING,), frames=4)
    sent = _sent(unit)
    assert list(sent.lighting_channels) == [common_pb2.LIGHTING_CHANNEL_RAKING] and sent.frames == 4
    assert made.calibrated and made.frames == 4
    assert [c.lighting for c in made.channels] == [LightingChannel.RAKING]
    assert await aclient.get_calibration() == made


async def test_async_calibrate_refused_by_the_unit_raises_with_its_message(
    aclient: AsyncClient, unit: FakeUnit
) -> None:
    unit.faults["Calibrate"] = (grpc.StatusCode.FAILED_PRECONDITION, TARGET_NOT_UNIFORM)
    with pytest.raises(FailedPreconditionError, match=r"corner/centre ratio 0\.31"):
        await aclient.calibrate()


async def test_async_calibrate_checks_its_arguments_before_any_call(aclient: AsyncClient, unit: FakeUnit) -> None:
    with pytest.raises(ValueError, match=r"frames must be 1\.\.64"):
        await aclient.calibrate(frames=0)
    with pytest.raises(TypeError, match="LightingChannel members"):
        await aclient.calibrate(lighting_channels=["RAKING"])  # type: ignore[list-item]
    assert "Calibrate" not in unit.calls


# --- veriscope calibrate -----------------------------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_calibrate_json_contract(capsys: pytest.CaptureFixture[str], address: str, unit: FakeUnit) -> None:
    code, out, err = run(
        capsys, "--device", address, "calibrate", "--lighting", "white_ring", "--lighting", "raking", "--json"
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["state"] == "CALIBRATED" and data["calibration_id"] == "20260528T101500Z-3fa2c1d0"
    assert data["create_time"].endswith("Z") and data["frames"] == 8
    assert data["white_balance_gains"] == {"red": 1.031, "green": 1.0, "blue": pytest.approx(1.064)}
    assert data["vignetting_depth"] == pytest.approx(0.29) and data["storage_path"] == CALIBRATION_PATH
    assert [c["lighting"] for c in data["channels"]] == ["WHITE_RING", "RAKING"]
    assert set(data["channels"][0]) == {
        "lighting",
        "exposure_us",
        "analogue_gain",
        "vignetting_depth",
        "white_balance_gains",
        "texture",
        "level",
    }
    # The technician is told what to do, and progress goes to stderr.
    assert "place the white reference target flat under the lens" in err
    assert "calibrating white_ring, raking" in err
    assert list(_sent(unit).lighting_channels) == [
        common_pb2.LIGHTING_CHANNEL_WHITE_RING,
        common_pb2.LIGHTING_CHANNEL_RAKING,
    ]


def test_calibrate_text_shows_what_was_measured_and_where_it_is(
    capsys: pytest.CaptureFixture[str], address: str, unit: FakeUnit
) -> None:
    code, out, err = run(capsys, "--device", address, "calibrate", "--frames", "12", "-q")
    assert (code, err) == (0, "")
    assert _sent(unit).frames == 12
    assert "Calibrated    20260528T101500Z-3fa2c1d0" in out
    assert "white_ring  29%         0.71     1.031 / 1.000 / 1.064" in out
    assert CALIBRATION_PATH in out
    assert "Every capture is now corrected" in out


@pytest.mark.parametrize("flag", ["--show", "--status"])
def test_calibrate_show_prints_the_current_calibration_without_calibrating(
    capsys: pytest.CaptureFixture[str], address: str, unit: FakeUnit, flag: str
) -> None:
    code, out, err = run(capsys, "--device", address, "calibrate", flag)
    assert (code, err) == (0, "")
    assert out.startswith("Not calibrated: captures are not corrected")
    assert "run 'veriscope calibrate'" in out
    assert "Calibrate" not in unit.calls
    unit.calibration = calibration_service_pb2.Calibration(
        name="calibration",
        state=calibration_service_pb2.CALIBRATION_STATE_INVALID,
        problem="/data/calibration/imx477.json is not valid JSON",
    )
    shown = json.loads(run(capsys, "--device", address, "calibrate", flag, "--json")[1])
    assert shown["state"] == "INVALID" and shown["problem"].endswith("is not valid JSON")
    assert run(capsys, "--device", address, "calibrate", flag)[1].startswith("Calibration unusable: /data/")


def test_calibrate_refused_by_the_unit_exits_1_with_one_line(
    capsys: pytest.CaptureFixture[str], address: str, unit: FakeUnit
) -> None:
    unit.faults["Calibrate"] = (grpc.StatusCode.FAILED_PRECONDITION, TARGET_NOT_UNIFORM)
    code, out, err = run(capsys, "--device", address, "calibrate", "--json")
    assert (code, out) == (1, "")
    assert err.splitlines()[-1] == f"veriscope: error: FAILED_PRECONDITION: {TARGET_NOT_UNIFORM}"


@pytest.mark.parametrize(
    "argv",
    [("--lighting", "uv"), ("--frames", "0"), ("--frames", "65"), ("--frames", "many")],
)
def test_calibrate_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], address: str, unit: FakeUnit, argv: tuple[str, ...]
) -> None:
    code, out, err = run(capsys, "--device", address, "calibrate", *argv)
    assert (code, out) == (2, "") and err.startswith("veriscope: error: ")
    assert "Calibrate" not in unit.calls


def test_calibrate_interactive_waits_for_enter(
    capsys: pytest.CaptureFixture[str], address: str, unit: FakeUnit, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, _, err = run(capsys, "--device", address, "calibrate", "-i")
    assert code == 2 and "--interactive needs a terminal" in err
    assert "Calibrate" not in unit.calls
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    code, _, err = run(capsys, "--device", address, "calibrate", "-i")
    assert code == 0 and "press Enter when the target is in place" in err
    assert unit.count("Calibrate") == 1


def test_calibrate_on_an_unreachable_device_exits_3(capsys: pytest.CaptureFixture[str], unused_address: str) -> None:
    code, out, err = run(capsys, "--device", unused_address, "calibrate", "-q")
    assert (code, out) == (3, "") and "UNAVAILABLE" in err.splitlines()[-1]
