"""The quality gate in scans: failed captures are retaken and never judged; uploads that all fail give no verdict;
scans take a frame per lighting channel the model declares, each stored with its lighting and metadata."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from device_daemon import InProcessDaemon

from veriscope.device import codec
from veriscope.device.specimen import imaging
from veriscope.device.specimen.surface import VirtualItem
from veriscope.device.types import Lighting
from veriscope.sdk import Client, LightingChannel, Reason, Verdict
from veriscope.v1 import common_pb2, scan_service_pb2, scan_service_pb2_grpc, simulation_service_pb2
from veriscope.v1 import simulation_service_pb2_grpc as sim_grpc

ITEM = "tote-classic"
REGIONS = ("canvas", "trim", "lining")
DEMO_BUNDLE = Path(__file__).resolve().parents[2] / "models" / "bundles" / "veriscope-demo"


def place(daemon: InProcessDaemon, source: str = "genuine", seed: int = 1) -> None:
    item = simulation_service_pb2.PlacedItem(item_type=ITEM, source=source, seed=seed)
    sim_grpc.SimulationServiceStub(daemon.channel).PlaceItem(simulation_service_pb2.PlaceItemRequest(item=item))


def clear(daemon: InProcessDaemon) -> None:
    sim_grpc.SimulationServiceStub(daemon.channel).ClearItem(simulation_service_pb2.ClearItemRequest())


def render(region: str, seed: int, *, defocus_steps: float = 0.0, exposure_us: int = 8000) -> bytes:
    """A PNG of ``region`` of a genuine tote as a 640-px camera elsewhere would take it."""
    optics = imaging.Optics(sensor_width_px=640, sensor_height_px=480)
    pose = imaging.good_pose(np.random.default_rng(seed), extent_mm=20.0)
    pixels = imaging.render(
        VirtualItem(ITEM, "genuine", 77).surface(region),
        pose,
        duties={Lighting.WHITE_RING: 60},
        exposure_us=exposure_us,
        analogue_gain=1.0,
        focus_steps=imaging.in_focus_steps(pose, optics) + defocus_steps,
        rng=np.random.default_rng(seed),
        optics=optics,
    )
    return codec.encode(pixels, codec.ImageFormat.PNG)


# --- Retakes -------------------------------------------------------------------------------------------------------


def test_a_failed_capture_asks_for_a_retake_and_is_never_judged(daemon: InProcessDaemon) -> None:
    scans = scan_service_pb2_grpc.ScanServiceStub(daemon.channel)
    place(daemon)
    scan = scans.CreateScan(scan_service_pb2.CreateScanRequest(scan=scan_service_pb2.Scan(item_type=ITEM))).scan
    events: list[scan_service_pb2.WatchScanResponse] = []
    watch = scans.WatchScan(scan_service_pb2.WatchScanRequest(name=scan.name))
    watcher = threading.Thread(target=lambda: events.extend(watch), daemon=True)
    watcher.start()
    try:
        clear(daemon)  # nothing under the lens: a featureless, dim frame
        failed = scans.CaptureRegion(scan_service_pb2.CaptureRegionRequest(name=scan.name, region="canvas"))
        assert failed.retake_required and not failed.image.quality.ok
        codes = {issue.code for issue in failed.image.quality.issues}
        assert codes & {"underexposed", "out_of_focus"}, codes
        assert all(issue.hint for issue in failed.image.quality.issues)
        progress = {r.region: r for r in failed.scan.regions}["canvas"]
        assert (progress.accepted_images, progress.rejected_images) == (0, 1)
        assert failed.scan.next_region == "canvas", "the region is asked for again"

        place(daemon)
        good = scans.CaptureRegion(scan_service_pb2.CaptureRegionRequest(name=scan.name, region="canvas"))
        assert not good.retake_required and good.image.quality.ok, good.image.quality
        done = scans.CompleteScan(scan_service_pb2.CompleteScanRequest(name=scan.name)).scan
    finally:
        watcher.join(30)
        watch.cancel()
    kinds = [e.type for e in events]
    retake = kinds.index(scan_service_pb2.SCAN_EVENT_TYPE_RETAKE_REQUESTED)
    assert events[retake].region == "canvas" and events[retake].message
    assert kinds.index(scan_service_pb2.SCAN_EVENT_TYPE_IMAGE_ACCEPTED) > retake
    # The failed image stays on record, with its report, but no score: only the good one was judged.
    images = {i.image_id: i for r in done.result.regions for i in r.images}
    rejected = images[failed.image.image_id]
    assert not rejected.HasField("score") and not rejected.quality.ok and rejected.quality.issues
    assert images[good.image.image_id].HasField("score") and images[good.image.image_id].quality.ok
    assert done.result.verdict == scan_service_pb2.VERDICT_UNVERIFIED


# --- Uploads that all fail -----------------------------------------------------------------------------------------


def test_analyze_of_blurred_and_dark_uploads_is_unverified_for_quality(daemon: InProcessDaemon) -> None:
    uploads = []
    for k, region in enumerate(REGIONS):
        uploads.append((region, render(region, k, defocus_steps=60.0)))
        uploads.append((region, render(region, 10 + k, exposure_us=600)))
    with Client(daemon.address) as client:
        result = client.analyze(ITEM, uploads)
    assert result.verdict is Verdict.UNVERIFIED and result.reason is Reason.INSUFFICIENT_QUALITY, result.summary
    assert [r.region for r in result.regions] == list(REGIONS)
    for region in result.regions:
        blurred, dark = region.images
        assert [i.code for i in blurred.quality.issues] == ["out_of_focus"], blurred.quality
        assert [i.code for i in dark.quality.issues] == ["underexposed"], dark.quality
        assert all(not i.quality.ok and i.score is None and i.quality.hints for i in region.images)
        assert region.score is None


def test_analyze_judges_only_the_uploads_that_pass(daemon: InProcessDaemon) -> None:
    uploads = [(region, render(region, 20 + k)) for k, region in enumerate(REGIONS) for _ in range(2)]
    uploads.append(("canvas", render("canvas", 40, defocus_steps=60.0)))
    with Client(daemon.address) as client:
        result = client.analyze(ITEM, uploads)
    canvas = result.regions[0]
    assert [i.quality.ok for i in canvas.images] == [True, True, False]
    assert [i.score is not None for i in canvas.images] == [True, True, False]
    assert result.reason is not Reason.INSUFFICIENT_QUALITY


# --- Lighting channels the model declares --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_channel_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessDaemon]:
    """The daemon with the demo model, whose manifest here declares the white ring and raking light."""
    bundle = tmp_path_factory.mktemp("bundle") / "veriscope-demo"
    shutil.copytree(DEMO_BUNDLE, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["lighting"] = ["white_ring", "raking"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    unit = InProcessDaemon(tmp_path_factory.mktemp("daemon") / "data", model={"bundle": str(bundle)})
    yield unit
    unit.close()


def test_a_scan_capture_takes_every_declared_channel_of_one_spot(two_channel_daemon: InProcessDaemon) -> None:
    daemon = two_channel_daemon
    place(daemon, seed=4)
    scans = scan_service_pb2_grpc.ScanServiceStub(daemon.channel)
    scan = scans.CreateScan(scan_service_pb2.CreateScanRequest(scan=scan_service_pb2.Scan(item_type=ITEM))).scan
    response = scans.CaptureRegion(scan_service_pb2.CaptureRegionRequest(name=scan.name, region="trim"))
    stored = list(scans.GetScan(scan_service_pb2.GetScanRequest(name=scan.name)).scan.images)
    assert [i.metadata.lighting for i in stored] == [
        common_pb2.LIGHTING_CHANNEL_WHITE_RING,
        common_pb2.LIGHTING_CHANNEL_RAKING,
    ]
    assert response.image.image_id == stored[0].image_id, "the response shows the first channel's frame"
    ring, raking = stored
    assert ring.metadata.focus_steps == raking.metadata.focus_steps
    for image in stored:
        meta = image.metadata
        assert meta.device_id and meta.camera_model == "simulated" and meta.capture_time.seconds > 0
        assert meta.exposure_us > 0 and meta.led_duty_pct > 0 and meta.width == 640
        assert image.quality.metrics and image.sha256 and image.format == common_pb2.IMAGE_FORMAT_PNG
    assert response.retake_required == (not all(i.quality.ok for i in stored))
    controller = daemon.daemon.context.controller
    assert controller is not None and all(duty == 0 for duty in controller.leds().values())
    # An explicit lighting takes that one frame only.
    one = scans.CaptureRegion(
        scan_service_pb2.CaptureRegionRequest(
            name=scan.name, region="trim", settings=common_pb2.CaptureSettings(lighting=common_pb2.LIGHTING_CHANNEL_UV)
        )
    )
    after = scans.GetScan(scan_service_pb2.GetScanRequest(name=scan.name)).scan.images
    assert len(after) == len(stored) + 1 and after[-1].image_id == one.image.image_id
    assert one.image.metadata.lighting == common_pb2.LIGHTING_CHANNEL_UV
    scans.CancelScan(scan_service_pb2.CancelScanRequest(name=scan.name))


def test_a_scan_near_its_image_limit_refuses_a_capture_that_would_pass_it(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(DEMO_BUNDLE, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["lighting"] = ["white_ring", "raking", "uv"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    unit = InProcessDaemon(tmp_path / "data", model={"bundle": str(bundle)}, scan={"max_images_per_scan": 2})
    try:
        place(unit)
        scans = scan_service_pb2_grpc.ScanServiceStub(unit.channel)
        scan = scans.CreateScan(scan_service_pb2.CreateScanRequest(scan=scan_service_pb2.Scan(item_type=ITEM))).scan
        with pytest.raises(grpc.RpcError) as info:
            scans.CaptureRegion(scan_service_pb2.CaptureRegionRequest(name=scan.name, region="canvas"))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "3 more" in info.value.details()
    finally:
        unit.close()


# --- Thresholds from the bundle ------------------------------------------------------------------------------------


def test_the_bundles_gate_overrides_reach_scans_uploads_and_captures(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(DEMO_BUNDLE, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    # Leather must be impossibly sharp; UV frames may be as dark as they come.
    manifest["quality"] = {
        "materials": {"grained-leather": {"min_sharpness": 10.0}},
        "lighting": {"uv": {"min_mean_level": 0.0}},
    }
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    unit = InProcessDaemon(tmp_path / "data", model={"bundle": str(bundle)})
    try:
        place(unit, seed=6)
        scans = scan_service_pb2_grpc.ScanServiceStub(unit.channel)
        scan = scans.CreateScan(scan_service_pb2.CreateScanRequest(scan=scan_service_pb2.Scan(item_type=ITEM))).scan
        canvas = scans.CaptureRegion(scan_service_pb2.CaptureRegionRequest(name=scan.name, region="canvas"))
        trim = scans.CaptureRegion(scan_service_pb2.CaptureRegionRequest(name=scan.name, region="trim"))
        assert canvas.image.quality.ok, canvas.image.quality
        assert trim.retake_required and [i.code for i in trim.image.quality.issues] == ["out_of_focus"]
        assert trim.image.quality.issues[0].threshold == 10.0
        scans.CancelScan(scan_service_pb2.CancelScanRequest(name=scan.name))
        with Client(unit.address) as client:
            uploaded = client.analyze(ITEM, [("trim", render("trim", 3)), ("lining", render("lining", 4))])
            frames = client.capture_sequence([LightingChannel.WHITE_RING, LightingChannel.UV])
        trim_result, lining_result = (r for r in uploaded.regions if r.images)
        assert [i.code for i in trim_result.images[0].quality.issues] == ["out_of_focus"]
        assert lining_result.images[0].quality.ok
        uv = frames[1].quality
        assert "underexposed" not in [i.code for i in uv.issues], uv
    finally:
        unit.close()
