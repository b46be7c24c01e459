"""Images are analysed as they arrive, so completion does not decode them again unless the model changed.

Completion reuses an arriving image's analysis only when the model that made it
is still the active one; after a model swap, or when the early analysis failed,
it decodes the stored image and analyses it again (device/docs/scans.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from device_daemon import InProcessDaemon

from veriscope.device import codec
from veriscope.device.pipeline.inference import Analyzer
from veriscope.device.scans.manager import ActiveModel, ScanManager
from veriscope.v1 import scan_service_pb2 as pb
from veriscope.v1 import scan_service_pb2_grpc as scan_grpc
from veriscope.v1 import simulation_service_pb2, simulation_service_pb2_grpc

ITEM = "tote-classic"
REGIONS = ("canvas", "trim", "lining")


@pytest.fixture
def unit(tmp_path: Path) -> Iterator[InProcessDaemon]:
    daemon = InProcessDaemon(tmp_path / "data")
    try:
        yield daemon
    finally:
        daemon.close()


def _manager(unit: InProcessDaemon) -> ScanManager:
    return unit.daemon.context.manager


def _image(seed: int) -> bytes:
    """A 320x240 PNG of mid-grey noise, which the quality gate accepts."""
    return codec.encode(np.random.default_rng(seed).integers(60, 200, (240, 320, 3), np.uint8))


def _uploaded_scan(stub: scan_grpc.ScanServiceStub) -> str:
    name = stub.CreateScan(pb.CreateScanRequest(scan=pb.Scan(item_type=ITEM))).scan.name
    for k, region in enumerate(REGIONS * 2):
        data = _image(k)
        header = pb.UploadImageHeader(name=name, region=region, size_bytes=len(data))
        reply = stub.UploadImage(iter([pb.UploadImageRequest(header=header), pb.UploadImageRequest(chunk=data)]))
        assert reply.image.quality.ok
    return name


class _DecodeCounter:
    """Stands in for codec.decode, counting calls (and refusing them when ``refuse``)."""

    def __init__(self, refuse: bool) -> None:
        self.calls = 0
        self.refuse = refuse
        self._real = codec.decode

    def __call__(self, data: bytes, **kwargs: Any) -> Any:
        self.calls += 1
        if self.refuse:
            raise AssertionError("completion decoded an image that was analysed on arrival")
        return self._real(data, **kwargs)


def _scores(scan: pb.Scan) -> list[float]:
    return [image.score for region in scan.result.regions for image in region.images]


def test_completion_reuses_the_analyses_made_on_arrival(unit: InProcessDaemon, monkeypatch: pytest.MonkeyPatch) -> None:
    stub = scan_grpc.ScanServiceStub(unit.channel)
    name = _uploaded_scan(stub)
    monkeypatch.setattr(codec, "decode", _DecodeCounter(refuse=True))
    scan = stub.CompleteScan(pb.CompleteScanRequest(name=name)).scan
    assert scan.state == pb.SCAN_STATE_COMPLETED
    assert len(_scores(scan)) == 6 and all(0.0 <= s <= 1.0 for s in _scores(scan))
    # Nothing of the finished scan stays in memory.
    assert not [key for key in _manager(unit)._analyses if name.endswith(key[0])]


def test_after_a_model_swap_completion_analyses_again_with_the_new_model(
    unit: InProcessDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub = scan_grpc.ScanServiceStub(unit.channel)
    reference = stub.CompleteScan(pb.CompleteScanRequest(name=_uploaded_scan(stub))).scan
    name = _uploaded_scan(stub)
    manager = _manager(unit)
    bundle = manager.bundle
    manager.swap_model(ActiveModel(bundle, Analyzer(bundle)))
    counter = _DecodeCounter(refuse=False)
    monkeypatch.setattr(codec, "decode", counter)
    scan = stub.CompleteScan(pb.CompleteScanRequest(name=name)).scan
    assert counter.calls == 6
    # The same bundle in a new analyzer: the same scores as the analyses made on arrival.
    np.testing.assert_allclose(_scores(scan), _scores(reference), atol=1e-6)


def test_an_analysis_that_fails_on_arrival_is_redone_at_completion(
    unit: InProcessDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub = scan_grpc.ScanServiceStub(unit.channel)
    analyzer = _manager(unit).model.analyzer
    real = analyzer.analyze_image
    monkeypatch.setattr(analyzer, "analyze_image", _failing)
    name = _uploaded_scan(stub)
    monkeypatch.setattr(analyzer, "analyze_image", real)
    counter = _DecodeCounter(refuse=False)
    monkeypatch.setattr(codec, "decode", counter)
    scan = stub.CompleteScan(pb.CompleteScanRequest(name=name)).scan
    assert scan.state == pb.SCAN_STATE_COMPLETED
    assert counter.calls == 6


def _failing(*_: Any, **__: Any) -> Any:
    raise RuntimeError("interpreter failed")


def test_camera_captures_are_analysed_on_arrival_too(unit: InProcessDaemon, monkeypatch: pytest.MonkeyPatch) -> None:
    simulation_service_pb2_grpc.SimulationServiceStub(unit.channel).PlaceItem(
        simulation_service_pb2.PlaceItemRequest(
            item=simulation_service_pb2.PlacedItem(item_type=ITEM, source="genuine", seed=3)
        )
    )
    stub = scan_grpc.ScanServiceStub(unit.channel)
    name = stub.CreateScan(pb.CreateScanRequest(scan=pb.Scan(item_type=ITEM))).scan.name
    for region in REGIONS * 2:
        stub.CaptureRegion(pb.CaptureRegionRequest(name=name, region=region), timeout=120)
    monkeypatch.setattr(codec, "decode", _DecodeCounter(refuse=True))
    scan = stub.CompleteScan(pb.CompleteScanRequest(name=name)).scan
    assert scan.state == pb.SCAN_STATE_COMPLETED
