"""The veriscope.v1 RPCs the SDK calls: wire path, message types, shape and default deadline of each.

Both clients invoke RPCs through these descriptors rather than the generated
stubs, so a multi-step flow can name the RPC it wants and either client can run
it. Each descriptor is checked against the generated service descriptors when
this module is imported, so it cannot drift from the .proto files. A new RPC
slots in as one more line below.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from veriscope.v1 import (
    calibration_service_pb2,
    capture_service_pb2,
    device_service_pb2,
    model_service_pb2,
    scan_service_pb2,
    simulation_service_pb2,
    update_service_pb2,
)

ReqT = TypeVar("ReqT", bound=Message)
RespT = TypeVar("RespT", bound=Message)

UNARY_TIMEOUT_S = 10.0
"""Default deadline of quick unary calls (reads, creates, cancels)."""
SLOW_TIMEOUT_S = 60.0
"""Default deadline of calls that expose the camera, focus, move image files, run inference or draw heat-maps."""
STREAM_TIMEOUT_S = 900.0
"""Default bound on server streams (preview, watch): they end on their own or when the caller stops reading."""
CALIBRATE_TIMEOUT_S = 180.0
"""Default deadline of Calibrate: several full-resolution frames per lighting channel."""
SELF_TEST_TIMEOUT_S = 300.0
"""Default bound on RunSelfTest: auto-exposure per LED channel, a focus sweep and hashing the model."""
CLEANUP_TIMEOUT_S = 5.0
"""Deadline of the best-effort CancelScan a flow sends when it fails half-way."""


class RpcKind(enum.Enum):
    """The shape of an RPC."""

    UNARY = "unary"
    CLIENT_STREAM = "client_stream"
    SERVER_STREAM = "server_stream"


@dataclass(frozen=True)
class Rpc(Generic[ReqT, RespT]):
    """One RPC: ``path`` is the wire method ``"/veriscope.v1.ScanService/GetScan"``; ``method`` the same without '/'."""

    path: str
    request_type: type[ReqT]
    response_type: type[RespT]
    kind: RpcKind
    default_timeout_s: float

    @property
    def method(self) -> str:
        return self.path[1:]


def _rpc(
    module: ModuleType,
    service: str,
    name: str,
    request_type: type[ReqT],
    response_type: type[RespT],
    kind: RpcKind,
    default_timeout_s: float,
) -> Rpc[ReqT, RespT]:
    method: Any = module.DESCRIPTOR.services_by_name[service].methods_by_name[name]
    shape = (method.client_streaming, method.server_streaming)
    expected = {
        RpcKind.UNARY: (False, False),
        RpcKind.CLIENT_STREAM: (True, False),
        RpcKind.SERVER_STREAM: (False, True),
    }
    if (
        method.input_type.full_name != request_type.DESCRIPTOR.full_name
        or method.output_type.full_name != response_type.DESCRIPTOR.full_name
        or shape != expected[kind]
    ):
        raise ImportError(f"veriscope.sdk is out of step with veriscope.v1 at {service}.{name}")
    return Rpc(f"/{method.containing_service.full_name}/{name}", request_type, response_type, kind, default_timeout_s)


_U, _C, _S = RpcKind.UNARY, RpcKind.CLIENT_STREAM, RpcKind.SERVER_STREAM
_dev, _cap, _scan = device_service_pb2, capture_service_pb2, scan_service_pb2
_mod, _upd, _sim = model_service_pb2, update_service_pb2, simulation_service_pb2
_cal = calibration_service_pb2

GET_DEVICE = _rpc(
    _dev, "DeviceService", "GetDevice", _dev.GetDeviceRequest, _dev.GetDeviceResponse, _U, UNARY_TIMEOUT_S
)
GET_STATUS = _rpc(
    _dev, "DeviceService", "GetStatus", _dev.GetStatusRequest, _dev.GetStatusResponse, _U, UNARY_TIMEOUT_S
)
RUN_SELF_TEST = _rpc(
    _dev, "DeviceService", "RunSelfTest", _dev.RunSelfTestRequest, _dev.RunSelfTestResponse, _S, SELF_TEST_TIMEOUT_S
)
READ_LOGS = _rpc(_dev, "DeviceService", "ReadLogs", _dev.ReadLogsRequest, _dev.ReadLogsResponse, _S, STREAM_TIMEOUT_S)

CAPTURE = _rpc(_cap, "CaptureService", "Capture", _cap.CaptureRequest, _cap.CaptureResponse, _U, SLOW_TIMEOUT_S)
STREAM_PREVIEW = _rpc(
    _cap, "CaptureService", "StreamPreview", _cap.StreamPreviewRequest, _cap.StreamPreviewResponse, _S, STREAM_TIMEOUT_S
)
AUTOFOCUS = _rpc(_cap, "CaptureService", "Autofocus", _cap.AutofocusRequest, _cap.AutofocusResponse, _U, SLOW_TIMEOUT_S)

GET_CALIBRATION = _rpc(
    _cal,
    "CalibrationService",
    "GetCalibration",
    _cal.GetCalibrationRequest,
    _cal.GetCalibrationResponse,
    _U,
    UNARY_TIMEOUT_S,
)
CALIBRATE = _rpc(
    _cal, "CalibrationService", "Calibrate", _cal.CalibrateRequest, _cal.CalibrateResponse, _U, CALIBRATE_TIMEOUT_S
)

CREATE_SCAN = _rpc(
    _scan, "ScanService", "CreateScan", _scan.CreateScanRequest, _scan.CreateScanResponse, _U, UNARY_TIMEOUT_S
)
CAPTURE_REGION = _rpc(
    _scan, "ScanService", "CaptureRegion", _scan.CaptureRegionRequest, _scan.CaptureRegionResponse, _U, SLOW_TIMEOUT_S
)
UPLOAD_IMAGE = _rpc(
    _scan, "ScanService", "UploadImage", _scan.UploadImageRequest, _scan.UploadImageResponse, _C, SLOW_TIMEOUT_S
)
COMPLETE_SCAN = _rpc(
    _scan, "ScanService", "CompleteScan", _scan.CompleteScanRequest, _scan.CompleteScanResponse, _U, SLOW_TIMEOUT_S
)
GET_SCAN = _rpc(_scan, "ScanService", "GetScan", _scan.GetScanRequest, _scan.GetScanResponse, _U, UNARY_TIMEOUT_S)
LIST_SCANS = _rpc(
    _scan, "ScanService", "ListScans", _scan.ListScansRequest, _scan.ListScansResponse, _U, UNARY_TIMEOUT_S
)
WATCH_SCAN = _rpc(
    _scan, "ScanService", "WatchScan", _scan.WatchScanRequest, _scan.WatchScanResponse, _S, STREAM_TIMEOUT_S
)
CANCEL_SCAN = _rpc(
    _scan, "ScanService", "CancelScan", _scan.CancelScanRequest, _scan.CancelScanResponse, _U, UNARY_TIMEOUT_S
)
LABEL_SCAN = _rpc(
    _scan, "ScanService", "LabelScan", _scan.LabelScanRequest, _scan.LabelScanResponse, _U, UNARY_TIMEOUT_S
)
READ_SCAN_IMAGE = _rpc(
    _scan,
    "ScanService",
    "ReadScanImage",
    _scan.ReadScanImageRequest,
    _scan.ReadScanImageResponse,
    _S,
    SLOW_TIMEOUT_S,
)
GET_SCAN_EXPLANATION = _rpc(
    _scan,
    "ScanService",
    "GetScanExplanation",
    _scan.GetScanExplanationRequest,
    _scan.GetScanExplanationResponse,
    _U,
    SLOW_TIMEOUT_S,
)
GET_SCAN_CERTIFICATE = _rpc(
    _scan,
    "ScanService",
    "GetScanCertificate",
    _scan.GetScanCertificateRequest,
    _scan.GetScanCertificateResponse,
    _U,
    UNARY_TIMEOUT_S,
)

LIST_MODELS = _rpc(
    _mod, "ModelService", "ListModels", _mod.ListModelsRequest, _mod.ListModelsResponse, _U, UNARY_TIMEOUT_S
)
GET_MODEL = _rpc(_mod, "ModelService", "GetModel", _mod.GetModelRequest, _mod.GetModelResponse, _U, UNARY_TIMEOUT_S)

GET_UPDATE_STATUS = _rpc(
    _upd,
    "UpdateService",
    "GetUpdateStatus",
    _upd.GetUpdateStatusRequest,
    _upd.GetUpdateStatusResponse,
    _U,
    UNARY_TIMEOUT_S,
)

PLACE_ITEM = _rpc(
    _sim, "SimulationService", "PlaceItem", _sim.PlaceItemRequest, _sim.PlaceItemResponse, _U, UNARY_TIMEOUT_S
)
GET_PLACED_ITEM = _rpc(
    _sim,
    "SimulationService",
    "GetPlacedItem",
    _sim.GetPlacedItemRequest,
    _sim.GetPlacedItemResponse,
    _U,
    UNARY_TIMEOUT_S,
)
CLEAR_ITEM = _rpc(
    _sim, "SimulationService", "ClearItem", _sim.ClearItemRequest, _sim.ClearItemResponse, _U, UNARY_TIMEOUT_S
)
LIST_SOURCES = _rpc(
    _sim, "SimulationService", "ListSources", _sim.ListSourcesRequest, _sim.ListSourcesResponse, _U, UNARY_TIMEOUT_S
)
