"""``Client``: the blocking client of a Veriscope unit."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Generator, Iterable, Sequence
from datetime import date, datetime
from types import TracebackType
from typing import Any, TypeVar

import grpc

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
from veriscope.sdk._transport import PathOrPem, Verified, preflight
from veriscope.sdk._types import EventCallback, ImageData, Metadata

T = TypeVar("T")


def _same(message: T) -> T:
    return message


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
            fleet) by default, or a device id to accept that unit only. Units are reached by IP, so the
            address itself is not checked.

    With ``ca`` or ``pinned_key``, the first call makes a TLS handshake of its own to check the unit and raises
    :class:`TlsError` saying what does not match (another CA, another key, expired, mTLS refused) instead of
    gRPC's bare UNAVAILABLE. Files are read, and arguments checked, when the client is made: a missing file
    raises ``OSError``, a file without a certificate ``ValueError``.
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
        # With ca or pinned_key the channel is opened by the first call, after the pre-flight checked the unit.
        self._channel: grpc.Channel | None = None if self._tls is not None else self._open(None)
        self._connecting = threading.Lock()

    def _open(self, verified: Verified | None) -> grpc.Channel:
        credentials, options = self._channel_security(verified)
        if credentials is None:
            return grpc.insecure_channel(self._target, options=options)
        return grpc.secure_channel(self._target, credentials, options=options)

    def _connect(self, timeout_s: float | None, method: str) -> grpc.Channel:
        """The channel, opened after the TLS pre-flight on first use. Raises TlsError or DeviceUnavailableError."""
        self._check_open()
        if self._channel is None:
            with self._connecting:  # threads that share the client make one pre-flight and one channel
                if self._channel is None:
                    assert self._tls is not None
                    verified = preflight(self._target, self._tls, self._preflight_timeout(timeout_s), method)
                    self._channel = self._open(verified)
        return self._channel

    # --- Lifecycle ---

    def close(self) -> None:
        """Close the connection. Safe to call twice; the client cannot be used afterwards."""
        if not self._closed:
            self._closed = True
            if self._channel is not None:
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
        rpc = step.rpc
        channel = self._connect(step.timeout_s, rpc.method)
        try:
            if isinstance(step, UnaryCall):
                unary = channel.unary_unary(
                    rpc.path, request_serializer=serialize, response_deserializer=rpc.response_type.FromString
                )
                return unary(step.request, timeout=step.timeout_s, metadata=self._metadata)
            if isinstance(step, ServerStreamCall):
                read = channel.unary_stream(
                    rpc.path, request_serializer=serialize, response_deserializer=rpc.response_type.FromString
                )
                return list(read(step.request, timeout=step.timeout_s, metadata=self._metadata))
            assert isinstance(step, StreamCall)
            upload = channel.stream_unary(
                rpc.path, request_serializer=serialize, response_deserializer=rpc.response_type.FromString
            )
            return upload(iter(step.requests), timeout=step.timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, rpc.method) from exc

    def _server_stream(
        self, rpc: Rpc[ReqT, RespT], request: ReqT, timeout_s: float, result: Callable[[RespT], T]
    ) -> Generator[T, None, None]:
        responses = self._connect(timeout_s, rpc.method).unary_stream(
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

    def run_self_test(self, *, timeout_s: float | None = None) -> Generator[SelfTestCheck, None, None]:
        """Run the unit's self-test and iterate over each check's result as it finishes.

        The checks: camera, controller, leds, focus, temperature, model_checksums, storage. A check that
        fails is a result with status FAIL, not an error. Needs a technician token.

        Args:
            timeout_s: Bound on the whole self-test (default 5 min).

        Raises:
            FailedPreconditionError: A scan owns the camera.
            PermissionDeniedError: The token's role is below technician.
        """
        deadline = self._deadline(rpcs.RUN_SELF_TEST, timeout_s)
        assembler = SelfTestAssembler()
        for response in self._server_stream(rpcs.RUN_SELF_TEST, rpcs.RUN_SELF_TEST.request_type(), deadline, _same):
            check = assembler.feed(response)
            if check is not None:
                yield check

    def read_logs(
        self,
        *,
        since: datetime | None = None,
        min_level: LogLevel | None = None,
        follow: bool = False,
        timeout_s: float | None = None,
    ) -> Generator[LogEntry, None, None]:
        """Iterate over the daemon's recent log lines, oldest first; with ``follow``, then over new lines as they
        are logged until you stop iterating (or the deadline). Needs a technician token.

        Args:
            since: Only lines logged at or after this aware time; None means every line kept (the last 5000).
            min_level: Only lines at or above this level; None means every level.
            follow: Keep reading new lines.
            timeout_s: Bound on the whole stream (default 15 min).
        """
        request = self._read_logs_request(since, min_level, follow)
        deadline = self._deadline(rpcs.READ_LOGS, timeout_s)
        for entries in self._server_stream(rpcs.READ_LOGS, request, deadline, convert.log_entries_from_pb):
            yield from entries

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

    def get_scan_certificate(self, scan_id: str, *, timeout_s: float | None = None) -> ScanCertificate:
        """Return the signed certificate of authenticity of a completed scan.

        The unit signed it with its Ed25519 key when the scan completed, whatever the verdict: a
        certificate of an UNVERIFIED item says it could NOT be verified, and why. Save ``document``
        unchanged (``certificate.save(path)``) and verify it anywhere, offline, with
        :func:`veriscope.sdk.certificates.verify_certificate` and the unit's public key
        (``get_device().signing_public_key``).

        Args:
            scan_id: The scan's id, or its name ``"scans/{scan_id}"``.

        Raises:
            NotFoundError: The device has no such scan.
            FailedPreconditionError: The scan is not COMPLETED, or was completed by a device software that
                issued no certificates.
        """
        return self._run(self._get_scan_certificate_flow(scan_id, timeout_s))

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

    # --- Training data ---

    def label_scan(self, scan_id: str, label: ScanLabel | None, *, timeout_s: float | None = None) -> Scan:
        """Record an expert's ground truth about a completed scan's item, for training; None removes a label.

        The label is stored with the scan (``Scan.label``, ``Scan.label_time``) and
        selects it for :meth:`export_scans`; it never changes the verdict or the
        certificate. Labelling again replaces the label.

        Args:
            scan_id: The scan's id, or its name ``"scans/{scan_id}"``.
            label: ``ScanLabel.GENUINE``, ``ScanLabel.COUNTERFEIT``, or None to remove a wrong label.

        Raises:
            NotFoundError: The device has no such scan.
            FailedPreconditionError: The scan is not COMPLETED (the message names its state).
        """
        return self._run(self._label_scan_flow(scan_id, label, timeout_s))

    def read_scan_image(
        self, scan_id: str, image_id: str, *, format: ImageFormat | None = None, timeout_s: float | None = None
    ) -> bytes:
        """Return the encoded bytes of one stored image of a scan, checked against the SHA-256 the device sent.

        Args:
            scan_id: The scan's id, or its name ``"scans/{scan_id}"``.
            image_id: The image's id within the scan (``ScanImage.image_id``).
            format: None for the stored bytes (PNG or JPEG, see ``ScanImage.format``); ``ImageFormat.PNG``
                has the device convert a stored JPEG to PNG (losslessly: the JPEG's own pixels). JPEG of an
                image stored as PNG is refused.

        Raises:
            NotFoundError: The device has no such scan or image.
            InvalidArgumentError: JPEG asked of an image stored as PNG.
            DataLossError: The bytes received do not match the size or SHA-256 the device announced.
        """
        return self._run(self._read_scan_image_flow(scan_id, image_id, format, timeout_s))

    def export_scans(
        self,
        out_dir: str | os.PathLike[str],
        *,
        since: datetime | date | None = None,
        progress: Callable[[ExportProgress], object] | None = None,
        timeout_s: float | None = None,
    ) -> ExportSummary:
        """Write every labelled, COMPLETED scan into ``out_dir`` as a training data set; return what was done.

        The layout is what ``python -m veriscope.training train --data OUT_DIR`` reads: each
        region of a scan is one item, ``<material>/<genuine|counterfeit>/<scan_id>-<region>/``,
        holding the region's images that passed the quality gate as ``<image_id>.png`` (stored
        JPEGs are converted to PNG on the device). ``manifest.json`` records the device, the time,
        ``since``, the filter, and per item its scan, partner item id, region, material, label,
        verdict, model and the SHA-256 of each file.

        Re-running is cheap and safe: files already in place with the right SHA-256 are skipped,
        every file is written to a temporary name and renamed, so an interrupted export leaves no
        partial PNG and resumes where it stopped, and items whose label has since changed or been
        removed are moved or deleted. Nothing is written when no scan is labelled.

        Args:
            out_dir: The export's root folder; created when needed.
            since: Only scans created at or after this time (a date means its midnight UTC).
            progress: Called with an :class:`ExportProgress` after every image.
            timeout_s: Deadline of each RPC.

        Raises:
            ValueError: ``since`` lacks a time zone, or ``out_dir/manifest.json`` is not an export's manifest.
            OSError: A file cannot be written.
        """
        return self._run(self._export_scans_flow(out_dir, since, progress, timeout_s))

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
