"""The scan manager: runs scans from creation to verdict, and owns the rules about them.

Rules:

- A scan is IN_PROGRESS until it is completed, cancelled or fails; only then is
  it final, and a final scan never changes again, but for the expert label of a
  COMPLETED scan: ground truth recorded for training, which never touches the
  verdict or the certificate.
- One scan at a time owns the camera: the first CaptureRegion of a scan takes
  it, and completion or cancellation releases it. Another scan that asks for the
  camera gets FAILED_PRECONDITION at once (it is not queued), so a client learns
  immediately that the unit is busy. Scans that only upload images never need
  the camera and run side by side.
- The first capture of a scan under each lighting channel auto-exposes the
  surface; once a capture at that exposure passes the quality gate, the
  exposure is locked and reused by every later capture of the scan under that
  channel (settings that give exposure time or gain override it), so all
  images of one item are exposed alike.
- A capture that fails the quality gate is stored but never used for a
  verdict; the region is asked for again.
- Inference and image decoding run in worker threads so the event loop keeps
  serving other clients.
- Each image that passes the gate is analysed as it arrives, while its pixels
  are decoded anyway, and the analysis is kept in memory until the scan ends.
  Completion reuses it when the model is still the one that made it; otherwise
  (a model swap, or a restart in between) it decodes the stored image again.
  So a frame is decoded once on the common path.
- A completed scan keeps the per-tile results of each analysed image, so its
  explanation (heat-maps rendered from the stored images) can be asked for at
  any later time, after restarts and model updates alike.
- A completed scan carries its certificate of authenticity, signed once at
  completion and stored with the record; it is served as stored ever after.
- A full data volume (or one below the free-disk floor) fails the call at hand
  with RESOURCE_EXHAUSTED; the scan keeps what it had and stays IN_PROGRESS,
  so the client can retry once space is freed, or cancel.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from veriscope.device import certificates, codec
from veriscope.device.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from veriscope.device.imager import Imager, JudgedFrame
from veriscope.device.inference import ItemTypeSpec, ModelBundle
from veriscope.device.inference.tiling import Tiling, work_size
from veriscope.device.pipeline import heatmap, quality
from veriscope.device.pipeline.inference import Analyzer, ImageAnalysis
from veriscope.device.pipeline.verdict import ItemDecision, decide
from veriscope.device.scans.records import (
    ImageExplanation,
    ImageMeta,
    ImageOrigin,
    ImageOutcome,
    ImageRecord,
    RegionOutcome,
    ScanLabel,
    ScanOutcome,
    ScanRecord,
    ScanState,
    TileMap,
)
from veriscope.device.scans.store import ScanFilter, ScanStore
from veriscope.device.stage import Stage
from veriscope.device.types import CaptureSettings, Lighting, RGBImage

_log = logging.getLogger("veriscope.device.scans")
MAX_PARTNER_ITEM_ID_CHARS = 128
_WATCH_QUEUE_SIZE = 256
MAX_IMAGE_ASPECT = 4.0
"""Longest side over shortest an uploaded image may have. Sensors give 4:3 or 16:9; a strip much longer than that
would swell to a huge array at the model's working width, or be too flat to hold one of its tiles."""
_CONVERSIONS = 2
"""JPEG-to-PNG conversions that may run at once: each holds a decoded frame and its PNG in memory."""


@dataclass(frozen=True)
class ScanEvent:
    """Something that happened to a scan."""

    type: str
    """One of: snapshot, image_accepted, retake_requested, region_complete, analyzing, finished."""
    scan: ScanRecord
    time: datetime
    region: str = ""
    message: str = ""


@dataclass(frozen=True)
class ImageContent:
    """The bytes of one image of a scan, to send: either a stored file (``path``) or converted bytes (``data``)."""

    image: ImageRecord
    format: codec.ImageFormat
    """Encoding of the bytes."""
    size_bytes: int
    sha256: str
    """Lowercase hex SHA-256 of the bytes."""
    path: Path | None = None
    data: bytes | None = None


@dataclass(frozen=True)
class ScanLimits:
    """Limits the manager enforces."""

    max_upload_bytes: int = 32 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_images_per_scan: int = 64
    max_open_scans: int = 32
    camera_idle_timeout_s: float = 300.0
    """A scan that owns the camera but has not used it for this long loses it to the next scan that asks."""


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, eq=False)
class ActiveModel:
    """The model that decides verdicts: a bundle and the analyzer that runs it, swapped as one reference."""

    bundle: ModelBundle
    analyzer: Analyzer


class ScanManager:
    """Creates, advances, completes and lists scans.

    The model is hot-swappable (:meth:`swap_model`): each CompleteScan takes the model current when it starts
    and uses it to the end, so a scan completing during a swap finishes on the model it started completing on,
    and its result names that model; scans completed after the swap use the new one.

    ``imager`` and ``stage`` are None on a unit without a camera (uploads only).
    ``signing_key`` signs a certificate of authenticity of every scan it
    completes; None issues none.
    """

    def __init__(
        self,
        store: ScanStore,
        bundle: ModelBundle,
        analyzer: Analyzer,
        *,
        device_id: str,
        imager: Imager | None = None,
        stage: Stage | None = None,
        limits: ScanLimits = ScanLimits(),
        clock: Callable[[], datetime] = _now,
        signing_key: certificates.SigningKey | None = None,
    ) -> None:
        self._store = store
        self._model = ActiveModel(bundle, analyzer)
        self._device_id = device_id
        self._imager = imager
        self._stage = stage
        self._limits = limits
        self._clock = clock
        self._signing_key = signing_key
        self._scan_locks: dict[str, asyncio.Lock] = {}
        self._watchers: dict[str, set[asyncio.Queue[ScanEvent]]] = {}
        self._open_scans: set[str] = set()
        self.camera_owner: str | None = None
        self._camera_used = time.monotonic()
        self._focused_region: dict[str, str] = {}
        self._locked_exposure: dict[tuple[str, Lighting], tuple[int, float]] = {}
        self._conversions = asyncio.Semaphore(_CONVERSIONS)
        # Decoding, gating and inference hold a few full-resolution copies of an image each; running at most
        # one per core keeps throughput and bounds memory however many clients upload at once.
        self._image_work = asyncio.Semaphore(max(1, os.cpu_count() or 1))
        # Analyses made as images arrive, by (scan id, image id), with the model that made them.
        self._analyses: dict[tuple[str, str], tuple[ActiveModel, ImageAnalysis]] = {}
        self.camera_lock = asyncio.Lock()
        """Held while any code uses the camera; CaptureService shares it."""

    @property
    def limits(self) -> ScanLimits:
        """The limits this manager enforces."""
        return self._limits

    @property
    def bundle(self) -> ModelBundle:
        """The model bundle that decides verdicts."""
        return self._model.bundle

    @property
    def model(self) -> ActiveModel:
        """The model that decides verdicts, with its analyzer."""
        return self._model

    @property
    def _bundle(self) -> ModelBundle:
        return self._model.bundle

    @property
    def _item_types(self) -> dict[str, ItemTypeSpec]:
        return {t.name: t for t in self._model.bundle.item_types}

    def swap_model(self, model: ActiveModel) -> None:
        """Make ``model`` decide verdicts from now on. Completions already running finish on the old one."""
        self._model = model

    @property
    def device_id(self) -> str:
        """The unit's serial number, stamped into the metadata of every image it captures."""
        return self._device_id

    # Lookup helpers

    def _lock(self, scan_id: str) -> asyncio.Lock:
        return self._scan_locks.setdefault(scan_id, asyncio.Lock())

    def _in_progress(self, scan_id: str) -> ScanRecord:
        scan = self._store.get(scan_id)
        if scan.state is not ScanState.IN_PROGRESS:
            raise FailedPrecondition(f"scan {scan_id!r} is {scan.state.name}; only IN_PROGRESS scans accept this call")
        return scan

    def _region_material(self, scan: ScanRecord, region: str) -> str:
        spec = self._item_types[scan.item_type]
        for r in spec.regions:
            if r.name == region:
                return str(r.material)
        names = ", ".join(r.name for r in spec.regions)
        raise InvalidArgument(f"region {region!r} is not a region of {scan.item_type!r}; its regions are: {names}")

    def next_region(self, scan: ScanRecord) -> str:
        """The first region, in guided order, that still lacks accepted images ("" when none)."""
        spec = self._item_types.get(scan.item_type)
        if spec is None:
            return ""
        for r in spec.regions:
            accepted = sum(1 for i in scan.images if i.region == r.name and i.quality.ok)
            if accepted < r.min_images:
                return str(r.name)
        return ""

    def region_specs(self, item_type: str) -> list[object]:
        """The region specs of an item type (empty when the active model does not know it)."""
        spec = self._item_types.get(item_type)
        return list(spec.regions) if spec else []

    # Events

    def _publish(self, event: ScanEvent) -> None:
        for queue in list(self._watchers.get(event.scan.scan_id, ())):
            if queue.full():
                # A watcher too slow to keep up loses its oldest events, never the daemon's memory.
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(event)

    async def watch(self, scan_id: str) -> AsyncIterator[ScanEvent]:
        """Yield a snapshot of the scan, then every event until it ends."""
        scan = self._store.get(scan_id)
        queue: asyncio.Queue[ScanEvent] = asyncio.Queue(_WATCH_QUEUE_SIZE)
        self._watchers.setdefault(scan_id, set()).add(queue)
        try:
            yield ScanEvent("snapshot", scan, self._clock())
            if scan.state.is_final:
                return
            while True:
                event = await queue.get()
                yield event
                if event.type == "finished":
                    return
        finally:
            watchers = self._watchers.get(scan_id)
            if watchers is not None:
                watchers.discard(queue)
                if not watchers:
                    del self._watchers[scan_id]

    # Lifecycle

    async def create(self, item_type: str, partner_item_id: str = "") -> ScanRecord:
        """Start a scan of an item of ``item_type``."""
        if not item_type:
            raise InvalidArgument("scan.item_type is required")
        if item_type not in self._item_types:
            known = ", ".join(sorted(self._item_types))
            raise InvalidArgument(
                f"scan.item_type {item_type!r} is unknown to model {self._bundle.name}; known: {known}"
            )
        if len(partner_item_id) > MAX_PARTNER_ITEM_ID_CHARS or not partner_item_id.isprintable():
            raise InvalidArgument(
                f"scan.partner_item_id must be at most {MAX_PARTNER_ITEM_ID_CHARS} printable characters"
            )
        if len(self._open_scans) >= self._limits.max_open_scans:
            raise ResourceExhausted(
                f"{len(self._open_scans)} scans are already in progress (limit {self._limits.max_open_scans}); "
                "complete or cancel one first"
            )
        # Below the free-disk floor a new scan is refused (after pruning what the retention policy allows),
        # so the room left goes to the scans already in progress.
        await asyncio.to_thread(self._store.ensure_room, 0, "the scan was not created")
        now = self._clock()
        scan = ScanRecord(
            scan_id=uuid.uuid4().hex,
            item_type=item_type,
            partner_item_id=partner_item_id,
            state=ScanState.IN_PROGRESS,
            create_time=now,
            update_time=now,
        )
        await asyncio.to_thread(self._store.save, scan)
        self._open_scans.add(scan.scan_id)
        return scan

    def get(self, scan_id: str) -> ScanRecord:
        """The scan with this id."""
        return self._store.get(scan_id)

    def list(self, flt: ScanFilter, page_size: int, page_token: str) -> tuple[list[ScanRecord], str]:
        """A page of scans, newest first."""
        if page_size < 0 or page_size > 1000:
            raise InvalidArgument(f"page_size must be 0..1000, got {page_size}")
        return self._store.list(flt, page_size=page_size or 50, page_token=page_token)

    async def _add_image(self, scan: ScanRecord, record: ImageRecord) -> ScanRecord:
        updated = scan.evolve(
            images=(*scan.images, record),
            update_time=self._clock(),
            camera_used=scan.camera_used or record.origin is ImageOrigin.CAMERA,
        )
        await asyncio.to_thread(self._store.save, updated)
        if record.quality.ok:
            self._publish(ScanEvent("image_accepted", updated, self._clock(), record.region))
            spec = {r.name: r for r in self._item_types[scan.item_type].regions}[record.region]
            accepted = sum(1 for i in updated.images if i.region == record.region and i.quality.ok)
            if accepted == spec.min_images:
                self._publish(ScanEvent("region_complete", updated, self._clock(), record.region))
        else:
            hints = "; ".join(i.hint for i in record.quality.issues)
            self._publish(ScanEvent("retake_requested", updated, self._clock(), record.region, hints))
        return updated

    def _check_room(self, scan: ScanRecord, adding: int = 1) -> None:
        if len(scan.images) + adding > self._limits.max_images_per_scan:
            raise ResourceExhausted(
                f"scan {scan.scan_id!r} holds {len(scan.images)} images; {adding} more would pass the limit of "
                f"{self._limits.max_images_per_scan}"
            )

    def busy_owner(self) -> str | None:
        """The scan that holds the camera now, or None when it is free (or its owner sat idle too long)."""
        owner = self.camera_owner
        if owner is None or owner not in self._open_scans:
            return None
        if time.monotonic() - self._camera_used > self._limits.camera_idle_timeout_s:
            return None
        return owner

    def _take_camera(self, scan_id: str) -> None:
        if self._imager is None:
            raise FailedPrecondition("this unit has no camera; upload images with UploadImage instead")
        owner = self.busy_owner()
        if owner is not None and owner != scan_id:
            raise FailedPrecondition(
                f"camera busy: scans/{owner} owns the camera until it completes or is cancelled "
                f"(or sits idle for {self._limits.camera_idle_timeout_s:.0f} s); retry then, cancel scans/{owner} "
                "if it was abandoned, or upload images taken elsewhere with UploadImage, which needs no camera"
            )
        if self.camera_owner not in (None, scan_id):
            _log.warning("scans/%s lost the camera to scans/%s after sitting idle", self.camera_owner, scan_id)
        self.camera_owner = scan_id
        self._camera_used = time.monotonic()

    def _release_camera(self, scan_id: str) -> None:
        if self.camera_owner == scan_id:
            self.camera_owner = None
        self._focused_region.pop(scan_id, None)
        for key in [k for k in self._locked_exposure if k[0] == scan_id]:
            del self._locked_exposure[key]

    def locked_exposure(self, scan_id: str, lighting: Lighting) -> tuple[int, float] | None:
        """The (exposure_us, analogue_gain) locked for a scan's captures under ``lighting``, or None before the first."""
        return self._locked_exposure.get((scan_id, lighting))

    async def capture_region(
        self, scan_id: str, region: str, settings: CaptureSettings | None = None
    ) -> tuple[tuple[ImageRecord, ...], ScanRecord]:
        """Capture ``region`` with the unit's camera, gate each frame, and store them with the scan.

        Without ``settings`` it takes one frame per lighting channel the model
        declares, in the manifest's order, all of one spot at one focus; with
        them, one frame under ``settings.lighting``. Returns the stored records,
        the first channel's first, and the scan after them.
        """
        async with self._lock(scan_id):
            scan = self._in_progress(scan_id)
            material = self._region_material(scan, region)
            channels = (settings.lighting,) if settings else self._declared_lighting()
            self._check_room(scan, len(channels))
            self._take_camera(scan_id)
            imager = self._imager
            assert imager is not None
            focus = "none" if settings is not None and settings.focus_steps is not None else "full"
            if focus == "full" and self._focused_region.get(scan_id) == region:
                focus = "refine"
            records: tuple[ImageRecord, ...] = ()
            for k, channel in enumerate(channels):
                wanted = settings or CaptureSettings(lighting=channel)
                locked = self._locked_exposure.get((scan_id, channel))
                thresholds = self._bundle.quality_overrides(material, channel.value)
                async with self.camera_lock:
                    # The first frame presents the spot and focuses; the others image that spot at that focus.
                    judged, locked = await asyncio.to_thread(
                        self._capture_blocking,
                        imager,
                        region,
                        wanted,
                        focus if k == 0 else "none",
                        locked,
                        present=k == 0,
                        thresholds=thresholds,
                    )
                if locked is not None and judged.quality.ok:
                    # Only an exposure that gave a usable image is locked: one metered on an empty stage or a
                    # lifted scanner would spoil every later capture of the scan.
                    self._locked_exposure[(scan_id, channel)] = locked
                if k == 0:
                    # A retake after a failed frame searches the whole focus range again: the failure may be
                    # the focus itself (the scanner lifted, or nothing under the lens while it focused).
                    if judged.quality.ok:
                        self._focused_region[scan_id] = region
                    else:
                        self._focused_region.pop(scan_id, None)
                self._camera_used = time.monotonic()
                analysed = None
                if judged.quality.ok:
                    async with self._image_work:
                        analysed = await asyncio.to_thread(self._analyse_early, judged.frame.pixels, material)
                data = await asyncio.to_thread(codec.encode, judged.frame.pixels, codec.ImageFormat.PNG)
                digest = await asyncio.to_thread(self._store.put_image, data, codec.ImageFormat.PNG)
                meta = ImageMeta.of_frame(judged.frame, self._device_id)
                record = ImageRecord(
                    image_id=f"{len(scan.images) + 1:03d}",
                    region=region,
                    origin=ImageOrigin.CAMERA,
                    sha256=digest,
                    size_bytes=len(data),
                    format=codec.ImageFormat.PNG,
                    quality=judged.quality,
                    meta=meta,
                )
                records += (record,)
                scan = await self._add_image(scan, record)
                if analysed is not None:
                    self._analyses[(scan_id, record.image_id)] = analysed
            return records, scan

    def _default_lighting(self) -> Lighting:
        return self._declared_lighting()[0]

    def _declared_lighting(self) -> tuple[Lighting, ...]:
        """The lighting channels the model needs, in the manifest's order; the white ring when it names none."""
        return tuple(Lighting(c) for c in self._bundle.lighting) or (Lighting.WHITE_RING,)

    def _capture_blocking(
        self,
        imager: Imager,
        region: str,
        settings: CaptureSettings,
        focus: str,
        locked: tuple[int, float] | None,
        *,
        present: bool = True,
        thresholds: Mapping[str, float] | None = None,
    ) -> tuple[JudgedFrame, tuple[int, float] | None]:
        """Present the region, expose (locking the exposure on first use), focus, capture and gate.

        Focus is a full search on a new region and a local one otherwise.
        ``present`` False keeps the spot under the lens (the later frames of a
        lighting sequence); ``thresholds`` are the gate's overrides for the
        region's material and the lighting. Returns the frame and the scan's
        locked exposure for the lighting.
        """
        if present and self._stage is not None:
            self._stage.present(region)
        if settings.exposure_us is None or settings.analogue_gain is None:
            if locked is None:
                found = imager.auto_expose(settings.lighting, led_duty_pct=settings.led_duty_pct)
                if not found.converged:
                    _log.warning(
                        "auto-exposure for %s did not converge (%s); locking %d us at gain %.2f",
                        settings.lighting.value,
                        found.reason,
                        found.exposure_us,
                        found.analogue_gain,
                    )
                locked = (found.exposure_us, found.analogue_gain)
            settings = replace(
                settings,
                exposure_us=settings.exposure_us or locked[0],
                analogue_gain=settings.analogue_gain or locked[1],
            )
        if focus != "none":
            imager.autofocus(settings.lighting, refine=focus == "refine")
        return imager.capture(settings, thresholds=thresholds), locked

    @property
    def spool_dir(self) -> Path:
        """Where uploads larger than a chunk wait on disk until they are judged: on the data volume, not in RAM."""
        return self._store.data_dir

    async def upload_image(
        self, scan_id: str, region: str, data: bytes | IO[bytes], *, declared_sha256: str = ""
    ) -> tuple[ImageRecord, ScanRecord]:
        """Check, gate and store an image file captured elsewhere.

        ``data`` is the file's bytes, or a file holding them (read from the
        start, only once an image worker is free, so uploads waiting for one
        hold no memory).
        """
        async with self._lock(scan_id):
            scan = self._in_progress(scan_id)
            material = self._region_material(scan, region)
            self._check_room(scan)
            size = len(data) if isinstance(data, bytes) else data.seek(0, os.SEEK_END)
            if size == 0:
                raise InvalidArgument("the uploaded image is empty (0 bytes)")
            if size > self._limits.max_upload_bytes:
                raise ResourceExhausted(f"image of {size} bytes exceeds the limit of {self._limits.max_upload_bytes}")
            async with self._image_work:
                if not isinstance(data, bytes):
                    data = await asyncio.to_thread(_read_from_start, data)
                digest = await asyncio.to_thread(_sha256, data)
                if declared_sha256 and declared_sha256.lower() != digest:
                    raise InvalidArgument(
                        f"sha256 mismatch: header says {declared_sha256}, received bytes hash to {digest}"
                    )
                fmt = codec.sniff_format(data)
                report, (width, height), analysed = await asyncio.to_thread(self._judge_upload, data, material)
            await asyncio.to_thread(self._store.put_image, data, fmt)
            meta = ImageMeta(width=width, height=height, capture_time=self._clock())
            record = ImageRecord(
                image_id=f"{len(scan.images) + 1:03d}",
                region=region,
                origin=ImageOrigin.UPLOAD,
                sha256=digest,
                size_bytes=len(data),
                format=fmt,
                quality=report,
                meta=meta,
            )
            scan = await self._add_image(scan, record)
            if analysed is not None:
                self._analyses[(scan_id, record.image_id)] = analysed
            return record, scan

    def _judge_upload(
        self, data: bytes, material: str
    ) -> tuple[quality.QualityReport, tuple[int, int], tuple[ActiveModel, ImageAnalysis] | None]:
        """Decode an uploaded file once: its gate report, its (width, height), and its analysis when it passes."""
        pixels = codec.decode(data, max_pixels=self._limits.max_image_pixels)
        height, width = int(pixels.shape[0]), int(pixels.shape[1])
        _check_shape(width, height, self._bundle.tiling)
        report = quality.assess(pixels, self._bundle.quality_overrides(material))
        return report, (width, height), self._analyse_early(pixels, material) if report.ok else None

    def _analyse_early(self, pixels: RGBImage, material: str) -> tuple[ActiveModel, ImageAnalysis] | None:
        """The current model's analysis of a frame as it arrives; None when the model fails on it.

        A failure here is not the caller's: completion analyses the stored image
        again and reports the failure there, on the scan.
        """
        model = self._model
        try:
            return model, model.analyzer.analyze_image(pixels, material)
        except Exception:  # completion repeats the analysis and fails the scan with the cause
            _log.warning("analysis of an arriving %s image failed; completion will retry it", material, exc_info=True)
            return None

    async def complete(self, scan_id: str) -> ScanRecord:
        """Run inference on the accepted images and decide the verdict."""
        async with self._lock(scan_id):
            scan = self._in_progress(scan_id)
            model = self._model  # this completion uses one model throughout, whatever swaps meanwhile
            self._publish(ScanEvent("analyzing", scan, self._clock()))
            try:
                async with self._image_work:
                    decision, analyses = await asyncio.to_thread(self._decide_blocking, scan, model)
            except Exception as exc:
                failed = scan.evolve(state=ScanState.FAILED, error_message=str(exc), update_time=self._clock())
                await asyncio.to_thread(self._store.save, failed)
                self._finish(failed)
                raise
            now = self._clock()
            outcome = ScanOutcome(
                verdict=decision.verdict,
                reason=decision.reason,
                score=float(decision.score),
                threshold=float(decision.threshold),
                summary=decision.summary,
                model_name=model.bundle.name,
                model_version=model.bundle.version,
                model_sha256=model.bundle.sha256,
                complete_time=now,
                regions=tuple(
                    RegionOutcome(
                        region=r.region,
                        material=r.material,
                        score=r.score,
                        familiarity=r.familiarity,
                        explanations=tuple(r.explanations),
                        images=tuple(
                            ImageOutcome(
                                i.image_id,
                                i.quality_ok,
                                i.score,
                                i.familiarity,
                                self._tile_map(model.bundle, analyses.get(i.image_id)),
                            )
                            for i in r.images
                        ),
                    )
                    for r in decision.regions
                ),
            )
            done = scan.evolve(state=ScanState.COMPLETED, outcome=outcome, update_time=now)
            if self._signing_key is not None:
                # Signed once, stored with the record, and served as stored ever after.
                done = done.evolve(certificate=certificates.issue(done, self._device_id, self._signing_key, now))
            await asyncio.to_thread(self._store.save, done)
            self._finish(done)
            return done

    def _decide_blocking(self, scan: ScanRecord, model: ActiveModel) -> tuple[ItemDecision, dict[str, ImageAnalysis]]:
        """The verdict by ``model``, and the analysis of each analysed image by image id."""
        spec = model.bundle.item_type(scan.item_type)
        by_region: dict[str, list[tuple[str, bool, ImageAnalysis | None]]] = {r.name: [] for r in spec.regions}
        analyses: dict[str, ImageAnalysis] = {}
        for image in scan.images:
            analysis: ImageAnalysis | None = None
            if image.quality.ok:
                early = self._analyses.get((scan.scan_id, image.image_id))
                if early is not None and early[0] is model:
                    analysis = early[1]
                else:
                    data = self._store.read_image(image.sha256, image.format)
                    pixels = codec.decode(data, max_pixels=self._limits.max_image_pixels)
                    analysis = model.analyzer.analyze_image(pixels, self._region_material(scan, image.region))
                analyses[image.image_id] = analysis
            by_region[image.region].append((image.image_id, image.quality.ok, analysis))
        return decide(model.bundle, spec, by_region), analyses

    def _tile_map(self, bundle: ModelBundle, analysis: ImageAnalysis | None) -> TileMap | None:
        """What an explanation of the image needs later, in the record; None for an image not analysed."""
        if analysis is None:
            return None
        tiling = bundle.tiling
        return TileMap(
            work_width_px=tiling.work_width_px,
            tile_px=tiling.tile_px,
            grid_rows=tiling.grid_rows,
            grid_cols=tiling.grid_cols,
            scores=tuple(float(v) for v in analysis.tile_scores.ravel()),
            familiarity=tuple(float(v) for v in analysis.tile_familiarity.ravel()),
            score_threshold=float(bundle.thresholds.for_material(analysis.material).item),
            familiarity_threshold=float(bundle.thresholds.familiarity),
        )

    async def explain(self, scan_id: str) -> tuple[ScanRecord, tuple[ImageExplanation, ...]]:
        """The scan and a heat-map explanation of each of its analysed images, in capture order.

        Heat-maps are rendered on request from the stored image and the per-tile
        results recorded at completion, so they survive restarts and follow the
        model that decided the verdict even after a model update.

        Raises NotFound for an unknown scan (or a stored image that has gone), and
        FailedPrecondition for a scan that is not COMPLETED or was completed by a
        daemon that did not record per-tile results.
        """
        scan = self._store.get(scan_id)
        if scan.state is not ScanState.COMPLETED or scan.outcome is None:
            raise FailedPrecondition(f"scan {scan_id!r} is {scan.state.name}; only COMPLETED scans have an explanation")
        analysed: dict[str, tuple[str, TileMap]] = {}
        for region in scan.outcome.regions:
            for image in region.images:
                if image.score is None:
                    continue
                if image.tiles is None:
                    raise FailedPrecondition(
                        f"scan {scan_id!r} was completed by an older daemon that did not record per-tile results, "
                        "so it has no explanation; scan the item again"
                    )
                analysed[image.image_id] = (region.material, image.tiles)
        return scan, await asyncio.to_thread(self._explain_blocking, scan, analysed)

    def _explain_blocking(
        self, scan: ScanRecord, analysed: dict[str, tuple[str, TileMap]]
    ) -> tuple[ImageExplanation, ...]:
        explained = []
        for image in scan.images:
            if image.image_id not in analysed:
                continue
            material, tiles = analysed[image.image_id]
            pixels = codec.decode(
                self._store.read_image(image.sha256, image.format), max_pixels=self._limits.max_image_pixels
            )
            rendered = heatmap.render(
                pixels,
                Tiling(tiles.work_width_px, tiles.tile_px, tiles.grid_rows, tiles.grid_cols),
                tiles.scores,
                tiles.familiarity,
                score_threshold=tiles.score_threshold,
                familiarity_threshold=tiles.familiarity_threshold,
            )
            explained.append(
                ImageExplanation(
                    image_id=image.image_id,
                    region=image.region,
                    material=material,
                    tiles=tiles,
                    column_x_px=rendered.column_x_px,
                    row_y_px=rendered.row_y_px,
                    width_px=int(rendered.pixels.shape[1]),
                    height_px=int(rendered.pixels.shape[0]),
                    png=codec.encode(rendered.pixels, codec.ImageFormat.PNG),
                )
            )
        return tuple(explained)

    def certificate(self, scan_id: str) -> str:
        """The signed certificate document of a COMPLETED scan, exactly as issued at completion.

        Raises NotFound for an unknown scan, and FailedPrecondition for a scan that
        is not COMPLETED or was completed by a daemon that issued no certificates.
        """
        scan = self._store.get(scan_id)
        if scan.state is not ScanState.COMPLETED:
            raise FailedPrecondition(f"scan {scan_id!r} is {scan.state.name}; only COMPLETED scans have a certificate")
        if not scan.certificate:
            raise FailedPrecondition(
                f"scan {scan_id!r} was completed by a daemon that issued no certificates; scan the item again"
            )
        return scan.certificate

    async def label(self, scan_id: str, label: ScanLabel | None) -> ScanRecord:
        """Record an expert's ground truth on a COMPLETED scan (None removes it) and save it durably.

        Sets ``label`` and ``label_time`` (None when removing), and ``update_time``;
        the verdict and the certificate stay as they are. Raises NotFound for an
        unknown scan and FailedPrecondition, naming the state, for a scan that is
        not COMPLETED.
        """
        async with self._lock(scan_id):
            scan = self._store.get(scan_id)
            if scan.state is not ScanState.COMPLETED:
                raise FailedPrecondition(f"scan {scan_id!r} is {scan.state.name}; only COMPLETED scans can be labelled")
            now = self._clock()
            labelled = scan.evolve(label=label, label_time=now if label is not None else None, update_time=now)
            # existing: retention may prune this finished scan meanwhile, and must not see it brought back.
            await asyncio.to_thread(self._store.save, labelled, existing=True)
            self._scan_locks.pop(scan_id, None)
            return labelled

    async def image_content(self, scan_id: str, image_id: str, fmt: codec.ImageFormat | None) -> ImageContent:
        """One stored image of a scan, as its stored file or, for ``fmt`` PNG of a stored JPEG, converted to PNG.

        ``fmt`` None (or the stored format) gives the stored file, to be read in
        chunks; PNG of a stored JPEG decodes it with the safe decoder and encodes
        the pixels as PNG, so nothing more is lost. Raises NotFound for an
        unknown scan or image (or a file that has gone), and InvalidArgument
        for JPEG of an image stored as PNG (that would lose detail).
        """
        scan = self._store.get(scan_id)
        image = next((i for i in scan.images if i.image_id == image_id), None)
        if image is None:
            known = ", ".join(i.image_id for i in scan.images) or "none"
            raise NotFound(f"scan {scan_id!r} has no image {image_id!r}; its images are: {known}")
        path = self._store.image_path(image.sha256, image.format)
        if fmt is None or fmt is image.format:
            try:
                size = await asyncio.to_thread(lambda: path.stat().st_size)
            except FileNotFoundError:
                raise NotFound(f"image {image_id!r} of scan {scan_id!r} is no longer stored") from None
            return ImageContent(image, image.format, size, image.sha256, path=path)
        if fmt is not codec.ImageFormat.PNG:
            raise InvalidArgument(
                f"image {image_id!r} is stored as {image.format.name}; it can be sent as stored or as PNG, not as "
                f"{fmt.name}"
            )
        async with self._conversions:
            data = await asyncio.to_thread(self._to_png, image)
        return ImageContent(image, codec.ImageFormat.PNG, len(data), hashlib.sha256(data).hexdigest(), data=data)

    def _to_png(self, image: ImageRecord) -> bytes:
        pixels = codec.decode(
            self._store.read_image(image.sha256, image.format), max_pixels=self._limits.max_image_pixels
        )
        return codec.encode(pixels, codec.ImageFormat.PNG)

    async def cancel(self, scan_id: str) -> ScanRecord:
        """Cancel a scan that is still in progress."""
        async with self._lock(scan_id):
            scan = self._in_progress(scan_id)
            cancelled = scan.evolve(state=ScanState.CANCELLED, update_time=self._clock())
            await asyncio.to_thread(self._store.save, cancelled)
            self._finish(cancelled)
            return cancelled

    def _finish(self, scan: ScanRecord) -> None:
        self._open_scans.discard(scan.scan_id)
        for key in [k for k in self._analyses if k[0] == scan.scan_id]:
            del self._analyses[key]
        self._release_camera(scan.scan_id)
        self._scan_locks.pop(scan.scan_id, None)
        self._publish(ScanEvent("finished", scan, self._clock(), message=scan.state.name))


def _read_from_start(file: IO[bytes]) -> bytes:
    file.seek(0)
    return file.read()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_shape(width_px: int, height_px: int, tiling: Tiling) -> None:
    """Refuse an uploaded image the model could not analyse: InvalidArgument naming its size and the limit.

    Checked on upload, so that a bad image is refused alone rather than failing its whole scan at completion.
    """
    ratio = max(width_px, height_px) / min(width_px, height_px)
    if ratio > MAX_IMAGE_ASPECT:
        raise InvalidArgument(
            f"image of {width_px}x{height_px} px has an aspect ratio of {ratio:.1f}:1; at most "
            f"{MAX_IMAGE_ASPECT:g}:1 is accepted (microscope frames are 4:3 or 16:9)"
        )
    work_width_px, work_height_px = work_size(width_px, height_px, tiling)
    if work_height_px < tiling.tile_px:
        raise InvalidArgument(
            f"image of {width_px}x{height_px} px is too wide for the model: at its working width of {work_width_px} px "
            f"it is {work_height_px} px high, less than one {tiling.tile_px} px tile"
        )
