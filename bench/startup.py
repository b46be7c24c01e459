"""Cold start: from spawning ``veriscope-device serve --simulate`` to its gRPC health check answering SERVING."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from veriscope.device.launch import spawn_daemon


def _serving(address: str, deadline: float) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.005)


def measure(runs: int) -> dict[str, Any]:
    """Seconds from process spawn to SERVING, over ``runs`` fresh daemons on fresh data directories."""
    times: list[float] = []
    for _ in range(runs):
        scratch = Path(tempfile.mkdtemp(prefix="veriscope-cold-"))
        try:
            start = time.perf_counter()
            unit = spawn_daemon(scratch / "data")
            try:
                _serving(unit.address, time.monotonic() + 60)
                times.append(time.perf_counter() - start)
            finally:
                unit.stop()
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return {"runs_s": times, "cold_start_s": sorted(times)[len(times) // 2]}
