"""A scripted in-process Veriscope unit for the SDK tests.

The servicers subclass the generated ``*Servicer`` base classes, so they cannot
drift from veriscope.v1. All of them share one :class:`FakeUnit`, which holds
the state and the script: quality reports to hand out, faults and delays to
inject per RPC (through a server interceptor, so the servicers stay plain), and
a record of every call and upload for the tests to check.
"""

from __future__ import annotations

import hashlib
import struct
import threading
import zlib
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from veriscope.v1 import (
    calibration_service_pb2,
    calibration_service_pb2_grpc,
    capture_service_pb2,
    capture_service_pb2_grpc,
    common_pb2,
    device_service_pb2,
    device_service_pb2_grpc,
    model_service_pb2,
    model_service_pb2_grpc,
    scan_service_pb2,
    scan_service_pb2_grpc,
    simulation_service_pb2,
    simulation_service_pb2_grpc,
    update_service_pb2,
    update_service_pb2_grpc,
)

MiB = 1024 * 1024
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff\xe0"
ITEM_TYPE = "tote-classic"
MODEL = common_pb2.ModelRef(name="veriscope-demo", version="1.2.0", sha256="ab" * 32)
BASE_SECONDS = 1_780_000_000  # 2026-05-28, a fixed clock for reproducible times


def stamp(offset_s: int = 0) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=BASE_SECONDS + offset_s, nanos=500_000_000)


def ok_report() -> common_pb2.QualityReport:
    return common_pb2.QualityReport(
        ok=True,
        metrics=[
            common_pb2.QualityMetric(name="sharpness", value=812.5),
            common_pb2.QualityMetric(name="clipped_fraction", value=0.001),
        ],
    )


def blurry_report(*, with_code: bool = True) -> common_pb2.QualityReport:
    issue = common_pb2.QualityIssue(
        kind=common_pb2.QUALITY_ISSUE_KIND_OUT_OF_FOCUS,
        code="out_of_focus" if with_code else "",
        hint="Press the scanner flat and refocus",
        value=41.0,
        threshold=120.0,
    )
    return common_pb2.QualityReport(
        ok=False, issues=[issue], metrics=[common_pb2.QualityMetric(name="sharpness", value=41.0)]
    )


def png_bytes(size: int) -> bytes:
    """``size`` bytes that start like a PNG and differ everywhere, so a misplaced chunk changes the hash."""
    body = hashlib.shake_256(str(size).encode()).digest(max(size - len(PNG_MAGIC), 0))
    return PNG_MAGIC + body


def png_rgb(width: int, height: int, colour_at: Callable[[int, int], tuple[int, int, int]]) -> bytes:
    """A real RGB PNG file (stdlib only) whose pixel (x, y) is ``colour_at(x, y)``."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(
        b"\x00" + b"".join(bytes(colour_at(x, y)) for x in range(width)) for y in range(height)
    )  # filter type 0 per row
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return PNG_MAGIC + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


# The fake's explanation of every accepted image: a 2 x 3 grid of 20 px tiles on a 60 x 40 heat-map.
TILE_SCORES = [0.1, 0.5, 0.9, 0.95, 0.3, 0.8]
TILE_FAMILIARITY = [0.9, 0.9, 0.9, 0.2, 0.9, 0.9]
SCORE_THRESHOLD = 0.6
FAMILIARITY_THRESHOLD = 0.5
FAKE_RED, FAKE_GREEN, FAKE_GREY = (215, 48, 39), (26, 152, 80), (128, 128, 128)


def fake_heatmap_png() -> bytes:
    def colour(x: int, y: int) -> tuple[int, int, int]:
        tile = (y // 20) * 3 + x // 20
        if TILE_FAMILIARITY[tile] < FAMILIARITY_THRESHOLD:
            return FAKE_GREY
        return FAKE_GREEN if TILE_SCORES[tile] >= SCORE_THRESHOLD else FAKE_RED

    return png_rgb(60, 40, colour)


ITEM_TYPES = [
    common_pb2.ItemType(
        name=ITEM_TYPE,
        display_name="Classic tote",
        regions=[
            common_pb2.RegionSpec(name="canvas", material="coated-canvas", min_images=2, hint="Front panel, centre"),
            common_pb2.RegionSpec(name="handle", material="leather", min_images=1, hint="Top of the left handle"),
        ],
    ),
    common_pb2.ItemType(
        name="wallet-zip",
        display_name="Zip wallet",
        regions=[common_pb2.RegionSpec(name="body", material="leather", min_images=1, hint="Back of the wallet")],
    ),
]


CALIBRATION_PATH = "/var/lib/veriscope/calibration/imx477.npz"


def fake_calibration(request: calibration_service_pb2.CalibrateRequest) -> calibration_service_pb2.Calibration:
    """The calibration the fake unit makes: fixed numbers per channel, its frames from the request."""
    lightings = list(request.lighting_channels) or [common_pb2.LIGHTING_CHANNEL_WHITE_RING]
    channels = [
        calibration_service_pb2.ChannelCalibration(
            lighting=lighting,
            exposure_us=7600 + 100 * n,
            analogue_gain=1.0,
            vignetting_depth=0.29 + 0.2 * n,
            white_balance_gains=calibration_service_pb2.WhiteBalanceGains(red=1.031, green=1.0, blue=1.064),
            texture=0.002,
            level=0.7,
        )
        for n, lighting in enumerate(lightings)
    ]
    return calibration_service_pb2.Calibration(
        name="calibration",
        state=calibration_service_pb2.CALIBRATION_STATE_CALIBRATED,
        calibration_id="20260528T101500Z-3fa2c1d0",
        create_time=stamp(20),
        device_id="VS-0001",
        camera_model="imx477",
        frames=request.frames or 8,
        vignetting_depth=channels[0].vignetting_depth,
        white_balance_gains=channels[0].white_balance_gains,
        channels=channels,
        storage_path=CALIBRATION_PATH,
    )


@dataclass
class Upload:
    """One UploadImage stream as the fake received it."""

    scan_id: str
    header: scan_service_pb2.UploadImageHeader
    data: bytes
    chunk_sizes: list[int]


@dataclass
class FakeUnit:
    """State and script shared by the fake servicers."""

    capture_quality: deque[common_pb2.QualityReport] = field(default_factory=deque)
    upload_quality: deque[common_pb2.QualityReport] = field(default_factory=deque)
    faults: dict[str, tuple[grpc.StatusCode, str]] = field(default_factory=dict)
    delays_s: dict[str, float] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    called: defaultdict[str, threading.Event] = field(default_factory=lambda: defaultdict(threading.Event))
    metadata: list[dict[str, str]] = field(default_factory=list)
    uploads: list[Upload] = field(default_factory=list)
    scans: dict[str, scan_service_pb2.Scan] = field(default_factory=dict)
    verdict: tuple[int, int, float] = (
        scan_service_pb2.VERDICT_AUTHENTIC,
        scan_service_pb2.VERDICT_REASON_UNSPECIFIED,
        0.93,
    )
    capture_size_bytes: int = 1000
    placed: simulation_service_pb2.PlacedItem | None = None
    page_size_cap: int = 1000
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    calibration: calibration_service_pb2.Calibration = field(
        default_factory=lambda: calibration_service_pb2.Calibration(
            name="calibration",
            state=calibration_service_pb2.CALIBRATION_STATE_UNCALIBRATED,
            storage_path=CALIBRATION_PATH,
        )
    )
    calibrate_requests: list[calibration_service_pb2.CalibrateRequest] = field(default_factory=list)
    images: dict[str, bytes] = field(default_factory=dict)
    """The stored bytes of every image, by its name "scans/{scan_id}/images/{image_id}"."""
    image_reads: list[scan_service_pb2.ReadScanImageRequest] = field(default_factory=list)
    corrupt_reads: bool = False
    """True makes ReadScanImage announce a SHA-256 that the bytes it sends do not have."""
    signing_public_key: str = ""
    certificate_document: bytes = b""
    """What GetScanCertificate serves for a completed scan; empty serves a placeholder naming the scan."""
    issues_certificates: bool = True
    """False makes GetScanCertificate answer FAILED_PRECONDITION, as a unit that issued no certificate does."""

    def count(self, method: str) -> int:
        return self.calls.count(method)

    # --- Scans ---

    def new_scan(self, item_type: common_pb2.ItemType, partner_item_id: str) -> scan_service_pb2.Scan:
        scan_id = f"scan-{len(self.scans) + 1:04d}"
        scan = scan_service_pb2.Scan(
            name=f"scans/{scan_id}",
            item_type=item_type.name,
            partner_item_id=partner_item_id,
            state=scan_service_pb2.SCAN_STATE_IN_PROGRESS,
            create_time=stamp(len(self.scans)),
            update_time=stamp(len(self.scans)),
            regions=[
                scan_service_pb2.RegionProgress(
                    region=r.name, material=r.material, min_images=r.min_images, hint=r.hint
                )
                for r in item_type.regions
            ],
            next_region=item_type.regions[0].name,
        )
        self.scans[scan_id] = scan
        return scan

    def add_image(
        self,
        scan: scan_service_pb2.Scan,
        region: str,
        quality: common_pb2.QualityReport,
        origin: int,
        data: bytes,
    ) -> scan_service_pb2.ScanImage:
        image = scan_service_pb2.ScanImage(
            name=f"{scan.name}/images/img-{len(scan.images) + 1}",
            image_id=f"img-{len(scan.images) + 1}",
            region=region,
            origin=origin,  # type: ignore[arg-type]
            quality=quality,
            metadata=common_pb2.ImageMetadata(
                width=4056,
                height=3040,
                exposure_us=8000,
                analogue_gain=1.5,
                lighting=common_pb2.LIGHTING_CHANNEL_WHITE_RING,
                led_duty_pct=60,
                focus_steps=1200,
                device_id="VS-0001" if origin == scan_service_pb2.IMAGE_ORIGIN_CAMERA else "",
                capture_time=stamp(60),
                camera_model="simulated",
            ),
            sha256=hashlib.sha256(data).hexdigest(),
            size_bytes=len(data),
            format=common_pb2.IMAGE_FORMAT_JPEG if data.startswith(JPEG_MAGIC[:3]) else common_pb2.IMAGE_FORMAT_PNG,
        )
        self.images[image.name] = data
        scan.images.append(image)
        for progress in scan.regions:
            if progress.region == region:
                if quality.ok:
                    progress.accepted_images += 1
                else:
                    progress.rejected_images += 1
        scan.next_region = next((p.region for p in scan.regions if p.accepted_images < p.min_images), "")
        return image

    def complete(self, scan: scan_service_pb2.Scan) -> None:
        verdict, reason, score = self.verdict
        regions = []
        short = [p for p in scan.regions if p.accepted_images < p.min_images]
        for progress in scan.regions:
            images = [
                scan_service_pb2.ImageResult(
                    image_id=i.image_id,
                    quality=i.quality,
                    **({"score": 0.9, "familiarity": 0.8} if i.quality.ok else {}),
                )
                for i in scan.images
                if i.region == progress.region
            ]
            extra: dict[str, Any] = {"score": 0.9, "familiarity": 0.8} if progress.accepted_images else {}
            regions.append(
                scan_service_pb2.RegionResult(
                    region=progress.region,
                    material=progress.material,
                    images=images,
                    explanations=[f"{progress.material} grain matches genuine references"],
                    **extra,
                )
            )
        if short:
            verdict = scan_service_pb2.VERDICT_UNVERIFIED
            rejected = any(p.rejected_images for p in short)
            reason = (
                scan_service_pb2.VERDICT_REASON_INSUFFICIENT_QUALITY
                if rejected
                else scan_service_pb2.VERDICT_REASON_INSUFFICIENT_COVERAGE
            )
            score = 0.0
        summary = "Looks genuine." if verdict == scan_service_pb2.VERDICT_AUTHENTIC else "Could not verify."
        scan.result.CopyFrom(
            scan_service_pb2.ScanResult(
                verdict=verdict,  # type: ignore[arg-type]
                reason=reason,  # type: ignore[arg-type]
                score=score,
                model=MODEL,
                regions=regions,
                complete_time=stamp(120),
                threshold=0.8,
                summary=summary,
            )
        )
        scan.state = scan_service_pb2.SCAN_STATE_COMPLETED


def _scan_or_abort(unit: FakeUnit, name: str, context: grpc.ServicerContext) -> scan_service_pb2.Scan:
    scan = unit.scans.get(name.removeprefix("scans/"))
    if scan is None:
        context.abort(grpc.StatusCode.NOT_FOUND, f'scan "{name.removeprefix("scans/")}" not found')
    assert scan is not None
    return scan


def _in_progress_or_abort(scan: scan_service_pb2.Scan, context: grpc.ServicerContext) -> None:
    if scan.state != scan_service_pb2.SCAN_STATE_IN_PROGRESS:
        context.abort(
            grpc.StatusCode.FAILED_PRECONDITION, f"{scan.name} is {scan_service_pb2.ScanState.Name(scan.state)}"
        )


def fake_png_of(jpeg: bytes) -> bytes:
    """What the fake unit sends for a stored JPEG asked for as PNG: a stand-in PNG, the same for the same JPEG."""
    return PNG_MAGIC + hashlib.sha256(jpeg).digest() * 4


def _matches(scan: scan_service_pb2.Scan, text: str) -> bool:
    """The part of the ListScans filter the fake applies: its state, label and create_time >= conditions."""
    for condition in filter(None, (c.strip() for c in text.split(" AND "))):
        field_name, op, value = condition.split(" ", 2)
        value = value.strip('"')
        if field_name == "state":
            ok = scan_service_pb2.ScanState.Name(scan.state).removeprefix("SCAN_STATE_") == value
        elif field_name == "label":
            ok = (scan_service_pb2.ScanLabel.Name(scan.label).removeprefix("SCAN_LABEL_") == value) == (op == "=")
        elif field_name == "create_time" and op == ">=":
            ok = scan.create_time.ToDatetime(tzinfo=UTC) >= datetime.fromisoformat(value)
        else:
            continue  # conditions on other fields are recorded (last_list_request), not applied
        if not ok:
            return False
    return True


# --- Servicers ---------------------------------------------------------------------------------------------------


class FakeDeviceService(device_service_pb2_grpc.DeviceServiceServicer):
    def __init__(self, unit: FakeUnit) -> None:
        self.unit = unit

    def GetDevice(self, request: Any, context: Any) -> device_service_pb2.GetDeviceResponse:
        device = device_service_pb2.Device(
            name="device",
            device_id="VS-0001",
            hardware=device_service_pb2.Hardware(
                model="veriscope-sim",
                camera_model="simulated",
                sensor_width=4056,
                sensor_height=3040,
                controller=device_service_pb2.ControllerInfo(
                    connected=True, kind="simulated", firmware_version="1.0.0", protocol_version=1, build_id="f00d"
                ),
                simulated=True,
            ),
            software_version="0.1.0",
            active_model=MODEL,
            capabilities=[
                device_service_pb2.CAPABILITY_CAPTURE,
                device_service_pb2.CAPABILITY_UPLOAD,
                device_service_pb2.CAPABILITY_SIMULATION,
                99,  # type: ignore[list-item]  # a capability from a newer API: the SDK must skip it
            ],
            item_types=ITEM_TYPES,
            api_version="v1",
            signing_public_key=self.unit.signing_public_key,
        )
        return device_service_pb2.GetDeviceResponse(device=device)

    def GetStatus(self, request: Any, context: Any) -> device_service_pb2.GetStatusResponse:
        status = device_service_pb2.DeviceStatus(
            state=device_service_pb2.DEVICE_STATE_BUSY,
            message="scanning",
            uptime=duration_pb2.Duration(seconds=3723, nanos=250_000_000),
            active_scan="scans/scan-0042",
            controller_connected=True,
            board_temperature_c=float("nan"),
            focus_steps=1234,
            lit_channels=[common_pb2.LIGHTING_CHANNEL_WHITE_RING, common_pb2.LIGHTING_CHANNEL_UV],
            storage_free_bytes=12_000_000_000,
            read_time=stamp(5),
        )
        return device_service_pb2.GetStatusResponse(status=status)


class FakeCaptureService(capture_service_pb2_grpc.CaptureServiceServicer):
    def __init__(self, unit: FakeUnit) -> None:
        self.unit = unit
        self.last_request: capture_service_pb2.CaptureRequest | None = None

    def Capture(self, request: capture_service_pb2.CaptureRequest, context: Any) -> capture_service_pb2.CaptureResponse:
        self.last_request = request
        if request.lighting_sequence:
            frames = [
                capture_service_pb2.CapturedFrame(image=self._image(request, channel), quality=ok_report())
                for channel in request.lighting_sequence
            ]
            return capture_service_pb2.CaptureResponse(frames=frames)
        image = self._image(request, request.settings.lighting or common_pb2.LIGHTING_CHANNEL_WHITE_RING)
        return capture_service_pb2.CaptureResponse(image=image, quality=blurry_report(with_code=False))

    def _image(self, request: capture_service_pb2.CaptureRequest, lighting: Any) -> common_pb2.Image:
        jpeg = request.format == common_pb2.IMAGE_FORMAT_JPEG
        return common_pb2.Image(
            data=JPEG_MAGIC + bytes(self.unit.capture_size_bytes) if jpeg else png_bytes(self.unit.capture_size_bytes),
            format=common_pb2.IMAGE_FORMAT_JPEG if jpeg else common_pb2.IMAGE_FORMAT_PNG,
            metadata=common_pb2.ImageMetadata(
                width=4056,
                height=3040,
                exposure_us=request.settings.exposure_us or 8000,
                analogue_gain=2.0,
                lighting=lighting,
                led_duty_pct=50,
                focus_steps=request.settings.focus_steps,
                device_id="VS-0001",
                capture_time=stamp(10),
                camera_model="simulated",
            ),
        )

    def StreamPreview(self, request: capture_service_pb2.StreamPreviewRequest, context: Any) -> Iterator[Any]:
        frames = request.max_frames or 1_000_000
        for sequence in range(frames):
            if not context.is_active():
                return
            yield capture_service_pb2.StreamPreviewResponse(
                jpeg=JPEG_MAGIC + bytes([sequence % 256]),
                sequence=sequence,
                capture_time=stamp(sequence),
                width=request.width or 640,
                height=480,
                sharpness=100.0 + sequence,
            )

    def Autofocus(self, request: Any, context: Any) -> capture_service_pb2.AutofocusResponse:
        curve = [
            capture_service_pb2.FocusSample(position=p, sharpness=1000.0 - abs(p - 1200)) for p in (800, 1200, 1600)
        ]
        return capture_service_pb2.AutofocusResponse(
            converged=True, best_position=1200, best_sharpness=1000.0, curve=curve, steps_taken=3
        )


class FakeCalibrationService(calibration_service_pb2_grpc.CalibrationServiceServicer):
    def __init__(self, unit: FakeUnit) -> None:
        self.unit = unit

    def GetCalibration(self, request: calibration_service_pb2.GetCalibrationRequest, context: Any) -> Any:
        if request.name != "calibration":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"name must be 'calibration', got {request.name!r}")
        return calibration_service_pb2.GetCalibrationResponse(calibration=self.unit.calibration)

    def Calibrate(self, request: calibration_service_pb2.CalibrateRequest, context: Any) -> Any:
        if request.name != "calibration":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"name must be 'calibration', got {request.name!r}")
        self.unit.calibrate_requests.append(request)
        self.unit.calibration = fake_calibration(request)
        return calibration_service_pb2.CalibrateResponse(calibration=self.unit.calibration)


class FakeScanService(scan_service_pb2_grpc.ScanServiceServicer):
    def __init__(self, unit: FakeUnit) -> None:
        self.unit = unit
        self.last_list_request: scan_service_pb2.ListScansRequest | None = None

    def CreateScan(self, request: scan_service_pb2.CreateScanRequest, context: Any) -> Any:
        item_type = next((t for t in ITEM_TYPES if t.name == request.scan.item_type), None)
        if item_type is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f'item type "{request.scan.item_type}" not found')
        assert item_type is not None
        with self.unit.lock:
            scan = self.unit.new_scan(item_type, request.scan.partner_item_id)
            return scan_service_pb2.CreateScanResponse(scan=scan)

    def CaptureRegion(self, request: scan_service_pb2.CaptureRegionRequest, context: Any) -> Any:
        scan = _scan_or_abort(self.unit, request.name, context)
        _in_progress_or_abort(scan, context)
        if request.region not in [p.region for p in scan.regions]:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f'region "{request.region}" is not a region of {scan.item_type}'
            )
        quality = self.unit.capture_quality.popleft() if self.unit.capture_quality else ok_report()
        image = self.unit.add_image(scan, request.region, quality, scan_service_pb2.IMAGE_ORIGIN_CAMERA, b"camera")
        return scan_service_pb2.CaptureRegionResponse(image=image, retake_required=not quality.ok, scan=scan)

    def UploadImage(self, request_iterator: Any, context: Any) -> Any:
        first = next(request_iterator)
        if first.WhichOneof("payload") != "header":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be the header")
        header = first.header
        sizes: list[int] = []
        parts: list[bytes] = []
        for message in request_iterator:
            if message.WhichOneof("payload") != "chunk":
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "only one header is allowed")
            if len(message.chunk) > MiB:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"chunk of {len(message.chunk)} bytes exceeds 1 MiB")
            sizes.append(len(message.chunk))
            parts.append(message.chunk)
        data = b"".join(parts)
        if len(data) != header.size_bytes:
            context.abort(grpc.StatusCode.DATA_LOSS, f"received {len(data)} bytes, header said {header.size_bytes}")
        if hashlib.sha256(data).hexdigest() != header.sha256:
            context.abort(grpc.StatusCode.DATA_LOSS, "sha256 mismatch")
        scan = _scan_or_abort(self.unit, header.name, context)
        _in_progress_or_abort(scan, context)
        self.unit.uploads.append(Upload(scan.name.removeprefix("scans/"), header, data, sizes))
        quality = self.unit.upload_quality.popleft() if self.unit.upload_quality else ok_report()
        image = self.unit.add_image(scan, header.region, quality, scan_service_pb2.IMAGE_ORIGIN_UPLOAD, data)
        return scan_service_pb2.UploadImageResponse(image=image, scan=scan)

    def CompleteScan(self, request: scan_service_pb2.CompleteScanRequest, context: Any) -> Any:
        scan = _scan_or_abort(self.unit, request.name, context)
        _in_progress_or_abort(scan, context)
        self.unit.complete(scan)
        return scan_service_pb2.CompleteScanResponse(scan=scan)

    def GetScan(self, request: scan_service_pb2.GetScanRequest, context: Any) -> Any:
        return scan_service_pb2.GetScanResponse(scan=_scan_or_abort(self.unit, request.name, context))

    def ListScans(self, request: scan_service_pb2.ListScansRequest, context: Any) -> Any:
        self.last_list_request = request
        scans = sorted(self.unit.scans.values(), key=lambda s: s.create_time.seconds, reverse=True)
        scans = [s for s in scans if _matches(s, request.filter)]
        size = min(request.page_size or 50, self.unit.page_size_cap)
        offset = int(request.page_token or 0)
        page = scans[offset : offset + size]
        token = str(offset + size) if offset + size < len(scans) else ""
        return scan_service_pb2.ListScansResponse(scans=page, next_page_token=token)

    def WatchScan(self, request: scan_service_pb2.WatchScanRequest, context: Any) -> Iterator[Any]:
        scan = _scan_or_abort(self.unit, request.name, context)
        yield scan_service_pb2.WatchScanResponse(
            type=scan_service_pb2.SCAN_EVENT_TYPE_SNAPSHOT, event_time=stamp(1), scan=scan
        )
        yield scan_service_pb2.WatchScanResponse(
            type=scan_service_pb2.SCAN_EVENT_TYPE_RETAKE_REQUESTED,
            event_time=stamp(2),
            region="canvas",
            message="Press the scanner flat and refocus",
            scan=scan,
        )
        yield scan_service_pb2.WatchScanResponse(
            type=scan_service_pb2.SCAN_EVENT_TYPE_FINISHED, event_time=stamp(3), scan=scan
        )

    def CancelScan(self, request: scan_service_pb2.CancelScanRequest, context: Any) -> Any:
        scan = _scan_or_abort(self.unit, request.name, context)
        _in_progress_or_abort(scan, context)
        scan.state = scan_service_pb2.SCAN_STATE_CANCELLED
        return scan_service_pb2.CancelScanResponse(scan=scan)

    def LabelScan(self, request: scan_service_pb2.LabelScanRequest, context: Any) -> Any:
        scan = _scan_or_abort(self.unit, request.name, context)
        if scan.state != scan_service_pb2.SCAN_STATE_COMPLETED:
            state = scan_service_pb2.ScanState.Name(scan.state)
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{scan.name} is {state}; only COMPLETED scans")
        scan.label = request.label
        if request.label == scan_service_pb2.SCAN_LABEL_UNSPECIFIED:
            scan.ClearField("label_time")
        else:
            scan.label_time.CopyFrom(stamp(300))
        return scan_service_pb2.LabelScanResponse(scan=scan)

    def ReadScanImage(self, request: scan_service_pb2.ReadScanImageRequest, context: Any) -> Iterator[Any]:
        self.unit.image_reads.append(request)
        scan_name, _, image_id = request.name.partition("/images/")
        scan = _scan_or_abort(self.unit, scan_name, context)
        image = next((i for i in scan.images if i.image_id == image_id), None)
        if image is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f'image "{image_id}" of {scan.name} not found')
        assert image is not None
        data, fmt = self.unit.images[image.name], image.format
        if request.format == common_pb2.IMAGE_FORMAT_PNG and fmt == common_pb2.IMAGE_FORMAT_JPEG:
            data, fmt = fake_png_of(data), common_pb2.IMAGE_FORMAT_PNG
        digest = hashlib.sha256(data + (b"!" if self.unit.corrupt_reads else b"")).hexdigest()
        for n, offset in enumerate(range(0, len(data), MiB)):
            chunk = data[offset : offset + MiB]
            if n == 0:
                yield scan_service_pb2.ReadScanImageResponse(
                    image=image, chunk=chunk, format=fmt, size_bytes=len(data), sha256=digest
                )
            else:
                yield scan_service_pb2.ReadScanImageResponse(chunk=chunk)

    def GetScanCertificate(self, request: scan_service_pb2.GetScanCertificateRequest, context: Any) -> Any:
        parent, _, child = request.name.rpartition("/")
        if child != "certificate":
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"name must be 'scans/{{scan_id}}/certificate', got {request.name!r}"
            )
        scan = _scan_or_abort(self.unit, parent, context)
        if scan.state != scan_service_pb2.SCAN_STATE_COMPLETED:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{scan.name} is not COMPLETED")
        if not self.unit.issues_certificates:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{scan.name} was completed without a certificate")
        document = self.unit.certificate_document or f"certificate of {scan.name}\n".encode()
        certificate = scan_service_pb2.ScanCertificate(
            name=request.name, document=document, signing_key_sha256="cd" * 32
        )
        return scan_service_pb2.GetScanCertificateResponse(certificate=certificate)

    def GetScanExplanation(self, request: scan_service_pb2.GetScanExplanationRequest, context: Any) -> Any:
        parent, _, child = request.name.rpartition("/")
        if child != "explanation":
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"name must be 'scans/{{scan_id}}/explanation', got {request.name!r}"
            )
        scan = _scan_or_abort(self.unit, parent, context)
        if scan.state != scan_service_pb2.SCAN_STATE_COMPLETED:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{scan.name} is {scan_service_pb2.ScanState.Name(scan.state)}; only COMPLETED scans have an explanation",
            )
        materials = {p.region: p.material for p in scan.regions}
        images = [
            scan_service_pb2.ImageExplanation(
                image_id=i.image_id,
                region=i.region,
                material=materials[i.region],
                grid_rows=2,
                grid_cols=3,
                tile_scores=TILE_SCORES,
                tile_familiarity=TILE_FAMILIARITY,
                score_threshold=SCORE_THRESHOLD,
                familiarity_threshold=FAMILIARITY_THRESHOLD,
                tile_px=20,
                column_x_px=[0, 20, 40],
                row_y_px=[0, 20],
                heatmap_png=fake_heatmap_png(),
                heatmap_width_px=60,
                heatmap_height_px=40,
            )
            for i in scan.images
            if i.quality.ok
        ]
        explanation = scan_service_pb2.ScanExplanation(
            name=f"{scan.name}/explanation", images=images, regions=scan.result.regions, model=scan.result.model
        )
        return scan_service_pb2.GetScanExplanationResponse(explanation=explanation)


MODELS = [
    model_service_pb2.Model(
        name="models/veriscope-demo@1.2.0",
        ref=MODEL,
        active=True,
        materials=["coated-canvas", "leather"],
        lighting=[common_pb2.LIGHTING_CHANNEL_WHITE_RING, common_pb2.LIGHTING_CHANNEL_RAKING],
        input=model_service_pb2.ModelInput(
            width=224, height=224, channels=3, dtype="int8", scale=0.0078, zero_point=-1
        ),
        size_bytes=2_400_000,
        threshold=0.8,
        manifest_json='{"name": "veriscope-demo"}',
        create_time=stamp(-86400),
        item_types=ITEM_TYPES[:1],
    ),
    model_service_pb2.Model(
        name="models/veriscope-demo@1.1.0",
        ref=common_pb2.ModelRef(name="veriscope-demo", version="1.1.0", sha256="cd" * 32),
        threshold=0.75,
    ),
]


class FakeModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, unit: FakeUnit) -> None:
        self.unit = unit

    def ListModels(self, request: model_service_pb2.ListModelsRequest, context: Any) -> Any:
        # One model per page, so the SDK's paging is exercised.
        offset = int(request.page_token or 0)
        token = str(offset + 1) if offset + 1 < len(MODELS) else ""
        return model_service_pb2.ListModelsResponse(models=MODELS[offset : offset + 1], next_page_token=token)

    def GetModel(self, request: model_service_pb2.GetModelRequest, context: Any) -> Any:
        if request.name == "models/active":
            return model_service_pb2.GetModelResponse(model=MODELS[0])
        for model in MODELS:
            if model.name == request.name:
                return model_service_pb2.GetModelResponse(model=model)
        context.abort(grpc.StatusCode.NOT_FOUND, f'model "{request.name}" not found')


class FakeUpdateService(update_service_pb2_grpc.UpdateServiceServicer):
    def __init__(self, unit: FakeUnit) -> None:
        self.unit = unit

    def GetUpdateStatus(self, request: Any, context: Any) -> Any:
        return update_service_pb2.GetUpdateStatusResponse(
            slots=[
                update_service_pb2.Slot(
                    component=update_service_pb2.COMPONENT_MODEL,
                    label="a",
                    version="1.2.0",
                    state=update_service_pb2.SLOT_STATE_TRIAL,
                    install_time=stamp(30),
                ),
                update_service_pb2.Slot(
                    component=update_service_pb2.COMPONENT_DEVICE_SOFTWARE,
                    label="builtin",
                    version="0.1.0",
                    state=update_service_pb2.SLOT_STATE_ACTIVE,
                ),
            ]
        )


SOURCES = [
    simulation_service_pb2.SimulatedMaterial(
        name="coated-canvas", sources=["genuine", "counterfeit-a", "counterfeit-b"], superfake_sources=["counterfeit-b"]
    ),
    simulation_service_pb2.SimulatedMaterial(name="leather", sources=["genuine", "counterfeit-a"]),
]


class FakeSimulationService(simulation_service_pb2_grpc.SimulationServiceServicer):
    def __init__(self, unit: FakeUnit) -> None:
        self.unit = unit

    def PlaceItem(self, request: simulation_service_pb2.PlaceItemRequest, context: Any) -> Any:
        if request.item.source not in {"genuine", "counterfeit-a", "counterfeit-b"}:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f'unknown source "{request.item.source}"')
        self.unit.placed = request.item
        return simulation_service_pb2.PlaceItemResponse(item=request.item)

    def GetPlacedItem(self, request: Any, context: Any) -> Any:
        if self.unit.placed is None:
            return simulation_service_pb2.GetPlacedItemResponse()
        return simulation_service_pb2.GetPlacedItemResponse(item=self.unit.placed)

    def ClearItem(self, request: Any, context: Any) -> Any:
        self.unit.placed = None
        return simulation_service_pb2.ClearItemResponse()

    def ListSources(self, request: simulation_service_pb2.ListSourcesRequest, context: Any) -> Any:
        offset = int(request.page_token or 0)
        token = str(offset + 1) if offset + 1 < len(SOURCES) else ""
        return simulation_service_pb2.ListSourcesResponse(materials=SOURCES[offset : offset + 1], next_page_token=token)


# --- Fault injection ---------------------------------------------------------------------------------------------


class ScriptInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Records each call, then applies the unit's scripted delay and fault for its method before the servicer runs."""

    def __init__(self, unit: FakeUnit) -> None:
        self.unit = unit

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method.rsplit("/", 1)[-1]
        unit = self.unit

        def wrap(behavior: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
            def scripted(request: Any, context: grpc.ServicerContext) -> Any:
                unit.calls.append(method)
                unit.called[method].set()
                unit.metadata.append({k: str(v) for k, v in context.invocation_metadata()})
                delay = unit.delays_s.get(method)
                if delay:
                    unit.release.wait(delay)
                fault = unit.faults.get(method)
                if fault is not None:
                    context.abort(*fault)
                return behavior(request, context)

            return scripted

        for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            behavior = getattr(handler, kind)
            if behavior is not None:
                return handler._replace(**{kind: wrap(behavior)})
        return handler


@dataclass
class FakeServer:
    """A running in-process server around a FakeUnit."""

    unit: FakeUnit
    address: str
    server: grpc.Server
    capture: FakeCaptureService
    scan: FakeScanService

    def stop(self) -> None:
        self.unit.release.set()
        self.server.stop(None)


def start_server(unit: FakeUnit) -> FakeServer:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8),
        interceptors=[ScriptInterceptor(unit)],
        options=[("grpc.max_receive_message_length", 64 * MiB), ("grpc.max_send_message_length", 64 * MiB)],
    )
    capture = FakeCaptureService(unit)
    scan = FakeScanService(unit)
    device_service_pb2_grpc.add_DeviceServiceServicer_to_server(FakeDeviceService(unit), server)
    capture_service_pb2_grpc.add_CaptureServiceServicer_to_server(capture, server)
    calibration_service_pb2_grpc.add_CalibrationServiceServicer_to_server(FakeCalibrationService(unit), server)
    scan_service_pb2_grpc.add_ScanServiceServicer_to_server(scan, server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(FakeModelService(unit), server)
    update_service_pb2_grpc.add_UpdateServiceServicer_to_server(FakeUpdateService(unit), server)
    simulation_service_pb2_grpc.add_SimulationServiceServicer_to_server(FakeSimulationService(unit), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return FakeServer(unit=unit, address=f"127.0.0.1:{port}", server=server, capture=capture, scan=scan)
