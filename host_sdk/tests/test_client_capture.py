"""Captures and previews in the SDK and the CLI: ``capture_sequence()``, sync and async, ``veriscope capture`` and
``veriscope preview``, against the scripted unit."""

from __future__ import annotations

import io
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from sdk_fakes import JPEG_MAGIC, FakeServer, FakeUnit

from veriscope.sdk import AsyncClient, CaptureSettings, Client, ImageFormat, LightingChannel
from veriscope.sdk._cli import check_output_file, main, preview_file_name
from veriscope.sdk._cli_output import PreviewProgress
from veriscope.sdk._models import PreviewFrame
from veriscope.v1 import common_pb2

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RING_UV = [LightingChannel.WHITE_RING, LightingChannel.UV]


@pytest.fixture
def client(address: str) -> Iterator[Client]:
    with Client(address) as client:
        yield client


@pytest_asyncio.fixture
async def aclient(address: str) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(address) as client:
        yield client


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("veriscope: error: ")
    return lines[0]


# --- capture_sequence, sync and async ------------------------------------------------------------------------------


def test_capture_sequence_sends_the_channels_in_order_and_maps_one_result_each(
    client: Client, server: FakeServer
) -> None:
    results = client.capture_sequence(RING_UV, settings=CaptureSettings(exposure_us=9000))
    sent = server.capture.last_request
    assert sent is not None
    assert list(sent.lighting_sequence) == [common_pb2.LIGHTING_CHANNEL_WHITE_RING, common_pb2.LIGHTING_CHANNEL_UV]
    assert sent.settings.exposure_us == 9000 and sent.settings.lighting == common_pb2.LIGHTING_CHANNEL_UNSPECIFIED
    assert [r.metadata.lighting for r in results] == RING_UV
    assert all(r.quality.ok and r.format is ImageFormat.PNG and r.data.startswith(PNG_MAGIC) for r in results)


async def test_async_capture_sequence_sends_the_channels_in_order_and_maps_one_result_each(
    aclient: AsyncClient, server: FakeServer
) -> None:
    results = await aclient.capture_sequence(RING_UV, settings=CaptureSettings(exposure_us=9000))
    sent = server.capture.last_request
    assert sent is not None
    assert list(sent.lighting_sequence) == [common_pb2.LIGHTING_CHANNEL_WHITE_RING, common_pb2.LIGHTING_CHANNEL_UV]
    assert sent.settings.exposure_us == 9000 and sent.settings.lighting == common_pb2.LIGHTING_CHANNEL_UNSPECIFIED
    assert [r.metadata.lighting for r in results] == RING_UV
    assert all(r.quality.ok and r.format is ImageFormat.PNG and r.data.startswith(PNG_MAGIC) for r in results)


def test_capture_sequence_of_one_channel_given_alone(client: Client) -> None:
    results = client.capture_sequence(LightingChannel.RAKING, image_format=ImageFormat.JPEG)
    assert [r.metadata.lighting for r in results] == [LightingChannel.RAKING]
    assert results[0].format is ImageFormat.JPEG and results[0].data.startswith(JPEG_MAGIC)


@pytest.mark.parametrize(
    ("lighting", "settings", "error", "message"),
    [
        ([], None, ValueError, "1..4 channels"),
        ([LightingChannel.UV] * 2, None, ValueError, "must not repeat"),
        ([*LightingChannel, LightingChannel.UV], None, ValueError, "1..4 channels"),
        (["WHITE_RING"], None, TypeError, "LightingChannel"),
        (RING_UV, CaptureSettings(lighting=LightingChannel.UV), ValueError, "settings.lighting must be None"),
    ],
)
def test_capture_sequence_arguments_are_checked_before_any_call(
    client: Client, unit: FakeUnit, lighting: Any, settings: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        client.capture_sequence(lighting, settings=settings)
    assert "Capture" not in unit.calls


async def test_async_capture_sequence_arguments_are_checked_before_any_call(
    aclient: AsyncClient, unit: FakeUnit
) -> None:
    with pytest.raises(ValueError, match="must not repeat"):
        await aclient.capture_sequence([LightingChannel.UV, LightingChannel.UV])
    assert "Capture" not in unit.calls


# --- veriscope capture ---------------------------------------------------------------------------------------------


def test_capture_json_contract_writes_the_png(
    capsys: pytest.CaptureFixture[str], address: str, server: FakeServer, tmp_path: Path
) -> None:
    out = tmp_path / "frame.png"
    code, stdout, err = run(capsys, "--device", address, "capture", "--out", str(out), "--lighting", "raking", "--json")
    assert code == 0, err
    data = json.loads(stdout)
    assert set(data) >= {"path", "quality", "settings"}
    assert data["path"] == str(out) and out.read_bytes().startswith(PNG_MAGIC)
    assert data["quality"]["ok"] is False and data["quality"]["issues"] == ["out_of_focus"]
    assert data["settings"] == {
        "exposure_us": 8000,
        "analogue_gain": 2.0,
        "lighting": "RAKING",
        "led_duty_pct": 50,
        "focus_steps": 0,
        "lens_position": 0.0,
    }
    assert data["metadata"]["device_id"] == "VS-0001" and data["metadata"]["capture_time"]
    sent = server.capture.last_request
    assert sent is not None and sent.settings.lighting == common_pb2.LIGHTING_CHANNEL_RAKING
    assert sent.format == common_pb2.IMAGE_FORMAT_PNG


def test_capture_to_a_jpeg_name_asks_for_jpeg_and_prints_a_summary(
    capsys: pytest.CaptureFixture[str], address: str, server: FakeServer, tmp_path: Path
) -> None:
    out = tmp_path / "frame.JPEG"
    code, stdout, err = run(capsys, "--device", address, "capture", "--out", str(out))
    assert code == 0, err
    assert out.read_bytes().startswith(JPEG_MAGIC)
    sent = server.capture.last_request
    assert sent is not None and sent.format == common_pb2.IMAGE_FORMAT_JPEG
    assert f"saved {out}" in stdout and "quality: FAILED out_of_focus" in stdout
    assert "  Press the scanner flat and refocus" in stdout
    assert "settings: 8000 us, gain 2.00, white_ring at 50 %, focus 0 steps" in stdout


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing-dir/frame.png", "does not exist"),
        ("frame.tiff", "must end in .png, .jpg or .jpeg"),
        (".", "must end in"),
        ("a-dir.png", "is a directory"),
    ],
)
def test_capture_to_an_unwritable_path_exits_2_before_capturing(
    capsys: pytest.CaptureFixture[str], address: str, unit: FakeUnit, tmp_path: Path, name: str, message: str
) -> None:
    (tmp_path / "a-dir.png").mkdir()
    code, stdout, err = run(capsys, "--device", address, "capture", "--out", str(tmp_path / name))
    assert (code, stdout) == (2, "")
    assert message in one_error_line(err)
    assert "Capture" not in unit.calls


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_capture_into_a_read_only_directory_exits_2(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(Exception, match="cannot be written"):
        check_output_file(locked / "frame.png")


def test_output_file_check_leaves_nothing_behind(tmp_path: Path) -> None:
    assert check_output_file(tmp_path / "new.png") is ImageFormat.PNG
    assert list(tmp_path.iterdir()) == []
    existing = tmp_path / "old.jpg"
    existing.write_bytes(b"keep")
    assert check_output_file(existing) is ImageFormat.JPEG and existing.read_bytes() == b"keep"


def test_capture_device_errors_exit_1_and_write_nothing(
    capsys: pytest.CaptureFixture[str], address: str, unit: FakeUnit, tmp_path: Path
) -> None:
    unit.faults["Capture"] = (grpc.StatusCode.FAILED_PRECONDITION, "camera busy: scans/abc owns the camera")
    out = tmp_path / "frame.png"
    code, _, err = run(capsys, "--device", address, "capture", "--out", str(out), "--json")
    assert code == 1 and "FAILED_PRECONDITION: camera busy" in one_error_line(err)
    assert not out.exists()


# --- veriscope preview ---------------------------------------------------------------------------------------------


def test_preview_json_saves_numbered_frames(
    capsys: pytest.CaptureFixture[str], address: str, unit: FakeUnit, tmp_path: Path
) -> None:
    directory = tmp_path / "live" / "new"
    code, stdout, err = run(
        capsys,
        "--device",
        address,
        "preview",
        "--out",
        str(directory),
        "--frames",
        "5",
        "--fps",
        "20",
        "--width",
        "320",
        "--lighting",
        "uv",
        "--json",
    )
    assert code == 0, err
    data = json.loads(stdout)
    names = [f"frame-{i:06d}.jpg" for i in range(5)]
    assert sorted(p.name for p in directory.iterdir()) == names
    assert data["files"] == [str(directory / n) for n in names] and data["frames"] == 5
    assert (directory / names[3]).read_bytes() == JPEG_MAGIC + bytes([3])
    assert data["width_px"] == 320 and data["dropped"] == 0 and data["lighting"] == "uv"
    assert (data["first_sequence"], data["last_sequence"]) == (0, 4)
    assert "frame 5/5" in err  # progress on stderr


def test_preview_human_summary_and_quiet(capsys: pytest.CaptureFixture[str], address: str, tmp_path: Path) -> None:
    code, stdout, err = run(capsys, "--device", address, "preview", "--out", str(tmp_path), "--frames", "3", "-q")
    assert code == 0 and err == ""
    assert stdout.startswith(f"saved 3 frames (640x480) to {tmp_path}")


def test_preview_into_a_file_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], address: str, unit: FakeUnit, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run(capsys, "--device", address, "preview", "--out", str(blocker), "--frames", "2")
    assert code == 2 and "cannot be written" in one_error_line(err)
    assert "StreamPreview" not in unit.calls


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["preview", "--out", "d", "--fps", "0.5"], "1..30"),
        (["preview", "--out", "d", "--width", "32"], "64..1280"),
        (["preview", "--out", "d", "--frames", "0"], "--frames"),
        (["preview", "--out", "d", "--lighting", "infrared"], "--lighting"),
        (["capture"], "--out"),
    ],
)
def test_preview_and_capture_usage_errors(capsys: pytest.CaptureFixture[str], argv: list[str], expected: str) -> None:
    code, out, err = run(capsys, "--device", "127.0.0.1:1", *argv)
    assert (code, out) == (2, "")
    assert expected in one_error_line(err)


def test_preview_progress_counts_gaps_and_rewrites_one_line_on_a_terminal() -> None:
    stream = io.StringIO()
    progress = PreviewProgress(stream, 3, live=True)
    for saved, sequence in enumerate((0, 1, 4), start=1):
        frame = PreviewFrame(jpeg=b"", sequence=sequence, capture_time=None, width_px=64, height_px=48, sharpness=1.0)
        progress(frame, saved, elapsed_s=0.2 * saved)
    progress.close()
    text = stream.getvalue()
    assert text.count("\r\x1b[K") == 3 and text.endswith("\n") and "frame 3/3" in text
    assert preview_file_name(12) == "frame-000012.jpg"


def test_help_teaches_capture_and_preview(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("capture", "preview"):
        code, out, _ = run(capsys, command, "--help")
        assert code == 0 and "examples:" in out and "--json" in out, command
