"""The records of a scan, independent of the wire format and of the storage engine."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import datetime

from veriscope.device.codec import ImageFormat
from veriscope.device.pipeline.quality import QualityReport
from veriscope.device.types import Frame, Lighting


class ScanState(enum.StrEnum):
    """Lifecycle state of a scan."""

    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    @property
    def is_final(self) -> bool:
        """True once the scan can no longer change."""
        return self is not ScanState.IN_PROGRESS


class ScanLabel(enum.StrEnum):
    """An expert's ground truth about a scanned item, recorded after the scan for training."""

    GENUINE = "genuine"
    COUNTERFEIT = "counterfeit"


class ImageOrigin(enum.StrEnum):
    """Where an image of a scan came from."""

    CAMERA = "camera"
    UPLOAD = "upload"


@dataclass(frozen=True)
class ImageMeta:
    """How an image was taken. Uploads carry only what the file tells (size) and the receive time."""

    width: int
    height: int
    capture_time: datetime
    exposure_us: int = 0
    analogue_gain: float = 0.0
    lighting: Lighting | None = None
    led_duty_pct: int = 0
    focus_steps: int = 0
    lens_position: float = 0.0
    device_id: str = ""
    camera_model: str = ""
    calibration_id: str = ""
    """The flat-field and white-balance calibration applied to the pixels; empty when none was (or an upload)."""
    calibration_time: datetime | None = None

    @classmethod
    def of_frame(cls, frame: Frame, device_id: str) -> ImageMeta:
        """The metadata of a frame this unit captured."""
        s = frame.settings
        return cls(
            width=frame.width,
            height=frame.height,
            capture_time=frame.capture_time,
            exposure_us=s.exposure_us,
            analogue_gain=s.analogue_gain,
            lighting=s.lighting,
            led_duty_pct=s.led_duty_pct,
            focus_steps=s.focus_steps,
            lens_position=s.lens_position,
            device_id=device_id,
            camera_model=frame.camera_model,
            calibration_id=frame.calibration_id,
            calibration_time=frame.calibration_time,
        )


@dataclass(frozen=True)
class ImageRecord:
    """One stored image of a scan."""

    image_id: str
    region: str
    origin: ImageOrigin
    sha256: str
    size_bytes: int
    format: ImageFormat
    quality: QualityReport
    meta: ImageMeta


@dataclass(frozen=True)
class TileMap:
    """The per-tile results of one analysed image, kept so that a completed scan can be explained later.

    The geometry is that of the model bundle's tiling: the image is scaled to
    ``work_width_px`` wide, and ``grid_rows`` x ``grid_cols`` tiles of ``tile_px``
    are cut at evenly spread positions (see :mod:`veriscope.device.inference.tiling`).
    """

    work_width_px: int
    tile_px: int
    grid_rows: int
    grid_cols: int
    scores: tuple[float, ...]
    """Calibrated authenticity score of each tile 0..1, row-major."""
    familiarity: tuple[float, ...]
    """Familiarity of each tile 0..1, row-major."""
    score_threshold: float
    """The material's item threshold when the scan completed; tiles below it look counterfeit."""
    familiarity_threshold: float
    """The bundle's familiarity threshold when the scan completed."""


@dataclass(frozen=True)
class ImageOutcome:
    """The model's result for one image."""

    image_id: str
    quality_ok: bool
    score: float | None = None
    familiarity: float | None = None
    tiles: TileMap | None = None
    """The per-tile results; None when the image was not analysed, or the scan predates their recording."""


@dataclass(frozen=True)
class ImageExplanation:
    """One analysed image of a completed scan, explained: its per-tile results and their heat-map. Not stored."""

    image_id: str
    region: str
    material: str
    tiles: TileMap
    column_x_px: tuple[int, ...]
    """Left edge of each grid column on the heat-map, in pixels."""
    row_y_px: tuple[int, ...]
    """Top edge of each grid row on the heat-map, in pixels."""
    width_px: int
    """Width of the heat-map in pixels."""
    height_px: int
    """Height of the heat-map in pixels."""
    png: bytes
    """The heat-map, PNG-encoded (see :mod:`veriscope.device.pipeline.heatmap`)."""


@dataclass(frozen=True)
class RegionOutcome:
    """The model's result for one region."""

    region: str
    material: str
    score: float | None
    familiarity: float | None
    explanations: tuple[str, ...]
    images: tuple[ImageOutcome, ...]


@dataclass(frozen=True)
class ScanOutcome:
    """The verdict on a completed scan."""

    verdict: str
    """"AUTHENTIC" or "UNVERIFIED"."""
    reason: str | None
    """None when AUTHENTIC; else COUNTERFEIT_INDICATORS, UNFAMILIAR_MATERIAL, INSUFFICIENT_QUALITY or INSUFFICIENT_COVERAGE."""
    score: float
    threshold: float
    summary: str
    model_name: str
    model_version: str
    model_sha256: str
    complete_time: datetime
    regions: tuple[RegionOutcome, ...]


@dataclass(frozen=True)
class ScanRecord:
    """One scan of one item."""

    scan_id: str
    item_type: str
    partner_item_id: str
    state: ScanState
    create_time: datetime
    update_time: datetime
    images: tuple[ImageRecord, ...] = ()
    outcome: ScanOutcome | None = None
    error_message: str = ""
    camera_used: bool = False
    extra: dict[str, str] = field(default_factory=dict)
    label: ScanLabel | None = None
    """The expert's ground truth (set with LabelScan on a COMPLETED scan); None when there is none.
    It never changes the verdict, which is the model's."""
    label_time: datetime | None = None
    """When the label was last set; None when there is none."""
    certificate: str = ""
    """The signed certificate document (UTF-8 JSON text, see :mod:`veriscope.device.certificates`), issued
    when the scan completed; empty before, or when a daemon without certificates completed it. Never changes."""

    @property
    def name(self) -> str:
        """The resource name, "scans/{scan_id}"."""
        return f"scans/{self.scan_id}"

    def evolve(self, **changes: object) -> ScanRecord:
        """A copy with the given fields changed."""
        return replace(self, **changes)  # type: ignore[arg-type]
