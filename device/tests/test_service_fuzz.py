"""Every RPC answers any request message with a deliberate status, never INTERNAL or UNKNOWN.

Request messages are generated from their descriptors: any subset of fields
set, integers across their whole range, NaN and infinite floats, arbitrary
text, unknown enum values and nested messages.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from device_daemon import InProcessDaemon
from google.protobuf import descriptor as d
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from veriscope.tools import bundles
from veriscope.v1 import (
    capture_service_pb2,
    device_service_pb2,
    model_service_pb2,
    provisioning_service_pb2,
    scan_service_pb2,
    simulation_service_pb2,
    update_service_pb2,
)

ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
_INT_RANGES = {
    d.FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    d.FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    d.FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    d.FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    d.FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    d.FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    d.FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    d.FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    d.FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    d.FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _scalar(field: d.FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.type in _INT_RANGES:
        lo, hi = _INT_RANGES[field.type]
        return st.one_of(st.integers(-3, 3).filter(lambda v: lo <= v <= hi), st.integers(lo, hi))
    if field.type in (d.FieldDescriptor.TYPE_FLOAT, d.FieldDescriptor.TYPE_DOUBLE):
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    if field.type == d.FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type == d.FieldDescriptor.TYPE_STRING:
        interesting = [
            "",
            "scans/",
            "scans/abc",
            "scans/../x",
            "scans/abc/explanation",
            "scans//explanation",
            "scans/abc/certificate",
            "tote-classic",
            "canvas",
            "genuine",
            "models/active",
        ]
        return st.one_of(st.sampled_from(interesting), st.text(max_size=40))
    if field.type == d.FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if field.type == d.FieldDescriptor.TYPE_ENUM:
        return st.integers(-2, 12)
    raise AssertionError(field.type)


@st.composite
def messages(draw: st.DrawFn, cls: type[Message], depth: int = 0) -> Message:
    """A message of ``cls`` with a random subset of its fields set to random values."""
    msg = cls()
    for field in cls.DESCRIPTOR.fields:
        if not draw(st.booleans()):
            continue
        if field.type == d.FieldDescriptor.TYPE_MESSAGE:
            if depth >= 3 or field.message_type.full_name.startswith("google.protobuf"):
                continue
            sub_cls = type(getattr(msg, field.name)) if not _repeated(field) else None
            if sub_cls is None:
                continue
            getattr(msg, field.name).CopyFrom(draw(messages(sub_cls, depth + 1)))
        elif _repeated(field):
            getattr(msg, field.name).extend(draw(st.lists(_scalar(field), max_size=3)))
        else:
            setattr(msg, field.name, draw(_scalar(field)))
    return msg


def _repeated(field: d.FieldDescriptor) -> bool:
    return bool(field.is_repeated)


UNARY = [
    ("veriscope.v1.DeviceService", "GetDevice", device_service_pb2.GetDeviceRequest),
    ("veriscope.v1.DeviceService", "GetStatus", device_service_pb2.GetStatusRequest),
    ("veriscope.v1.ModelService", "ListModels", model_service_pb2.ListModelsRequest),
    ("veriscope.v1.ModelService", "GetModel", model_service_pb2.GetModelRequest),
    ("veriscope.v1.UpdateService", "GetUpdateStatus", update_service_pb2.GetUpdateStatusRequest),
    ("veriscope.v1.UpdateService", "GetUpload", update_service_pb2.GetUploadRequest),
    ("veriscope.v1.UpdateService", "InstallBundle", update_service_pb2.InstallBundleRequest),
    ("veriscope.v1.UpdateService", "RollbackUpdate", update_service_pb2.RollbackUpdateRequest),
    ("veriscope.v1.ScanService", "CreateScan", scan_service_pb2.CreateScanRequest),
    ("veriscope.v1.ScanService", "CaptureRegion", scan_service_pb2.CaptureRegionRequest),
    ("veriscope.v1.ScanService", "CompleteScan", scan_service_pb2.CompleteScanRequest),
    ("veriscope.v1.ScanService", "GetScan", scan_service_pb2.GetScanRequest),
    ("veriscope.v1.ScanService", "ListScans", scan_service_pb2.ListScansRequest),
    ("veriscope.v1.ScanService", "CancelScan", scan_service_pb2.CancelScanRequest),
    ("veriscope.v1.ScanService", "GetScanExplanation", scan_service_pb2.GetScanExplanationRequest),
    ("veriscope.v1.ScanService", "GetScanCertificate", scan_service_pb2.GetScanCertificateRequest),
    ("veriscope.v1.ScanService", "LabelScan", scan_service_pb2.LabelScanRequest),
    ("veriscope.v1.CaptureService", "Capture", capture_service_pb2.CaptureRequest),
    ("veriscope.v1.CaptureService", "Autofocus", capture_service_pb2.AutofocusRequest),
    ("veriscope.v1.SimulationService", "PlaceItem", simulation_service_pb2.PlaceItemRequest),
    ("veriscope.v1.SimulationService", "GetPlacedItem", simulation_service_pb2.GetPlacedItemRequest),
    ("veriscope.v1.SimulationService", "ClearItem", simulation_service_pb2.ClearItemRequest),
    ("veriscope.v1.SimulationService", "ListSources", simulation_service_pb2.ListSourcesRequest),
    # A provisioned unit answers these with FAILED_PRECONDITION, whatever the request.
    ("veriscope.v1.ProvisioningService", "GetUnitIdentity", provisioning_service_pb2.GetUnitIdentityRequest),
    (
        "veriscope.v1.ProvisioningService",
        "InstallUnitIdentity",
        provisioning_service_pb2.InstallUnitIdentityRequest,
    ),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessDaemon]:
    """A daemon with a tiny sensor, so the captures the fuzzer reaches are quick, and an update key, so update
    requests reach their parsing rather than the missing-key refusal."""
    _, pub = bundles.generate_keys(tmp_path_factory.mktemp("update-key"))
    srv = InProcessDaemon(tmp_path_factory.mktemp("fuzz") / "data", camera=(320, 240), update={"trust_key": str(pub)})
    yield srv
    srv.close()


def _call(server: InProcessDaemon, service: str, method: str, request: Message) -> grpc.StatusCode:
    stub = server.channel.unary_unary(
        f"/{service}/{method}", request_serializer=lambda m: m.SerializeToString(), response_deserializer=lambda b: b
    )
    try:
        stub(request, timeout=60)
    except grpc.RpcError as exc:
        assert exc.code() in ALLOWED, f"{method}({request}) -> {exc.code()}: {exc.details()}"
        assert exc.details(), f"{method} answered {exc.code()} without a message"
        return exc.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize(("service", "method", "cls"), UNARY, ids=[m for _, m, _ in UNARY])
def test_unary_rpcs_never_fail_internally(
    server: InProcessDaemon, service: str, method: str, cls: type[Message]
) -> None:
    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
    @given(messages(cls))
    def check(request: Message) -> None:
        _call(server, service, method, request)

    check()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(st.lists(messages(scan_service_pb2.UploadImageRequest), max_size=4))
def test_upload_streams_never_fail_internally(
    server: InProcessDaemon, requests: list[scan_service_pb2.UploadImageRequest]
) -> None:
    stub = server.channel.stream_unary(
        "/veriscope.v1.ScanService/UploadImage",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=lambda b: b,
    )
    try:
        stub(iter(requests), timeout=60)
    except grpc.RpcError as exc:
        assert exc.code() in ALLOWED, f"UploadImage -> {exc.code()}: {exc.details()}"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(st.lists(messages(update_service_pb2.UploadBundleRequest), max_size=4))
def test_bundle_upload_streams_never_fail_internally(
    server: InProcessDaemon, requests: list[update_service_pb2.UploadBundleRequest]
) -> None:
    stub = server.channel.stream_unary(
        "/veriscope.v1.UpdateService/UploadBundle",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=lambda b: b,
    )
    try:
        stub(iter(requests), timeout=60)
    except grpc.RpcError as exc:
        assert exc.code() in ALLOWED, f"UploadBundle -> {exc.code()}: {exc.details()}"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(messages(device_service_pb2.ReadLogsRequest))
def test_read_logs_never_fails_internally(server: InProcessDaemon, request: device_service_pb2.ReadLogsRequest) -> None:
    request.follow = False  # a followed log never ends on its own
    stub = server.channel.unary_stream(
        "/veriscope.v1.DeviceService/ReadLogs",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=lambda b: b,
    )
    try:
        list(stub(request, timeout=60))
    except grpc.RpcError as exc:
        assert exc.code() in ALLOWED, f"ReadLogs({request}) -> {exc.code()}: {exc.details()}"
        assert exc.details(), f"ReadLogs answered {exc.code()} without a message"


def test_self_test_runs_to_its_end(server: InProcessDaemon) -> None:
    stub = server.channel.unary_stream(
        "/veriscope.v1.DeviceService/RunSelfTest",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=device_service_pb2.RunSelfTestResponse.FromString,
    )
    responses = list(stub(device_service_pb2.RunSelfTestRequest(), timeout=120))
    assert [r.check.name for r in responses if r.HasField("check")][-1] == "storage"


def test_watch_of_unknown_scan_is_not_found(server: InProcessDaemon) -> None:
    stub = server.channel.unary_stream(
        "/veriscope.v1.ScanService/WatchScan",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=lambda b: b,
    )
    with pytest.raises(grpc.RpcError) as info:
        list(stub(scan_service_pb2.WatchScanRequest(name="scans/doesnotexist"), timeout=10))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
