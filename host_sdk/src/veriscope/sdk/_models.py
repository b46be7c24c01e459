"""The SDK's data types: frozen dataclasses and enums that stand for the veriscope.v1 messages.

Nothing here knows about gRPC or protobuf (``_convert`` maps the wire messages to
these). Enum members are named after the wire enum values without their prefix,
and their values are those names, so ``Verdict.AUTHENTIC == "AUTHENTIC"``.
``to_dict()`` gives the JSON form the ``veriscope`` CLI prints: enums become their
names, times RFC 3339 strings in UTC, and image bytes are left out.
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any


def _rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _name(value: enum.Enum | None) -> str | None:
    return None if value is None else value.name


# --- Enums -------------------------------------------------------------------------------------------------------


class LightingChannel(enum.StrEnum):
    """A lighting channel of the controller board."""

    WHITE_RING = "WHITE_RING"
    """The diffuse white LED ring around the lens."""
    RAKING = "RAKING"
    """The low-angle raking LED that reveals surface relief."""
    UV = "UV"
    """The 365 nm ultraviolet LED that shows fluorescent coatings and threads."""
    OFF = "OFF"
    """All LEDs off: a dark frame."""


class ImageFormat(enum.StrEnum):
    """The encoding of an image."""

    PNG = "PNG"
    """Lossless PNG, 8 bits per channel, RGB."""
    JPEG = "JPEG"
    """Baseline JPEG, RGB."""


class Capability(enum.StrEnum):
    """Something a unit can do. Capabilities this SDK does not know are left out of ``DeviceInfo.capabilities``."""

    CAPTURE = "CAPTURE"
    PREVIEW = "PREVIEW"
    AUTOFOCUS = "AUTOFOCUS"
    LIGHTING_WHITE_RING = "LIGHTING_WHITE_RING"
    LIGHTING_RAKING = "LIGHTING_RAKING"
    LIGHTING_UV = "LIGHTING_UV"
    UPLOAD = "UPLOAD"
    SIMULATION = "SIMULATION"


class DeviceState(enum.StrEnum):
    """The unit's overall state. ``UNSPECIFIED`` when the device sent none, or one this SDK does not know."""

    UNSPECIFIED = "UNSPECIFIED"
    READY = "READY"
    BUSY = "BUSY"
    DEGRADED = "DEGRADED"


class ScanState(enum.StrEnum):
    """The lifecycle state of a scan. ``UNSPECIFIED`` when the device sent none, or one this SDK does not know."""

    UNSPECIFIED = "UNSPECIFIED"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"
    INTERRUPTED = "INTERRUPTED"


class Verdict(enum.StrEnum):
    """The decision on an item."""

    AUTHENTIC = "AUTHENTIC"
    """The evidence supports a genuine item."""
    UNVERIFIED = "UNVERIFIED"
    """The item could not be verified; the :class:`Reason` says why."""


class Reason(enum.StrEnum):
    """Why an item was not verified."""

    COUNTERFEIT_INDICATORS = "COUNTERFEIT_INDICATORS"
    """The images show signs of a counterfeit."""
    UNFAMILIAR_MATERIAL = "UNFAMILIAR_MATERIAL"
    """A region does not look like the material the model knows for it."""
    INSUFFICIENT_QUALITY = "INSUFFICIENT_QUALITY"
    """Too few images of a region passed the quality gate."""
    INSUFFICIENT_COVERAGE = "INSUFFICIENT_COVERAGE"
    """A required region has too few images."""


class ScanLabel(enum.StrEnum):
    """An expert's ground truth about a scanned item, recorded after the scan (``label_scan()``) for training."""

    GENUINE = "GENUINE"
    """The item is genuine."""
    COUNTERFEIT = "COUNTERFEIT"
    """The item is a counterfeit."""


class ImageOrigin(enum.StrEnum):
    """Where an image of a scan came from. ``UNSPECIFIED`` when unknown to this SDK."""

    UNSPECIFIED = "UNSPECIFIED"
    CAMERA = "CAMERA"
    UPLOAD = "UPLOAD"


class ScanEventType(enum.StrEnum):
    """What happened to a scan.

    The device's own events (from ``watch_scan``) are ``SNAPSHOT`` through ``FINISHED``.
    The guided ``scan()`` and ``analyze()`` flows report the same events, plus four of
    their own that the device never sends: ``CAPTURING``, ``UPLOADING``,
    ``IMAGE_REJECTED`` and ``RETAKES_EXHAUSTED``.
    """

    UNSPECIFIED = "UNSPECIFIED"
    """An event this SDK does not know."""
    SNAPSHOT = "SNAPSHOT"
    """The current state: first on every watch, and right after ``scan()``/``analyze()`` create the scan."""
    IMAGE_ACCEPTED = "IMAGE_ACCEPTED"
    """An image passed the quality gate."""
    RETAKE_REQUESTED = "RETAKE_REQUESTED"
    """An image failed the quality gate and the region will be captured again; ``message`` holds the hints."""
    REGION_COMPLETE = "REGION_COMPLETE"
    """A region has all the images it needs."""
    ANALYZING = "ANALYZING"
    """Inference started."""
    FINISHED = "FINISHED"
    """The scan ended: completed, cancelled or failed."""
    CAPTURING = "CAPTURING"
    """SDK only: the camera is about to capture ``region``; ``message`` says where the region is on the item."""
    UPLOADING = "UPLOADING"
    """SDK only: an image of ``region`` is about to be uploaded."""
    IMAGE_REJECTED = "IMAGE_REJECTED"
    """SDK only: an uploaded image failed the quality gate; ``message`` holds the hints."""
    RETAKES_EXHAUSTED = "RETAKES_EXHAUSTED"
    """SDK only: a region failed the quality gate too often; ``scan()`` moves on and the verdict will say so."""


class Component(enum.StrEnum):
    """A part of the unit that updates install into. ``UNSPECIFIED`` when unknown to this SDK."""

    UNSPECIFIED = "UNSPECIFIED"
    DEVICE_SOFTWARE = "DEVICE_SOFTWARE"
    MODEL = "MODEL"
    CONTROLLER_FIRMWARE = "CONTROLLER_FIRMWARE"
    COMBINED = "COMBINED"
    """A combined update of several parts, installed as one."""


class SlotState(enum.StrEnum):
    """The state of an installed slot. ``UNSPECIFIED`` when unknown to this SDK."""

    UNSPECIFIED = "UNSPECIFIED"
    ACTIVE = "ACTIVE"
    TRIAL = "TRIAL"
    PREVIOUS = "PREVIOUS"
    FAILED = "FAILED"
    STANDBY = "STANDBY"


class CalibrationState(enum.StrEnum):
    """Whether the unit corrects its captures with a calibration. ``UNSPECIFIED`` when unknown to this SDK."""

    UNSPECIFIED = "UNSPECIFIED"
    CALIBRATED = "CALIBRATED"
    """A calibration is stored and applied to every capture."""
    UNCALIBRATED = "UNCALIBRATED"
    """No calibration is stored; captures are not corrected."""
    INVALID = "INVALID"
    """The stored calibration could not be loaded (``Calibration.problem`` says why); captures are not corrected."""


# --- Device ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ModelRef:
    """One version of a model: its name (``"veriscope-demo"``), semantic version and the SHA-256 of its file."""

    name: str
    version: str
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}


@dataclass(frozen=True, kw_only=True)
class Region:
    """One required region of an item type.

    Attributes:
        name: The region's name within its item type, for example ``"canvas"``.
        material: The material expected there, for example ``"coated-canvas"``.
        min_images: Accepted images of the region that a verdict needs.
        hint: Where on the item the region is, for the person holding the scanner.
    """

    name: str
    material: str
    min_images: int
    hint: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "material": self.material, "min_images": self.min_images, "hint": self.hint}


@dataclass(frozen=True, kw_only=True)
class ItemType:
    """A kind of item the unit can authenticate, with its regions in guided order."""

    name: str
    display_name: str
    regions: tuple[Region, ...]

    @property
    def region_names(self) -> tuple[str, ...]:
        """The regions' names, in guided order."""
        return tuple(region.name for region in self.regions)

    def to_dict(self) -> dict[str, Any]:
        # "regions" holds plain names (the CLI contract); the detail goes under its own key.
        return {
            "name": self.name,
            "display_name": self.display_name,
            "regions": list(self.region_names),
            "region_details": [region.to_dict() for region in self.regions],
        }


@dataclass(frozen=True, kw_only=True)
class ControllerInfo:
    """The controller board: whether it answered, its kind, firmware version, serial protocol version and build."""

    connected: bool
    kind: str
    firmware_version: str
    protocol_version: int
    build_id: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "kind": self.kind,
            "firmware_version": self.firmware_version,
            "protocol_version": self.protocol_version,
            "build_id": self.build_id,
        }


@dataclass(frozen=True, kw_only=True)
class Hardware:
    """The unit's hardware. Sensor size is the full resolution in pixels."""

    model: str
    camera_model: str
    sensor_width_px: int
    sensor_height_px: int
    controller: ControllerInfo
    simulated: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "camera_model": self.camera_model,
            "sensor_width_px": self.sensor_width_px,
            "sensor_height_px": self.sensor_height_px,
            "controller": self.controller.to_dict(),
            "simulated": self.simulated,
        }


@dataclass(frozen=True, kw_only=True)
class DeviceInfo:
    """A Veriscope unit: identity, versions, hardware, capabilities and the item types it can authenticate.

    ``model`` is the active model (None when the unit has none loaded) and
    ``signing_public_key`` the PEM of the key that signs certificates (None until it has one).
    """

    device_id: str
    software_version: str
    api_version: str
    model: ModelRef | None
    hardware: Hardware
    capabilities: frozenset[Capability]
    item_types: tuple[ItemType, ...]
    signing_public_key: str | None

    def item_type(self, name: str) -> ItemType:
        """Return the item type called ``name``; raise KeyError naming the known ones when there is none."""
        for item_type in self.item_types:
            if item_type.name == name:
                return item_type
        known = ", ".join(repr(t.name) for t in self.item_types) or "none"
        raise KeyError(f"device has no item type {name!r} (known: {known})")

    def to_dict(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "software_version": self.software_version,
            "api_version": self.api_version,
            "model": None if self.model is None else self.model.to_dict(),
            "hardware": self.hardware.to_dict(),
            "simulated": self.hardware.simulated,
            "capabilities": sorted(c.name for c in self.capabilities),
            "item_types": [t.to_dict() for t in self.item_types],
            "signing_public_key": self.signing_public_key,
        }


@dataclass(frozen=True, kw_only=True)
class DeviceStatus:
    """The unit's current operating status.

    Attributes:
        state: The overall state.
        message: A human-readable explanation of the state.
        uptime: How long the daemon has run.
        active_scan_id: The scan that owns the camera, or None.
        controller_connected: True when the controller board answers.
        board_temperature_c: Board temperature in degrees Celsius, or None when unknown.
        focus_steps: Current focus motor position, in steps from home.
        lit_channels: Lighting channels currently lit.
        storage_free_bytes: Free bytes on the data volume.
        read_time: When the status was read, or None if the device did not say.
    """

    state: DeviceState
    message: str
    uptime: timedelta
    active_scan_id: str | None
    controller_connected: bool
    board_temperature_c: float | None
    focus_steps: int
    lit_channels: tuple[LightingChannel, ...]
    storage_free_bytes: int
    read_time: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.name,
            "message": self.message,
            "uptime_s": self.uptime.total_seconds(),
            "active_scan_id": self.active_scan_id,
            "controller_connected": self.controller_connected,
            "board_temperature_c": self.board_temperature_c,
            "focus_steps": self.focus_steps,
            "lit_channels": [c.name for c in self.lit_channels],
            "storage_free_bytes": self.storage_free_bytes,
            "read_time": _rfc3339(self.read_time),
        }


# --- Quality and capture -----------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class QualityIssue:
    """One problem the quality gate found.

    Attributes:
        code: Stable lower_snake_case name, for example ``"out_of_focus"``.
        hint: A short instruction for the person holding the scanner.
        value: The measured value, in the unit of its metric.
        threshold: The threshold it was compared with, same unit.
    """

    code: str
    hint: str
    value: float
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "hint": self.hint, "value": self.value, "threshold": self.threshold}


@dataclass(frozen=True, kw_only=True)
class QualityReport:
    """The quality gate's verdict on one image: ``ok``, the issues found, and every metric measured by name."""

    ok: bool
    issues: tuple[QualityIssue, ...] = ()
    metrics: Mapping[str, float] = field(default_factory=dict, hash=False)

    @property
    def hints(self) -> tuple[str, ...]:
        """The issues' hints, without duplicates, in order."""
        return tuple(dict.fromkeys(issue.hint for issue in self.issues if issue.hint))

    def to_dict(self) -> dict[str, Any]:
        # "issues" holds plain names (the CLI contract); the measured values go under "issue_details".
        return {
            "ok": self.ok,
            "issues": [issue.code for issue in self.issues],
            "hints": list(self.hints),
            "issue_details": [issue.to_dict() for issue in self.issues],
            "metrics": dict(self.metrics),
        }


@dataclass(frozen=True, kw_only=True)
class CaptureSettings:
    """Camera and lighting settings for one capture. Every field left None lets the device choose.

    Attributes:
        exposure_us: Exposure time in microseconds, at least 1.
        analogue_gain: Sensor analogue gain, 1.0..16.0.
        lighting: The lighting channel lit during the exposure.
        led_duty_pct: LED duty cycle in percent, 1..100.
        focus_steps: Focus motor position in steps from home.
        lens_position: Lens position in dioptres, for cameras with a focus lens; at least 0.

    Raises:
        ValueError: naming the field, when a value is out of range.
    """

    exposure_us: int | None = None
    analogue_gain: float | None = None
    lighting: LightingChannel | None = None
    led_duty_pct: int | None = None
    focus_steps: int | None = None
    lens_position: float | None = None

    def __post_init__(self) -> None:
        if self.exposure_us is not None and not (isinstance(self.exposure_us, int) and 1 <= self.exposure_us < 2**32):
            raise ValueError(f"exposure_us must be an int of at least 1 microsecond, got {self.exposure_us!r}")
        if self.analogue_gain is not None and not (
            isinstance(self.analogue_gain, int | float) and 1.0 <= self.analogue_gain <= 16.0
        ):
            raise ValueError(f"analogue_gain must be 1.0..16.0, got {self.analogue_gain!r}")
        if self.lighting is not None and not isinstance(self.lighting, LightingChannel):
            raise TypeError(f"lighting must be a LightingChannel, got {self.lighting!r}")
        if self.led_duty_pct is not None and not (isinstance(self.led_duty_pct, int) and 1 <= self.led_duty_pct <= 100):
            raise ValueError(f"led_duty_pct must be an int 1..100, got {self.led_duty_pct!r}")
        if self.focus_steps is not None and not (
            isinstance(self.focus_steps, int) and -(2**31) <= self.focus_steps < 2**31
        ):
            raise ValueError(f"focus_steps must be a 32-bit int, got {self.focus_steps!r}")
        if self.lens_position is not None and not (
            isinstance(self.lens_position, int | float)
            and math.isfinite(self.lens_position)
            and self.lens_position >= 0
        ):
            raise ValueError(f"lens_position must be a finite number of dioptres >= 0, got {self.lens_position!r}")


@dataclass(frozen=True, kw_only=True)
class ImageMetadata:
    """How an image was taken. ``device_id`` is None for uploads; ``lighting`` None when not recorded."""

    width_px: int
    height_px: int
    exposure_us: int
    analogue_gain: float
    lighting: LightingChannel | None
    led_duty_pct: int
    focus_steps: int
    lens_position: float
    device_id: str | None
    capture_time: datetime | None
    camera_model: str
    calibration_id: str | None = None
    """The flat-field and white-balance calibration applied to the pixels; None when none was (or an upload)."""
    calibration_time: datetime | None = None
    """When that calibration was made."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "width_px": self.width_px,
            "height_px": self.height_px,
            "exposure_us": self.exposure_us,
            "analogue_gain": self.analogue_gain,
            "lighting": _name(self.lighting),
            "led_duty_pct": self.led_duty_pct,
            "focus_steps": self.focus_steps,
            "lens_position": self.lens_position,
            "device_id": self.device_id,
            "capture_time": _rfc3339(self.capture_time),
            "camera_model": self.camera_model,
            "calibration_id": self.calibration_id,
            "calibration_time": _rfc3339(self.calibration_time),
        }


@dataclass(frozen=True, kw_only=True)
class CaptureResult:
    """One frame from ``capture()``: the encoded bytes, their format, how it was taken and its quality report."""

    data: bytes = field(repr=False)
    format: ImageFormat | None
    metadata: ImageMetadata
    quality: QualityReport


@dataclass(frozen=True, kw_only=True)
class PreviewFrame:
    """One low-resolution preview frame: JPEG bytes, a counter (gaps mean dropped frames) and its sharpness.

    ``sharpness`` is the variance of the Laplacian, in arbitrary units: higher is sharper.
    """

    jpeg: bytes = field(repr=False)
    sequence: int
    capture_time: datetime | None
    width_px: int
    height_px: int
    sharpness: float


@dataclass(frozen=True, kw_only=True)
class FocusSample:
    """One point of a focus curve: position (motor steps, or lens dioptres x 1000) and the sharpness there."""

    position: int
    sharpness: float


@dataclass(frozen=True, kw_only=True)
class AutofocusResult:
    """The outcome of ``autofocus()``: whether a peak was found, where, and every point measured."""

    converged: bool
    best_position: int
    best_sharpness: float
    curve: tuple[FocusSample, ...]
    steps_taken: int


# --- Calibration -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class WhiteBalanceGains:
    """Gains of the red, green and blue channels (green 1.0) that make the white reference neutral."""

    red: float
    green: float
    blue: float

    def to_dict(self) -> dict[str, Any]:
        return {"red": self.red, "green": self.green, "blue": self.blue}


@dataclass(frozen=True, kw_only=True)
class ChannelCalibration:
    """The calibration of one lighting channel.

    ``vignetting_depth`` is how much darker the corners were than the centre before correction
    (1 - corner / centre, 0..1); ``texture`` the fine texture of the target relative to its level
    (a white reference shows under 0.04); ``level`` the 99th percentile of the target's linear
    luminance at ``exposure_us``, as a fraction of full scale.
    """

    lighting: LightingChannel | None
    exposure_us: int
    analogue_gain: float
    vignetting_depth: float
    white_balance_gains: WhiteBalanceGains
    texture: float
    level: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "lighting": _name(self.lighting),
            "exposure_us": self.exposure_us,
            "analogue_gain": self.analogue_gain,
            "vignetting_depth": self.vignetting_depth,
            "white_balance_gains": self.white_balance_gains.to_dict(),
            "texture": self.texture,
            "level": self.level,
        }


@dataclass(frozen=True, kw_only=True)
class Calibration:
    """The unit's flat-field and white-balance calibration, taken from a white reference target.

    When ``state`` is CALIBRATED, every capture is corrected with it and its image metadata carries
    ``calibration_id``. ``vignetting_depth`` and ``white_balance_gains`` are those of the first
    calibrated channel (the white ring); ``channels`` lists each. ``storage_path`` is where the unit
    keeps it; ``problem`` says why a stored calibration is INVALID.
    """

    state: CalibrationState
    calibration_id: str | None
    create_time: datetime | None
    device_id: str | None
    camera_model: str | None
    frames: int
    vignetting_depth: float
    white_balance_gains: WhiteBalanceGains | None
    channels: tuple[ChannelCalibration, ...]
    storage_path: str | None
    problem: str | None

    @property
    def calibrated(self) -> bool:
        """True when the unit corrects its captures with this calibration."""
        return self.state is CalibrationState.CALIBRATED

    def to_dict(self) -> dict[str, Any]:
        gains = self.white_balance_gains
        return {
            "state": self.state.name,
            "calibration_id": self.calibration_id,
            "create_time": _rfc3339(self.create_time),
            "device_id": self.device_id,
            "camera_model": self.camera_model,
            "frames": self.frames,
            "vignetting_depth": self.vignetting_depth,
            "white_balance_gains": None if gains is None else gains.to_dict(),
            "channels": [channel.to_dict() for channel in self.channels],
            "storage_path": self.storage_path,
            "problem": self.problem,
        }


# --- Scans -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RegionProgress:
    """How far the capture of one region of a scan has come."""

    region: str
    material: str
    min_images: int
    accepted_images: int
    rejected_images: int
    hint: str

    @property
    def complete(self) -> bool:
        """True when the region has all the accepted images it needs."""
        return self.accepted_images >= self.min_images

    def to_dict(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "material": self.material,
            "min_images": self.min_images,
            "accepted_images": self.accepted_images,
            "rejected_images": self.rejected_images,
            "hint": self.hint,
        }


@dataclass(frozen=True, kw_only=True)
class ScanImage:
    """One image of a scan, accepted or not. Only images whose ``quality.ok`` is true count towards a verdict."""

    image_id: str
    region: str
    origin: ImageOrigin
    quality: QualityReport
    metadata: ImageMetadata | None
    sha256: str
    size_bytes: int
    format: ImageFormat | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "image_id": self.image_id,
            "region": self.region,
            "origin": self.origin.name,
            "quality": self.quality.to_dict(),
            "metadata": None if self.metadata is None else self.metadata.to_dict(),
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "format": _name(self.format),
        }


@dataclass(frozen=True, kw_only=True)
class ImageResult:
    """The model's result for one image. ``score`` and ``familiarity`` (0..1) are None when the image was not used."""

    image_id: str
    score: float | None
    familiarity: float | None
    quality: QualityReport

    def to_dict(self) -> dict[str, Any]:
        return {
            "image_id": self.image_id,
            "score": self.score,
            "familiarity": self.familiarity,
            "quality": self.quality.to_dict(),
        }


@dataclass(frozen=True, kw_only=True)
class RegionResult:
    """The model's result for one region: calibrated score 0..1 (None when no image was usable) and why."""

    region: str
    material: str
    score: float | None
    familiarity: float | None
    explanations: tuple[str, ...]
    images: tuple[ImageResult, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "material": self.material,
            "score": self.score,
            "familiarity": self.familiarity,
            "explanations": list(self.explanations),
            "images": [image.to_dict() for image in self.images],
        }


@dataclass(frozen=True, kw_only=True)
class ScanResult:
    """The verdict on a completed scan.

    Attributes:
        scan_id: The scan's id.
        item_type: The item type scanned.
        partner_item_id: The caller's own id for the item, or None.
        verdict: AUTHENTIC or UNVERIFIED.
        reason: Why the item was not verified; None when AUTHENTIC.
        score: Calibrated authenticity score of the item, 0..1.
        threshold: The score an item needs for AUTHENTIC, 0..1.
        summary: A one-sentence human summary.
        model: The model that decided.
        regions: Per-region results, in guided order, each with per-image results and quality reports.
        complete_time: When the verdict was reached, or None if the device did not say.
        certificate: The unit's signed certificate of the scan, from ``scan()`` and ``analyze()`` when the unit
            issued one; None otherwise, and in the results of ``get_scan()`` and ``list_scans()``, which do not
            fetch it (``get_scan_certificate()`` does).
    """

    scan_id: str
    item_type: str
    partner_item_id: str | None
    verdict: Verdict
    reason: Reason | None
    score: float
    threshold: float
    summary: str
    model: ModelRef
    regions: tuple[RegionResult, ...]
    complete_time: datetime | None
    certificate: ScanCertificate | None = None

    @property
    def authentic(self) -> bool:
        """True when the verdict is AUTHENTIC."""
        return self.verdict is Verdict.AUTHENTIC

    def to_dict(self) -> dict[str, Any]:
        return {
            "scan_id": self.scan_id,
            "item_type": self.item_type,
            "partner_item_id": self.partner_item_id,
            "verdict": self.verdict.name,
            "reason": _name(self.reason),
            "score": self.score,
            "threshold": self.threshold,
            "summary": self.summary,
            "model": self.model.to_dict(),
            "regions": [region.to_dict() for region in self.regions],
            "complete_time": _rfc3339(self.complete_time),
        }


@dataclass(frozen=True, kw_only=True)
class Scan:
    """One authentication scan of one item.

    Attributes:
        scan_id: The scan's id (its resource name is ``"scans/{scan_id}"``).
        item_type: The item type being scanned.
        partner_item_id: The caller's own id for the item, or None.
        state: Lifecycle state.
        create_time: When the scan was created (timezone-aware, UTC).
        update_time: When it last changed, or None if the device did not say.
        regions: Capture progress of each required region, in guided order.
        images: Every image of the scan, accepted or not, in capture order.
        next_region: The next region to capture; None when every region has enough images.
        result: The verdict, once COMPLETED.
        error_message: Why the scan failed, when FAILED.
        label: The expert's ground truth, set with ``label_scan()``; None when there is none (or one this SDK
            does not know). It never changes the verdict.
        label_time: When the label was last set, or None.
    """

    scan_id: str
    item_type: str
    partner_item_id: str | None
    state: ScanState
    create_time: datetime
    update_time: datetime | None
    regions: tuple[RegionProgress, ...]
    images: tuple[ScanImage, ...]
    next_region: str | None
    result: ScanResult | None
    error_message: str | None
    label: ScanLabel | None = None
    label_time: datetime | None = None

    @property
    def verdict(self) -> Verdict | None:
        """The verdict, or None until the scan is completed."""
        return None if self.result is None else self.result.verdict

    def to_dict(self) -> dict[str, Any]:
        return {
            "scan_id": self.scan_id,
            "item_type": self.item_type,
            "partner_item_id": self.partner_item_id,
            "state": self.state.name,
            "verdict": _name(self.verdict),
            "reason": None if self.result is None else _name(self.result.reason),
            "score": None if self.result is None else self.result.score,
            "create_time": _rfc3339(self.create_time),
            "update_time": _rfc3339(self.update_time),
            "regions": [region.to_dict() for region in self.regions],
            "images": [image.to_dict() for image in self.images],
            "next_region": self.next_region,
            "result": None if self.result is None else self.result.to_dict(),
            "error_message": self.error_message,
            "label": _name(self.label),
            "label_time": _rfc3339(self.label_time),
        }


@dataclass(frozen=True, kw_only=True)
class ImageHeatmap:
    """The per-tile evidence behind one analysed image, and a heat-map that shows it.

    The device judges an image as a grid of square tiles cut from the image scaled to the
    model's working width. ``png`` is that scaled image, in grey, with each tile's score laid
    over it in colour: red below ``score_threshold`` (counterfeit-like), amber at it, green
    towards 1 (genuine-like). Tiles whose familiarity is below ``familiarity_threshold`` are grey
    and hatched, since the model does not recognise the material there. Where tiles overlap,
    each pixel takes the colour of the tile whose centre is nearest.

    Attributes:
        image_id: The image's id within its scan.
        region: The region the image shows.
        material: The material the image was judged as.
        grid_rows: Rows of the tile grid.
        grid_cols: Columns of the tile grid.
        tile_scores: Calibrated authenticity score 0..1 of each tile, as ``grid_rows`` rows of
            ``grid_cols`` values (``tile_scores[row][col]``); low is counterfeit-like.
        tile_familiarity: How familiar each tile's material looks to the model 0..1, shaped like
            ``tile_scores``; low is unfamiliar.
        score_threshold: The material's item threshold 0..1: tiles scoring below it show counterfeit indicators.
        familiarity_threshold: The least familiarity 0..1 the model accepts as the expected material.
        tile_px: Side of one square tile, in heat-map pixels.
        column_x_px: Left edge of each grid column on the heat-map, in pixels.
        row_y_px: Top edge of each grid row on the heat-map, in pixels.
        width_px: Width of the heat-map in pixels.
        height_px: Height of the heat-map in pixels.
        png: The heat-map, an RGB PNG file's bytes.
    """

    image_id: str
    region: str
    material: str
    grid_rows: int
    grid_cols: int
    tile_scores: tuple[tuple[float, ...], ...]
    tile_familiarity: tuple[tuple[float, ...], ...]
    score_threshold: float
    familiarity_threshold: float
    tile_px: int
    column_x_px: tuple[int, ...]
    row_y_px: tuple[int, ...]
    width_px: int
    height_px: int
    png: bytes = field(repr=False)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the heat-map PNG to ``path`` (replacing any file there) and return the path.

        Raises:
            OSError: The file cannot be written.
        """
        target = Path(path)
        target.write_bytes(self.png)
        return target

    def to_dict(self) -> dict[str, Any]:
        return {
            "image_id": self.image_id,
            "region": self.region,
            "material": self.material,
            "grid_rows": self.grid_rows,
            "grid_cols": self.grid_cols,
            "tile_scores": [list(row) for row in self.tile_scores],
            "tile_familiarity": [list(row) for row in self.tile_familiarity],
            "score_threshold": self.score_threshold,
            "familiarity_threshold": self.familiarity_threshold,
            "tile_px": self.tile_px,
            "column_x_px": list(self.column_x_px),
            "row_y_px": list(self.row_y_px),
            "width_px": self.width_px,
            "height_px": self.height_px,
        }


@dataclass(frozen=True, kw_only=True)
class ScanExplanation:
    """Why a completed scan got its verdict, from ``get_scan_explanation()``.

    Attributes:
        scan_id: The scan's id.
        images: One heat-map per image the model analysed (those that passed the quality gate), in capture order.
        regions: Per-region results with their explanations in words, in guided order (as in ``ScanResult``).
        model: The model that produced the evidence.
    """

    scan_id: str
    images: tuple[ImageHeatmap, ...]
    regions: tuple[RegionResult, ...]
    model: ModelRef

    def to_dict(self) -> dict[str, Any]:
        return {
            "scan_id": self.scan_id,
            "model": self.model.to_dict(),
            "images": [image.to_dict() for image in self.images],
            "regions": [region.to_dict() for region in self.regions],
        }


@dataclass(frozen=True, kw_only=True)
class ScanCertificate:
    """The signed certificate of authenticity of a completed scan, from ``get_scan_certificate()``.

    ``document`` is the certificate file, byte for byte as the unit signed it: keep it unchanged (any
    reformatting invalidates it) and check it offline with :func:`veriscope.sdk.certificates.verify_certificate`
    or ``veriscope verify-certificate``.

    Attributes:
        scan_id: The scan's id.
        document: The certificate file: canonical UTF-8 JSON ending in one newline.
        signing_key_sha256: Lowercase hex SHA-256 of the raw Ed25519 public key that signed it.
    """

    scan_id: str
    document: bytes
    signing_key_sha256: str

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``document`` to ``path`` exactly (replacing any file there) and return the path.

        Raises:
            OSError: The file cannot be written.
        """
        target = Path(path)
        target.write_bytes(self.document)
        return target

    def to_dict(self) -> dict[str, Any]:
        return {
            "scan_id": self.scan_id,
            "size_bytes": len(self.document),
            "signing_key_sha256": self.signing_key_sha256,
        }


@dataclass(frozen=True, kw_only=True)
class ScanPage:
    """One page of ``list_scans()``, newest first; pass ``next_page_token`` back for the next (None on the last)."""

    scans: tuple[Scan, ...]
    next_page_token: str | None


@dataclass(frozen=True, kw_only=True)
class RegionCapture:
    """The outcome of ``capture_region()``: the stored image, whether to capture the region again, the scan after."""

    image: ScanImage
    retake_required: bool
    scan: Scan


@dataclass(frozen=True, kw_only=True)
class ImageUpload:
    """The outcome of ``upload_image()``: the stored image with its quality report, and the scan after."""

    image: ScanImage
    scan: Scan


@dataclass(frozen=True, kw_only=True)
class ScanEvent:
    """Something that happened to a scan (see :class:`ScanEventType`).

    Attributes:
        type: What happened.
        scan: The scan after the event.
        region: The region concerned, or None.
        message: A human-readable description, such as the retake hints.
        image: The image concerned (accepted, rejected), when the SDK knows it.
        event_time: When it happened, or None for events the SDK makes itself.
    """

    type: ScanEventType
    scan: Scan
    region: str | None = None
    message: str = ""
    image: ScanImage | None = None
    event_time: datetime | None = None


# --- Training data export ----------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ExportProgress:
    """How far ``export_scans()`` has come, reported after every image it writes or skips.

    Attributes:
        scans_done: Labelled scans finished so far.
        scans_total: Labelled scans to export.
        images_written: Image files written so far.
        images_skipped: Image files found already in place with the right SHA-256, and left as they were.
        scan_id: The scan being exported.
    """

    scans_done: int
    scans_total: int
    images_written: int
    images_skipped: int
    scan_id: str


@dataclass(frozen=True, kw_only=True)
class ExportSummary:
    """What ``export_scans()`` did.

    Attributes:
        out: The export's root folder.
        scans: Labelled scans exported.
        items: Items exported: one per region of a scan with images that passed the quality gate.
        images: Image files written by this run.
        skipped: Image files already in place with the right SHA-256, left as they were.
        removed: Items of an earlier export into ``out`` removed because their scan's label changed or was removed.
        manifest: The manifest written, or None when there was nothing to export.
    """

    out: Path
    scans: int
    items: int
    images: int
    skipped: int
    removed: int = 0
    manifest: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "scans": self.scans,
            "items": self.items,
            "images": self.images,
            "skipped": self.skipped,
            "removed": self.removed,
            "manifest": None if self.manifest is None else str(self.manifest),
        }


# --- Models, updates, simulation ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ModelInput:
    """The tensor a model takes: tile size in pixels, channels, element type and int8 quantisation."""

    width_px: int
    height_px: int
    channels: int
    dtype: str
    scale: float
    zero_point: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "width_px": self.width_px,
            "height_px": self.height_px,
            "channels": self.channels,
            "dtype": self.dtype,
            "scale": self.scale,
            "zero_point": self.zero_point,
        }


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """An installed model.

    Attributes:
        model_id: ``"{name}@{version}"``; pass it to ``get_model()``.
        ref: Name, version and SHA-256 of the .tflite file.
        active: True for the model that decides verdicts.
        materials: The materials the model knows.
        lighting: The lighting channels a capture for the model needs, in capture order.
        input: The input tensor.
        size_bytes: Size of the .tflite file.
        threshold: The item score an item needs for AUTHENTIC, 0..1.
        manifest_json: The bundle's full manifest, as JSON text.
        create_time: When the bundle was created, or None.
        item_types: The item types the model can authenticate.
        slot: The slot it is installed in: ``"builtin"``, ``"a"`` or ``"b"``; empty from older units.
        state: The slot's state (ACTIVE, TRIAL, PREVIOUS, FAILED or STANDBY), or None from older units.
    """

    model_id: str
    ref: ModelRef
    active: bool
    materials: tuple[str, ...]
    lighting: tuple[LightingChannel, ...]
    input: ModelInput | None
    size_bytes: int
    threshold: float
    manifest_json: str = field(repr=False)
    create_time: datetime | None
    item_types: tuple[ItemType, ...]
    slot: str = ""
    state: SlotState | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "name": self.ref.name,
            "version": self.ref.version,
            "sha256": self.ref.sha256,
            "active": self.active,
            "materials": list(self.materials),
            "lighting": [c.name for c in self.lighting],
            "input": None if self.input is None else self.input.to_dict(),
            "size_bytes": self.size_bytes,
            "threshold": self.threshold,
            "create_time": _rfc3339(self.create_time),
            "item_types": [t.to_dict() for t in self.item_types],
            "slot": self.slot,
            "state": None if self.state is None else self.state.name,
        }


@dataclass(frozen=True, kw_only=True)
class Slot:
    """One installed version of an updatable component."""

    component: Component
    label: str
    version: str
    state: SlotState
    install_time: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "component": self.component.name,
            "label": self.label,
            "version": self.version,
            "state": self.state.name,
            "install_time": _rfc3339(self.install_time),
        }


@dataclass(frozen=True, kw_only=True)
class UpdateStatus:
    """What is installed in every slot of every updatable component."""

    slots: tuple[Slot, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"slots": [slot.to_dict() for slot in self.slots]}


@dataclass(frozen=True, kw_only=True)
class PlacedItem:
    """A virtual item under a simulated unit's lens. The same item type, source and seed always make the same item.

    ``source`` is ``"genuine"`` or a counterfeit source such as ``"counterfeit-a"``; ``seed`` is 0..2**63-1.
    """

    item_type: str
    source: str
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {"item_type": self.item_type, "source": self.source, "seed": self.seed}


@dataclass(frozen=True, kw_only=True)
class SimulatedMaterial:
    """A material the simulator can make: ``"genuine"`` then the counterfeit sources, and which are near-perfect."""

    name: str
    sources: tuple[str, ...]
    superfake_sources: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "sources": list(self.sources), "superfake_sources": list(self.superfake_sources)}


# --- Diagnostics ---


class SelfTestStatus(enum.StrEnum):
    """The outcome of one self-test check. ``UNSPECIFIED`` when the device sent none, or one this SDK does not know."""

    UNSPECIFIED = "UNSPECIFIED"
    PASS = "PASS"
    """The part works as it should."""
    WARN = "WARN"
    """The part works, with a reading that deserves a look."""
    FAIL = "FAIL"
    """The part does not work."""
    SKIPPED = "SKIPPED"
    """The check did not run: the unit lacks the part, or a part it needs failed."""


@dataclass(frozen=True, kw_only=True)
class SelfTestImage:
    """An image a self-test check took as evidence: ``name`` says what it shows (``"white_ring"``, ``"dark"``)."""

    name: str
    png: bytes = field(repr=False)


@dataclass(frozen=True, kw_only=True)
class SelfTestCheck:
    """The result of one check of a unit's self-test.

    Attributes:
        name: The check: ``camera``, ``controller``, ``leds``, ``focus``, ``temperature``, ``model_checksums``
            or ``storage``.
        status: The outcome.
        message: What was found; on WARN or FAIL, what is wrong and what to do.
        measurements: Readings by name, units in the names (``free_bytes``, ``board_temperature_c``).
        images: PNG images the check took, at most 640 pixels wide.
        duration: How long the check ran on the unit.
        check_number: Position of the check in the self-test, from 1.
        total_checks: How many checks the self-test runs.
    """

    name: str
    status: SelfTestStatus
    message: str
    measurements: Mapping[str, float]
    images: tuple[SelfTestImage, ...]
    duration: timedelta
    check_number: int
    total_checks: int

    def to_dict(self) -> dict[str, Any]:
        """The check as JSON-ready data; images are listed by name and size only."""
        return {
            "name": self.name,
            "status": self.status.value,
            "message": self.message,
            "measurements": dict(self.measurements),
            "images": [{"name": i.name, "size_bytes": len(i.png)} for i in self.images],
            "duration_s": self.duration.total_seconds(),
        }


class LogLevel(enum.StrEnum):
    """The severity of a log line, as Python's logging levels."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


@dataclass(frozen=True, kw_only=True)
class LogEntry:
    """One line of the unit's daemon log.

    Attributes:
        sequence: Increases by one with every line the daemon logs; a gap means lines were dropped.
        time: When it was logged, or None if the device did not say.
        level: Its severity, or None for a level this SDK does not know.
        logger: The logger's name, for example ``veriscope.device.scans``.
        message: The formatted message, with any traceback.
    """

    sequence: int
    time: datetime | None
    level: LogLevel | None
    logger: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence,
            "time": _rfc3339(self.time),
            "level": _name(self.level),
            "logger": self.logger,
            "message": self.message,
        }
