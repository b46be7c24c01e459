"""CaptureService over real gRPC against the in-process daemon: metadata, lighting sequences and the live preview."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import grpc
import numpy as np
import pytest
from device_daemon import InProcessDaemon

from veriscope.device import codec
from veriscope.device.bench import SimBench
from veriscope.device.camera.simulated import SimulatedCamera
from veriscope.device.controller.simulated import SimulatedController
from veriscope.device.imager import Imager
from veriscope.device.types import CaptureSettings, Lighting
from veriscope.v1 import capture_service_pb2 as pb
from veriscope.v1 import (
    capture_service_pb2_grpc,
    common_pb2,
    device_service_pb2,
    device_service_pb2_grpc,
    simulation_service_pb2,
    simulation_service_pb2_grpc,
)

RING, RAKING, UV = (
    common_pb2.LIGHTING_CHANNEL_WHITE_RING,
    common_pb2.LIGHTING_CHANNEL_RAKING,
    common_pb2.LIGHTING_CHANNEL_UV,
)


@pytest.fixture
def capture(daemon: InProcessDaemon) -> Iterator[capture_service_pb2_grpc.CaptureServiceStub]:
    place(daemon, "scarf-twill", "counterfeit-d")
    stub = capture_service_pb2_grpc.CaptureServiceStub(daemon.channel)
    stub.Autofocus(pb.AutofocusRequest())
    yield stub


def place(daemon: InProcessDaemon, item_type: str, source: str) -> None:
    sim = simulation_service_pb2_grpc.SimulationServiceStub(daemon.channel)
    item = simulation_service_pb2.PlacedItem(item_type=item_type, source=source, seed=3)
    sim.PlaceItem(simulation_service_pb2.PlaceItemRequest(item=item))


def pixels(image: common_pb2.Image) -> np.ndarray:
    return codec.decode(image.data, max_pixels=10_000_000).astype(np.float64)


def chroma(image: np.ndarray) -> tuple[float, float]:
    """(blue/green, red/green) of the mean colour."""
    r, g, b = image.reshape(-1, 3).mean(axis=0)
    return b / g, r / g


def contrast(image: np.ndarray) -> float:
    grey = image.mean(axis=2)
    return float(grey.std() / grey.mean())


def x_over_y_detail(image: np.ndarray) -> float:
    grey = image.mean(axis=2)
    return float(np.mean(np.diff(grey, axis=1) ** 2) / np.mean(np.diff(grey, axis=0) ** 2))


def leds_off(daemon: InProcessDaemon) -> bool:
    controller = daemon.daemon.context.controller
    assert controller is not None
    return all(duty == 0 for duty in controller.leds().values())


# --- Metadata ------------------------------------------------------------------------------------------------------


def test_a_capture_carries_settings_lighting_focus_quality_device_and_time(
    daemon: InProcessDaemon, capture: capture_service_pb2_grpc.CaptureServiceStub
) -> None:
    device_id = (
        device_service_pb2_grpc.DeviceServiceStub(daemon.channel)
        .GetDevice(device_service_pb2.GetDeviceRequest())
        .device.device_id
    )
    before = datetime.now(UTC)
    response = capture.Capture(pb.CaptureRequest(settings=common_pb2.CaptureSettings(lighting=RAKING)))
    meta = response.image.metadata
    assert device_id and meta.device_id == device_id
    assert before <= meta.capture_time.ToDatetime(UTC) <= datetime.now(UTC)
    assert meta.lighting == RAKING and meta.led_duty_pct > 0
    assert meta.exposure_us > 0 and meta.analogue_gain >= 1.0 and meta.focus_steps > 0
    assert (meta.width, meta.height) == (640, 480) and meta.camera_model == "simulated"
    assert response.quality.ok and {m.name for m in response.quality.metrics} >= {"sharpness", "motion_score"}
    assert response.image.format == common_pb2.IMAGE_FORMAT_PNG and not response.frames
    assert leds_off(daemon)


# --- Lighting sequences --------------------------------------------------------------------------------------------


def test_a_lighting_sequence_takes_one_frame_per_channel_as_the_physics_says(
    daemon: InProcessDaemon, capture: capture_service_pb2_grpc.CaptureServiceStub
) -> None:
    request = pb.CaptureRequest(lighting_sequence=[RING, RAKING, UV, common_pb2.LIGHTING_CHANNEL_OFF])
    response = capture.Capture(request)
    assert not response.HasField("image") and not response.HasField("quality")
    ring, raking, _, dark = response.frames
    assert [f.image.metadata.lighting for f in response.frames] == list(request.lighting_sequence)
    assert len({f.image.metadata.focus_steps for f in response.frames}) == 1, "one focus for the whole sequence"
    assert len({f.image.metadata.capture_time.ToNanoseconds() for f in response.frames}) == 4
    assert ring.quality.ok and raking.quality.ok
    assert [i.code for i in dark.quality.issues] == ["underexposed"]
    ring_px, raking_px, uv_px, dark_px = (pixels(f.image) for f in response.frames)
    # Raking light shades the relief from one side (the LED is at the frame's right): more contrast, along x.
    assert contrast(raking_px) > 1.5 * contrast(ring_px)
    assert x_over_y_detail(raking_px) > 1.25 * x_over_y_detail(ring_px)
    # Under UV only fluorescence shows: this polyester's optical brighteners glow blue.
    assert uv_px.mean() > 50 * max(dark_px.mean(), 0.1)
    assert chroma(uv_px)[0] > chroma(ring_px)[0] + 0.4
    assert leds_off(daemon), "every LED is off after the sequence"


def test_uv_shows_the_brighteners_a_genuine_weave_does_not_have(
    daemon: InProcessDaemon, capture: capture_service_pb2_grpc.CaptureServiceStub
) -> None:
    fake = capture.Capture(pb.CaptureRequest(lighting_sequence=[RING, UV])).frames
    place(daemon, "scarf-twill", "genuine")
    capture.Autofocus(pb.AutofocusRequest())
    genuine = capture.Capture(pb.CaptureRequest(lighting_sequence=[RING, UV])).frames
    # Under the white ring the two weaves look alike; under UV the counterfeit is far brighter and bluer.
    assert abs(chroma(pixels(fake[0].image))[0] - chroma(pixels(genuine[0].image))[0]) < 0.1
    assert pixels(fake[1].image).mean() > 2.0 * pixels(genuine[1].image).mean()
    assert chroma(pixels(fake[1].image))[0] > chroma(pixels(genuine[1].image))[0] + 0.3


def test_sequence_frames_share_the_request_settings_and_format(
    capture: capture_service_pb2_grpc.CaptureServiceStub,
) -> None:
    settings = common_pb2.CaptureSettings(exposure_us=6000, led_duty_pct=50)
    frames = capture.Capture(
        pb.CaptureRequest(
            settings=settings, lighting_sequence=[UV, RING], format=common_pb2.IMAGE_FORMAT_JPEG, jpeg_quality=80
        )
    ).frames
    assert [f.image.metadata.lighting for f in frames] == [UV, RING]
    for frame in frames:
        assert frame.image.format == common_pb2.IMAGE_FORMAT_JPEG and frame.image.data[:2] == b"\xff\xd8"
        assert frame.image.metadata.exposure_us == 6000 and frame.image.metadata.led_duty_pct == 50


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (pb.CaptureRequest(settings=common_pb2.CaptureSettings(lighting=UV), lighting_sequence=[RING]), "not both"),
        (pb.CaptureRequest(lighting_sequence=[RING, RING]), "repeats"),
        (pb.CaptureRequest(lighting_sequence=[RING, RAKING, UV, common_pb2.LIGHTING_CHANNEL_OFF, RING]), "at most 4"),
        (pb.CaptureRequest(lighting_sequence=[RING, common_pb2.LIGHTING_CHANNEL_UNSPECIFIED]), "lighting_sequence[1]"),
        (pb.CaptureRequest(lighting_sequence=[RING, 42]), "lighting_sequence[1]"),  # type: ignore[list-item]
    ],
)
def test_bad_sequences_are_invalid_argument(
    capture: capture_service_pb2_grpc.CaptureServiceStub, request_: pb.CaptureRequest, message: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        capture.Capture(request_)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in info.value.details()


def test_imager_sequence_switches_the_lights_off_even_when_a_frame_fails() -> None:
    bench = SimBench(sensor_width_px=320, sensor_height_px=240)
    controller = SimulatedController(bench)
    imager = Imager(SimulatedCamera(bench), controller)
    with pytest.raises(Exception, match="exposure_us"):
        imager.capture_sequence(CaptureSettings(exposure_us=2_000_000), [Lighting.WHITE_RING, Lighting.UV])
    assert all(duty == 0 for duty in controller.leds().values())
    with pytest.raises(Exception, match="at least one channel"):
        imager.capture_sequence(CaptureSettings(), [])


# --- Preview -------------------------------------------------------------------------------------------------------


def test_preview_is_paced_at_the_requested_rate_without_gaps(
    daemon: InProcessDaemon, capture: capture_service_pb2_grpc.CaptureServiceStub
) -> None:
    start = time.monotonic()
    frames = list(capture.StreamPreview(pb.StreamPreviewRequest(max_fps=4, width=160, max_frames=6)))
    elapsed = time.monotonic() - start
    assert [f.sequence for f in frames] == list(range(6))
    assert elapsed >= 5 / 4 - 0.05, "frames are paced, never sent faster than max_fps"
    assert all(f.width == 160 and f.height == 120 and f.jpeg[:2] == b"\xff\xd8" and f.sharpness > 0 for f in frames)
    stamps = [f.capture_time.ToNanoseconds() / 1e9 for f in frames]
    assert min(np.diff(stamps)) >= 0.2, "exposures follow the pace too"
    assert leds_off_soon(daemon), "the preview's light goes off when the stream ends"


def test_a_slow_reader_gets_fresh_frames_with_gaps_never_a_growing_backlog(daemon: InProcessDaemon) -> None:
    # The reader takes 0.5 s per frame while the unit could send 30 per second. Once the reader's HTTP/2 window is
    # full the unit's next write waits, and the slots it missed meanwhile are skipped (gaps in sequence): the
    # unit never queues frames, so it holds one frame per stream whatever the reader does. (A client that lets
    # gRPC grow its window by bandwidth probing buffers more on its own side; this one keeps the 64 KiB default.)
    channel = grpc.insecure_channel(daemon.address, options=[("grpc.http2.bdp_probe", 0)])
    stub = capture_service_pb2_grpc.CaptureServiceStub(channel)
    stream = stub.StreamPreview(pb.StreamPreviewRequest(max_fps=30, width=640, jpeg_quality=98))
    received: list[tuple[int, float]] = []
    try:
        for frame in stream:
            received.append((frame.sequence, time.time() - frame.capture_time.ToNanoseconds() / 1e9))
            if len(received) == 10:
                break
            time.sleep(0.5)
    finally:
        stream.cancel()
        channel.close()
    sequences = [s for s, _ in received]
    ages = [a for _, a in received]
    assert sequences == sorted(sequences) and sequences[-1] - sequences[0] >= 2 * len(sequences), sequences
    # A queue would age every frame by another 0.5 s; dropping keeps the age flat, within a frame or two.
    assert max(ages[5:]) < 1.5, ages
    assert np.mean(ages[5:]) < np.mean(ages[:5]) + 0.3, ages
    assert leds_off_soon(daemon)


def leds_off_soon(daemon: InProcessDaemon, timeout_s: float = 5.0) -> bool:
    """True once every LED is off, as the unit switches them off when a preview stream ends."""
    deadline = time.monotonic() + timeout_s
    while not leds_off(daemon):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_two_previews_and_a_capture_share_the_camera(capture: capture_service_pb2_grpc.CaptureServiceStub) -> None:
    results: list[int] = []

    def watch() -> None:
        results.append(len(list(capture.StreamPreview(pb.StreamPreviewRequest(max_fps=10, width=96, max_frames=5)))))

    threads = [threading.Thread(target=watch) for _ in range(2)]
    for t in threads:
        t.start()
    assert capture.Capture(pb.CaptureRequest()).image.data
    for t in threads:
        t.join(60)
    assert results == [5, 5]
