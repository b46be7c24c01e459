"""ScanService.GetScanExplanation over real gRPC: per-tile evidence and heat-maps of completed scans."""

from __future__ import annotations

import io
import json
import math
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from device_daemon import InProcessDaemon
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from veriscope.device import codec
from veriscope.device.inference import load_bundle
from veriscope.device.inference.tiling import tile_origins, work_size
from veriscope.device.server import default_bundle_dir
from veriscope.device.specimen import imaging
from veriscope.device.specimen.surface import VirtualItem
from veriscope.device.types import Lighting
from veriscope.v1 import scan_service_pb2 as pb
from veriscope.v1 import scan_service_pb2_grpc

ITEM = "tote-classic"
REGIONS = {"canvas": "coated-canvas", "trim": "grained-leather", "lining": "woven-fabric"}
SENSOR = (640, 480)
DEMO_TILING = load_bundle(default_bundle_dir()).tiling


def _frame(item: VirtualItem, region: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    optics = imaging.Optics(sensor_width_px=SENSOR[0], sensor_height_px=SENSOR[1])
    pose = imaging.good_pose(rng)
    pixels = imaging.render(
        item.surface(region),
        pose,
        duties={Lighting.WHITE_RING: 60},
        exposure_us=8000,
        analogue_gain=1.0,
        focus_steps=imaging.in_focus_steps(pose, optics),
        rng=rng,
        optics=optics,
    )
    return codec.encode(pixels, codec.ImageFormat.PNG)


def _upload(stub: scan_service_pb2_grpc.ScanServiceStub, name: str, region: str, data: bytes) -> pb.ScanImage:
    header = pb.UploadImageHeader(name=name, region=region, size_bytes=len(data))
    messages = [pb.UploadImageRequest(header=header), pb.UploadImageRequest(chunk=data)]
    return stub.UploadImage(iter(messages)).image


def _analyze(
    stub: scan_service_pb2_grpc.ScanServiceStub, source: str, seed: int, regions: list[str], *, blank: bool = False
) -> pb.Scan:
    """Upload two frames of each region (plus one that fails the quality gate when ``blank``) and complete."""
    item = VirtualItem(ITEM, source, seed)
    scan = stub.CreateScan(pb.CreateScanRequest(scan=pb.Scan(item_type=ITEM))).scan
    for region in regions:
        for k in range(2):
            assert _upload(stub, scan.name, region, _frame(item, region, k)).quality.ok
    if blank:
        dark = codec.encode(np.full((SENSOR[1], SENSOR[0], 3), 3, dtype=np.uint8), codec.ImageFormat.PNG)
        assert not _upload(stub, scan.name, regions[0], dark).quality.ok
    return stub.CompleteScan(pb.CompleteScanRequest(name=scan.name)).scan


def _explain(stub: scan_service_pb2_grpc.ScanServiceStub, scan: pb.Scan) -> pb.ScanExplanation:
    return stub.GetScanExplanation(pb.GetScanExplanationRequest(name=f"{scan.name}/explanation")).explanation


def _code(stub: scan_service_pb2_grpc.ScanServiceStub, name: str) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        stub.GetScanExplanation(pb.GetScanExplanationRequest(name=name))
    return info.value.code(), info.value.details()


@dataclass
class Unit:
    daemon: InProcessDaemon
    stub: scan_service_pb2_grpc.ScanServiceStub
    genuine: pb.Scan
    fake: pb.Scan


@pytest.fixture(scope="module")
def unit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Unit]:
    """A daemon holding a completed scan of a genuine item (with one rejected image) and one of a counterfeit."""
    daemon = InProcessDaemon(tmp_path_factory.mktemp("explain") / "data")
    stub = scan_service_pb2_grpc.ScanServiceStub(daemon.channel)
    genuine = _analyze(stub, "genuine", 5, list(REGIONS), blank=True)
    fake = _analyze(stub, "counterfeit-a", 5, list(REGIONS))
    yield Unit(daemon, stub, genuine, fake)
    daemon.close()


def _decode(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        assert (image.format, image.mode) == ("PNG", "RGB")
        return np.asarray(image)


def _tile_tint(image: pb.ImageExplanation, heatmap: np.ndarray, tile: int) -> float:
    """Green minus red around the centre of one tile (positive is green, negative red)."""
    r, c = divmod(tile, image.grid_cols)
    cx, cy = image.column_x_px[c] + image.tile_px // 2, image.row_y_px[r] + image.tile_px // 2
    patch = heatmap[cy - 2 : cy + 3, cx - 2 : cx + 3].reshape(-1, 3).astype(float).mean(axis=0)
    return float(patch[1] - patch[0])


def test_explanation_holds_every_analysed_image_and_the_region_reasons(unit: Unit) -> None:
    explanation = _explain(unit.stub, unit.genuine)
    assert explanation.name == f"{unit.genuine.name}/explanation"
    result = unit.genuine.result
    assert explanation.model == result.model
    assert list(explanation.regions) == list(result.regions)
    assert all(r.explanations for r in explanation.regions)
    # The image that failed the quality gate was never analysed, so it has no heat-map.
    accepted = [i for i in unit.genuine.images if i.quality.ok]
    assert len(unit.genuine.images) == len(accepted) + 1
    assert [i.image_id for i in explanation.images] == [i.image_id for i in accepted]
    for image, stored in zip(explanation.images, accepted, strict=True):
        assert image.region == stored.region and image.material == REGIONS[stored.region]
        assert (image.grid_rows, image.grid_cols, image.tile_px) == (3, 4, 128)
        assert len(image.tile_scores) == len(image.tile_familiarity) == 12
        assert all(0.0 <= v <= 1.0 for v in [*image.tile_scores, *image.tile_familiarity])
        assert 0.0 < image.score_threshold < 1.0 and image.familiarity_threshold == pytest.approx(0.5)
        width, height = work_size(SENSOR[0], SENSOR[1], DEMO_TILING)
        assert (image.heatmap_width_px, image.heatmap_height_px) == (width, height)
        assert _decode(image.heatmap_png).shape == (height, width, 3)
        origins = tile_origins(width, height, DEMO_TILING)
        assert list(image.column_x_px) == [x for x, _ in origins[:4]]
        assert list(image.row_y_px) == [y for _, y in origins[::4]]


def test_tile_scores_are_the_ones_behind_the_image_scores(unit: Unit) -> None:
    # The calibrated image logit is the mean of the calibrated tile logits.
    scores = {i.image_id: i.score for r in unit.genuine.result.regions for i in r.images if i.HasField("score")}
    checked = 0
    for image in _explain(unit.stub, unit.genuine).images:
        tiles = np.asarray(image.tile_scores, dtype=np.float64)
        if np.all((tiles > 1e-6) & (tiles < 1 - 1e-6)):
            mean_logit = float(np.mean(np.log(tiles / (1.0 - tiles))))
            assert 1.0 / (1.0 + math.exp(-mean_logit)) == pytest.approx(scores[image.image_id], abs=1e-4)
            checked += 1
    assert checked >= 3


def test_heatmap_colours_follow_the_tile_scores(unit: Unit) -> None:
    genuine, fake = _explain(unit.stub, unit.genuine), _explain(unit.stub, unit.fake)
    greens = reds = 0
    for image in [*genuine.images, *fake.images]:
        heatmap = _decode(image.heatmap_png)
        familiar = [t for t in range(12) if image.tile_familiarity[t] >= image.familiarity_threshold]
        tint = {t: _tile_tint(image, heatmap, t) for t in familiar}
        for a in familiar:
            for b in familiar:
                if image.tile_scores[a] > image.tile_scores[b] + 0.1:
                    assert tint[a] > tint[b], (image.image_id, a, b)
        greens += sum(1 for t in familiar if image.tile_scores[t] > 0.9 and tint[t] > 10)
        reds += sum(1 for t in familiar if image.tile_scores[t] < image.score_threshold / 2 and tint[t] < -30)
    assert greens > 0 and reds > 0
    # The counterfeit is red nearly everywhere.
    fake_scores = [v for image in fake.images for v in image.tile_scores]
    assert np.mean(np.asarray(fake_scores) < fake.images[0].score_threshold) > 0.8


def test_only_completed_scans_have_an_explanation(unit: Unit) -> None:
    open_scan = unit.stub.CreateScan(pb.CreateScanRequest(scan=pb.Scan(item_type=ITEM))).scan
    code, details = _code(unit.stub, f"{open_scan.name}/explanation")
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "IN_PROGRESS" in details and "COMPLETED" in details
    unit.stub.CancelScan(pb.CancelScanRequest(name=open_scan.name))
    code, details = _code(unit.stub, f"{open_scan.name}/explanation")
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "CANCELLED" in details
    assert _code(unit.stub, "scans/0123abcd/explanation")[0] == grpc.StatusCode.NOT_FOUND
    # A scan completed without usable images has an explanation with no heat-maps.
    empty = unit.stub.CreateScan(pb.CreateScanRequest(scan=pb.Scan(item_type=ITEM))).scan
    unit.stub.CompleteScan(pb.CompleteScanRequest(name=empty.name))
    explanation = _explain(unit.stub, empty)
    assert list(explanation.images) == [] and [r.region for r in explanation.regions] == list(REGIONS)


@pytest.mark.parametrize(
    "name",
    ["", "scans/abc", "scans/abc/explanation/x", "scans//explanation", "scans/a-b/explanation", "abc/explanation"],
)
def test_malformed_names_are_invalid_arguments(unit: Unit, name: str) -> None:
    code, details = _code(unit.stub, name)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "scans/{scan_id}/explanation" in details


_NAMES = st.one_of(
    st.text(max_size=40),
    st.tuples(
        st.sampled_from(["scans", "scan", "", "models"]),
        st.one_of(st.text(max_size=12), st.text("0123456789abcdef", min_size=1, max_size=32)),
        st.sampled_from(["explanation", "explanations", "", "explanation/x"]),
    ).map("/".join),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(name=_NAMES)
def test_any_name_is_either_invalid_or_names_a_scan(unit: Unit, name: str) -> None:
    parts = name.split("/")
    well_formed = len(parts) == 3 and parts[0] == "scans" and parts[1].isalnum() and parts[2] == "explanation"
    code, details = _code(unit.stub, name)
    assert code == (grpc.StatusCode.NOT_FOUND if well_formed else grpc.StatusCode.INVALID_ARGUMENT), details


def test_explanations_survive_a_restart_and_old_records_fail_cleanly(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    daemon = InProcessDaemon(data_dir)
    try:
        stub = scan_service_pb2_grpc.ScanServiceStub(daemon.channel)
        scan = _analyze(stub, "genuine", 11, ["canvas"])
        before = _explain(stub, scan)
    finally:
        daemon.close()
    assert len(before.images) == 2
    daemon = InProcessDaemon(data_dir)
    try:
        after = _explain(scan_service_pb2_grpc.ScanServiceStub(daemon.channel), scan)
    finally:
        daemon.close()
    assert after == before

    # A record written by a daemon that did not keep per-tile results: the same JSON without "tiles".
    db = sqlite3.connect(data_dir / "scans.sqlite3")
    scan_id = scan.name.removeprefix("scans/")
    (text,) = db.execute("SELECT record FROM scans WHERE scan_id = ?", (scan_id,)).fetchone()
    record = json.loads(text)
    for region in record["outcome"]["regions"]:
        for image in region["images"]:
            del image["tiles"]
    with db:
        db.execute("UPDATE scans SET record = ? WHERE scan_id = ?", (json.dumps(record), scan_id))
    db.close()
    daemon = InProcessDaemon(data_dir)
    try:
        stub = scan_service_pb2_grpc.ScanServiceStub(daemon.channel)
        code, details = _code(stub, f"{scan.name}/explanation")
        assert stub.GetScan(pb.GetScanRequest(name=scan.name)).scan.result == scan.result
    finally:
        daemon.close()
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "older daemon" in details
