"""``AsyncClient``: the asyncio client of a Veriscope unit. It mirrors ``Client`` method for method."""

from __future__ import annotations

import inspect
import os
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from datetime import date, datetime
from types import TracebackType
from typing import Any, TypeVar

import grpc
import grpc.aio

from veriscope.sdk import _convert as convert
from veriscope.sdk import _rpcs as rpcs
from veriscope.sdk._base import (
    DEFAULT_TARGET,
    BaseClient,
    Emit,
    Flow,
    SelfTestAssembler,
    ServerStreamCall,
    Step,
    StreamCall,
    UnaryCall,
    serialize,
)
from veriscope.sdk._exceptions import from_rpc_error
from veriscope.sdk._models import (
    AutofocusResult,
    Calibration,
    CaptureResult,
    CaptureSettings,
    DeviceInfo,
    DeviceStatus,
    ExportProgress,
    ExportSummary,
    ImageFormat,
    ImageUpload,
    LightingChannel,
    LogEntry,
    LogLevel,
    ModelInfo,
    PlacedItem,
    PreviewFrame,
    RegionCapture,
    Scan,
    ScanCertificate,
    ScanEvent,
    ScanExplanation,
    ScanLabel,
    ScanPage,
    ScanResult,
    SelfTestCheck,
    SimulatedMaterial,
    UpdateStatus,
)
from veriscope.sdk._rpcs import ReqT, RespT, Rpc
from veriscope.sdk._transport import PathOrPem, preflight_async
from veriscope.sdk._types import EventCallback, ImageData, Metadata

T = TypeVar("T")


def _same(message: T) -> T:
    return message


class AsyncClient(BaseClient):
    """An asyncio connection to one Veriscope unit; the async twin of :class:`Client`.

    Deadlines, errors and arguments behave exactly as in :class:`Client`. The
    connection is opened on first use, inside the running event loop, so the
    client may be built outside one. Use ``async with``, or ``await aclose()``::

        async with AsyncClient("veriscope.local:50051") as client:
            result = await client.scan("tote-classic")

    Args:
        target: The device's ``"host:port"``.
        timeout_s: Deadline in seconds for every call; None keeps each RPC's default.
        channel_credentials: TLS credentials (``grpc.ssl_channel_credentials(...)``); None for plain TCP.
        metadata: gRPC metadata sent with every call, as (key, value) pairs.
        token: An API token (``vs_<id>_<secret>``, from ``veriscope-tool tokens create`` on the unit), sent as
            ``authorization: Bearer`` metadata with every call; None sends none. A unit that requires tokens
            answers calls without one with :class:`UnauthenticatedError`, and calls its role may not make with
            :class:`PermissionDeniedError`. The SDK does not read ``$VERISCOPE_TOKEN``; the CLI does.
        ca: The fleet CA certificate (a PEM file name, or PEM bytes): use TLS and accept only a unit whose
            certificate this CA issued for ``tls_server_name``. See device/docs/security.md.
        pinned_key: ``"sha256:<hex>"``, the pin of the unit's TLS key (``veriscope-tool provision`` prints it):
            use TLS and accept only a unit holding exactly this key. May be combined with ``ca``.
        client_cert: For a unit that requires client certificates (mTLS): the client certificate, a PEM file.
        client_key: Its private key, a PEM file.
        tls_server_name: The name the unit's certificate must carry: ``"veriscope-unit"`` (every unit of the
            fleet) by default, or a device id to accept that unit only.

    With ``ca`` or ``pinned_key``, the first call checks the unit with a TLS handshake of its own and raises
    :class:`TlsError` saying what does not match, as :class:`Client` does.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout_s: float | None = None,
        channel_credentials: grpc.ChannelCredentials | None = None,
        metadata: Metadata = (),
        token: str | None = None,
        ca: PathOrPem | None = None,
        pinned_key: str | None = None,
        client_cert: str | os.PathLike[str] | None = None,
        client_key: str | os.PathLike[str] | None = None,
        tls_server_name: str | None = None,
    ) -> None:
        super().__init__(
            target,
            timeout_s=timeout_s,
            channel_credentials=channel_credentials,
            metadata=metadata,
            token=token,
            ca=ca,
            pinned_key=pinned_key,
            client_cert=client_cert,
            client_key=client_key,
            tls_server_name=tls_server_name,
        )
        self._aio_channel: grpc.aio.Channel | None = None

    async def _channel(self, timeout_s: float | None, method: str) -> grpc.aio.Channel:
        """The channel, opened on first use (after the TLS pre-flight). Raises TlsError or DeviceUnavailableError."""
        self._check_open()
        if self._aio_channel is None:
            verified = None
            if self._tls is not None:
                verified = await preflight_async(self._target, self._tls, self._preflight_timeout(timeout_s), method)
                self._check_open()
                if self._aio_channel is not None:  # another call opened it meanwhile
                    return self._aio_channel
            credentials, options = self._channel_security(verified)
            if credentials is None:
                self._aio_channel = grpc.aio.insecure_channel(self._target, options=options)
            else:
                self._aio_channel = grpc.aio.secure_channel(self._target, credentials, options=options)
        return self._aio_channel

    # --- Lifecycle ---

    async def aclose(self) -> None:
        """Close the connection, cancelling calls in flight. Safe to call twice."""
        if not self._closed:
            self._closed = True
            if self._aio_channel is not None:
                await self._aio_channel.close(None)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # --- Driver ---

    async def _run(self, flow: Flow[T]) -> T:
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
                outcome = await self._perform(step)
            except BaseException as exc:  # including CancelledError: the flow cancels its scan, then re-raises
                error = exc

    async def _perform(self, step: Step) -> Any:
        if isinstance(step, Emit):
            returned = step.callback(step.event)
            if inspect.isawaitable(returned):
                await returned
            return None
        rpc = step.rpc
        channel = await self._channel(step.timeout_s, rpc.method)
        try:
            if isinstance(step, UnaryCall):
                unary = channel.unary_unary(
                    rpc.path, request_serializer=serialize, response_deserializer=rpc.response_type.FromString
                )
                return await unary(step.request, timeout=step.timeout_s, metadata=self._metadata)
            if isinstance(step, ServerStreamCall):
                read = channel.unary_stream(
                    rpc.path, request_serializer=serialize, response_deserializer=rpc.response_type.FromString
                )
                return [
                    response async for response in read(step.request, timeout=step.timeout_s, metadata=self._metadata)
                ]
            assert isinstance(step, StreamCall)
            upload = channel.stream_unary(
                rpc.path, request_serializer=serialize, response_deserializer=rpc.response_type.FromString
            )
            return await upload(iter(step.requests), timeout=step.timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, rpc.method) from exc

    def _server_stream(
        self, rpc: Rpc[ReqT, RespT], request: ReqT, timeout_s: float, result: Callable[[RespT], T]
    ) -> AsyncGenerator[T, None]:
        self._check_open()

        async def responses() -> AsyncGenerator[T, None]:
            channel = await self._channel(timeout_s, rpc.method)
            call = channel.unary_stream(
                rpc.path, request_serializer=serialize, response_deserializer=rpc.response_type.FromString
            )(request, timeout=timeout_s, metadata=self._metadata)
            try:
                async for response in call:
                    yield result(response)
            except grpc.RpcError as exc:
                raise from_rpc_error(exc, rpc.method) from exc
            finally:
                # Stops the device's stream when the caller breaks out early.
                call.cancel()

        return responses()

    # --- Device ---

    async def get_device(self, *, timeout_s: float | None = None) -> DeviceInfo:
        """Return the unit's identity, versions, hardware, capabilities and item types (with their regions)."""
        return await self._run(self._get_device_flow(timeout_s))

    async def get_status(self, *, timeout_s: float | None = None) -> DeviceStatus:
        """Return the unit's current operating status: state, active scan, controller, temperature, storage."""
        return await self._run(self._get_status_flow(timeout_s))

    def run_self_test(self, *, timeout_s: float | None = None) -> AsyncGenerator[SelfTestCheck, None]:
        """Run the unit's self-test and iterate over each check's result; see :meth:`Client.run_self_test`."""
        deadline = self._deadline(rpcs.RUN_SELF_TEST, timeout_s)
        responses = self._server_stream(rpcs.RUN_SELF_TEST, rpcs.RUN_SELF_TEST.request_type(), deadline, _same)

        async def checks() -> AsyncGenerator[SelfTestCheck, None]:
            assembler = SelfTestAssembler()
            try:
                async for response in responses:
                    check = assembler.feed(response)
                    if check is not None:
                        yield check
            finally:
                await responses.aclose()

        return checks()

    def read_logs(
        self,
        *,
        since: datetime | None = None,
        min_level: LogLevel | None = None,
        follow: bool = False,
        timeout_s: float | None = None,
    ) -> AsyncGenerator[LogEntry, None]:
        """Iterate over the daemon's recent log lines, then (``follow``) new ones; see :meth:`Client.read_logs`."""
        request = self._read_logs_request(since, min_level, follow)
        deadline = self._deadline(rpcs.READ_LOGS, timeout_s)
        batches = self._server_stream(rpcs.READ_LOGS, request, deadline, convert.log_entries_from_pb)

        async def entries() -> AsyncGenerator[LogEntry, None]:
            try:
                async for batch in batches:
                    for entry in batch:
                        yield entry
            finally:
                await batches.aclose()

        return entries()

    # --- Capture ---

    async def capture(
        self,
        settings: CaptureSettings | None = None,
        *,
        image_format: ImageFormat = ImageFormat.PNG,
        jpeg_quality: int | None = None,
        timeout_s: float | None = None,
    ) -> CaptureResult:
        """Capture one full-resolution frame outside any scan, with its quality report (see ``Client.capture``)."""
        return await self._run(self._capture_flow(settings, image_format, jpeg_quality, timeout_s))

    async def capture_sequence(
        self,
        lighting: LightingChannel | Sequence[LightingChannel],
        *,
        settings: CaptureSettings | None = None,
        image_format: ImageFormat = ImageFormat.PNG,
        jpeg_quality: int | None = None,
        timeout_s: float | None = None,
    ) -> tuple[CaptureResult, ...]:
        """Capture one frame per lighting channel, in order, at the same focus (see ``Client.capture_sequence``)."""
        return await self._run(self._capture_sequence_flow(lighting, settings, image_format, jpeg_quality, timeout_s))

    def stream_preview(
        self,
        *,
        max_fps: float | None = None,
        width_px: int | None = None,
        jpeg_quality: int | None = None,
        max_frames: int | None = None,
        lighting: LightingChannel | None = None,
        timeout_s: float | None = None,
    ) -> AsyncGenerator[PreviewFrame, None]:
        """Iterate (``async for``) over low-resolution JPEG preview frames (see ``Client.stream_preview``)."""
        request = self._preview_request(max_fps, width_px, jpeg_quality, max_frames, lighting)
        deadline = self._deadline(rpcs.STREAM_PREVIEW, timeout_s)
        return self._server_stream(rpcs.STREAM_PREVIEW, request, deadline, self._preview_frame)

    async def autofocus(
        self, *, lighting: LightingChannel | None = None, max_steps: int | None = None, timeout_s: float | None = None
    ) -> AutofocusResult:
        """Search the focus range for the sharpest position, move there, and return the focus curve."""
        return await self._run(self._autofocus_flow(lighting, max_steps, timeout_s))

    # --- Calibration ---

    async def get_calibration(self, *, timeout_s: float | None = None) -> Calibration:
        """Return the unit's flat-field and white-balance calibration; its ``state`` says whether captures use it."""
        return await self._run(self._get_calibration_flow(timeout_s))

    async def calibrate(
        self,
        *,
        lighting_channels: Iterable[LightingChannel] | None = None,
        frames: int | None = None,
        timeout_s: float | None = None,
    ) -> Calibration:
        """Calibrate the camera from the white reference target under the lens; see :meth:`Client.calibrate`."""
        return await self._run(self._calibrate_flow(lighting_channels, frames, timeout_s))

    # --- Scans: guided ---

    async def scan(
        self,
        item_type: str,
        *,
        partner_item_id: str | None = None,
        max_retakes_per_region: int = 3,
        settings: CaptureSettings | None = None,
        on_event: EventCallback | None = None,
        timeout_s: float | None = None,
    ) -> ScanResult:
        """Scan the item under the lens with the unit's camera and return the verdict (see ``Client.scan``).

        ``on_event`` may be a plain function or a coroutine function; awaiting in it on a
        CAPTURING event holds the capture until the scanner is in place. If the task is
        cancelled half-way, the scan is cancelled on the device before CancelledError propagates.
        """
        flow = self._scan_flow(item_type, partner_item_id, max_retakes_per_region, settings, on_event, timeout_s)
        return await self._run(flow)

    async def analyze(
        self,
        item_type: str,
        images: Iterable[tuple[str, ImageData]],
        *,
        partner_item_id: str | None = None,
        on_event: EventCallback | None = None,
        timeout_s: float | None = None,
    ) -> ScanResult:
        """Authenticate an item from images captured elsewhere (see ``Client.analyze``).

        Image files are read in the event loop's thread, one at a time, just before each upload.
        """
        return await self._run(self._analyze_flow(item_type, images, partner_item_id, on_event, timeout_s))

    # --- Scans: single steps ---

    async def create_scan(
        self, item_type: str, *, partner_item_id: str | None = None, timeout_s: float | None = None
    ) -> Scan:
        """Start a scan of one item; returns it IN_PROGRESS with the regions to capture."""
        return await self._run(self._create_scan_flow(item_type, partner_item_id, timeout_s))

    async def capture_region(
        self,
        scan_id: str,
        region: str,
        *,
        settings: CaptureSettings | None = None,
        timeout_s: float | None = None,
    ) -> RegionCapture:
        """Capture one image of a region with the unit's camera; ``retake_required`` says whether it failed the gate."""
        return await self._run(self._capture_region_flow(scan_id, region, settings, timeout_s))

    async def upload_image(
        self, scan_id: str, region: str, image: ImageData, *, timeout_s: float | None = None
    ) -> ImageUpload:
        """Add an image captured elsewhere (PNG/JPEG bytes or a file path, at most 32 MiB) to a scan."""
        return await self._run(self._upload_image_flow(scan_id, region, image, timeout_s))

    async def complete_scan(self, scan_id: str, *, timeout_s: float | None = None) -> Scan:
        """Run inference on the scan's accepted images; returns the scan COMPLETED, with ``result`` set."""
        return await self._run(self._complete_scan_flow(scan_id, timeout_s))

    async def get_scan(self, scan_id: str, *, timeout_s: float | None = None) -> Scan:
        """Return one scan. Raises NotFoundError when the device has no such scan."""
        return await self._run(self._get_scan_flow(scan_id, timeout_s))

    async def get_scan_explanation(self, scan_id: str, *, timeout_s: float | None = None) -> ScanExplanation:
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
        return await self._run(self._get_scan_explanation_flow(scan_id, timeout_s))

    async def get_scan_certificate(self, scan_id: str, *, timeout_s: float | None = None) -> ScanCertificate:
        """Return the signed certificate of authenticity of a completed scan (see ``Client.get_scan_certificate``)."""
        return await self._run(self._get_scan_certificate_flow(scan_id, timeout_s))

    async def list_scans(
        self,
        *,
        page_size: int | None = None,
        page_token: str | None = None,
        filter: str | None = None,
        timeout_s: float | None = None,
    ) -> ScanPage:
        """Return one page of scans, newest first (see ``Client.list_scans``)."""
        return await self._run(self._list_scans_flow(page_size, page_token, filter, timeout_s))

    def iter_scans(
        self, *, filter: str | None = None, page_size: int | None = None, timeout_s: float | None = None
    ) -> AsyncGenerator[Scan, None]:
        """Iterate (``async for``) over every scan, newest first, fetching pages as needed."""
        first = self._list_scans_flow(page_size, None, filter, timeout_s)  # checks the arguments now

        async def scans() -> AsyncGenerator[Scan, None]:
            page = await self._run(first)
            while True:
                for scan in page.scans:
                    yield scan
                if page.next_page_token is None:
                    return
                page = await self._run(self._list_scans_flow(page_size, page.next_page_token, filter, timeout_s))

        return scans()

    def watch_scan(self, scan_id: str, *, timeout_s: float | None = None) -> AsyncGenerator[ScanEvent, None]:
        """Iterate (``async for``) over a scan's progress events (a SNAPSHOT first) until it ends."""
        request = self._watch_request(scan_id)
        deadline = self._deadline(rpcs.WATCH_SCAN, timeout_s)
        return self._server_stream(rpcs.WATCH_SCAN, request, deadline, self._scan_event)

    async def cancel_scan(self, scan_id: str, *, timeout_s: float | None = None) -> Scan:
        """Cancel a scan that has not completed and release the camera. FailedPreconditionError if it has ended."""
        return await self._run(self._cancel_scan_flow(scan_id, timeout_s))

    # --- Training data ---

    async def label_scan(self, scan_id: str, label: ScanLabel | None, *, timeout_s: float | None = None) -> Scan:
        """Record an expert's ground truth about a completed scan's item; None removes it (see ``Client.label_scan``)."""
        return await self._run(self._label_scan_flow(scan_id, label, timeout_s))

    async def read_scan_image(
        self, scan_id: str, image_id: str, *, format: ImageFormat | None = None, timeout_s: float | None = None
    ) -> bytes:
        """Return the checked bytes of one stored image of a scan (see ``Client.read_scan_image``)."""
        return await self._run(self._read_scan_image_flow(scan_id, image_id, format, timeout_s))

    async def export_scans(
        self,
        out_dir: str | os.PathLike[str],
        *,
        since: datetime | date | None = None,
        progress: Callable[[ExportProgress], object] | None = None,
        timeout_s: float | None = None,
    ) -> ExportSummary:
        """Write every labelled, COMPLETED scan into ``out_dir`` as a training data set (see ``Client.export_scans``).

        ``progress`` may return an awaitable, which is awaited. Files are written from the event loop's thread.
        """
        return await self._run(self._export_scans_flow(out_dir, since, progress, timeout_s))

    # --- Models, updates ---

    async def list_models(self, *, timeout_s: float | None = None) -> list[ModelInfo]:
        """Return every installed model, active first."""
        return await self._run(self._list_models_flow(timeout_s))

    async def get_model(self, model_id: str = "active", *, timeout_s: float | None = None) -> ModelInfo:
        """Return one installed model by ``"{name}@{version}"``, or the active one."""
        return await self._run(self._get_model_flow(model_id, timeout_s))

    async def get_update_status(self, *, timeout_s: float | None = None) -> UpdateStatus:
        """Return what is installed in each updatable component's slots."""
        return await self._run(self._get_update_status_flow(timeout_s))

    # --- Simulation (simulated units only) ---

    async def place_item(
        self, item_type: str, source: str = "genuine", seed: int = 0, *, timeout_s: float | None = None
    ) -> PlacedItem:
        """Place a virtual item under a simulated unit's lens (see ``Client.place_item``)."""
        return await self._run(self._place_item_flow(item_type, source, seed, timeout_s))

    async def get_placed_item(self, *, timeout_s: float | None = None) -> PlacedItem | None:
        """Return the virtual item under a simulated unit's lens, or None when the stage is empty."""
        return await self._run(self._get_placed_item_flow(timeout_s))

    async def clear_item(self, *, timeout_s: float | None = None) -> None:
        """Remove the virtual item, leaving an empty stage."""
        await self._run(self._clear_item_flow(timeout_s))

    async def list_sources(self, *, timeout_s: float | None = None) -> list[SimulatedMaterial]:
        """Return the materials a simulated unit can make, each with its genuine and counterfeit sources."""
        return await self._run(self._list_sources_flow(timeout_s))
