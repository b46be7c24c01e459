"""``Client``: the blocking client of a Veriscope unit."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc

from veriscope.sdk import _rpcs as rpcs
from veriscope.sdk._base import DEFAULT_TARGET, BaseClient, Emit, Flow, Step, StreamCall, UnaryCall, serialize
from veriscope.sdk._exceptions import from_rpc_error
from veriscope.sdk._models import (
    AutofocusResult,
    Calibration,
    CaptureResult,
    CaptureSettings,
    DeviceInfo,
    DeviceStatus,
    ImageFormat,
    ImageUpload,
    LightingChannel,
    ModelInfo,
    PlacedItem,
    PreviewFrame,
    RegionCapture,
    Scan,
    ScanEvent,
    ScanExplanation,
    ScanPage,
    ScanResult,
    SimulatedMaterial,
    UpdateStatus,
)
from veriscope.sdk._rpcs import ReqT, RespT, Rpc
from veriscope.sdk._types import EventCallback, ImageData, Metadata

T = TypeVar("T")


class Client(BaseClient):
    """A blocking connection to one Veriscope unit.

    Every method makes one or more RPCs, each bounded by a deadline: the method's
    ``timeout_s`` if given, else the client's ``timeout_s``, else the RPC's default
    (10 s for quick calls; 60 s for captures, autofocus, uploads, CompleteScan and
    GetScanExplanation; 15 min for streams). Every failed RPC raises a :class:`VeriscopeError` leaf, for
    example :class:`NotFoundError`; arguments the SDK can check itself raise
    ``ValueError``/``TypeError`` before anything is sent.

    Use it as a context manager, or call :meth:`close`::

        with Client("veriscope.local:50051") as client:
            result = client.scan("tote-classic")
            print(result.verdict, result.score)

    Args:
        target: The device's ``"host:port"``.
        timeout_s: Deadline in seconds for every call; None keeps each RPC's default.
        channel_credentials: TLS credentials (``grpc.ssl_channel_credentials(...)``); None for plain TCP.
        metadata: gRPC metadata sent with every call, as (key, value) pairs.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout_s: float | None = None,
        channel_credentials: grpc.ChannelCredentials | None = None,
        metadata: Metadata = (),
    ) -> None:
        super().__init__(target, timeout_s=timeout_s, channel_credentials=channel_credentials, metadata=metadata)
        options = self._channel_options()
        if channel_credentials is None:
            self._channel = grpc.insecure_channel(self._target, options=options)
        else:
            self._channel = grpc.secure_channel(self._target, channel_credentials, options=options)

    # --- Lifecycle ---

    def close(self) -> None:
        """Close the connection. Safe to call twice; the client cannot be used afterwards."""
        if not self._closed:
            self._closed = True
            self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- Driver ---

    def _run(self, flow: Flow[T]) -> T:
        """Run a flow to its end, performing each step and sending back its outcome."""
        outcome: Any = None
        error: BaseException | None = None
        while True:
            try:
                step = flow.send(outcome) if error is None else flow.throw(error)
            except StopIteration as stop:
                result: T = stop.value
                return result
            outcome, error = None, None
            try:
                outcome = self._perform(step)
            except BaseException as exc:  # including KeyboardInterrupt: the flow cancels its scan, then re-raises
                error = exc

    def _perform(self, step: Step) -> Any:
        if isinstance(step, Emit):
            step.callback(step.event)
            return None
        self._check_open()
        rpc = step.rpc
        try:
            if isinstance(step, UnaryCall):
                unary = self._channel.unary_unary(
                    rpc.path, request_serializer=serialize, response_deserializer=rpc.response_type.FromString
                )
                return unary(step.request, timeout=step.timeout_s, metadata=self._metadata)
            assert isinstance(step, StreamCall)
            upload = self._channel.stream_unary(
                rpc.path, request_serializer=serialize, response_deserializer=rpc.response_type.FromString
            )
            return upload(iter(step.requests), timeout=step.timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, rpc.method) from exc

    def _server_stream(
        self, rpc: Rpc[ReqT, RespT], request: ReqT, timeout_s: float, result: Callable[[RespT], T]
    ) -> Generator[T, None, None]:
        self._check_open()
        responses = self._channel.unary_stream(
            rpc.path, request_serializer=serialize, response_deserializer=rpc.response_type.FromString
        )(request, timeout=timeout_s, metadata=self._metadata)
        try:
            for response in responses:
                yield result(response)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, rpc.method) from exc
        finally:
            # Stops the device's stream when the caller breaks out early.
            responses.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs leaves cancel() untyped

    # --- Device ---

    def get_device(self, *, timeout_s: float | None = None) -> DeviceInfo:
        """Return the unit's identity, versions, hardware, capabilities and item types (with their regions)."""
        return self._run(self._get_device_flow(timeout_s))

    def get_status(self, *, timeout_s: float | None = None) -> DeviceStatus:
        """Return the unit's current operating status: state, active scan, controller, temperature, storage."""
        return self._run(self._get_status_flow(timeout_s))

    # --- Capture ---

    def capture(
        self,
        settings: CaptureSettings | None = None,
        *,
        image_format: ImageFormat = ImageFormat.PNG,
        jpeg_quality: int | None = None,
        timeout_s: float | None = None,
    ) -> CaptureResult:
        """Capture one full-resolution frame outside any scan, with its quality report.

        Args:
            settings: Camera and lighting settings; None lets the device choose.
            image_format: Encoding of the returned frame.
            jpeg_quality: 1..100 for JPEG frames; None means 92.

        Raises:
            FailedPreconditionError: A scan owns the camera.
            DeviceUnavailableError: The camera or controller failed.
        """
        return self._run(self._capture_flow(settings, image_format, jpeg_quality, timeout_s))

    def capture_sequence(
        self,
        lighting: LightingChannel | Sequence[LightingChannel],
        *,
        settings: CaptureSettings | None = None,
        image_format: ImageFormat = ImageFormat.PNG,
        jpeg_quality: int | None = None,
        timeout_s: float | None = None,
    ) -> tuple[CaptureResult, ...]:
        """Capture one full-resolution frame per lighting channel, in order, at the same focus; lights off after.

        Each result's ``metadata.lighting`` names its channel and its ``quality``
        is judged for that channel.

        Args:
            lighting: 1..4 distinct channels, for example ``[LightingChannel.WHITE_RING, LightingChannel.UV]``, or one.
            settings: Exposure, gain, duty and focus for every frame; its ``lighting`` must be None.
            image_format: Encoding of the returned frames.
            jpeg_quality: 1..100 for JPEG frames; None means 92.

        Raises:
            ValueError: ``lighting`` is empty, too long or repeats a channel, or ``settings.lighting`` is set.
            FailedPreconditionError: A scan owns the camera.
        """
        return self._run(self._capture_sequence_flow(lighting, settings, image_format, jpeg_quality, timeout_s))

    def stream_preview(
        self,
        *,
        max_fps: float | None = None,
        width_px: int | None = None,
        jpeg_quality: int | None = None,
        max_frames: int | None = None,
        lighting: LightingChannel | None = None,
        timeout_s: float | None = None,
    ) -> Generator[PreviewFrame, None, None]:
        """Iterate over low-resolution JPEG preview frames; stop iterating (or close the iterator) to end the stream.

        Args:
            max_fps: Frames per second to aim for, 1..30; None means 10.
            width_px: Frame width, 64..1280 pixels; None means 640.
            jpeg_quality: 1..100; None means 75.
            max_frames: Stop after this many frames; None streams until the caller stops or the deadline.
            lighting: Lighting during the preview; None means the white ring.
            timeout_s: Bound on the whole stream (default 15 min).
        """
        request = self._preview_request(max_fps, width_px, jpeg_quality, max_frames, lighting)
        deadline = self._deadline(rpcs.STREAM_PREVIEW, timeout_s)
        return self._server_stream(rpcs.STREAM_PREVIEW, request, deadline, self._preview_frame)

    def autofocus(
        self, *, lighting: LightingChannel | None = None, max_steps: int | None = None, timeout_s: float | None = None
    ) -> AutofocusResult:
        """Search the focus range for the sharpest position, move there, and return the focus curve.

        Args:
            lighting: Lighting during the search; None means the white ring.
            max_steps: Most frames the search may take, 1..10000; None means the device default (40).
        """
        return self._run(self._autofocus_flow(lighting, max_steps, timeout_s))

    # --- Calibration ---

    def get_calibration(self, *, timeout_s: float | None = None) -> Calibration:
        """Return the unit's flat-field and white-balance calibration; its ``state`` says whether captures use it."""
        return self._run(self._get_calibration_flow(timeout_s))

    def calibrate(
        self,
        *,
        lighting_channels: Iterable[LightingChannel] | None = None,
        frames: int | None = None,
        timeout_s: float | None = None,
    ) -> Calibration:
        """Calibrate the camera from the white reference target under the lens; every later capture is corrected.

        For each lighting channel the unit auto-exposes the target, averages ``frames``
        full-resolution frames and derives a flat field (removing vignetting) and white-balance
        gains (making the white target neutral), then stores them. Takes a few seconds per channel
        (default deadline 3 min).

        Args:
            lighting_channels: Channels to calibrate (WHITE_RING, RAKING); None means those the
                active model captures with, at least the white ring.
            frames: Frames averaged per channel, 1..64; None means 8.

        Raises:
            FailedPreconditionError: A scan owns the camera, or the target is not a clean, flat white
                reference (the message says what is wrong, for example "target not uniform: corner/centre
                ratio 0.31").
            InvalidArgumentError: A channel a white target cannot calibrate (UV, OFF).
        """
        return self._run(self._calibrate_flow(lighting_channels, frames, timeout_s))

    # --- Scans: guided ---

    def scan(
        self,
        item_type: str,
        *,
        partner_item_id: str | None = None,
        max_retakes_per_region: int = 3,
        settings: CaptureSettings | None = None,
        on_event: EventCallback | None = None,
        timeout_s: float | None = None,
    ) -> ScanResult:
        """Scan the item under the lens with the unit's camera and return the verdict.

        Creates a scan, captures every required region until it has its accepted
        images, retaking a region whose image fails the quality gate up to
        ``max_retakes_per_region`` times (the hints go to ``on_event``), then completes
        the scan. A region that still fails does not stop the scan: the verdict is
        then UNVERIFIED with reason INSUFFICIENT_QUALITY. If anything fails half-way
        (including Ctrl-C), the scan is cancelled on the device before the error propagates.

        ``on_event`` runs before each capture (a CAPTURING event naming the region and
        where it is on the item), so a handheld workflow can block there until the
        scanner is in place.

        Args:
            item_type: The item type, one of ``get_device().item_types``.
            partner_item_id: Your own id for the item, at most 128 characters.
            max_retakes_per_region: Captures of a region that may fail before ``scan()`` gives up on it, 0..1000.
            settings: Camera settings for every capture; None uses the scan's locked exposure and the model's lighting.
            on_event: Called with each :class:`ScanEvent` (CAPTURING, RETAKE_REQUESTED, ...).
            timeout_s: Deadline of each RPC the scan makes.

        Raises:
            NotFoundError / InvalidArgumentError: Unknown item type.
            FailedPreconditionError: Another scan owns the camera.
            DeviceUnavailableError, DeadlineExceededError: The device is unreachable or too slow.
        """
        flow = self._scan_flow(item_type, partner_item_id, max_retakes_per_region, settings, on_event, timeout_s)
        return self._run(flow)

    def analyze(
        self,
        item_type: str,
        images: Iterable[tuple[str, ImageData]],
        *,
        partner_item_id: str | None = None,
        on_event: EventCallback | None = None,
        timeout_s: float | None = None,
    ) -> ScanResult:
        """Authenticate an item from images captured elsewhere and return the verdict.

        Checks every image first (PNG or JPEG, 1 byte..32 MiB, file exists), then
        creates a scan, uploads each image in 1 MiB chunks with its SHA-256, and
        completes the scan. Regions with too few accepted images make the verdict
        UNVERIFIED (INSUFFICIENT_QUALITY or INSUFFICIENT_COVERAGE). On failure half-way
        the scan is cancelled on the device.

        Args:
            item_type: The item type.
            images: (region, image) pairs; an image is its encoded bytes or the path of a file.
            partner_item_id: Your own id for the item, at most 128 characters.
            on_event: Called with each :class:`ScanEvent` (UPLOADING, IMAGE_ACCEPTED, IMAGE_REJECTED, ...).
            timeout_s: Deadline of each RPC.

        Raises:
            ValueError: No images, an image that is empty, too large, not PNG/JPEG, or of a region the
                item type does not have.
            FileNotFoundError: An image file does not exist.
        """
        return self._run(self._analyze_flow(item_type, images, partner_item_id, on_event, timeout_s))

    # --- Scans: single steps ---

    def create_scan(
        self, item_type: str, *, partner_item_id: str | None = None, timeout_s: float | None = None
    ) -> Scan:
        """Start a scan of one item; returns it IN_PROGRESS with the regions to capture."""
        return self._run(self._create_scan_flow(item_type, partner_item_id, timeout_s))

    def capture_region(
        self,
        scan_id: str,
        region: str,
        *,
        settings: CaptureSettings | None = None,
        timeout_s: float | None = None,
    ) -> RegionCapture:
        """Capture one image of a region with the unit's camera; ``retake_required`` says whether it failed the gate."""
        return self._run(self._capture_region_flow(scan_id, region, settings, timeout_s))

    def upload_image(
        self, scan_id: str, region: str, image: ImageData, *, timeout_s: float | None = None
    ) -> ImageUpload:
        """Add an image captured elsewhere (PNG/JPEG bytes or a file path, at most 32 MiB) to a scan."""
        return self._run(self._upload_image_flow(scan_id, region, image, timeout_s))

    def complete_scan(self, scan_id: str, *, timeout_s: float | None = None) -> Scan:
        """Run inference on the scan's accepted images; returns the scan COMPLETED, with ``result`` set."""
        return self._run(self._complete_scan_flow(scan_id, timeout_s))

    def get_scan(self, scan_id: str, *, timeout_s: float | None = None) -> Scan:
        """Return one scan. Raises NotFoundError when the device has no such scan."""
        return self._run(self._get_scan_flow(scan_id, timeout_s))

    def get_scan_explanation(self, scan_id: str, *, timeout_s: float | None = None) -> ScanExplanation:
        """Return why a completed scan got its verdict: a heat-map and the tile scores of each analysed image.

        Each :class:`ImageHeatmap` holds the image at the model's working scale with every tile's
        calibrated score laid over it (red counterfeit-like, green genuine-like, grey and hatched
        unfamiliar), and the scores themselves; ``regions`` repeats each region's result with its
        explanations in words. The device renders the heat-maps on request, so allow it a moment
        (default deadline 60 s).

        Args:
            scan_id: The scan's id, or its name ``"scans/{scan_id}"``.

        Raises:
            NotFoundError: The device has no such scan.
            FailedPreconditionError: The scan is not COMPLETED, or an older device software completed it
                without keeping the per-tile results.
        """
        return self._run(self._get_scan_explanation_flow(scan_id, timeout_s))

    def list_scans(
        self,
        *,
        page_size: int | None = None,
        page_token: str | None = None,
        filter: str | None = None,
        timeout_s: float | None = None,
    ) -> ScanPage:
        """Return one page of scans, newest first.

        Args:
            page_size: 1..1000 scans; None means the device default (50).
            page_token: ``next_page_token`` of the previous page; None for the first.
            filter: Conditions joined by AND, e.g. ``'verdict = AUTHENTIC AND create_time >= "2026-01-01T00:00:00Z"'``.
        """
        return self._run(self._list_scans_flow(page_size, page_token, filter, timeout_s))

    def iter_scans(
        self, *, filter: str | None = None, page_size: int | None = None, timeout_s: float | None = None
    ) -> Generator[Scan, None, None]:
        """Iterate over every scan, newest first, fetching pages as needed (each page bounded by ``timeout_s``)."""
        first = self._list_scans_flow(page_size, None, filter, timeout_s)  # checks the arguments now
        page = self._run(first)
        while True:
            yield from page.scans
            if page.next_page_token is None:
                return
            page = self._run(self._list_scans_flow(page_size, page.next_page_token, filter, timeout_s))

    def watch_scan(self, scan_id: str, *, timeout_s: float | None = None) -> Generator[ScanEvent, None, None]:
        """Iterate over a scan's progress events (a SNAPSHOT first) until it ends or you stop iterating."""
        request = self._watch_request(scan_id)
        deadline = self._deadline(rpcs.WATCH_SCAN, timeout_s)
        return self._server_stream(rpcs.WATCH_SCAN, request, deadline, self._scan_event)

    def cancel_scan(self, scan_id: str, *, timeout_s: float | None = None) -> Scan:
        """Cancel a scan that has not completed and release the camera. FailedPreconditionError if it has ended."""
        return self._run(self._cancel_scan_flow(scan_id, timeout_s))

    # --- Models, updates ---

    def list_models(self, *, timeout_s: float | None = None) -> list[ModelInfo]:
        """Return every installed model, active first."""
        return self._run(self._list_models_flow(timeout_s))

    def get_model(self, model_id: str = "active", *, timeout_s: float | None = None) -> ModelInfo:
        """Return one installed model by ``"{name}@{version}"``, or the active one."""
        return self._run(self._get_model_flow(model_id, timeout_s))

    def get_update_status(self, *, timeout_s: float | None = None) -> UpdateStatus:
        """Return what is installed in each updatable component's slots."""
        return self._run(self._get_update_status_flow(timeout_s))

    # --- Simulation (simulated units only; others raise UnimplementedError or FailedPreconditionError) ---

    def place_item(
        self, item_type: str, source: str = "genuine", seed: int = 0, *, timeout_s: float | None = None
    ) -> PlacedItem:
        """Place a virtual item under a simulated unit's lens, replacing any item there.

        Args:
            item_type: The item type.
            source: ``"genuine"`` or a counterfeit source from :meth:`list_sources`.
            seed: Which individual item, 0..2**63-1; the same triple always makes the same item.
        """
        return self._run(self._place_item_flow(item_type, source, seed, timeout_s))

    def get_placed_item(self, *, timeout_s: float | None = None) -> PlacedItem | None:
        """Return the virtual item under a simulated unit's lens, or None when the stage is empty."""
        return self._run(self._get_placed_item_flow(timeout_s))

    def clear_item(self, *, timeout_s: float | None = None) -> None:
        """Remove the virtual item, leaving an empty stage."""
        self._run(self._clear_item_flow(timeout_s))

    def list_sources(self, *, timeout_s: float | None = None) -> list[SimulatedMaterial]:
        """Return the materials a simulated unit can make, each with its genuine and counterfeit sources."""
        return self._run(self._list_sources_flow(timeout_s))
