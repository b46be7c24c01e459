"""The AsyncClient against a scripted in-process unit. It mirrors test_client.py test for test."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from sdk_fakes import ITEM_TYPE, JPEG_MAGIC, FakeServer, FakeUnit, MiB, blurry_report, ok_report, png_bytes

from veriscope.sdk import (
    AsyncClient,
    Capability,
    CaptureSettings,
    DeadlineExceededError,
    DeviceState,
    DeviceUnavailableError,
    FailedPreconditionError,
    ImageFormat,
    ImageOrigin,
    LightingChannel,
    NotFoundError,
    Reason,
    ScanEvent,
    ScanEventType,
    ScanState,
    Verdict,
    VeriscopeError,
)
from veriscope.sdk._exceptions import error_class_for
from veriscope.v1 import scan_service_pb2


@pytest_asyncio.fixture
async def client(address: str) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(address, metadata=[("x-test", "yes")]) as client:
        yield client


# --- Device ------------------------------------------------------------------------------------------------------


async def test_get_device_maps_identity_versions_and_item_types(client: AsyncClient) -> None:
    device = await client.get_device()
    assert device.device_id == "VS-0001"
    assert device.software_version == "0.1.0"
    assert device.api_version == "v1"
    assert device.model is not None and (device.model.name, device.model.version) == ("veriscope-demo", "1.2.0")
    assert device.hardware.sensor_width_px == 4056 and device.hardware.simulated
    assert device.hardware.controller.firmware_version == "1.0.0" and device.hardware.controller.protocol_version == 1
    # The unknown capability 99 from a newer device is skipped, not an error.
    assert device.capabilities == {Capability.CAPTURE, Capability.UPLOAD, Capability.SIMULATION}
    tote = device.item_type(ITEM_TYPE)
    assert tote.display_name == "Classic tote"
    assert tote.region_names == ("canvas", "handle")
    assert (tote.regions[0].material, tote.regions[0].min_images) == ("coated-canvas", 2)
    assert device.signing_public_key is None
    with pytest.raises(KeyError, match="wallet-zip"):
        device.item_type("nope")


async def test_get_status_maps_units_and_unknown_temperature(client: AsyncClient) -> None:
    status = await client.get_status()
    assert status.state is DeviceState.BUSY
    assert status.uptime == timedelta(seconds=3723, milliseconds=250)
    assert status.active_scan_id == "scan-0042"
    assert status.board_temperature_c is None  # NaN on the wire means unknown
    assert status.lit_channels == (LightingChannel.WHITE_RING, LightingChannel.UV)
    assert status.storage_free_bytes == 12_000_000_000
    assert status.read_time == datetime.fromtimestamp(1_780_000_005.5, tz=UTC)


async def test_metadata_goes_with_every_call(client: AsyncClient, unit: FakeUnit) -> None:
    await client.get_status()
    assert unit.metadata[-1]["x-test"] == "yes"


# --- Capture -----------------------------------------------------------------------------------------------------


async def test_capture_receives_frames_larger_than_grpc_default_and_sends_settings(
    client: AsyncClient, unit: FakeUnit, server: FakeServer
) -> None:
    unit.capture_size_bytes = 6 * MiB  # above gRPC's 4 MiB default receive limit
    settings = CaptureSettings(exposure_us=12_000, lighting=LightingChannel.RAKING, focus_steps=0)
    result = await client.capture(settings)
    assert len(result.data) == 6 * MiB and result.format is ImageFormat.PNG
    sent = server.capture.last_request
    assert sent is not None and sent.settings.exposure_us == 12_000
    assert sent.settings.HasField("focus_steps") and sent.settings.focus_steps == 0  # 0 is a position, not "unset"
    assert result.metadata.lighting is LightingChannel.RAKING and result.metadata.exposure_us == 12_000
    # The device sent only the issue kind; the SDK derives the stable code from it.
    assert not result.quality.ok
    assert [issue.code for issue in result.quality.issues] == ["out_of_focus"]
    assert result.quality.metrics == {"sharpness": 41.0}


async def test_stream_preview_yields_frames_and_stops_when_the_caller_does(client: AsyncClient) -> None:
    frames = [frame async for frame in client.stream_preview(max_frames=3, width_px=320)]
    assert [f.sequence for f in frames] == [0, 1, 2]
    assert frames[0].jpeg.startswith(JPEG_MAGIC) and frames[0].width_px == 320
    endless = client.stream_preview()
    taken = [(await anext(endless)).sequence for _ in range(2)]
    await endless.aclose()  # cancels the device's stream; must not hang
    assert taken == [0, 1]


async def test_autofocus_maps_the_focus_curve(client: AsyncClient) -> None:
    result = await client.autofocus(lighting=LightingChannel.WHITE_RING, max_steps=10)
    assert result.converged and result.best_position == 1200 and result.steps_taken == 3
    assert [s.position for s in result.curve] == [800, 1200, 1600]


# --- Guided scan -------------------------------------------------------------------------------------------------


async def test_scan_captures_every_region_and_returns_the_verdict(client: AsyncClient, unit: FakeUnit) -> None:
    events: list[ScanEvent] = []
    result = await client.scan(ITEM_TYPE, partner_item_id="listing-1", on_event=events.append)
    assert result.verdict is Verdict.AUTHENTIC and result.reason is None and result.authentic
    assert result.score == pytest.approx(0.93) and result.threshold == pytest.approx(0.8)
    assert result.partner_item_id == "listing-1" and result.summary == "Looks genuine."
    assert (result.model.name, result.model.version) == ("veriscope-demo", "1.2.0")
    assert [r.region for r in result.regions] == ["canvas", "handle"]
    assert [len(r.images) for r in result.regions] == [2, 1]
    assert result.regions[0].images[0].score == pytest.approx(0.9)
    assert result.regions[0].explanations == ("coated-canvas grain matches genuine references",)
    assert unit.count("CaptureRegion") == 3 and unit.count("CompleteScan") == 1
    assert [e.type for e in events] == [
        ScanEventType.SNAPSHOT,
        ScanEventType.CAPTURING,
        ScanEventType.IMAGE_ACCEPTED,
        ScanEventType.CAPTURING,
        ScanEventType.IMAGE_ACCEPTED,
        ScanEventType.REGION_COMPLETE,
        ScanEventType.CAPTURING,
        ScanEventType.IMAGE_ACCEPTED,
        ScanEventType.REGION_COMPLETE,
        ScanEventType.ANALYZING,
        ScanEventType.FINISHED,
    ]
    assert "Front panel, centre" in events[1].message


async def test_scan_returns_the_units_certificate(client: AsyncClient, unit: FakeUnit) -> None:
    unit.certificate_document = b'{"verdict": "AUTHENTIC"}\n'
    result = await client.scan(ITEM_TYPE)
    assert result.certificate is not None and result.certificate.scan_id == result.scan_id
    assert result.certificate.document == unit.certificate_document
    assert unit.count("GetScanCertificate") == 1
    unit.issues_certificates = False
    without = await client.scan(ITEM_TYPE)
    assert without.verdict is Verdict.AUTHENTIC and without.certificate is None


async def test_scan_retakes_a_region_that_fails_the_quality_gate(client: AsyncClient, unit: FakeUnit) -> None:
    unit.capture_quality.extend([blurry_report(), ok_report()])
    events: list[ScanEvent] = []
    result = await client.scan(ITEM_TYPE, on_event=events.append)
    assert unit.count("CaptureRegion") == 4
    retakes = [e for e in events if e.type is ScanEventType.RETAKE_REQUESTED]
    assert len(retakes) == 1 and retakes[0].region == "canvas"
    assert retakes[0].message == "Press the scanner flat and refocus"
    assert retakes[0].image is not None and retakes[0].image.quality.issues[0].value == 41.0
    canvas = result.regions[0]
    assert [i.quality.ok for i in canvas.images] == [False, True, True]
    assert canvas.images[0].score is None and canvas.images[0].quality.issues[0].code == "out_of_focus"
    assert result.verdict is Verdict.AUTHENTIC


async def test_scan_completes_with_insufficient_quality_when_retakes_run_out(
    client: AsyncClient, unit: FakeUnit
) -> None:
    unit.capture_quality.extend([blurry_report()] * 3)
    events: list[ScanEvent] = []
    result = await client.scan(ITEM_TYPE, max_retakes_per_region=2, on_event=events.append)
    # canvas: 3 failures (the first capture and 2 retakes), then the scan moves on to handle.
    assert unit.count("CaptureRegion") == 4
    assert [e.region for e in events if e.type is ScanEventType.RETAKES_EXHAUSTED] == ["canvas"]
    assert result.verdict is Verdict.UNVERIFIED and result.reason is Reason.INSUFFICIENT_QUALITY
    assert result.regions[0].score is None and len(result.regions[1].images) == 1


async def test_scan_without_retakes_gives_up_after_one_failure(client: AsyncClient, unit: FakeUnit) -> None:
    unit.capture_quality.extend([ok_report(), blurry_report()])
    result = await client.scan(ITEM_TYPE, max_retakes_per_region=0)
    assert unit.count("CaptureRegion") == 3
    assert result.reason is Reason.INSUFFICIENT_QUALITY


async def test_scan_cancels_the_scan_when_a_capture_fails(client: AsyncClient, unit: FakeUnit) -> None:
    unit.faults["CaptureRegion"] = (grpc.StatusCode.UNAVAILABLE, "camera timed out")
    with pytest.raises(DeviceUnavailableError, match="camera timed out") as caught:
        await client.scan(ITEM_TYPE)
    assert caught.value.method == "veriscope.v1.ScanService/CaptureRegion"
    assert unit.calls[-1] == "CancelScan"
    assert unit.scans["scan-0001"].state == scan_service_pb2.SCAN_STATE_CANCELLED


async def test_scan_cancels_the_scan_when_the_task_is_cancelled(client: AsyncClient, unit: FakeUnit) -> None:
    unit.delays_s["CaptureRegion"] = 30
    task = asyncio.create_task(client.scan(ITEM_TYPE))
    assert await asyncio.to_thread(unit.called["CaptureRegion"].wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert unit.scans["scan-0001"].state == scan_service_pb2.SCAN_STATE_CANCELLED
    assert unit.count("CompleteScan") == 0


async def test_scan_of_an_unknown_item_type_raises_not_found(client: AsyncClient, unit: FakeUnit) -> None:
    with pytest.raises(NotFoundError) as caught:
        await client.scan("handbag-unknown")
    assert caught.value.code == "NOT_FOUND" and caught.value.details == 'item type "handbag-unknown" not found'
    assert "CancelScan" not in unit.calls


# --- Analyze -----------------------------------------------------------------------------------------------------


async def test_analyze_uploads_a_12_megapixel_image_in_1_mib_chunks(
    client: AsyncClient, unit: FakeUnit, tmp_path: Path
) -> None:
    big = png_bytes(12_000_000)  # 12 MP worth of bytes: three times gRPC's default message limit
    jpeg = tmp_path / "handle.jpg"
    jpeg.write_bytes(JPEG_MAGIC + b"jpeg-body" * 1000)
    events: list[ScanEvent] = []
    result = await client.analyze(
        ITEM_TYPE, [("canvas", big), ("canvas", png_bytes(5000)), ("handle", jpeg)], on_event=events.append
    )
    assert result.verdict is Verdict.AUTHENTIC
    first = unit.uploads[0]
    assert first.data == big  # intact, and the fake checked the header's sha256 against it
    assert first.header.sha256 == hashlib.sha256(big).hexdigest() and first.header.size_bytes == len(big)
    assert max(first.chunk_sizes) == MiB and len(first.chunk_sizes) == math.ceil(len(big) / MiB)
    assert unit.uploads[2].data == jpeg.read_bytes()
    assert unit.uploads[2].header.format == 2  # IMAGE_FORMAT_JPEG, detected from the bytes
    assert [e.type for e in events].count(ScanEventType.UPLOADING) == 3
    assert [e.type for e in events].count(ScanEventType.REGION_COMPLETE) == 2


async def test_analyze_reports_rejected_uploads(client: AsyncClient, unit: FakeUnit) -> None:
    unit.upload_quality.extend([ok_report(), blurry_report()])
    events: list[ScanEvent] = []
    result = await client.analyze(
        ITEM_TYPE,
        [("canvas", png_bytes(100)), ("canvas", png_bytes(101)), ("handle", png_bytes(102))],
        on_event=events.append,
    )
    rejected = [e for e in events if e.type is ScanEventType.IMAGE_REJECTED]
    assert len(rejected) == 1 and rejected[0].message == "Press the scanner flat and refocus"
    assert result.verdict is Verdict.UNVERIFIED and result.reason is Reason.INSUFFICIENT_QUALITY


async def test_analyze_checks_every_image_before_creating_the_scan(
    client: AsyncClient, unit: FakeUnit, tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        await client.analyze(ITEM_TYPE, [("canvas", png_bytes(10)), ("handle", tmp_path / "missing.png")])
    with pytest.raises(ValueError, match="neither PNG nor JPEG"):
        await client.analyze(ITEM_TYPE, [("canvas", b"GIF89a....")])
    with pytest.raises(ValueError, match="at least one"):
        await client.analyze(ITEM_TYPE, [])
    with pytest.raises(ValueError, match="empty"):
        await client.analyze(ITEM_TYPE, [("canvas", b"")])
    assert unit.calls == []


async def test_analyze_cancels_when_a_region_is_not_of_the_item_type(client: AsyncClient, unit: FakeUnit) -> None:
    with pytest.raises(ValueError, match="'strap' is not a region of item type 'tote-classic'"):
        await client.analyze(ITEM_TYPE, [("strap", png_bytes(10))])
    assert unit.calls == ["CreateScan", "CancelScan"]


# --- Scans: single steps -----------------------------------------------------------------------------------------


async def test_scan_steps_one_by_one(client: AsyncClient, unit: FakeUnit) -> None:
    scan = await client.create_scan(ITEM_TYPE)
    assert scan.state is ScanState.IN_PROGRESS and scan.next_region == "canvas"
    assert scan.create_time == datetime.fromtimestamp(1_780_000_000.5, tz=UTC)
    assert scan.create_time.tzinfo is not None
    captured = await client.capture_region(scan.scan_id, "canvas", settings=CaptureSettings(led_duty_pct=40))
    assert not captured.retake_required and captured.image.origin is ImageOrigin.CAMERA
    assert captured.image.metadata is not None and captured.image.metadata.device_id == "VS-0001"
    assert captured.scan.regions[0].accepted_images == 1
    uploaded = await client.upload_image(f"scans/{scan.scan_id}", "canvas", png_bytes(2048))
    assert uploaded.image.origin is ImageOrigin.UPLOAD and uploaded.image.size_bytes == 2048
    assert uploaded.image.metadata is not None and uploaded.image.metadata.device_id is None
    assert uploaded.scan.next_region == "handle"
    done = await client.complete_scan(scan.scan_id)
    assert done.state is ScanState.COMPLETED and done.verdict is Verdict.UNVERIFIED
    assert done.result is not None and done.result.reason is Reason.INSUFFICIENT_COVERAGE
    again = await client.get_scan(scan.scan_id)
    assert again == done
    with pytest.raises(FailedPreconditionError, match="COMPLETED"):
        await client.cancel_scan(scan.scan_id)


async def test_cancel_scan(client: AsyncClient) -> None:
    scan = await client.create_scan(ITEM_TYPE)
    assert (await client.cancel_scan(scan.scan_id)).state is ScanState.CANCELLED


async def test_get_scan_of_an_unknown_scan_raises_not_found(client: AsyncClient) -> None:
    with pytest.raises(NotFoundError) as caught:
        await client.get_scan("abc")
    assert str(caught.value) == 'NOT_FOUND: scan "abc" not found'
    assert caught.value.method == "veriscope.v1.ScanService/GetScan"


async def test_get_scan_explanation_maps_tile_grids_and_heatmaps(client: AsyncClient, tmp_path: Path) -> None:
    result = await client.scan(ITEM_TYPE)
    explanation = await client.get_scan_explanation(f"scans/{result.scan_id}")
    assert explanation.scan_id == result.scan_id
    assert explanation.model == result.model and explanation.regions == result.regions
    assert [(i.image_id, i.region, i.material) for i in explanation.images] == [
        ("img-1", "canvas", "coated-canvas"),
        ("img-2", "canvas", "coated-canvas"),
        ("img-3", "handle", "leather"),
    ]
    heatmap = explanation.images[0]
    assert (heatmap.grid_rows, heatmap.grid_cols, heatmap.tile_px) == (2, 3, 20)
    assert len(heatmap.tile_scores) == 2 and all(len(row) == 3 for row in heatmap.tile_scores)
    assert heatmap.tile_scores[1][0] == pytest.approx(0.95) and heatmap.tile_familiarity[1][0] == pytest.approx(0.2)
    assert (heatmap.score_threshold, heatmap.familiarity_threshold) == (0.6, 0.5)
    assert (heatmap.column_x_px, heatmap.row_y_px, heatmap.width_px, heatmap.height_px) == (
        (0, 20, 40),
        (0, 20),
        60,
        40,
    )
    assert heatmap.png.startswith(b"\x89PNG") and "png" not in repr(heatmap)
    assert heatmap.save(tmp_path / "canvas.png").read_bytes() == heatmap.png
    data = explanation.to_dict()
    assert "png" not in data["images"][0] and data["images"][0]["tile_scores"][1][0] == pytest.approx(0.95)
    assert data["regions"][0]["explanations"] == ["coated-canvas grain matches genuine references"]


async def test_get_scan_explanation_needs_a_completed_scan(client: AsyncClient) -> None:
    scan = await client.create_scan(ITEM_TYPE)
    with pytest.raises(FailedPreconditionError, match="only COMPLETED scans") as caught:
        await client.get_scan_explanation(scan.scan_id)
    assert caught.value.method == "veriscope.v1.ScanService/GetScanExplanation"
    with pytest.raises(NotFoundError):
        await client.get_scan_explanation("abc")


async def test_list_scans_pages_newest_first(client: AsyncClient, unit: FakeUnit, server: FakeServer) -> None:
    for _ in range(5):
        await client.create_scan(ITEM_TYPE)
    page = await client.list_scans(page_size=2, filter="verdict = AUTHENTIC")
    assert [s.scan_id for s in page.scans] == ["scan-0005", "scan-0004"]
    assert server.scan.last_list_request is not None and server.scan.last_list_request.filter == "verdict = AUTHENTIC"
    second = await client.list_scans(page_size=2, page_token=page.next_page_token)
    assert [s.scan_id for s in second.scans] == ["scan-0003", "scan-0002"]
    assert [s.scan_id async for s in client.iter_scans(page_size=2)] == [f"scan-{i:04d}" for i in range(5, 0, -1)]
    assert (await client.list_scans()).next_page_token is None


async def test_watch_scan_yields_the_device_events(client: AsyncClient) -> None:
    scan = await client.create_scan(ITEM_TYPE)
    events = [event async for event in client.watch_scan(scan.scan_id)]
    assert [e.type for e in events] == [ScanEventType.SNAPSHOT, ScanEventType.RETAKE_REQUESTED, ScanEventType.FINISHED]
    assert events[1].region == "canvas" and events[1].event_time is not None
    with pytest.raises(NotFoundError):
        [event async for event in client.watch_scan("nope")]


# --- Models, updates, simulation ---------------------------------------------------------------------------------


async def test_models_and_updates(client: AsyncClient) -> None:
    models = await client.list_models()  # two pages of one
    assert [m.model_id for m in models] == ["veriscope-demo@1.2.0", "veriscope-demo@1.1.0"]
    active = await client.get_model()
    assert active.active and active.threshold == pytest.approx(0.8)
    assert active.lighting == (LightingChannel.WHITE_RING, LightingChannel.RAKING)
    assert active.input is not None and (active.input.width_px, active.input.dtype) == (224, "int8")
    assert active.item_types[0].region_names == ("canvas", "handle")
    assert (await client.get_model("veriscope-demo@1.1.0")).input is None
    with pytest.raises(NotFoundError):
        await client.get_model("nope@0")
    status = await client.get_update_status()
    assert [(s.component.name, s.state.name) for s in status.slots] == [
        ("MODEL", "TRIAL"),
        ("DEVICE_SOFTWARE", "ACTIVE"),
    ]
    assert status.slots[1].install_time is None


async def test_simulation(client: AsyncClient) -> None:
    assert await client.get_placed_item() is None
    placed = await client.place_item(ITEM_TYPE, "counterfeit-a", 2**63 - 1)
    assert (placed.item_type, placed.source, placed.seed) == (ITEM_TYPE, "counterfeit-a", 2**63 - 1)
    assert await client.get_placed_item() == placed
    await client.clear_item()
    assert await client.get_placed_item() is None
    materials = await client.list_sources()  # two pages of one
    assert [m.name for m in materials] == ["coated-canvas", "leather"]
    assert materials[0].superfake_sources == ("counterfeit-b",)


# --- Errors and deadlines ----------------------------------------------------------------------------------------

STATUS_CODES = [code for code in grpc.StatusCode if code is not grpc.StatusCode.OK]


@pytest.mark.parametrize("code", STATUS_CODES, ids=[c.name for c in STATUS_CODES])
async def test_every_status_code_maps_to_its_exception(
    client: AsyncClient, unit: FakeUnit, code: grpc.StatusCode
) -> None:
    unit.faults["GetDevice"] = (code, f"scripted {code.name}")
    with pytest.raises(VeriscopeError) as caught:
        await client.get_device()
    error = caught.value
    assert type(error) is error_class_for(code)
    assert error.code == code.name and error.details == f"scripted {code.name}"
    assert error.method == "veriscope.v1.DeviceService/GetDevice"
    assert not isinstance(error, grpc.RpcError)


async def test_client_deadline_applies(address: str, unit: FakeUnit) -> None:
    unit.delays_s["GetStatus"] = 30
    async with AsyncClient(address, timeout_s=0.05) as hasty:
        with pytest.raises(DeadlineExceededError):
            await hasty.get_status()


async def test_call_deadline_overrides_the_client_deadline(client: AsyncClient, unit: FakeUnit) -> None:
    unit.delays_s["GetStatus"] = 30
    with pytest.raises(DeadlineExceededError) as caught:
        await client.get_status(timeout_s=0.05)
    assert caught.value.method == "veriscope.v1.DeviceService/GetStatus"


async def test_unreachable_device_raises_device_unavailable(unused_address: str) -> None:
    async with AsyncClient(unused_address) as client:
        with pytest.raises(DeviceUnavailableError):
            await client.get_device()


# --- Arguments and lifecycle -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.scan(""), "item_type must not be empty"),
        (lambda c: c.scan("tote classic"), "item_type must not contain whitespace"),
        (lambda c: c.scan(ITEM_TYPE, max_retakes_per_region=-1), "max_retakes_per_region must be 0..1000"),
        (lambda c: c.scan(ITEM_TYPE, partner_item_id="x" * 129), "partner_item_id must be at most 128"),
        (lambda c: c.get_scan("a/b"), "scan_id must be"),
        (lambda c: c.get_scan_explanation("scans/a/explanation"), "scan_id must be"),
        (lambda c: c.capture_region("s1", ""), "region must not be empty"),
        (lambda c: c.list_scans(page_size=0), "page_size must be 1..1000"),
        (lambda c: c.place_item(ITEM_TYPE, "genuine", -1), "seed must be 0..9223372036854775807"),
        (lambda c: c.get_status(timeout_s=0), "timeout_s must be a finite number of seconds > 0"),
        (lambda c: c.capture(CaptureSettings(analogue_gain=20)), "analogue_gain must be 1.0..16.0"),
        (lambda c: c.stream_preview(max_fps=60), "max_fps must be 1..30"),
    ],
)
async def test_bad_arguments_raise_before_any_call(
    client: AsyncClient, unit: FakeUnit, call: object, message: str
) -> None:
    assert callable(call)
    with pytest.raises(ValueError, match=message):
        result = call(client)
        if inspect.isawaitable(result):
            await result
    assert unit.calls == []


async def test_closed_client_refuses_calls(address: str) -> None:
    client = AsyncClient(address)
    await client.get_device()
    await client.aclose()
    await client.aclose()
    assert client.is_closed
    with pytest.raises(RuntimeError, match="closed"):
        await client.get_device()


async def test_constructor_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        AsyncClient(timeout_s=-1)
    with pytest.raises(ValueError, match="lowercase"):
        AsyncClient(metadata=[("X-Token", "t")])
    with pytest.raises(TypeError, match="channel_credentials"):
        AsyncClient(channel_credentials="tls")  # type: ignore[arg-type]
    async with AsyncClient("unit:1") as client:
        assert repr(client) == "AsyncClient('unit:1')"
