"""Live preview through an in-process daemon: frames per second delivered and end-to-end latency per frame.

Uses the same set-up as ``device/bench/bench_capture.py``'s preview rate: a
simulated 2028 x 1520 sensor, an item in place and focused, ``StreamPreview``
asked for 30 fps. Latency is the time a frame arrives minus its
``capture_time`` (both on this machine's clock).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import ROOT, percentiles_ms

from veriscope.v1 import capture_service_pb2, capture_service_pb2_grpc, simulation_service_pb2
from veriscope.v1 import simulation_service_pb2_grpc as sim_grpc

sys.path.insert(0, str(ROOT / "device" / "tests"))

from device_daemon import InProcessDaemon

SENSOR = (2028, 1520)


def measure(widths: tuple[int, ...], frames: int) -> dict[str, Any]:
    """Per preview width: delivered fps, p50/p95 end-to-end latency in ms, and frame slots skipped."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        unit = InProcessDaemon(Path(tmp) / "data", camera=SENSOR)
        try:
            item = simulation_service_pb2.PlacedItem(item_type="tote-classic", source="genuine", seed=1)
            sim_grpc.SimulationServiceStub(unit.channel).PlaceItem(simulation_service_pb2.PlaceItemRequest(item=item))
            stub = capture_service_pb2_grpc.CaptureServiceStub(unit.channel)
            stub.Autofocus(capture_service_pb2.AutofocusRequest())
            for width in widths:
                request = capture_service_pb2.StreamPreviewRequest(max_fps=30, width=width, max_frames=frames)
                stamps: list[float] = []
                latencies_s: list[float] = []
                sequences: list[int] = []
                for frame in stub.StreamPreview(request):
                    stamps.append(time.perf_counter())
                    latencies_s.append(time.time() - frame.capture_time.ToNanoseconds() / 1e9)
                    sequences.append(frame.sequence)
                latency = percentiles_ms(latencies_s[1:])
                out[str(width)] = {
                    "fps": (len(stamps) - 1) / (stamps[-1] - stamps[0]),
                    "asked_fps": 30,
                    "frames": len(stamps),
                    "latency_p50_ms": latency["p50_ms"],
                    "latency_p95_ms": latency["p95_ms"],
                    "slots_skipped": sequences[-1] - sequences[0] + 1 - len(sequences),
                }
        finally:
            unit.close()
    return out
