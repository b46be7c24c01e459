"""Translation between veriscope.v1 wire messages and the SDK's models (``_models``).

Every function here is pure. Responses that break the API's promises (a scan
name that is not ``"scans/{id}"``, a verdict this SDK does not know) raise
:class:`ProtocolError`; state-like enums the SDK does not know map to their
``UNSPECIFIED`` member instead, so a newer device does not break listings.
"""

from __future__ import annotations

import enum
import hashlib
import math
from datetime import UTC, datetime
from typing import Any, TypeVar

from google.protobuf import timestamp_pb2

from veriscope.sdk._exceptions import DataLossError, ProtocolError
from veriscope.sdk._models import (
    AutofocusResult,
    Calibration,
    CalibrationState,
    Capability,
    CaptureResult,
    CaptureSettings,
    ChannelCalibration,
    Component,
    ControllerInfo,
    DeviceInfo,
    DeviceState,
    DeviceStatus,
    FocusSample,
    Hardware,
    ImageFormat,
    ImageHeatmap,
    ImageMetadata,
    ImageOrigin,
    ImageResult,
    ImageUpload,
    ItemType,
    LightingChannel,
    LogEntry,
    LogLevel,
    ModelInfo,
    ModelInput,
    ModelRef,
    PlacedItem,
    PreviewFrame,
    QualityIssue,
    QualityReport,
    Reason,
    Region,
    RegionCapture,
    RegionProgress,
    RegionResult,
    Scan,
    ScanCertificate,
    ScanEvent,
    ScanEventType,
    ScanExplanation,
    ScanImage,
    ScanLabel,
    ScanPage,
    ScanResult,
    ScanState,
    SelfTestCheck,
    SelfTestImage,
    SelfTestStatus,
    SimulatedMaterial,
    Slot,
    SlotState,
    UpdateStatus,
    Verdict,
    WhiteBalanceGains,
)
from veriscope.v1 import (
    calibration_service_pb2,
    capture_service_pb2,
    common_pb2,
    device_service_pb2,
    model_service_pb2,
    scan_service_pb2,
    simulation_service_pb2,
    update_service_pb2,
)

E = TypeVar("E", bound=enum.Enum)

SCAN_NAME_PREFIX = "scans/"
CALIBRATION_NAME = "calibration"
"""Resource name of the unit's singleton calibration."""

# (SDK enum, generated enum wrapper, prefix of the wire names). Tests walk this table to prove both sides agree.
ENUM_PAIRS: tuple[tuple[type[enum.Enum], Any, str], ...] = (
    (LightingChannel, common_pb2.LightingChannel, "LIGHTING_CHANNEL_"),
    (ImageFormat, common_pb2.ImageFormat, "IMAGE_FORMAT_"),
    (Capability, device_service_pb2.Capability, "CAPABILITY_"),
    (DeviceState, device_service_pb2.DeviceState, "DEVICE_STATE_"),
    (ScanState, scan_service_pb2.ScanState, "SCAN_STATE_"),
    (Verdict, scan_service_pb2.Verdict, "VERDICT_"),
    (Reason, scan_service_pb2.VerdictReason, "VERDICT_REASON_"),
    (ImageOrigin, scan_service_pb2.ImageOrigin, "IMAGE_ORIGIN_"),
    (ScanLabel, scan_service_pb2.ScanLabel, "SCAN_LABEL_"),
    (ScanEventType, scan_service_pb2.ScanEventType, "SCAN_EVENT_TYPE_"),
    (Component, update_service_pb2.Component, "COMPONENT_"),
    (SlotState, update_service_pb2.SlotState, "SLOT_STATE_"),
    (CalibrationState, calibration_service_pb2.CalibrationState, "CALIBRATION_STATE_"),
    (SelfTestStatus, device_service_pb2.SelfTestStatus, "SELF_TEST_STATUS_"),
    (LogLevel, device_service_pb2.LogLevel, "LOG_LEVEL_"),
)
_PREFIX: dict[type[enum.Enum], tuple[Any, str]] = {sdk: (wire, prefix) for sdk, wire, prefix in ENUM_PAIRS}


def enum_from_pb(sdk_enum: type[E], value: int) -> E | None:
    """Map a wire enum number to the SDK member of the same name; None for UNSPECIFIED-less enums and unknown numbers."""
    wire, prefix = _PREFIX[sdk_enum]
    try:
        name: str = wire.Name(value)
    except ValueError:
        return None
    return sdk_enum.__members__.get(name.removeprefix(prefix))


def enum_to_pb(member: enum.Enum | None) -> int:
    """Map an SDK enum member to its wire number; None maps to 0 (UNSPECIFIED)."""
    if member is None:
        return 0
    wire, prefix = _PREFIX[type(member)]
    number: int = wire.Value(prefix + member.name)
    return number


def _state(sdk_enum: type[E], value: int) -> E:
    member = enum_from_pb(sdk_enum, value)
    return member if member is not None else sdk_enum["UNSPECIFIED"]


def _time(msg: Any, field_name: str) -> datetime | None:
    if not msg.HasField(field_name):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(msg, field_name)
    return stamp.ToDatetime(tzinfo=UTC)


def _or_none(value: str) -> str | None:
    return value or None


def scan_name(scan_id: str) -> str:
    """Return the resource name of a scan id."""
    return SCAN_NAME_PREFIX + scan_id


def scan_id_from_name(name: str) -> str:
    """Return the id of a ``"scans/{scan_id}"`` name; raise ProtocolError for anything else."""
    scan_id = name.removeprefix(SCAN_NAME_PREFIX)
    if not name.startswith(SCAN_NAME_PREFIX) or not scan_id or "/" in scan_id:
        raise ProtocolError(f"device sent scan name {name!r}, expected 'scans/{{scan_id}}'")
    return scan_id


# --- Shared messages ---------------------------------------------------------------------------------------------


def model_ref_from_pb(pb: common_pb2.ModelRef) -> ModelRef:
    return ModelRef(name=pb.name, version=pb.version, sha256=pb.sha256)


def item_type_from_pb(pb: common_pb2.ItemType) -> ItemType:
    return ItemType(
        name=pb.name,
        display_name=pb.display_name or pb.name,
        regions=tuple(
            Region(name=r.name, material=r.material, min_images=r.min_images, hint=r.hint) for r in pb.regions
        ),
    )


def quality_issue_from_pb(pb: common_pb2.QualityIssue) -> QualityIssue:
    code = pb.code
    if not code:
        # Older or terser devices may send only the kind; derive the same stable name from it.
        kind = common_pb2.QualityIssueKind.DESCRIPTOR.values_by_number.get(pb.kind)
        code = kind.name.removeprefix("QUALITY_ISSUE_KIND_").lower() if kind is not None and pb.kind else "unknown"
    return QualityIssue(code=code, hint=pb.hint, value=pb.value, threshold=pb.threshold)


def quality_from_pb(pb: common_pb2.QualityReport) -> QualityReport:
    return QualityReport(
        ok=pb.ok,
        issues=tuple(quality_issue_from_pb(issue) for issue in pb.issues),
        metrics={metric.name: metric.value for metric in pb.metrics},
    )


def metadata_from_pb(pb: common_pb2.ImageMetadata) -> ImageMetadata:
    return ImageMetadata(
        width_px=pb.width,
        height_px=pb.height,
        exposure_us=pb.exposure_us,
        analogue_gain=pb.analogue_gain,
        lighting=enum_from_pb(LightingChannel, pb.lighting),
        led_duty_pct=pb.led_duty_pct,
        focus_steps=pb.focus_steps,
        lens_position=pb.lens_position,
        device_id=_or_none(pb.device_id),
        capture_time=_time(pb, "capture_time"),
        camera_model=pb.camera_model,
        calibration_id=_or_none(pb.calibration_id),
        calibration_time=_time(pb, "calibration_time"),
    )


def capture_settings_to_pb(settings: CaptureSettings | None) -> common_pb2.CaptureSettings:
    """Build the wire settings; unset fields stay 0/absent so the device chooses."""
    pb = common_pb2.CaptureSettings()
    if settings is None:
        return pb
    pb.exposure_us = settings.exposure_us or 0
    pb.analogue_gain = settings.analogue_gain or 0.0
    pb.lighting = enum_to_pb(settings.lighting)  # type: ignore[assignment]
    pb.led_duty_pct = settings.led_duty_pct or 0
    if settings.focus_steps is not None:
        pb.focus_steps = settings.focus_steps
    if settings.lens_position is not None:
        pb.lens_position = settings.lens_position
    return pb


# --- Device ------------------------------------------------------------------------------------------------------


def device_from_pb(pb: device_service_pb2.Device) -> DeviceInfo:
    hw = pb.hardware
    ctl = hw.controller
    capabilities = (enum_from_pb(Capability, c) for c in pb.capabilities)
    return DeviceInfo(
        device_id=pb.device_id,
        software_version=pb.software_version,
        api_version=pb.api_version,
        model=model_ref_from_pb(pb.active_model) if pb.HasField("active_model") else None,
        hardware=Hardware(
            model=hw.model,
            camera_model=hw.camera_model,
            sensor_width_px=hw.sensor_width,
            sensor_height_px=hw.sensor_height,
            controller=ControllerInfo(
                connected=ctl.connected,
                kind=ctl.kind,
                firmware_version=ctl.firmware_version,
                protocol_version=ctl.protocol_version,
                build_id=ctl.build_id,
            ),
            simulated=hw.simulated,
        ),
        capabilities=frozenset(c for c in capabilities if c is not None),
        item_types=tuple(item_type_from_pb(t) for t in pb.item_types),
        signing_public_key=_or_none(pb.signing_public_key),
    )


def status_from_pb(pb: device_service_pb2.DeviceStatus) -> DeviceStatus:
    lit = (enum_from_pb(LightingChannel, c) for c in pb.lit_channels)
    temperature = pb.board_temperature_c
    return DeviceStatus(
        state=_state(DeviceState, pb.state),
        message=pb.message,
        uptime=pb.uptime.ToTimedelta(),
        active_scan_id=scan_id_from_name(pb.active_scan) if pb.active_scan else None,
        controller_connected=pb.controller_connected,
        board_temperature_c=None if math.isnan(temperature) else temperature,
        focus_steps=pb.focus_steps,
        lit_channels=tuple(c for c in lit if c is not None),
        storage_free_bytes=pb.storage_free_bytes,
        read_time=_time(pb, "read_time"),
    )


# --- Capture -----------------------------------------------------------------------------------------------------


def capture_from_pb(pb: capture_service_pb2.CaptureResponse) -> CaptureResult:
    return CaptureResult(
        data=pb.image.data,
        format=enum_from_pb(ImageFormat, pb.image.format),
        metadata=metadata_from_pb(pb.image.metadata),
        quality=quality_from_pb(pb.quality),
    )


def capture_sequence_from_pb(pb: capture_service_pb2.CaptureResponse) -> tuple[CaptureResult, ...]:
    return tuple(
        CaptureResult(
            data=frame.image.data,
            format=enum_from_pb(ImageFormat, frame.image.format),
            metadata=metadata_from_pb(frame.image.metadata),
            quality=quality_from_pb(frame.quality),
        )
        for frame in pb.frames
    )


def preview_frame_from_pb(pb: capture_service_pb2.StreamPreviewResponse) -> PreviewFrame:
    return PreviewFrame(
        jpeg=pb.jpeg,
        sequence=pb.sequence,
        capture_time=_time(pb, "capture_time"),
        width_px=pb.width,
        height_px=pb.height,
        sharpness=pb.sharpness,
    )


def autofocus_from_pb(pb: capture_service_pb2.AutofocusResponse) -> AutofocusResult:
    return AutofocusResult(
        converged=pb.converged,
        best_position=pb.best_position,
        best_sharpness=pb.best_sharpness,
        curve=tuple(FocusSample(position=s.position, sharpness=s.sharpness) for s in pb.curve),
        steps_taken=pb.steps_taken,
    )


# --- Calibration -------------------------------------------------------------------------------------------------


def white_balance_from_pb(pb: calibration_service_pb2.WhiteBalanceGains) -> WhiteBalanceGains:
    return WhiteBalanceGains(red=pb.red, green=pb.green, blue=pb.blue)


def calibration_from_pb(pb: calibration_service_pb2.Calibration) -> Calibration:
    gains = white_balance_from_pb(pb.white_balance_gains) if pb.HasField("white_balance_gains") else None
    return Calibration(
        state=_state(CalibrationState, pb.state),
        calibration_id=_or_none(pb.calibration_id),
        create_time=_time(pb, "create_time"),
        device_id=_or_none(pb.device_id),
        camera_model=_or_none(pb.camera_model),
        frames=pb.frames,
        vignetting_depth=pb.vignetting_depth,
        white_balance_gains=gains,
        channels=tuple(
            ChannelCalibration(
                lighting=enum_from_pb(LightingChannel, c.lighting),
                exposure_us=c.exposure_us,
                analogue_gain=c.analogue_gain,
                vignetting_depth=c.vignetting_depth,
                white_balance_gains=white_balance_from_pb(c.white_balance_gains),
                texture=c.texture,
                level=c.level,
            )
            for c in pb.channels
        ),
        storage_path=_or_none(pb.storage_path),
        problem=_or_none(pb.problem),
    )


# --- Scans -------------------------------------------------------------------------------------------------------


def scan_image_from_pb(pb: scan_service_pb2.ScanImage) -> ScanImage:
    return ScanImage(
        image_id=pb.image_id,
        region=pb.region,
        origin=_state(ImageOrigin, pb.origin),
        quality=quality_from_pb(pb.quality),
        metadata=metadata_from_pb(pb.metadata) if pb.HasField("metadata") else None,
        sha256=pb.sha256,
        size_bytes=pb.size_bytes,
        format=enum_from_pb(ImageFormat, pb.format),
    )


def _optional(msg: Any, field_name: str) -> float | None:
    if not msg.HasField(field_name):
        return None
    value: float = getattr(msg, field_name)
    return value


def scan_result_from_pb(scan: scan_service_pb2.Scan, scan_id: str) -> ScanResult:
    """Build the verdict of a completed scan; raise ProtocolError when its verdict or reason is unknown."""
    pb = scan.result
    verdict = enum_from_pb(Verdict, pb.verdict)
    if verdict is None:
        raise ProtocolError(f"scan {scan_id!r} has a result without a known verdict ({pb.verdict})")
    reason = enum_from_pb(Reason, pb.reason)
    if reason is None and pb.reason != scan_service_pb2.VERDICT_REASON_UNSPECIFIED:
        raise ProtocolError(f"scan {scan_id!r} has an unknown verdict reason ({pb.reason})")
    return ScanResult(
        scan_id=scan_id,
        item_type=scan.item_type,
        partner_item_id=_or_none(scan.partner_item_id),
        verdict=verdict,
        reason=reason,
        score=pb.score,
        threshold=pb.threshold,
        summary=pb.summary,
        model=model_ref_from_pb(pb.model),
        regions=tuple(region_result_from_pb(r) for r in pb.regions),
        complete_time=_time(pb, "complete_time"),
    )


def region_result_from_pb(pb: scan_service_pb2.RegionResult) -> RegionResult:
    return RegionResult(
        region=pb.region,
        material=pb.material,
        score=_optional(pb, "score"),
        familiarity=_optional(pb, "familiarity"),
        explanations=tuple(pb.explanations),
        images=tuple(
            ImageResult(
                image_id=i.image_id,
                score=_optional(i, "score"),
                familiarity=_optional(i, "familiarity"),
                quality=quality_from_pb(i.quality),
            )
            for i in pb.images
        ),
    )


def _grid(values: Any, rows: int, cols: int, what: str) -> tuple[tuple[float, ...], ...]:
    """Row-major wire values as ``rows`` tuples of ``cols``; ProtocolError when there are not rows x cols of them."""
    flat = [float(v) for v in values]
    if rows < 1 or cols < 1 or len(flat) != rows * cols:
        raise ProtocolError(f"device sent {len(flat)} {what} for a {rows}x{cols} tile grid")
    return tuple(tuple(flat[r * cols : (r + 1) * cols]) for r in range(rows))


def image_heatmap_from_pb(pb: scan_service_pb2.ImageExplanation) -> ImageHeatmap:
    """Build one image's heat-map; raise ProtocolError when its tile grid does not add up."""
    where = f"image {pb.image_id!r}"
    if len(pb.column_x_px) != pb.grid_cols or len(pb.row_y_px) != pb.grid_rows:
        raise ProtocolError(f"device sent tile positions for {where} that do not match its tile grid")
    return ImageHeatmap(
        image_id=pb.image_id,
        region=pb.region,
        material=pb.material,
        grid_rows=pb.grid_rows,
        grid_cols=pb.grid_cols,
        tile_scores=_grid(pb.tile_scores, pb.grid_rows, pb.grid_cols, f"tile scores for {where}"),
        tile_familiarity=_grid(pb.tile_familiarity, pb.grid_rows, pb.grid_cols, f"tile familiarity values for {where}"),
        score_threshold=pb.score_threshold,
        familiarity_threshold=pb.familiarity_threshold,
        tile_px=pb.tile_px,
        column_x_px=tuple(pb.column_x_px),
        row_y_px=tuple(pb.row_y_px),
        width_px=pb.heatmap_width_px,
        height_px=pb.heatmap_height_px,
        png=pb.heatmap_png,
    )


def scan_explanation_from_pb(pb: scan_service_pb2.GetScanExplanationResponse) -> ScanExplanation:
    """Build a scan's explanation; raise ProtocolError for a name that is not ``"scans/{id}/explanation"``."""
    explanation = pb.explanation
    parent, slash, child = explanation.name.rpartition("/")
    if not slash or child != "explanation":
        raise ProtocolError(f"device sent explanation name {explanation.name!r}, expected 'scans/{{id}}/explanation'")
    return ScanExplanation(
        scan_id=scan_id_from_name(parent),
        images=tuple(image_heatmap_from_pb(i) for i in explanation.images),
        regions=tuple(region_result_from_pb(r) for r in explanation.regions),
        model=model_ref_from_pb(explanation.model),
    )


def scan_certificate_from_pb(pb: scan_service_pb2.GetScanCertificateResponse) -> ScanCertificate:
    """Build a scan's certificate; raise ProtocolError for a name that is not ``"scans/{id}/certificate"`` or
    an empty document."""
    certificate = pb.certificate
    parent, slash, child = certificate.name.rpartition("/")
    if not slash or child != "certificate":
        raise ProtocolError(f"device sent certificate name {certificate.name!r}, expected 'scans/{{id}}/certificate'")
    scan_id = scan_id_from_name(parent)
    if not certificate.document:
        raise ProtocolError(f"device sent an empty certificate of scan {scan_id!r}")
    return ScanCertificate(
        scan_id=scan_id, document=certificate.document, signing_key_sha256=certificate.signing_key_sha256
    )


def scan_from_pb(pb: scan_service_pb2.Scan) -> Scan:
    """Build a scan; raise ProtocolError when its name or create_time is missing or malformed."""
    scan_id = scan_id_from_name(pb.name)
    create_time = _time(pb, "create_time")
    if create_time is None:
        raise ProtocolError(f"scan {scan_id!r} has no create_time")
    has_result = pb.HasField("result") and pb.result.verdict != scan_service_pb2.VERDICT_UNSPECIFIED
    return Scan(
        scan_id=scan_id,
        item_type=pb.item_type,
        partner_item_id=_or_none(pb.partner_item_id),
        state=_state(ScanState, pb.state),
        create_time=create_time,
        update_time=_time(pb, "update_time"),
        regions=tuple(
            RegionProgress(
                region=r.region,
                material=r.material,
                min_images=r.min_images,
                accepted_images=r.accepted_images,
                rejected_images=r.rejected_images,
                hint=r.hint,
            )
            for r in pb.regions
        ),
        images=tuple(scan_image_from_pb(i) for i in pb.images),
        next_region=_or_none(pb.next_region),
        result=scan_result_from_pb(pb, scan_id) if has_result else None,
        error_message=_or_none(pb.error_message),
        label=enum_from_pb(ScanLabel, pb.label),
        label_time=_time(pb, "label_time"),
    )


def image_bytes_from_pb(
    responses: list[scan_service_pb2.ReadScanImageResponse], wanted: ImageFormat | None, method: str
) -> bytes:
    """Join a ReadScanImage stream into the image's bytes, checking them against the first message's size and SHA-256.

    Raises ProtocolError when the stream is empty, lacks its size or SHA-256, or
    is not in the ``wanted`` format (None accepts any), and DataLossError when
    the bytes received do not match the size or SHA-256 announced.
    """
    if not responses:
        raise ProtocolError("ReadScanImage sent no message", method=method)
    first = responses[0]
    if len(first.sha256) != 64 or not first.size_bytes:
        raise ProtocolError("ReadScanImage's first message lacks the image's size or SHA-256", method=method)
    sent = enum_from_pb(ImageFormat, first.format)
    if wanted is not None and sent is not wanted:
        got = "no format" if sent is None else sent.name
        raise ProtocolError(f"asked ReadScanImage for {wanted.name}, got {got}", method=method)
    data = b"".join(response.chunk for response in responses)
    if len(data) != first.size_bytes:
        raise DataLossError(f"received {len(data)} bytes of an image of {first.size_bytes} bytes", method=method)
    digest = hashlib.sha256(data).hexdigest()
    if digest != first.sha256.lower():
        raise DataLossError(f"image bytes hash to {digest}, the device announced {first.sha256}", method=method)
    return data


def scan_page_from_pb(pb: scan_service_pb2.ListScansResponse) -> ScanPage:
    return ScanPage(scans=tuple(scan_from_pb(s) for s in pb.scans), next_page_token=_or_none(pb.next_page_token))


def region_capture_from_pb(pb: scan_service_pb2.CaptureRegionResponse) -> RegionCapture:
    return RegionCapture(
        image=scan_image_from_pb(pb.image), retake_required=pb.retake_required, scan=scan_from_pb(pb.scan)
    )


def image_upload_from_pb(pb: scan_service_pb2.UploadImageResponse) -> ImageUpload:
    return ImageUpload(image=scan_image_from_pb(pb.image), scan=scan_from_pb(pb.scan))


def scan_event_from_pb(pb: scan_service_pb2.WatchScanResponse) -> ScanEvent:
    return ScanEvent(
        type=_state(ScanEventType, pb.type),
        scan=scan_from_pb(pb.scan),
        region=_or_none(pb.region),
        message=pb.message,
        event_time=_time(pb, "event_time"),
    )


# --- Models, updates, simulation ---------------------------------------------------------------------------------


def model_from_pb(pb: model_service_pb2.Model) -> ModelInfo:
    lighting = (enum_from_pb(LightingChannel, c) for c in pb.lighting)
    tensor = pb.input
    return ModelInfo(
        model_id=pb.name.removeprefix("models/"),
        ref=model_ref_from_pb(pb.ref),
        active=pb.active,
        materials=tuple(pb.materials),
        lighting=tuple(c for c in lighting if c is not None),
        input=ModelInput(
            width_px=tensor.width,
            height_px=tensor.height,
            channels=tensor.channels,
            dtype=tensor.dtype,
            scale=tensor.scale,
            zero_point=tensor.zero_point,
        )
        if pb.HasField("input")
        else None,
        size_bytes=pb.size_bytes,
        threshold=pb.threshold,
        manifest_json=pb.manifest_json,
        create_time=_time(pb, "create_time"),
        item_types=tuple(item_type_from_pb(t) for t in pb.item_types),
        slot=pb.slot,
        state=enum_from_pb(SlotState, pb.state) if pb.state else None,
    )


def update_status_from_pb(pb: update_service_pb2.GetUpdateStatusResponse) -> UpdateStatus:
    return UpdateStatus(
        slots=tuple(
            Slot(
                component=_state(Component, s.component),
                label=s.label,
                version=s.version,
                state=_state(SlotState, s.state),
                install_time=_time(s, "install_time"),
            )
            for s in pb.slots
        )
    )


def placed_item_from_pb(pb: simulation_service_pb2.PlacedItem) -> PlacedItem:
    return PlacedItem(item_type=pb.item_type, source=pb.source, seed=pb.seed)


def material_from_pb(pb: simulation_service_pb2.SimulatedMaterial) -> SimulatedMaterial:
    return SimulatedMaterial(name=pb.name, sources=tuple(pb.sources), superfake_sources=tuple(pb.superfake_sources))


def self_test_check_from_pb(
    pb: device_service_pb2.RunSelfTestResponse, images: tuple[SelfTestImage, ...]
) -> SelfTestCheck:
    """The check of a RunSelfTest message, with the images its earlier messages carried."""
    check = pb.check
    return SelfTestCheck(
        name=check.name,
        status=_state(SelfTestStatus, check.status),
        message=check.message,
        measurements=dict(check.measurements),
        images=images,
        duration=check.duration.ToTimedelta(),
        check_number=pb.check_number,
        total_checks=pb.total_checks,
    )


def self_test_image_from_pb(pb: device_service_pb2.SelfTestImage) -> SelfTestImage:
    return SelfTestImage(name=pb.name, png=pb.png_data)


def log_entries_from_pb(pb: device_service_pb2.ReadLogsResponse) -> list[LogEntry]:
    return [
        LogEntry(
            sequence=e.sequence,
            time=_time(e, "log_time"),
            level=enum_from_pb(LogLevel, e.level),
            logger=e.logger,
            message=e.message,
        )
        for e in pb.entries
    ]
