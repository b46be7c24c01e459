"""ScanService.LabelScan over real gRPC: an expert's ground truth on completed scans, and ListScans by label."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import pytest
from device_daemon import InProcessDaemon

from veriscope.device import codec
from veriscope.device.errors import InvalidArgument
from veriscope.device.scans.filter import parse_filter
from veriscope.device.scans.records import ScanLabel
from veriscope.device.specimen import imaging
from veriscope.device.specimen.surface import VirtualItem
from veriscope.device.types import Lighting
from veriscope.v1 import scan_service_pb2 as pb
from veriscope.v1 import scan_service_pb2_grpc

ITEM = "scarf-twill"
REGION = "twill"
SENSOR = (640, 480)


def _frame(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    optics = imaging.Optics(sensor_width_px=SENSOR[0], sensor_height_px=SENSOR[1])
    pose = imaging.good_pose(rng)
    pixels = imaging.render(
        VirtualItem(ITEM, "genuine", seed).surface(REGION),
        pose,
        duties={Lighting.WHITE_RING: 60},
        exposure_us=8000,
        analogue_gain=1.0,
        focus_steps=imaging.in_focus_steps(pose, optics),
        rng=rng,
        optics=optics,
    )
    return codec.encode(pixels, codec.ImageFormat.PNG)


FRAMES = [_frame(seed) for seed in range(3)]


def _create(stub: scan_service_pb2_grpc.ScanServiceStub, partner_item_id: str = "") -> pb.Scan:
    return stub.CreateScan(pb.CreateScanRequest(scan=pb.Scan(item_type=ITEM, partner_item_id=partner_item_id))).scan


def _completed(stub: scan_service_pb2_grpc.ScanServiceStub, partner_item_id: str = "") -> pb.Scan:
    scan = _create(stub, partner_item_id)
    for data in FRAMES:
        header = pb.UploadImageHeader(name=scan.name, region=REGION, size_bytes=len(data))
        stub.UploadImage(iter([pb.UploadImageRequest(header=header), pb.UploadImageRequest(chunk=data)]))
    return stub.CompleteScan(pb.CompleteScanRequest(name=scan.name)).scan


def _label(stub: scan_service_pb2_grpc.ScanServiceStub, name: str, label: int) -> pb.Scan:
    return stub.LabelScan(pb.LabelScanRequest(name=name, label=label)).scan  # type: ignore[arg-type]


def _error(stub: scan_service_pb2_grpc.ScanServiceStub, name: str, label: int) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        _label(stub, name, label)
    return info.value.code(), info.value.details()


@pytest.fixture(scope="module")
def stub(daemon: InProcessDaemon) -> scan_service_pb2_grpc.ScanServiceStub:
    return scan_service_pb2_grpc.ScanServiceStub(daemon.channel)


def test_a_label_is_recorded_replaced_and_removed_without_touching_the_verdict(
    stub: scan_service_pb2_grpc.ScanServiceStub,
) -> None:
    scan = _completed(stub)
    assert scan.label == pb.SCAN_LABEL_UNSPECIFIED and not scan.HasField("label_time")

    genuine = _label(stub, scan.name, pb.SCAN_LABEL_GENUINE)
    assert genuine.label == pb.SCAN_LABEL_GENUINE and genuine.HasField("label_time")
    assert genuine.label_time.ToDatetime() >= scan.result.complete_time.ToDatetime()
    assert genuine.result == scan.result and genuine.state == pb.SCAN_STATE_COMPLETED
    assert list(genuine.images) == list(scan.images)
    assert stub.GetScan(pb.GetScanRequest(name=scan.name)).scan.label == pb.SCAN_LABEL_GENUINE

    counterfeit = _label(stub, scan.name, pb.SCAN_LABEL_COUNTERFEIT)
    assert counterfeit.label == pb.SCAN_LABEL_COUNTERFEIT
    assert counterfeit.label_time.ToDatetime() >= genuine.label_time.ToDatetime()
    assert counterfeit.result == scan.result

    cleared = _label(stub, scan.name, pb.SCAN_LABEL_UNSPECIFIED)
    assert cleared.label == pb.SCAN_LABEL_UNSPECIFIED and not cleared.HasField("label_time")
    again = stub.GetScan(pb.GetScanRequest(name=scan.name)).scan
    assert again.label == pb.SCAN_LABEL_UNSPECIFIED and not again.HasField("label_time")
    assert again.result == scan.result


def test_labels_never_change_the_certificate(stub: scan_service_pb2_grpc.ScanServiceStub) -> None:
    scan = _completed(stub)
    name = f"{scan.name}/certificate"
    before = stub.GetScanCertificate(pb.GetScanCertificateRequest(name=name)).certificate
    _label(stub, scan.name, pb.SCAN_LABEL_COUNTERFEIT)
    after = stub.GetScanCertificate(pb.GetScanCertificateRequest(name=name)).certificate
    assert after == before
    assert not [key for key in json.loads(after.document)["certificate"] if "label" in key]


def test_only_completed_scans_take_a_label(stub: scan_service_pb2_grpc.ScanServiceStub) -> None:
    open_scan = _create(stub)
    code, details = _error(stub, open_scan.name, pb.SCAN_LABEL_GENUINE)
    assert code is grpc.StatusCode.FAILED_PRECONDITION and "IN_PROGRESS" in details
    stub.CancelScan(pb.CancelScanRequest(name=open_scan.name))
    code, details = _error(stub, open_scan.name, pb.SCAN_LABEL_GENUINE)
    assert code is grpc.StatusCode.FAILED_PRECONDITION and "CANCELLED" in details
    code, details = _error(stub, open_scan.name, pb.SCAN_LABEL_UNSPECIFIED)
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert stub.GetScan(pb.GetScanRequest(name=open_scan.name)).scan.label == pb.SCAN_LABEL_UNSPECIFIED


def test_unknown_scans_bad_names_and_bad_labels_are_refused(stub: scan_service_pb2_grpc.ScanServiceStub) -> None:
    assert _error(stub, "scans/0123abcd", pb.SCAN_LABEL_GENUINE)[0] is grpc.StatusCode.NOT_FOUND
    for name in ["", "0123abcd", "scans/", "scans/a/b", "scans/a-b", "models/x"]:
        code, details = _error(stub, name, pb.SCAN_LABEL_GENUINE)
        assert code is grpc.StatusCode.INVALID_ARGUMENT and "scans/{scan_id}" in details, name
    scan = _completed(stub)
    code, details = _error(stub, scan.name, 7)
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "label" in details
    assert stub.GetScan(pb.GetScanRequest(name=scan.name)).scan.label == pb.SCAN_LABEL_UNSPECIFIED


def _names(stub: scan_service_pb2_grpc.ScanServiceStub, flt: str) -> set[str]:
    names: set[str] = set()
    token = ""
    while True:
        page = stub.ListScans(pb.ListScansRequest(filter=flt, page_size=2, page_token=token))
        names |= {s.name for s in page.scans}
        token = page.next_page_token
        if not token:
            return names


def test_list_scans_filters_by_label(stub: scan_service_pb2_grpc.ScanServiceStub) -> None:
    genuine = [_completed(stub, "filter-genuine") for _ in range(2)]
    fake = _completed(stub, "filter-fake")
    unlabelled = _completed(stub, "filter-none")
    for scan in genuine:
        _label(stub, scan.name, pb.SCAN_LABEL_GENUINE)
    _label(stub, fake.name, pb.SCAN_LABEL_COUNTERFEIT)

    every = {s.name: s.label for s in (stub.GetScan(pb.GetScanRequest(name=n)).scan for n in _names(stub, ""))}
    assert every[unlabelled.name] == pb.SCAN_LABEL_UNSPECIFIED
    by_label = {
        label: {name for name, has in every.items() if has == label}
        for label in (pb.SCAN_LABEL_UNSPECIFIED, pb.SCAN_LABEL_GENUINE, pb.SCAN_LABEL_COUNTERFEIT)
    }
    assert {s.name for s in genuine} <= by_label[pb.SCAN_LABEL_GENUINE]
    assert _names(stub, "label = GENUINE") == by_label[pb.SCAN_LABEL_GENUINE]
    assert _names(stub, "label = SCAN_LABEL_COUNTERFEIT") == by_label[pb.SCAN_LABEL_COUNTERFEIT]
    assert _names(stub, "label = UNSPECIFIED") == by_label[pb.SCAN_LABEL_UNSPECIFIED]
    labelled = by_label[pb.SCAN_LABEL_GENUINE] | by_label[pb.SCAN_LABEL_COUNTERFEIT]
    assert _names(stub, "label != UNSPECIFIED") == labelled
    assert _names(stub, "label != genuine") == set(every) - by_label[pb.SCAN_LABEL_GENUINE]
    assert _names(stub, 'label != UNSPECIFIED AND partner_item_id = "filter-fake"') == {fake.name}
    assert (
        _names(stub, "label = GENUINE AND state = COMPLETED AND label != UNSPECIFIED")
        == by_label[pb.SCAN_LABEL_GENUINE]
    )

    for flt in ["label = MAYBE", "label < GENUINE", "label >= UNSPECIFIED"]:
        with pytest.raises(grpc.RpcError) as info:
            stub.ListScans(pb.ListScansRequest(filter=flt))
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "label" in info.value.details()


def test_filter_parser_reads_labels() -> None:
    assert parse_filter("label = GENUINE").label is ScanLabel.GENUINE
    assert parse_filter("label != scan_label_counterfeit").not_label is ScanLabel.COUNTERFEIT
    assert parse_filter("label != UNSPECIFIED").labelled is True
    assert parse_filter("label = SCAN_LABEL_UNSPECIFIED").labelled is False
    with pytest.raises(InvalidArgument, match="unknown label 'fake'; use GENUINE, COUNTERFEIT or UNSPECIFIED"):
        parse_filter("label = fake")


def test_a_label_survives_a_restart(tmp_path: Path) -> None:
    restartable = tmp_path / "data"
    daemon = InProcessDaemon(restartable)
    try:
        stub = scan_service_pb2_grpc.ScanServiceStub(daemon.channel)
        scan = _completed(stub)
        labelled = _label(stub, scan.name, pb.SCAN_LABEL_COUNTERFEIT)
    finally:
        daemon.close()
    daemon = InProcessDaemon(restartable)
    try:
        stub = scan_service_pb2_grpc.ScanServiceStub(daemon.channel)
        again = stub.GetScan(pb.GetScanRequest(name=scan.name)).scan
        assert again.label == pb.SCAN_LABEL_COUNTERFEIT and again.label_time == labelled.label_time
        assert _names(stub, "label = COUNTERFEIT") == {scan.name}
    finally:
        daemon.close()
