"""SimulationService.PlaceItem: the same (item type, source, seed) is always the same virtual item.

Two units started afresh see the same frames of it; another seed or source is another item.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from device_daemon import InProcessDaemon

from veriscope.device import codec
from veriscope.v1 import capture_service_pb2, capture_service_pb2_grpc, common_pb2
from veriscope.v1 import simulation_service_pb2 as sim_pb
from veriscope.v1 import simulation_service_pb2_grpc as sim_grpc

ITEM = "wallet-compact"


@pytest.fixture
def units(tmp_path: Path) -> Iterator[tuple[InProcessDaemon, InProcessDaemon]]:
    first, second = InProcessDaemon(tmp_path / "a"), InProcessDaemon(tmp_path / "b")
    try:
        yield first, second
    finally:
        first.close()
        second.close()


def frame_of(unit: InProcessDaemon, source: str, seed: int) -> np.ndarray:
    """Place the item, focus on it and capture one PNG frame of its first region."""
    item = sim_pb.PlacedItem(item_type=ITEM, source=source, seed=seed)
    placed = sim_grpc.SimulationServiceStub(unit.channel).PlaceItem(sim_pb.PlaceItemRequest(item=item), timeout=30).item
    assert (placed.item_type, placed.source, placed.seed) == (ITEM, source, seed)
    capture = capture_service_pb2_grpc.CaptureServiceStub(unit.channel)
    capture.Autofocus(capture_service_pb2.AutofocusRequest(), timeout=120)
    request = capture_service_pb2.CaptureRequest(format=common_pb2.IMAGE_FORMAT_PNG)
    image = capture.Capture(request, timeout=60).image
    return codec.decode(image.data, max_pixels=10_000_000).astype(np.float64)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.mean(axis=2).ravel(), b.mean(axis=2).ravel())[0, 1])


def test_same_triple_is_the_same_item_on_every_unit(units: tuple[InProcessDaemon, InProcessDaemon]) -> None:
    first, second = units
    here = frame_of(first, "counterfeit-b", 17)
    there = frame_of(second, "counterfeit-b", 17)
    assert np.array_equal(here, there), "two fresh units show the same item differently"
    # The same daemon shows another item for another seed or source, and the first one again when it comes back.
    other_seed = frame_of(first, "counterfeit-b", 18)
    other_source = frame_of(first, "genuine", 17)
    again = frame_of(first, "counterfeit-b", 17)
    same = correlation(here, again)
    assert same > 0.8, same
    assert correlation(here, other_seed) < same - 0.3
    assert correlation(here, other_source) < same - 0.3
