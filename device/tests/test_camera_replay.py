"""ReplayCamera: folder order, looping, sidecars, lighting selection, scaling and safe decoding."""

from __future__ import annotations

import json
import struct
import zlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from veriscope.device import codec
from veriscope.device.bench import SimBench
from veriscope.device.camera.replay import ReplayCamera
from veriscope.device.controller.simulated import SimulatedController
from veriscope.device.errors import CameraError, InvalidArgument
from veriscope.device.imager import Imager
from veriscope.device.specimen import generate_dataset
from veriscope.device.types import CaptureSettings, Lighting


def _write(path: Path, value: int, size: tuple[int, int] = (64, 48), fmt: codec.ImageFormat = codec.ImageFormat.PNG):
    """An image whose pixels all equal ``value``, so tests can tell frames apart."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(codec.encode(np.full((size[1], size[0], 3), value, dtype=np.uint8), fmt))


def _sidecar(image: Path, **meta: object) -> None:
    image.with_suffix(".json").write_text(json.dumps(meta))


def _values(camera: ReplayCamera, n: int, lighting: Lighting = Lighting.WHITE_RING) -> list[int]:
    return [int(camera.capture(CaptureSettings(lighting=lighting)).pixels[0, 0, 0]) for _ in range(n)]


def test_plays_in_sorted_path_order_and_loops(tmp_path: Path) -> None:
    _write(tmp_path / "b.png", 20)
    _write(tmp_path / "a.png", 10)
    _write(tmp_path / "c" / "a.jpg", 30, fmt=codec.ImageFormat.JPEG)
    _write(tmp_path / "C.PNG", 40)
    (tmp_path / "notes.txt").write_text("not a frame")
    camera = ReplayCamera(tmp_path)
    assert camera.frame_count == 4
    values = _values(camera, 6)
    assert values[:2] == [40, 10]  # "C.PNG" sorts before "a.png"
    assert values[2] == 20
    assert abs(values[3] - 30) <= 2  # JPEG
    assert values[4:] == [40, 10]
    assert camera.last_path == tmp_path / "a.png"


def test_without_loop_the_end_is_an_error(tmp_path: Path) -> None:
    _write(tmp_path / "0.png", 1)
    _write(tmp_path / "1.png", 2)
    camera = ReplayCamera(tmp_path, loop=False)
    assert _values(camera, 2) == [1, 2]
    with pytest.raises(CameraError, match="has ended: all 2 frames"):
        camera.capture(CaptureSettings())
    camera.reset()
    assert _values(camera, 1) == [1]


def test_hidden_files_and_folders_are_skipped(tmp_path: Path) -> None:
    _write(tmp_path / "frame.png", 5)
    _write(tmp_path / ".thumbs" / "frame.png", 99)
    _write(tmp_path / ".hidden.png", 98)
    assert ReplayCamera(tmp_path).frame_count == 1


def test_replays_a_training_set(tmp_path: Path) -> None:
    generate_dataset(
        tmp_path,
        materials=["woven-fabric"],
        sources=["genuine", "counterfeit-a"],
        items_per_source=1,
        images_per_item=2,
        image_width=96,
        seed=1,
        jpeg_quality_range=None,
    )
    camera = ReplayCamera(tmp_path)
    assert camera.frame_count == 4
    assert camera.info.sensor_width == 96
    parts = []
    for _ in range(4):
        frame = camera.capture(CaptureSettings(), width=48)
        assert frame.width == 48
        assert camera.last_path is not None
        parts.append(camera.last_path.relative_to(tmp_path).parts[:2])
    assert parts == sorted(parts)
    assert {source for _, source in parts} == {"genuine", "counterfeit-a"}


def test_sidecar_gives_the_original_settings(tmp_path: Path) -> None:
    image = tmp_path / "0001.png"
    _write(image, 50)
    _sidecar(
        image,
        exposure_us=12000,
        analogue_gain=2,
        lighting="raking",
        led_duty_pct=80,
        focus_steps=140,
        lens_position=3.5,
        capture_time="2025-05-01T10:30:00+02:00",
        camera_model="imx477",
        operator="ignored",
    )
    frame = ReplayCamera(tmp_path).capture(CaptureSettings(exposure_us=500, lighting=Lighting.UV))
    s = frame.settings
    assert (s.exposure_us, s.analogue_gain, s.lighting, s.led_duty_pct, s.focus_steps, s.lens_position) == (
        12000,
        2.0,
        Lighting.RAKING,
        80,
        140,
        3.5,
    )
    assert frame.capture_time == datetime(2025, 5, 1, 8, 30, tzinfo=UTC)
    assert frame.camera_model == "imx477"


def test_without_sidecar_the_request_fills_in(tmp_path: Path) -> None:
    _write(tmp_path / "0.png", 1)
    before = datetime.now(UTC)
    frame = ReplayCamera(tmp_path).capture(CaptureSettings(exposure_us=700, lighting=Lighting.UV, focus_steps=12))
    assert (frame.settings.exposure_us, frame.settings.lighting, frame.settings.focus_steps) == (700, Lighting.UV, 12)
    assert frame.settings.analogue_gain == 0.0
    assert frame.camera_model == "replay"
    assert frame.capture_time >= before


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "cannot be read as JSON"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"exposure_us": "8000"}', "exposure_us must be an integer"),
        ('{"exposure_us": 8000.5}', "exposure_us must be an integer"),
        ('{"analogue_gain": true}', "analogue_gain must be a number"),
        ('{"lighting": "infrared"}', "lighting must be 'white_ring' or"),
        ('{"capture_time": "yesterday"}', "capture_time must be an ISO 8601 time"),
        ('{"camera_model": 7}', "camera_model must be a string"),
    ],
)
def test_bad_sidecar_names_the_file(tmp_path: Path, content: str, message: str) -> None:
    _write(tmp_path / "0.png", 1)
    (tmp_path / "0.json").write_text(content)
    camera = ReplayCamera(tmp_path)
    with pytest.raises(CameraError, match=message) as caught:
        camera.capture(CaptureSettings())
    assert str(tmp_path / "0.json") in str(caught.value)


def test_selects_frames_by_lighting(tmp_path: Path) -> None:
    for name, value, lighting in [("0", 1, "uv"), ("1", 2, None), ("2", 3, "raking"), ("3", 4, "uv")]:
        _write(tmp_path / f"{name}.png", value)
        if lighting:
            _sidecar(tmp_path / f"{name}.png", lighting=lighting)
    camera = ReplayCamera(tmp_path, match_lighting=True)
    assert _values(camera, 3, Lighting.UV) == [1, 4, 1]
    assert _values(camera, 2, Lighting.WHITE_RING) == [2, 2]  # no sidecar lighting counts as the ring
    assert _values(camera, 1, Lighting.RAKING) == [3]
    with pytest.raises(CameraError, match="is lit by off"):
        camera.capture(CaptureSettings(lighting=Lighting.OFF))
    # Without matching, the lighting asked for does not pick frames.
    assert _values(ReplayCamera(tmp_path), 2, Lighting.UV) == [1, 2]


def test_width_scales_down_keeping_the_aspect(tmp_path: Path) -> None:
    _write(tmp_path / "wide.png", 1, size=(400, 300))
    camera = ReplayCamera(tmp_path)
    assert camera.info.sensor_width == 400 and camera.info.sensor_height == 300
    assert camera.capture(CaptureSettings(), width=100).pixels.shape == (75, 100, 3)
    assert camera.capture(CaptureSettings()).pixels.shape == (300, 400, 3)
    for width in (15, 401):
        with pytest.raises(InvalidArgument, match=r"width must be 16\.\.400"):
            camera.capture(CaptureSettings(), width=width)


def test_empty_or_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(CameraError, match="holds no PNG or JPEG"):
        ReplayCamera(tmp_path)
    with pytest.raises(CameraError, match="does not exist"):
        ReplayCamera(tmp_path / "nowhere")


def test_corrupt_file_is_named(tmp_path: Path) -> None:
    _write(tmp_path / "0.png", 1)
    good = (tmp_path / "0.png").read_bytes()
    (tmp_path / "1.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "2.png").write_bytes(b"GIF89a" + bytes(40))
    camera = ReplayCamera(tmp_path)
    camera.capture(CaptureSettings())
    with pytest.raises(CameraError, match=r"1\.png: PNG image is corrupt or truncated"):
        camera.capture(CaptureSettings())
    with pytest.raises(CameraError, match=r"2\.png: image is neither PNG nor JPEG"):
        camera.capture(CaptureSettings())
    assert _values(camera, 1) == [1]  # a bad file fails its own capture only
    (tmp_path / "0.png").write_bytes(b"")
    with pytest.raises(CameraError, match=r"replay frame .*0\.png"):
        ReplayCamera(tmp_path)


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    _write(tmp_path / "0.png", 1)
    _write(tmp_path / "1.png", 2)
    camera = ReplayCamera(tmp_path)
    (tmp_path / "1.png").unlink()
    camera.capture(CaptureSettings())
    with pytest.raises(CameraError, match=r"cannot read replay frame .*1\.png"):
        camera.capture(CaptureSettings())


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bomb.png").write_bytes(_png_header_only(5000, 5000))
    with pytest.raises(CameraError, match=r"bomb\.png: image declares 5000x5000"):
        ReplayCamera(tmp_path, max_pixels=1_000_000)


def test_imager_drives_the_replay(tmp_path: Path) -> None:
    _write(tmp_path / "0.png", 128, size=(320, 240))
    _sidecar(tmp_path / "0.png", exposure_us=9000)
    bench = SimBench(sensor_width_px=320, sensor_height_px=240)
    imager = Imager(ReplayCamera(tmp_path), SimulatedController(bench))
    judged = imager.capture(CaptureSettings(lighting=Lighting.WHITE_RING))
    assert judged.frame.pixels.shape == (240, 320, 3)
    assert imager.preview(160).width == 160
