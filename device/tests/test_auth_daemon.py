"""The whole daemon with ``[auth] mode = "required"``: tokens, roles, health, reflection and the audit log."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from device_daemon import InProcessDaemon
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from veriscope.device.auth.roles import METHOD_ROLES, Role, is_open
from veriscope.device.auth.tokens import TokenStore
from veriscope.v1 import (
    calibration_service_pb2,
    calibration_service_pb2_grpc,
    device_service_pb2,
    device_service_pb2_grpc,
    scan_service_pb2,
    scan_service_pb2_grpc,
)


class Unit:
    """An in-process daemon that requires tokens, and a token of each role."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True)
        store = TokenStore(data_dir)
        self.tokens = {role: store.create(role, name=f"{role}-1").token for role in Role}
        self.data_dir = data_dir
        self.daemon = InProcessDaemon(data_dir, auth={"mode": "required"})
        self.channel = self.daemon.channel

    def metadata(self, role: Role) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.tokens[role]}"),)


@pytest.fixture(scope="module")
def unit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Unit]:
    u = Unit(tmp_path_factory.mktemp("auth") / "data")
    yield u
    u.daemon.close()


def _code(call: Any) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def _audit_lines(data_dir: Path, method: str, *, count: int, wait_s: float = 10.0) -> list[dict[str, Any]]:
    """The audit lines of ``method``, once there are ``count`` of them or ``wait_s`` has passed."""
    deadline = time.monotonic() + wait_s
    while True:
        path = data_dir / "audit.log"
        lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        found = [line for line in lines if line["method"] == method]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def test_calls_need_a_token_but_health_checks_do_not(unit: Unit) -> None:
    health = health_pb2_grpc.HealthStub(unit.channel)
    assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
    devices = device_service_pb2_grpc.DeviceServiceStub(unit.channel)
    with pytest.raises(grpc.RpcError) as info:
        devices.GetDevice(device_service_pb2.GetDeviceRequest())
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    device = devices.GetDevice(device_service_pb2.GetDeviceRequest(), metadata=unit.metadata(Role.OPERATOR))
    assert device.device.device_id


def test_every_served_method_has_a_role(unit: Unit) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(unit.channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (reply,) = list(stub.ServerReflectionInfo(iter([request]), metadata=unit.metadata(Role.OPERATOR)))
    services = [s.name for s in reply.list_services_response.service]
    assert "veriscope.v1.ScanService" in services and "veriscope.v1.SimulationService" in services
    pool = descriptor_pool.Default()
    served = {f"/{name}/{m.name}" for name in services for m in pool.FindServiceByName(name).methods}
    missing = sorted(m for m in served if m not in METHOD_ROLES and not is_open(m))
    assert not missing, f"served without a role: {missing}"


def test_the_wrong_role_is_permission_denied_and_the_right_one_reaches_the_service(unit: Unit) -> None:
    calibration = calibration_service_pb2_grpc.CalibrationServiceStub(unit.channel)
    request = calibration_service_pb2.CalibrateRequest()
    with pytest.raises(grpc.RpcError) as info:
        calibration.Calibrate(request, metadata=unit.metadata(Role.OPERATOR))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "needs the technician role" in info.value.details()
    scans = scan_service_pb2_grpc.ScanServiceStub(unit.channel)
    label = scan_service_pb2.LabelScanRequest(name="scans/no-such-scan")
    assert _code(lambda: scans.LabelScan(label, metadata=unit.metadata(Role.OPERATOR))) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    # Past the interceptor, the service answers for itself (the request has no label).
    answer = _code(lambda: scans.LabelScan(label, metadata=unit.metadata(Role.TECHNICIAN)))
    assert answer == grpc.StatusCode.INVALID_ARGUMENT

    # A service's own error reaches the client as it aborts, a moment before the audit line is written.
    labelled = _audit_lines(unit.data_dir, "/veriscope.v1.ScanService/LabelScan", count=2)
    assert [(line["role"], line["outcome"]) for line in labelled] == [
        ("operator", "PERMISSION_DENIED"),
        ("technician", "INVALID_ARGUMENT"),
    ]
    assert labelled[1]["token_name"] == "technician-1" and labelled[1]["details"]


def test_an_unauthenticated_upload_is_refused_while_its_stream_is_still_open(unit: Unit) -> None:
    scans = scan_service_pb2_grpc.ScanServiceStub(unit.channel)
    release: queue.Queue[None] = queue.Queue()
    pulled = threading.Event()

    def body() -> Iterator[scan_service_pb2.UploadImageRequest]:
        pulled.set()
        release.get()  # never ends until the test does: the daemon answers without reading to the end
        yield scan_service_pb2.UploadImageRequest(chunk=b"x")

    try:
        with pytest.raises(grpc.RpcError) as info:
            scans.UploadImage(body(), timeout=30)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        release.put(None)


def test_a_token_revoked_on_the_running_unit_is_refused_from_its_next_call(unit: Unit) -> None:
    store = TokenStore(unit.data_dir)
    token = store.create(Role.OPERATOR, name="short-lived").token
    devices = device_service_pb2_grpc.DeviceServiceStub(unit.channel)
    metadata = (("authorization", f"Bearer {token}"),)
    assert devices.GetStatus(device_service_pb2.GetStatusRequest(), metadata=metadata).status
    store.revoke(token)
    with pytest.raises(grpc.RpcError) as info:
        devices.GetStatus(device_service_pb2.GetStatusRequest(), metadata=metadata)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED and "revoked" in info.value.details()


def test_a_loopback_daemon_needs_no_token_by_default(daemon: InProcessDaemon) -> None:
    devices = device_service_pb2_grpc.DeviceServiceStub(daemon.channel)
    assert devices.GetDevice(device_service_pb2.GetDeviceRequest()).device.device_id
