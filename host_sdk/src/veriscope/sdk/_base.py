"""Everything both clients share that needs no I/O: configuration, argument checks, deadlines and flows.

A *flow* is a generator that describes one client operation as the steps it
takes: it yields :class:`UnaryCall`, :class:`StreamCall`, :class:`ServerStreamCall`
and :class:`Emit` steps, receives each call's response through ``send()`` (or the call's
:class:`VeriscopeError` through ``throw()``), and returns the operation's result.
``Client`` runs flows with blocking gRPC, ``AsyncClient`` with ``grpc.aio``; the
logic of ``scan()``, ``analyze()`` and every other operation is written once, here.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import math
import os
import re
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Generic, TypeAlias, TypeVar

import grpc

from veriscope.sdk import _convert as convert
from veriscope.sdk import _export as export
from veriscope.sdk import _rpcs as rpcs
from veriscope.sdk._exceptions import FailedPreconditionError, ProtocolError, UnimplementedError, VeriscopeError
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
    LogLevel,
    ModelInfo,
    PlacedItem,
    PreviewFrame,
    RegionCapture,
    Scan,
    ScanCertificate,
    ScanEvent,
    ScanEventType,
    ScanExplanation,
    ScanImage,
    ScanLabel,
    ScanPage,
    ScanResult,
    SelfTestCheck,
    SelfTestImage,
    SimulatedMaterial,
    UpdateStatus,
)
from veriscope.sdk._rpcs import ReqT, RespT, Rpc
from veriscope.sdk._transport import PathOrPem, Verified, split_target, tls_settings
from veriscope.sdk._types import EventCallback, ImageData, Metadata
from veriscope.v1 import (
    calibration_service_pb2,
    capture_service_pb2,
    device_service_pb2,
    model_service_pb2,
    scan_service_pb2,
    simulation_service_pb2,
    update_service_pb2,
)

T = TypeVar("T")

DEFAULT_TARGET = "localhost:50051"
"""Where a client connects when no target is given: a daemon on this machine."""
PREFLIGHT_TIMEOUT_S = 10.0
"""Longest the TLS pre-flight handshake may take when neither the call nor the client has a deadline."""
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""Largest message the channel sends or receives. A full-resolution 12 MP PNG frame is well over gRPC's 4 MiB default."""
UPLOAD_CHUNK_BYTES = 1024 * 1024
"""Bytes per UploadImage chunk message (the API's maximum)."""
MAX_UPLOAD_BYTES = 32 * 1024 * 1024
"""Largest image file UploadImage accepts."""
MAX_PARTNER_ITEM_ID_CHARS = 128
MAX_PAGE_SIZE = 1000
MAX_SEQUENCE_CHANNELS = 4
"""Most lighting channels one capture_sequence() may take."""
MAX_CALIBRATION_FRAMES = 64
EXPORT_PAGE_SIZE = 100
"""Scans per ListScans page of an export: full scans with their images are a few kB each."""
DEFAULT_MAX_RETAKES_PER_REGION = 3

_SCAN_ID = re.compile(r"[A-Za-z0-9._~-]{1,128}")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


# --- Steps -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnaryCall(Generic[ReqT, RespT]):
    """Step: make one unary call; the driver sends back the response message."""

    rpc: Rpc[ReqT, RespT]
    request: ReqT
    timeout_s: float


@dataclass(frozen=True)
class StreamCall(Generic[ReqT, RespT]):
    """Step: make one client-streaming call from ``requests`` (consumed once); the driver sends back the response."""

    rpc: Rpc[ReqT, RespT]
    requests: Iterable[ReqT]
    timeout_s: float


@dataclass(frozen=True)
class ServerStreamCall(Generic[ReqT, RespT]):
    """Step: make one server-streaming call to its end; the driver sends back the list of response messages."""

    rpc: Rpc[ReqT, RespT]
    request: ReqT
    timeout_s: float


@dataclass(frozen=True)
class Emit:
    """Step: hand ``event`` (a :class:`ScanEvent`, an :class:`ExportProgress`) to the caller's ``callback``.

    The driver sends back None.
    """

    callback: Callable[[Any], object]
    event: object


Step: TypeAlias = UnaryCall[Any, Any] | StreamCall[Any, Any] | ServerStreamCall[Any, Any] | Emit
Flow: TypeAlias = Generator[Step, Any, T]


def call(rpc: Rpc[ReqT, RespT], request: ReqT, timeout_s: float) -> Generator[Step, Any, RespT]:
    """Sub-flow: one unary call, typed. Use as ``response = yield from call(...)``."""
    response = yield UnaryCall(rpc, request, timeout_s)
    if not isinstance(response, rpc.response_type):
        raise TypeError(f"flow driver returned {type(response).__name__} for {rpc.method}")
    return response


def stream(rpc: Rpc[ReqT, RespT], requests: Iterable[ReqT], timeout_s: float) -> Generator[Step, Any, RespT]:
    """Sub-flow: one client-streaming call, typed."""
    response = yield StreamCall(rpc, requests, timeout_s)
    if not isinstance(response, rpc.response_type):
        raise TypeError(f"flow driver returned {type(response).__name__} for {rpc.method}")
    return response


def read_stream(rpc: Rpc[ReqT, RespT], request: ReqT, timeout_s: float) -> Generator[Step, Any, list[RespT]]:
    """Sub-flow: one server-streaming call read to its end, typed."""
    responses = yield ServerStreamCall(rpc, request, timeout_s)
    if not isinstance(responses, list) or not all(isinstance(r, rpc.response_type) for r in responses):
        raise TypeError(f"flow driver returned {type(responses).__name__} for {rpc.method}")
    return responses


def serialize(message: Any) -> bytes:
    """Encode a request message for the wire."""
    data: bytes = message.SerializeToString()
    return data


def emit(callback: EventCallback | None, event: ScanEvent) -> Generator[Step, Any, None]:
    """Sub-flow: report ``event`` when the caller asked for events."""
    if callback is not None:
        yield Emit(callback, event)


# --- Argument checks ---------------------------------------------------------------------------------------------


def check_name(value: object, argument: str) -> str:
    """Return ``value`` if it is a non-empty string without whitespace; raise TypeError/ValueError naming ``argument``."""
    if not isinstance(value, str):
        raise TypeError(f"{argument} must be a str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{argument} must not be empty")
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ValueError(f"{argument} must not contain whitespace or control characters, got {value!r}")
    return value


def check_scan_id(value: object, argument: str = "scan_id") -> str:
    """Return the scan id of ``value``: an id like ``"01HV3K..."``, or a full name ``"scans/{scan_id}"``.

    Raises:
        TypeError: value is not a str.
        ValueError: value is not 1..128 of the characters ``A-Z a-z 0-9 . _ ~ -``.
    """
    if not isinstance(value, str):
        raise TypeError(f"{argument} must be a str, got {type(value).__name__}")
    scan_id = value.removeprefix(convert.SCAN_NAME_PREFIX)
    if not _SCAN_ID.fullmatch(scan_id):
        raise ValueError(f"{argument} must be 1..128 of A-Z a-z 0-9 . _ ~ -, got {value!r}")
    return scan_id


def check_timeout(value: object, argument: str = "timeout_s") -> float | None:
    """Return ``value`` as seconds if it is None or a finite number > 0; raise TypeError/ValueError otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{argument} must be a number of seconds, got {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{argument} must be a finite number of seconds > 0, got {value!r}")
    return float(value)


def check_int(value: object, argument: str, low: int, high: int) -> int:
    """Return ``value`` if it is an int in low..high (inclusive); raise TypeError/ValueError naming ``argument``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{argument} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{argument} must be {low}..{high}, got {value}")
    return value


def check_partner_item_id(value: object) -> str:
    """Return the partner item id to send ("" for None); at most 128 characters."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"partner_item_id must be a str or None, got {type(value).__name__}")
    if len(value) > MAX_PARTNER_ITEM_ID_CHARS:
        raise ValueError(f"partner_item_id must be at most {MAX_PARTNER_ITEM_ID_CHARS} characters, got {len(value)}")
    return value


def check_page_size(value: object) -> int:
    """Return the page size to send (0, the device default, for None); 1..1000 otherwise."""
    return 0 if value is None else check_int(value, "page_size", 1, MAX_PAGE_SIZE)


def check_metadata(value: object) -> tuple[tuple[str, str], ...]:
    """Return call metadata as a tuple of (key, value) string pairs with lowercase keys."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError("metadata must be a sequence of (key, value) pairs")
    pairs = tuple(value)
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise TypeError(f"metadata entries must be (str, str) pairs, got {pair!r}")
        if not pair[0] or pair[0] != pair[0].lower():
            raise ValueError(f"metadata keys must be non-empty and lowercase, got {pair[0]!r}")
    return pairs


def token_metadata(token: object) -> tuple[tuple[str, str], ...]:
    """The ``authorization: Bearer <token>`` metadata pair of an API token; none for None."""
    if token is None:
        return ()
    if not isinstance(token, str):
        raise TypeError(f"token must be a str or None, got {type(token).__name__}")
    if not token or not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        raise ValueError("token must be a non-empty string of printable ASCII without spaces, like vs_1a2b3c4d_...")
    return (("authorization", f"Bearer {token}"),)


def image_format_of(head: bytes) -> ImageFormat | None:
    """Return the format of an encoded image from its first bytes, or None when it is neither PNG nor JPEG."""
    if head.startswith(_PNG_MAGIC):
        return ImageFormat.PNG
    if head.startswith(_JPEG_MAGIC):
        return ImageFormat.JPEG
    return None


@dataclass(frozen=True)
class ImageToUpload:
    """An image checked for upload: its region, format and size, and where its bytes are."""

    region: str
    label: str
    format: ImageFormat
    size_bytes: int
    data: bytes | None = None
    path: Path | None = None

    def read(self) -> bytes:
        """Return the encoded bytes, reading the file when the image is one; raise OSError or ValueError."""
        if self.data is not None:
            return self.data
        assert self.path is not None
        data = self.path.read_bytes()
        _check_size(len(data), self.label)
        return data


def _check_size(size: int, label: str) -> None:
    if size == 0:
        raise ValueError(f"{label} is empty")
    if size > MAX_UPLOAD_BYTES:
        raise ValueError(f"{label} is {size} bytes; the device accepts at most {MAX_UPLOAD_BYTES} (32 MiB)")


def check_image(region: object, image: object, argument: str = "image") -> ImageToUpload:
    """Check one image to upload without reading all of it.

    Args:
        region: The region the image shows.
        image: Encoded PNG/JPEG bytes, or a path (str or os.PathLike) to such a file.
        argument: How to name the image in error messages.

    Raises:
        TypeError: region is not a str, or image is neither bytes nor a path.
        ValueError: region is empty, or the image is empty, larger than 32 MiB, or neither PNG nor JPEG.
        OSError: the file cannot be read (FileNotFoundError when it does not exist).
    """
    region = check_name(region, f"{argument} region")
    if isinstance(image, bytes | bytearray | memoryview):
        data = bytes(image)
        size = len(data)
        label = f"{argument} ({region}, {size} bytes)"
        _check_size(size, label)
        fmt = image_format_of(data[:16])
        path = None
    elif isinstance(image, str | os.PathLike):
        path = Path(image)
        label = f"{argument} {str(path)!r}"
        if not path.is_file():
            if not path.exists():
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
            raise ValueError(f"{label} is not a regular file")
        size = path.stat().st_size
        _check_size(size, label)
        with path.open("rb") as file:
            fmt = image_format_of(file.read(16))
        data = None
    else:
        raise TypeError(f"{argument} must be bytes or a path, got {type(image).__name__}")
    if fmt is None:
        raise ValueError(f"{label} is neither PNG nor JPEG")
    return ImageToUpload(region=region, label=label, format=fmt, size_bytes=size, data=data, path=path)


def upload_requests(scan_id: str, region: str, data: bytes) -> Iterator[scan_service_pb2.UploadImageRequest]:
    """Yield an UploadImage stream: the header with size and SHA-256, then chunks of at most 1 MiB."""
    fmt = image_format_of(data[:16])
    header = scan_service_pb2.UploadImageHeader(
        name=convert.scan_name(scan_id),
        region=region,
        size_bytes=len(data),
        format=convert.enum_to_pb(fmt),  # type: ignore[arg-type]
        sha256=hashlib.sha256(data).hexdigest(),
    )
    yield scan_service_pb2.UploadImageRequest(header=header)
    view = memoryview(data)
    for offset in range(0, len(data), UPLOAD_CHUNK_BYTES):
        yield scan_service_pb2.UploadImageRequest(chunk=bytes(view[offset : offset + UPLOAD_CHUNK_BYTES]))


def _hints(image: ScanImage) -> str:
    return "; ".join(image.quality.hints) or ", ".join(issue.code for issue in image.quality.issues)


def _progress(scan: Scan, region: str) -> tuple[int, int, str] | None:
    """(accepted, min_images, hint) of one region of ``scan``, or None when the scan does not list it."""
    for progress in scan.regions:
        if progress.region == region:
            return progress.accepted_images, progress.min_images, progress.hint
    return None


# --- Base client -------------------------------------------------------------------------------------------------


class SelfTestAssembler:
    """Joins the images of a RunSelfTest stream to the check that follows them."""

    def __init__(self) -> None:
        self._images: list[SelfTestImage] = []

    def feed(self, response: device_service_pb2.RunSelfTestResponse) -> SelfTestCheck | None:
        """The finished check ``response`` carries, or None when it carries one of the check's images."""
        if response.HasField("image"):
            self._images.append(convert.self_test_image_from_pb(response.image))
            return None
        check = convert.self_test_check_from_pb(response, tuple(self._images))
        self._images = []
        return check


class BaseClient:
    """Configuration and flows shared by :class:`Client` and :class:`AsyncClient`. Not for direct use."""

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
        self._target = check_name(target, "target")
        self._timeout_s = check_timeout(timeout_s)
        if channel_credentials is not None and not isinstance(channel_credentials, grpc.ChannelCredentials):
            raise TypeError(
                "channel_credentials must be grpc.ChannelCredentials, for example grpc.ssl_channel_credentials()"
            )
        self._channel_credentials = channel_credentials
        self._tls = tls_settings(
            ca=ca,
            pinned_key=pinned_key,
            client_cert=client_cert,
            client_key=client_key,
            tls_server_name=tls_server_name,
        )
        if self._tls is not None:
            if channel_credentials is not None:
                raise ValueError("give either channel_credentials or ca/pinned_key, not both")
            split_target(self._target)
        self._metadata = check_metadata(metadata)
        if token is not None and any(key == "authorization" for key, _ in self._metadata):
            raise ValueError("give the API token either as token= or as authorization metadata, not both")
        # Per-call metadata rather than call credentials: it works on plaintext channels (a unit's loopback) and
        # on TLS ones alike.
        self._metadata += token_metadata(token)
        self._closed = False

    @property
    def target(self) -> str:
        """The device address, ``"host:port"``."""
        return self._target

    @property
    def timeout_s(self) -> float | None:
        """The deadline of every call in seconds, or None when each RPC uses its own default."""
        return self._timeout_s

    @property
    def is_closed(self) -> bool:
        """True once the client has been closed."""
        return self._closed

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._target!r})"

    def _channel_options(self) -> list[tuple[str, Any]]:
        return [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.primary_user_agent", "veriscope-sdk-python"),
        ]

    def _channel_security(
        self, verified: Verified | None
    ) -> tuple[grpc.ChannelCredentials | None, list[tuple[str, Any]]]:
        """The channel's credentials (None for plaintext) and options, once the pre-flight checked the unit."""
        options = self._channel_options()
        if verified is None or self._tls is None:
            return self._channel_credentials, options
        return verified.credentials(self._tls), options + verified.options()

    def _preflight_timeout(self, timeout_s: float | None) -> float:
        """Seconds the pre-flight TLS handshake may take: the call's deadline, else the client's, else 10 s."""
        return timeout_s or self._timeout_s or PREFLIGHT_TIMEOUT_S

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed")

    def _deadline(self, rpc: Rpc[Any, Any], timeout_s: float | None) -> float:
        """The call's deadline in seconds: the call's own, else the client's, else the RPC's default."""
        own = check_timeout(timeout_s)
        if own is not None:
            return own
        return self._timeout_s if self._timeout_s is not None else rpc.default_timeout_s

    def _unary(
        self, rpc: Rpc[ReqT, RespT], request: ReqT, timeout_s: float | None, result: Callable[[RespT], T]
    ) -> Flow[T]:
        # Computed here, not in the generator, so that a bad timeout_s raises at the call site.
        deadline = self._deadline(rpc, timeout_s)

        def flow() -> Flow[T]:
            response = yield from call(rpc, request, deadline)
            return result(response)

        return flow()

    # --- Device ---

    def _get_device_flow(self, timeout_s: float | None) -> Flow[DeviceInfo]:
        return self._unary(
            rpcs.GET_DEVICE,
            device_service_pb2.GetDeviceRequest(),
            timeout_s,
            lambda r: convert.device_from_pb(r.device),
        )

    def _get_status_flow(self, timeout_s: float | None) -> Flow[DeviceStatus]:
        return self._unary(
            rpcs.GET_STATUS,
            device_service_pb2.GetStatusRequest(),
            timeout_s,
            lambda r: convert.status_from_pb(r.status),
        )

    @staticmethod
    def _read_logs_request(
        since: datetime | None, min_level: LogLevel | None, follow: bool
    ) -> device_service_pb2.ReadLogsRequest:
        if since is not None and (not isinstance(since, datetime) or since.tzinfo is None):
            raise TypeError(f"since must be an aware datetime, got {since!r}")
        if min_level is not None and not isinstance(min_level, LogLevel):
            raise TypeError(f"min_level must be a LogLevel, got {min_level!r}")
        request = device_service_pb2.ReadLogsRequest(
            min_level=convert.enum_to_pb(min_level),  # type: ignore[arg-type]
            follow=bool(follow),
        )
        if since is not None:
            request.since_time.FromDatetime(since.astimezone(UTC))
        return request

    # --- Capture ---

    def _capture_flow(
        self,
        settings: CaptureSettings | None,
        image_format: ImageFormat,
        jpeg_quality: int | None,
        timeout_s: float | None,
    ) -> Flow[CaptureResult]:
        request = self._capture_request(settings, image_format, jpeg_quality)
        return self._unary(rpcs.CAPTURE, request, timeout_s, convert.capture_from_pb)

    @staticmethod
    def _capture_request(
        settings: CaptureSettings | None, image_format: ImageFormat, jpeg_quality: int | None
    ) -> capture_service_pb2.CaptureRequest:
        if settings is not None and not isinstance(settings, CaptureSettings):
            raise TypeError(f"settings must be CaptureSettings or None, got {type(settings).__name__}")
        if not isinstance(image_format, ImageFormat):
            raise TypeError(f"image_format must be an ImageFormat, got {image_format!r}")
        return capture_service_pb2.CaptureRequest(
            settings=convert.capture_settings_to_pb(settings),
            format=convert.enum_to_pb(image_format),  # type: ignore[arg-type]
            jpeg_quality=0 if jpeg_quality is None else check_int(jpeg_quality, "jpeg_quality", 1, 100),
        )

    def _capture_sequence_flow(
        self,
        lighting: LightingChannel | Sequence[LightingChannel],
        settings: CaptureSettings | None,
        image_format: ImageFormat,
        jpeg_quality: int | None,
        timeout_s: float | None,
    ) -> Flow[tuple[CaptureResult, ...]]:
        # A single channel is a str too (StrEnum): take it as a sequence of one, not of its characters.
        channels: list[LightingChannel] = [lighting] if isinstance(lighting, LightingChannel) else list(lighting)
        if not 1 <= len(channels) <= MAX_SEQUENCE_CHANNELS:
            raise ValueError(f"lighting must name 1..{MAX_SEQUENCE_CHANNELS} channels, got {len(channels)}")
        if not all(isinstance(c, LightingChannel) for c in channels):
            raise TypeError(f"lighting must hold LightingChannel values, got {channels!r}")
        if len(set(channels)) != len(channels):
            raise ValueError(f"lighting must not repeat a channel, got {[c.name for c in channels]}")
        if settings is not None and settings.lighting is not None:
            raise ValueError("settings.lighting must be None in a lighting sequence; the sequence sets the lighting")
        request = self._capture_request(settings, image_format, jpeg_quality)
        request.lighting_sequence.extend(convert.enum_to_pb(c) for c in channels)  # type: ignore[misc]
        return self._unary(rpcs.CAPTURE, request, timeout_s, convert.capture_sequence_from_pb)

    def _preview_request(
        self,
        max_fps: float | None,
        width_px: int | None,
        jpeg_quality: int | None,
        max_frames: int | None,
        lighting: LightingChannel | None,
    ) -> capture_service_pb2.StreamPreviewRequest:
        if max_fps is not None and (
            isinstance(max_fps, bool) or not isinstance(max_fps, int | float) or not 1 <= max_fps <= 30
        ):
            raise ValueError(f"max_fps must be 1..30 frames per second, got {max_fps!r}")
        if lighting is not None and not isinstance(lighting, LightingChannel):
            raise TypeError(f"lighting must be a LightingChannel, got {lighting!r}")
        return capture_service_pb2.StreamPreviewRequest(
            max_fps=float(max_fps or 0),
            width=0 if width_px is None else check_int(width_px, "width_px", 64, 1280),
            jpeg_quality=0 if jpeg_quality is None else check_int(jpeg_quality, "jpeg_quality", 1, 100),
            max_frames=0 if max_frames is None else check_int(max_frames, "max_frames", 1, 2**32 - 1),
            lighting=convert.enum_to_pb(lighting),  # type: ignore[arg-type]
        )

    @staticmethod
    def _preview_frame(response: capture_service_pb2.StreamPreviewResponse) -> PreviewFrame:
        return convert.preview_frame_from_pb(response)

    def _autofocus_flow(
        self, lighting: LightingChannel | None, max_steps: int | None, timeout_s: float | None
    ) -> Flow[AutofocusResult]:
        if lighting is not None and not isinstance(lighting, LightingChannel):
            raise TypeError(f"lighting must be a LightingChannel, got {lighting!r}")
        request = capture_service_pb2.AutofocusRequest(
            lighting=convert.enum_to_pb(lighting),  # type: ignore[arg-type]
            max_steps=0 if max_steps is None else check_int(max_steps, "max_steps", 1, 10_000),
        )
        return self._unary(rpcs.AUTOFOCUS, request, timeout_s, convert.autofocus_from_pb)

    # --- Calibration ---

    def _get_calibration_flow(self, timeout_s: float | None) -> Flow[Calibration]:
        request = calibration_service_pb2.GetCalibrationRequest(name=convert.CALIBRATION_NAME)
        return self._unary(
            rpcs.GET_CALIBRATION, request, timeout_s, lambda r: convert.calibration_from_pb(r.calibration)
        )

    def _calibrate_flow(
        self, lighting_channels: Iterable[LightingChannel] | None, frames: int | None, timeout_s: float | None
    ) -> Flow[Calibration]:
        if lighting_channels is None:
            channels: list[LightingChannel] = []
        elif isinstance(lighting_channels, str) or not isinstance(lighting_channels, Iterable):
            raise TypeError("lighting_channels must be an iterable of LightingChannel or None")
        else:
            channels = list(lighting_channels)
        for channel in channels:
            if not isinstance(channel, LightingChannel):
                raise TypeError(f"lighting_channels must hold LightingChannel members, got {channel!r}")
        request = calibration_service_pb2.CalibrateRequest(
            name=convert.CALIBRATION_NAME,
            lighting_channels=[convert.enum_to_pb(c) for c in channels],  # type: ignore[misc]
            frames=0 if frames is None else check_int(frames, "frames", 1, MAX_CALIBRATION_FRAMES),
        )
        return self._unary(rpcs.CALIBRATE, request, timeout_s, lambda r: convert.calibration_from_pb(r.calibration))

    # --- Scans: single calls ---

    @staticmethod
    def _create_scan_request(item_type: str, partner_item_id: str | None) -> scan_service_pb2.CreateScanRequest:
        return scan_service_pb2.CreateScanRequest(
            scan=scan_service_pb2.Scan(
                item_type=check_name(item_type, "item_type"), partner_item_id=check_partner_item_id(partner_item_id)
            )
        )

    def _create_scan_flow(self, item_type: str, partner_item_id: str | None, timeout_s: float | None) -> Flow[Scan]:
        request = self._create_scan_request(item_type, partner_item_id)
        return self._unary(rpcs.CREATE_SCAN, request, timeout_s, lambda r: convert.scan_from_pb(r.scan))

    def _capture_region_flow(
        self, scan_id: str, region: str, settings: CaptureSettings | None, timeout_s: float | None
    ) -> Flow[RegionCapture]:
        if settings is not None and not isinstance(settings, CaptureSettings):
            raise TypeError(f"settings must be CaptureSettings or None, got {type(settings).__name__}")
        request = scan_service_pb2.CaptureRegionRequest(
            name=convert.scan_name(check_scan_id(scan_id)),
            region=check_name(region, "region"),
            settings=convert.capture_settings_to_pb(settings),
        )
        return self._unary(rpcs.CAPTURE_REGION, request, timeout_s, convert.region_capture_from_pb)

    def _upload_image_flow(
        self, scan_id: str, region: str, image: ImageData, timeout_s: float | None
    ) -> Flow[ImageUpload]:
        scan_id = check_scan_id(scan_id)
        checked = check_image(region, image)
        deadline = self._deadline(rpcs.UPLOAD_IMAGE, timeout_s)

        def flow() -> Flow[ImageUpload]:
            data = checked.read()
            response = yield from stream(rpcs.UPLOAD_IMAGE, upload_requests(scan_id, checked.region, data), deadline)
            return convert.image_upload_from_pb(response)

        return flow()

    def _complete_scan_flow(self, scan_id: str, timeout_s: float | None) -> Flow[Scan]:
        request = scan_service_pb2.CompleteScanRequest(name=convert.scan_name(check_scan_id(scan_id)))
        return self._unary(rpcs.COMPLETE_SCAN, request, timeout_s, lambda r: convert.scan_from_pb(r.scan))

    def _get_scan_flow(self, scan_id: str, timeout_s: float | None) -> Flow[Scan]:
        request = scan_service_pb2.GetScanRequest(name=convert.scan_name(check_scan_id(scan_id)))
        return self._unary(rpcs.GET_SCAN, request, timeout_s, lambda r: convert.scan_from_pb(r.scan))

    def _list_scans_flow(
        self, page_size: int | None, page_token: str | None, filter: str | None, timeout_s: float | None
    ) -> Flow[ScanPage]:
        if page_token is not None and not isinstance(page_token, str):
            raise TypeError(f"page_token must be a str or None, got {type(page_token).__name__}")
        if filter is not None and not isinstance(filter, str):
            raise TypeError(f"filter must be a str or None, got {type(filter).__name__}")
        request = scan_service_pb2.ListScansRequest(
            page_size=check_page_size(page_size), page_token=page_token or "", filter=filter or ""
        )
        return self._unary(rpcs.LIST_SCANS, request, timeout_s, convert.scan_page_from_pb)

    def _watch_request(self, scan_id: str) -> scan_service_pb2.WatchScanRequest:
        return scan_service_pb2.WatchScanRequest(name=convert.scan_name(check_scan_id(scan_id)))

    @staticmethod
    def _scan_event(response: scan_service_pb2.WatchScanResponse) -> ScanEvent:
        return convert.scan_event_from_pb(response)

    def _cancel_scan_flow(self, scan_id: str, timeout_s: float | None) -> Flow[Scan]:
        request = scan_service_pb2.CancelScanRequest(name=convert.scan_name(check_scan_id(scan_id)))
        return self._unary(rpcs.CANCEL_SCAN, request, timeout_s, lambda r: convert.scan_from_pb(r.scan))

    def _label_scan_flow(self, scan_id: str, label: ScanLabel | None, timeout_s: float | None) -> Flow[Scan]:
        if label is not None and not isinstance(label, ScanLabel):
            raise TypeError(f"label must be a ScanLabel or None, got {label!r}")
        request = scan_service_pb2.LabelScanRequest(
            name=convert.scan_name(check_scan_id(scan_id)),
            label=convert.enum_to_pb(label),  # type: ignore[arg-type]
        )
        return self._unary(rpcs.LABEL_SCAN, request, timeout_s, lambda r: convert.scan_from_pb(r.scan))

    def _read_scan_image_flow(
        self, scan_id: str, image_id: str, format: ImageFormat | None, timeout_s: float | None
    ) -> Flow[bytes]:
        scan_id = check_scan_id(scan_id)
        if not isinstance(image_id, str):
            raise TypeError(f"image_id must be a str, got {type(image_id).__name__}")
        if not _SCAN_ID.fullmatch(image_id):
            raise ValueError(f"image_id must be 1..128 of A-Z a-z 0-9 . _ ~ -, got {image_id!r}")
        if format is not None and not isinstance(format, ImageFormat):
            raise TypeError(f"format must be an ImageFormat or None, got {format!r}")
        return self._read_image(scan_id, image_id, format, self._deadline(rpcs.READ_SCAN_IMAGE, timeout_s))

    @staticmethod
    def _read_image(scan_id: str, image_id: str, format: ImageFormat | None, deadline: float) -> Flow[bytes]:
        """Sub-flow: the bytes of one image of a scan, checked against the size and SHA-256 the device announced."""
        request = scan_service_pb2.ReadScanImageRequest(
            name=f"{convert.scan_name(scan_id)}/images/{image_id}",
            format=convert.enum_to_pb(format),  # type: ignore[arg-type]
        )
        responses = yield from read_stream(rpcs.READ_SCAN_IMAGE, request, deadline)
        return convert.image_bytes_from_pb(responses, format, rpcs.READ_SCAN_IMAGE.method)

    def _get_scan_explanation_flow(self, scan_id: str, timeout_s: float | None) -> Flow[ScanExplanation]:
        name = convert.scan_name(check_scan_id(scan_id)) + "/explanation"
        request = scan_service_pb2.GetScanExplanationRequest(name=name)
        return self._unary(rpcs.GET_SCAN_EXPLANATION, request, timeout_s, convert.scan_explanation_from_pb)

    def _get_scan_certificate_flow(self, scan_id: str, timeout_s: float | None) -> Flow[ScanCertificate]:
        name = convert.scan_name(check_scan_id(scan_id)) + "/certificate"
        request = scan_service_pb2.GetScanCertificateRequest(name=name)
        return self._unary(rpcs.GET_SCAN_CERTIFICATE, request, timeout_s, convert.scan_certificate_from_pb)

    # --- Scans: guided flows ---

    def _cancel_quietly(self, scan_id: str) -> Flow[None]:
        """Sub-flow: cancel a scan a failed flow leaves behind, ignoring any error (the original one matters)."""
        request = scan_service_pb2.CancelScanRequest(name=convert.scan_name(scan_id))
        with contextlib.suppress(VeriscopeError, RuntimeError):
            yield from call(rpcs.CANCEL_SCAN, request, rpcs.CLEANUP_TIMEOUT_S)

    def _complete(self, scan: Scan, on_event: EventCallback | None, timeout_s: float | None) -> Flow[ScanResult]:
        """Sub-flow: run inference on a scan and return its verdict with the unit's certificate of it."""
        yield from emit(on_event, ScanEvent(type=ScanEventType.ANALYZING, scan=scan, message="analyzing"))
        request = scan_service_pb2.CompleteScanRequest(name=convert.scan_name(scan.scan_id))
        response = yield from call(rpcs.COMPLETE_SCAN, request, self._deadline(rpcs.COMPLETE_SCAN, timeout_s))
        completed = convert.scan_from_pb(response.scan)
        if completed.result is None:
            raise ProtocolError(f"CompleteScan returned scan {scan.scan_id!r} without a verdict")
        result = completed.result
        # A unit that issues no certificates answers FAILED_PRECONDITION (an older one UNIMPLEMENTED): the verdict
        # stands without one.
        with contextlib.suppress(FailedPreconditionError, UnimplementedError):
            certificate = yield from self._get_scan_certificate_flow(scan.scan_id, timeout_s)
            result = replace(result, certificate=certificate)
        yield from emit(on_event, ScanEvent(type=ScanEventType.FINISHED, scan=completed, message=result.summary))
        return result

    def _scan_flow(
        self,
        item_type: str,
        partner_item_id: str | None,
        max_retakes_per_region: int,
        settings: CaptureSettings | None,
        on_event: EventCallback | None,
        timeout_s: float | None,
    ) -> Flow[ScanResult]:
        create = self._create_scan_request(item_type, partner_item_id)
        max_retakes = check_int(max_retakes_per_region, "max_retakes_per_region", 0, 1000)
        if settings is not None and not isinstance(settings, CaptureSettings):
            raise TypeError(f"settings must be CaptureSettings or None, got {type(settings).__name__}")
        if on_event is not None and not callable(on_event):
            raise TypeError("on_event must be callable or None")
        check_timeout(timeout_s)
        settings_pb = convert.capture_settings_to_pb(settings)

        def flow() -> Flow[ScanResult]:
            created = yield from call(rpcs.CREATE_SCAN, create, self._deadline(rpcs.CREATE_SCAN, timeout_s))
            scan = convert.scan_from_pb(created.scan)
            try:
                yield from emit(on_event, ScanEvent(type=ScanEventType.SNAPSHOT, scan=scan, message="scan created"))
                for region in [progress.region for progress in scan.regions]:
                    scan = yield from self._capture_region_until_done(
                        scan, region, settings_pb, max_retakes, on_event, timeout_s
                    )
                return (yield from self._complete(scan, on_event, timeout_s))
            except GeneratorExit:
                raise
            except BaseException:
                yield from self._cancel_quietly(scan.scan_id)
                raise

        return flow()

    def _capture_region_until_done(
        self,
        scan: Scan,
        region: str,
        settings_pb: Any,
        max_retakes: int,
        on_event: EventCallback | None,
        timeout_s: float | None,
    ) -> Flow[Scan]:
        """Sub-flow: capture one region until it has its accepted images or has failed ``max_retakes + 1`` times."""
        failures = 0
        captures = 0
        while True:
            progress = _progress(scan, region)
            if progress is None or progress[0] >= progress[1]:
                return scan
            accepted, needed, hint = progress
            # Bounded even if the device never counts an image as accepted.
            if captures >= needed + max_retakes:
                return scan
            what = f"capturing {region} ({accepted + 1}/{needed})" + (f", retake {failures}" if failures else "")
            message = f"{what}: {hint}" if hint else what
            yield from emit(
                on_event, ScanEvent(type=ScanEventType.CAPTURING, scan=scan, region=region, message=message)
            )
            request = scan_service_pb2.CaptureRegionRequest(
                name=convert.scan_name(scan.scan_id), region=region, settings=settings_pb
            )
            response = yield from call(rpcs.CAPTURE_REGION, request, self._deadline(rpcs.CAPTURE_REGION, timeout_s))
            captured = convert.region_capture_from_pb(response)
            scan = captured.scan
            captures += 1
            if captured.retake_required or not captured.image.quality.ok:
                failures += 1
                exhausted = failures > max_retakes
                kind = ScanEventType.RETAKES_EXHAUSTED if exhausted else ScanEventType.RETAKE_REQUESTED
                event = ScanEvent(
                    type=kind, scan=scan, region=region, message=_hints(captured.image), image=captured.image
                )
                yield from emit(on_event, event)
                if exhausted:
                    return scan
            else:
                event = ScanEvent(type=ScanEventType.IMAGE_ACCEPTED, scan=scan, region=region, image=captured.image)
                yield from emit(on_event, event)
                after = _progress(scan, region)
                if after is not None and after[0] >= after[1]:
                    yield from emit(on_event, ScanEvent(type=ScanEventType.REGION_COMPLETE, scan=scan, region=region))

    def _analyze_flow(
        self,
        item_type: str,
        images: Iterable[tuple[str, ImageData]],
        partner_item_id: str | None,
        on_event: EventCallback | None,
        timeout_s: float | None,
    ) -> Flow[ScanResult]:
        create = self._create_scan_request(item_type, partner_item_id)
        if isinstance(images, str | bytes) or not isinstance(images, Iterable):
            raise TypeError("images must be an iterable of (region, image) pairs")
        checked: list[ImageToUpload] = []
        for index, pair in enumerate(images):
            if not (isinstance(pair, tuple) and len(pair) == 2):
                raise TypeError(f"images[{index}] must be a (region, image) pair, got {pair!r}")
            checked.append(check_image(pair[0], pair[1], f"images[{index}]"))
        if not checked:
            raise ValueError("images must hold at least one (region, image) pair")
        if on_event is not None and not callable(on_event):
            raise TypeError("on_event must be callable or None")
        check_timeout(timeout_s)

        def flow() -> Flow[ScanResult]:
            created = yield from call(rpcs.CREATE_SCAN, create, self._deadline(rpcs.CREATE_SCAN, timeout_s))
            scan = convert.scan_from_pb(created.scan)
            try:
                known = [progress.region for progress in scan.regions]
                for image in checked:
                    if known and image.region not in known:
                        raise ValueError(
                            f"{image.label}: {image.region!r} is not a region of item type {scan.item_type!r} "
                            f"(regions: {', '.join(known)})"
                        )
                yield from emit(on_event, ScanEvent(type=ScanEventType.SNAPSHOT, scan=scan, message="scan created"))
                for image in checked:
                    yield from emit(
                        on_event,
                        ScanEvent(
                            type=ScanEventType.UPLOADING,
                            scan=scan,
                            region=image.region,
                            message=f"uploading {image.label}",
                        ),
                    )
                    data = image.read()
                    requests = upload_requests(scan.scan_id, image.region, data)
                    response = yield from stream(
                        rpcs.UPLOAD_IMAGE, requests, self._deadline(rpcs.UPLOAD_IMAGE, timeout_s)
                    )
                    del data, requests
                    uploaded = convert.image_upload_from_pb(response)
                    was = _progress(scan, image.region)
                    scan = uploaded.scan
                    quality = uploaded.image.quality
                    kind = ScanEventType.IMAGE_ACCEPTED if quality.ok else ScanEventType.IMAGE_REJECTED
                    message = "" if quality.ok else _hints(uploaded.image)
                    event = ScanEvent(type=kind, scan=scan, region=image.region, message=message, image=uploaded.image)
                    yield from emit(on_event, event)
                    now = _progress(scan, image.region)
                    if was is not None and now is not None and was[0] < was[1] <= now[0]:
                        yield from emit(
                            on_event, ScanEvent(type=ScanEventType.REGION_COMPLETE, scan=scan, region=image.region)
                        )
                return (yield from self._complete(scan, on_event, timeout_s))
            except GeneratorExit:
                raise
            except BaseException:
                yield from self._cancel_quietly(scan.scan_id)
                raise

        return flow()

    # --- Training data ---

    def _export_scans_flow(
        self,
        out_dir: str | os.PathLike[str],
        since: datetime | date | None,
        progress: Callable[[ExportProgress], object] | None,
        timeout_s: float | None,
    ) -> Flow[ExportSummary]:
        if not isinstance(out_dir, str | os.PathLike):
            raise TypeError(f"out_dir must be a str or a path, got {type(out_dir).__name__}")
        root = Path(out_dir)
        start = export.check_since(since)
        if progress is not None and not callable(progress):
            raise TypeError("progress must be callable or None")
        flt = export.scan_filter(start)
        list_deadline = self._deadline(rpcs.LIST_SCANS, timeout_s)
        device_deadline = self._deadline(rpcs.GET_DEVICE, timeout_s)
        read_deadline = self._deadline(rpcs.READ_SCAN_IMAGE, timeout_s)

        def flow() -> Flow[ExportSummary]:
            previous = export.read_manifest(root)
            device = yield from call(rpcs.GET_DEVICE, device_service_pb2.GetDeviceRequest(), device_deadline)
            device_id = device.device.device_id
            scans = yield from self._all_scans(flt, list_deadline)
            if not scans and previous is None:
                return ExportSummary(out=root, scans=0, items=0, images=0, skipped=0)

            known = export.known_files(previous)
            entries: list[dict[str, Any]] = []
            written = skipped = 0
            for done, scan in enumerate(scans):
                for item in export.items_of(scan):
                    digests: dict[str, str] = {}
                    for image in item.images:
                        path = root / item.file(image)
                        expected = export.expected_sha256(scan.scan_id, image, known)
                        if expected is not None and export.file_sha256(path) == expected:
                            skipped += 1
                            digests[image.image_id] = expected
                        else:
                            data = yield from self._read_image(
                                scan.scan_id, image.image_id, ImageFormat.PNG, read_deadline
                            )
                            export.write_atomic(path, data)
                            written += 1
                            digests[image.image_id] = hashlib.sha256(data).hexdigest()
                        if progress is not None:
                            counts = ExportProgress(
                                scans_done=done,
                                scans_total=len(scans),
                                images_written=written,
                                images_skipped=skipped,
                                scan_id=scan.scan_id,
                            )
                            yield Emit(progress, counts)
                    entries.append(export.item_entry(item, device_id, digests))

            kept, removed = export.prune_previous(root, previous, entries, device_id, start)
            manifest = export.build_manifest(
                device_id=device_id, export_time=datetime.now(UTC), since=start, filter=flt, items=[*entries, *kept]
            )
            manifest_path = root / export.MANIFEST_FILE
            export.write_atomic(manifest_path, export.manifest_text(manifest))
            return ExportSummary(
                out=root,
                scans=len(scans),
                items=len(entries),
                images=written,
                skipped=skipped,
                removed=removed,
                manifest=manifest_path,
            )

        return flow()

    @staticmethod
    def _all_scans(flt: str, deadline: float) -> Flow[list[Scan]]:
        """Sub-flow: every scan that matches ``flt``, oldest first, over as many ListScans pages as it takes."""
        scans: list[Scan] = []
        token = ""
        for _ in range(100_000):  # a device that keeps handing out tokens must not loop us forever
            request = scan_service_pb2.ListScansRequest(page_size=EXPORT_PAGE_SIZE, page_token=token, filter=flt)
            page = convert.scan_page_from_pb((yield from call(rpcs.LIST_SCANS, request, deadline)))
            scans.extend(page.scans)
            if page.next_page_token is None:
                return sorted(scans, key=lambda s: (s.create_time, s.scan_id))
            token = page.next_page_token
        raise ProtocolError("ListScans kept returning page tokens")

    # --- Models, updates ---

    def _list_models_flow(self, timeout_s: float | None) -> Flow[list[ModelInfo]]:
        deadline = self._deadline(rpcs.LIST_MODELS, timeout_s)

        def flow() -> Flow[list[ModelInfo]]:
            models: list[ModelInfo] = []
            token = ""
            for _ in range(10_000):  # a device that keeps handing out tokens must not loop us forever
                request = model_service_pb2.ListModelsRequest(page_size=MAX_PAGE_SIZE, page_token=token)
                response = yield from call(rpcs.LIST_MODELS, request, deadline)
                models.extend(convert.model_from_pb(m) for m in response.models)
                token = response.next_page_token
                if not token:
                    return models
            raise ProtocolError("ListModels kept returning page tokens")

        return flow()

    def _get_model_flow(self, model_id: str, timeout_s: float | None) -> Flow[ModelInfo]:
        request = model_service_pb2.GetModelRequest(name="models/" + check_name(model_id, "model_id"))
        return self._unary(rpcs.GET_MODEL, request, timeout_s, lambda r: convert.model_from_pb(r.model))

    def _get_update_status_flow(self, timeout_s: float | None) -> Flow[UpdateStatus]:
        request = update_service_pb2.GetUpdateStatusRequest()
        return self._unary(rpcs.GET_UPDATE_STATUS, request, timeout_s, convert.update_status_from_pb)

    # --- Simulation ---

    def _place_item_flow(self, item_type: str, source: str, seed: int, timeout_s: float | None) -> Flow[PlacedItem]:
        item = simulation_service_pb2.PlacedItem(
            item_type=check_name(item_type, "item_type"),
            source=check_name(source, "source"),
            seed=check_int(seed, "seed", 0, 2**63 - 1),
        )
        request = simulation_service_pb2.PlaceItemRequest(item=item)
        return self._unary(rpcs.PLACE_ITEM, request, timeout_s, lambda r: convert.placed_item_from_pb(r.item))

    def _get_placed_item_flow(self, timeout_s: float | None) -> Flow[PlacedItem | None]:
        request = simulation_service_pb2.GetPlacedItemRequest()
        return self._unary(
            rpcs.GET_PLACED_ITEM,
            request,
            timeout_s,
            lambda r: convert.placed_item_from_pb(r.item) if r.HasField("item") else None,
        )

    def _clear_item_flow(self, timeout_s: float | None) -> Flow[None]:
        return self._unary(rpcs.CLEAR_ITEM, simulation_service_pb2.ClearItemRequest(), timeout_s, lambda r: None)

    def _list_sources_flow(self, timeout_s: float | None) -> Flow[list[SimulatedMaterial]]:
        deadline = self._deadline(rpcs.LIST_SOURCES, timeout_s)

        def flow() -> Flow[list[SimulatedMaterial]]:
            materials: list[SimulatedMaterial] = []
            token = ""
            for _ in range(10_000):
                request = simulation_service_pb2.ListSourcesRequest(page_token=token)
                response = yield from call(rpcs.LIST_SOURCES, request, deadline)
                materials.extend(convert.material_from_pb(m) for m in response.materials)
                token = response.next_page_token
                if not token:
                    return materials
            raise ProtocolError("ListSources kept returning page tokens")

        return flow()
