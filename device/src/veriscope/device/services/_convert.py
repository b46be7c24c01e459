"""Conversions between the daemon's records and veriscope.v1 messages."""

from __future__ import annotations

from datetime import datetime

from google.protobuf import timestamp_pb2

from veriscope.device.codec import ImageFormat
from veriscope.device.errors import InvalidArgument
from veriscope.device.pipeline.quality import QualityReport
from veriscope.device.scans.records import (
    ImageExplanation,
    ImageMeta,
    ImageOrigin,
    ImageRecord,
    RegionOutcome,
    ScanLabel,
    ScanRecord,
    ScanState,
)
from veriscope.device.types import CaptureSettings, Lighting
from veriscope.v1 import common_pb2, scan_service_pb2

LIGHTING_TO_PB = {
    Lighting.WHITE_RING: common_pb2.LIGHTING_CHANNEL_WHITE_RING,
    Lighting.RAKING: common_pb2.LIGHTING_CHANNEL_RAKING,
    Lighting.UV: common_pb2.LIGHTING_CHANNEL_UV,
    Lighting.OFF: common_pb2.LIGHTING_CHANNEL_OFF,
}
LIGHTING_FROM_PB = {v: k for k, v in LIGHTING_TO_PB.items()}
FORMAT_TO_PB = {ImageFormat.PNG: common_pb2.IMAGE_FORMAT_PNG, ImageFormat.JPEG: common_pb2.IMAGE_FORMAT_JPEG}
STATE_TO_PB = {
    ScanState.IN_PROGRESS: scan_service_pb2.SCAN_STATE_IN_PROGRESS,
    ScanState.COMPLETED: scan_service_pb2.SCAN_STATE_COMPLETED,
    ScanState.CANCELLED: scan_service_pb2.SCAN_STATE_CANCELLED,
    ScanState.FAILED: scan_service_pb2.SCAN_STATE_FAILED,
    ScanState.INTERRUPTED: scan_service_pb2.SCAN_STATE_INTERRUPTED,
}
LABEL_TO_PB = {
    None: scan_service_pb2.SCAN_LABEL_UNSPECIFIED,
    ScanLabel.GENUINE: scan_service_pb2.SCAN_LABEL_GENUINE,
    ScanLabel.COUNTERFEIT: scan_service_pb2.SCAN_LABEL_COUNTERFEIT,
}
LABEL_FROM_PB = {v: k for k, v in LABEL_TO_PB.items()}
VERDICT_TO_PB = {"AUTHENTIC": scan_service_pb2.VERDICT_AUTHENTIC, "UNVERIFIED": scan_service_pb2.VERDICT_UNVERIFIED}
REASON_TO_PB = {
    None: scan_service_pb2.VERDICT_REASON_UNSPECIFIED,
    "COUNTERFEIT_INDICATORS": scan_service_pb2.VERDICT_REASON_COUNTERFEIT_INDICATORS,
    "UNFAMILIAR_MATERIAL": scan_service_pb2.VERDICT_REASON_UNFAMILIAR_MATERIAL,
    "INSUFFICIENT_QUALITY": scan_service_pb2.VERDICT_REASON_INSUFFICIENT_QUALITY,
    "INSUFFICIENT_COVERAGE": scan_service_pb2.VERDICT_REASON_INSUFFICIENT_COVERAGE,
}
ISSUE_TO_PB = {
    "out_of_focus": common_pb2.QUALITY_ISSUE_KIND_OUT_OF_FOCUS,
    "underexposed": common_pb2.QUALITY_ISSUE_KIND_UNDEREXPOSED,
    "overexposed": common_pb2.QUALITY_ISSUE_KIND_OVEREXPOSED,
    "glare": common_pb2.QUALITY_ISSUE_KIND_GLARE,
    "motion_blur": common_pb2.QUALITY_ISSUE_KIND_MOTION_BLUR,
    "uneven_focus": common_pb2.QUALITY_ISSUE_KIND_UNEVEN_FOCUS,
    "unreadable": common_pb2.QUALITY_ISSUE_KIND_UNREADABLE,
}


def timestamp(when: datetime) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp of an aware datetime."""
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(when)
    return ts


def lighting_from_pb(value: int, field: str) -> Lighting:
    """A lighting enum from the wire; UNSPECIFIED means the white ring."""
    if value == common_pb2.LIGHTING_CHANNEL_UNSPECIFIED:
        return Lighting.WHITE_RING
    try:
        return LIGHTING_FROM_PB[value]  # type: ignore[index]
    except KeyError:
        raise InvalidArgument(f"{field} has unknown lighting channel value {value}") from None


def settings_from_pb(msg: common_pb2.CaptureSettings, field: str = "settings") -> CaptureSettings:
    """Capture settings from the wire, with 0 meaning "device decides"."""
    if msg.analogue_gain != msg.analogue_gain:  # NaN
        raise InvalidArgument(f"{field}.analogue_gain must be a number")
    return CaptureSettings(
        exposure_us=msg.exposure_us or None,
        analogue_gain=msg.analogue_gain or None,
        lighting=lighting_from_pb(msg.lighting, f"{field}.lighting"),
        led_duty_pct=msg.led_duty_pct or None,
        focus_steps=msg.focus_steps if msg.HasField("focus_steps") else None,
        lens_position=msg.lens_position if msg.HasField("lens_position") else None,
    )


def quality_to_pb(report: QualityReport) -> common_pb2.QualityReport:
    """The quality gate's report on the wire."""
    return common_pb2.QualityReport(
        ok=report.ok,
        issues=[
            common_pb2.QualityIssue(
                kind=ISSUE_TO_PB.get(i.code, common_pb2.QUALITY_ISSUE_KIND_UNSPECIFIED),
                code=i.code,
                hint=i.hint,
                value=i.value,
                threshold=i.threshold,
            )
            for i in report.issues
        ],
        metrics=[common_pb2.QualityMetric(name=k, value=v) for k, v in sorted(report.metrics.items())],
    )


def meta_to_pb(meta: ImageMeta) -> common_pb2.ImageMetadata:
    """Image metadata on the wire."""
    return common_pb2.ImageMetadata(
        width=meta.width,
        height=meta.height,
        exposure_us=meta.exposure_us,
        analogue_gain=meta.analogue_gain,
        lighting=LIGHTING_TO_PB[meta.lighting] if meta.lighting else common_pb2.LIGHTING_CHANNEL_UNSPECIFIED,
        led_duty_pct=meta.led_duty_pct,
        focus_steps=meta.focus_steps,
        lens_position=meta.lens_position,
        device_id=meta.device_id,
        capture_time=timestamp(meta.capture_time),
        camera_model=meta.camera_model,
        calibration_id=meta.calibration_id,
        calibration_time=timestamp(meta.calibration_time) if meta.calibration_time else None,
    )


def image_to_pb(scan_id: str, image: ImageRecord) -> scan_service_pb2.ScanImage:
    """A scan image on the wire."""
    return scan_service_pb2.ScanImage(
        name=f"scans/{scan_id}/images/{image.image_id}",
        image_id=image.image_id,
        region=image.region,
        origin=scan_service_pb2.IMAGE_ORIGIN_CAMERA
        if image.origin is ImageOrigin.CAMERA
        else scan_service_pb2.IMAGE_ORIGIN_UPLOAD,
        quality=quality_to_pb(image.quality),
        metadata=meta_to_pb(image.meta),
        sha256=image.sha256,
        size_bytes=image.size_bytes,
        format=FORMAT_TO_PB[image.format],
    )


def scan_to_pb(scan: ScanRecord, region_specs: list[object], next_region: str) -> scan_service_pb2.Scan:
    """A scan on the wire, with progress per region computed from its images."""
    msg = scan_service_pb2.Scan(
        name=scan.name,
        item_type=scan.item_type,
        partner_item_id=scan.partner_item_id,
        state=STATE_TO_PB[scan.state],
        create_time=timestamp(scan.create_time),
        update_time=timestamp(scan.update_time),
        images=[image_to_pb(scan.scan_id, i) for i in scan.images],
        next_region=next_region if scan.state is ScanState.IN_PROGRESS else "",
        error_message=scan.error_message,
        label=LABEL_TO_PB[scan.label],
        label_time=timestamp(scan.label_time) if scan.label_time else None,
    )
    for spec in region_specs:
        name = str(getattr(spec, "name", ""))
        msg.regions.append(
            scan_service_pb2.RegionProgress(
                region=name,
                material=str(getattr(spec, "material", "")),
                min_images=int(getattr(spec, "min_images", 0)),
                accepted_images=sum(1 for i in scan.images if i.region == name and i.quality.ok),
                rejected_images=sum(1 for i in scan.images if i.region == name and not i.quality.ok),
                hint=str(getattr(spec, "hint", "")),
            )
        )
    out = scan.outcome
    if out is not None:
        result = msg.result
        result.verdict = VERDICT_TO_PB[out.verdict]
        result.reason = REASON_TO_PB[out.reason]
        result.score = out.score
        result.threshold = out.threshold
        result.summary = out.summary
        result.model.CopyFrom(
            common_pb2.ModelRef(name=out.model_name, version=out.model_version, sha256=out.model_sha256)
        )
        result.complete_time.CopyFrom(timestamp(out.complete_time))
        result.regions.extend(region_results_to_pb(scan))
    return msg


def region_results_to_pb(scan: ScanRecord) -> list[scan_service_pb2.RegionResult]:
    """The per-region results of a completed scan on the wire; empty before it completes."""
    if scan.outcome is None:
        return []
    quality_by_id = {i.image_id: i.quality for i in scan.images}
    return [_region_result_to_pb(r, quality_by_id) for r in scan.outcome.regions]


def _region_result_to_pb(r: RegionOutcome, quality_by_id: dict[str, QualityReport]) -> scan_service_pb2.RegionResult:
    region = scan_service_pb2.RegionResult(region=r.region, material=r.material, explanations=list(r.explanations))
    if r.score is not None:
        region.score = r.score
    if r.familiarity is not None:
        region.familiarity = r.familiarity
    for i in r.images:
        img = region.images.add(image_id=i.image_id)
        if i.score is not None:
            img.score = i.score
        if i.familiarity is not None:
            img.familiarity = i.familiarity
        if i.image_id in quality_by_id:
            img.quality.CopyFrom(quality_to_pb(quality_by_id[i.image_id]))
    return region


def explanation_to_pb(scan: ScanRecord, images: tuple[ImageExplanation, ...]) -> scan_service_pb2.ScanExplanation:
    """The explanation of a completed scan on the wire: its images' tile grids and heat-maps, and its regions."""
    out = scan.outcome
    msg = scan_service_pb2.ScanExplanation(name=f"{scan.name}/explanation", regions=region_results_to_pb(scan))
    if out is not None:
        msg.model.CopyFrom(common_pb2.ModelRef(name=out.model_name, version=out.model_version, sha256=out.model_sha256))
    for image in images:
        tiles = image.tiles
        msg.images.add(
            image_id=image.image_id,
            region=image.region,
            material=image.material,
            grid_rows=tiles.grid_rows,
            grid_cols=tiles.grid_cols,
            tile_scores=tiles.scores,
            tile_familiarity=tiles.familiarity,
            score_threshold=tiles.score_threshold,
            familiarity_threshold=tiles.familiarity_threshold,
            tile_px=tiles.tile_px,
            column_x_px=image.column_x_px,
            row_y_px=image.row_y_px,
            heatmap_png=image.png,
            heatmap_width_px=image.width_px,
            heatmap_height_px=image.height_px,
        )
    return msg
