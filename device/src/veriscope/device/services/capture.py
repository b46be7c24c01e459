"""CaptureService: single frames, the live preview and autofocus, outside of scans."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from veriscope.device import codec
from veriscope.device.errors import FailedPrecondition, InvalidArgument, VeriscopeError
from veriscope.device.imager import Imager, JudgedFrame
from veriscope.device.pipeline import quality
from veriscope.device.scans.manager import ScanManager
from veriscope.device.scans.records import ImageMeta
from veriscope.device.services._convert import (
    FORMAT_TO_PB,
    lighting_from_pb,
    meta_to_pb,
    quality_to_pb,
    settings_from_pb,
    timestamp,
)
from veriscope.device.services._errors import ServicerContext, rpc
from veriscope.device.types import CaptureSettings, Lighting, RGBImage
from veriscope.v1 import capture_service_pb2 as pb
from veriscope.v1 import capture_service_pb2_grpc, common_pb2

_log = logging.getLogger("veriscope.device.capture")
MAX_SEQUENCE_CHANNELS = 4
"""Most lighting channels one Capture may take in sequence."""


def _lights_off(imager: Imager) -> None:
    """Switch the LEDs off after a preview; a board that fails is logged, as the stream has already ended."""
    try:
        imager.lights_off()
    except VeriscopeError as exc:
        _log.warning("could not switch the lights off after a preview: %s", exc)


def _encode_preview(pixels: RGBImage, jpeg_quality: int) -> tuple[bytes, float]:
    """A preview frame's JPEG bytes and its sharpness."""
    return codec.encode(pixels, codec.ImageFormat.JPEG, jpeg_quality=jpeg_quality), quality.sharpness(pixels)


def _lighting_sequence(request: pb.CaptureRequest) -> list[Lighting]:
    """The request's lighting sequence, checked: 1..4 distinct known channels, and no settings.lighting beside it."""
    if not request.lighting_sequence:
        return []
    if request.settings.lighting != common_pb2.LIGHTING_CHANNEL_UNSPECIFIED:
        raise InvalidArgument("give either settings.lighting or lighting_sequence, not both")
    if len(request.lighting_sequence) > MAX_SEQUENCE_CHANNELS:
        raise InvalidArgument(
            f"lighting_sequence has {len(request.lighting_sequence)} channels; at most {MAX_SEQUENCE_CHANNELS}"
        )
    channels = []
    for i, value in enumerate(request.lighting_sequence):
        if value == common_pb2.LIGHTING_CHANNEL_UNSPECIFIED:
            raise InvalidArgument(f"lighting_sequence[{i}] is unspecified; name a channel")
        channels.append(lighting_from_pb(value, f"lighting_sequence[{i}]"))
    if len(set(channels)) != len(channels):
        raise InvalidArgument("lighting_sequence repeats a channel")
    return channels


class CaptureServicer(capture_service_pb2_grpc.CaptureServiceServicer):
    """Serves CaptureService. Shares the scan manager's camera lock, and refuses while a scan owns the camera."""

    def __init__(self, imager: Imager, manager: ScanManager) -> None:
        self._imager = imager
        self._manager = manager
        self._background: set[asyncio.Future[None]] = set()

    def _check_free(self) -> None:
        owner = self._manager.busy_owner()
        if owner is not None:
            raise FailedPrecondition(f"camera busy: scans/{owner} owns the camera until it completes or is cancelled")

    @rpc
    async def Capture(self, request: pb.CaptureRequest, context: ServicerContext) -> pb.CaptureResponse:
        settings = settings_from_pb(request.settings)
        fmt = codec.ImageFormat.JPEG if request.format == common_pb2.IMAGE_FORMAT_JPEG else codec.ImageFormat.PNG
        if request.jpeg_quality > 100:
            raise InvalidArgument(f"jpeg_quality must be 1..100, got {request.jpeg_quality}")
        channels = _lighting_sequence(request)
        self._check_free()
        if channels:
            return await self._capture_sequence(settings, channels, fmt, request.jpeg_quality or 92)
        overrides = self._manager.bundle.quality_overrides(lighting=settings.lighting.value)
        async with self._manager.camera_lock:
            judged = await asyncio.to_thread(self._imager.capture, settings, thresholds=overrides)
        frame = await asyncio.to_thread(self._encode, judged, fmt, request.jpeg_quality or 92)
        return pb.CaptureResponse(image=frame.image, quality=frame.quality)

    async def _capture_sequence(
        self, settings: CaptureSettings, channels: list[Lighting], fmt: codec.ImageFormat, jpeg_quality: int
    ) -> pb.CaptureResponse:
        overrides = {channel: self._manager.bundle.quality_overrides(lighting=channel.value) for channel in channels}
        async with self._manager.camera_lock:
            judged = await asyncio.to_thread(self._imager.capture_sequence, settings, channels, thresholds=overrides)
        frames = [await asyncio.to_thread(self._encode, j, fmt, jpeg_quality) for j in judged]
        return pb.CaptureResponse(frames=frames)

    def _encode(self, judged: JudgedFrame, fmt: codec.ImageFormat, jpeg_quality: int) -> pb.CapturedFrame:
        data = codec.encode(judged.frame.pixels, fmt, jpeg_quality=jpeg_quality)
        meta = meta_to_pb(ImageMeta.of_frame(judged.frame, device_id=self._manager.device_id))
        return pb.CapturedFrame(
            image=common_pb2.Image(data=data, format=FORMAT_TO_PB[fmt], metadata=meta),
            quality=quality_to_pb(judged.quality),
        )

    @rpc
    async def StreamPreview(
        self, request: pb.StreamPreviewRequest, context: ServicerContext
    ) -> AsyncIterator[pb.StreamPreviewResponse]:
        fps = request.max_fps or 10.0
        if not 1.0 <= fps <= 30.0:
            raise InvalidArgument(f"max_fps must be 1..30, got {request.max_fps}")
        width = request.width or 640
        if not 64 <= width <= 1280:
            raise InvalidArgument(f"width must be 64..1280, got {request.width}")
        jpeg_quality = request.jpeg_quality or 75
        if not 1 <= jpeg_quality <= 100:
            raise InvalidArgument(f"jpeg_quality must be 1..100, got {request.jpeg_quality}")
        lighting = lighting_from_pb(request.lighting, "lighting")
        period = 1.0 / fps
        sequence = 0
        next_time = time.monotonic()
        sent = 0
        try:
            while request.max_frames == 0 or sent < request.max_frames:
                # Pace frames. A frame is made only once the previous one is written, so when the client is
                # slow (its transport window full) the slots missed meanwhile are skipped, never queued.
                now = time.monotonic()
                if now < next_time:
                    await asyncio.sleep(next_time - now)
                else:
                    missed = int((now - next_time) / period)
                    sequence += missed
                    next_time += missed * period
                next_time += period
                async with self._manager.camera_lock:
                    frame = await asyncio.to_thread(self._imager.preview, width, lighting)
                data, sharpness = await asyncio.to_thread(_encode_preview, frame.pixels, jpeg_quality)
                yield pb.StreamPreviewResponse(
                    jpeg=data,
                    sequence=sequence,
                    capture_time=timestamp(frame.capture_time),
                    width=frame.width,
                    height=frame.height,
                    sharpness=sharpness,
                )
                sequence += 1
                sent += 1
        finally:
            # The LEDs heat the board and the item: off when the stream ends, however it ends. In a worker, as
            # another capture may hold the imager; that one lights its own frames again.
            self._background.add(task := asyncio.ensure_future(asyncio.to_thread(_lights_off, self._imager)))
            task.add_done_callback(self._background.discard)

    @rpc
    async def Autofocus(self, request: pb.AutofocusRequest, context: ServicerContext) -> pb.AutofocusResponse:
        max_steps = request.max_steps or 40
        if not 5 <= max_steps <= 200:
            raise InvalidArgument(f"max_steps must be 5..200, got {request.max_steps}")
        lighting = lighting_from_pb(request.lighting, "lighting")
        self._check_free()
        async with self._manager.camera_lock:
            result = await asyncio.to_thread(self._imager.autofocus, lighting, max_steps)
        return pb.AutofocusResponse(
            converged=result.converged,
            best_position=result.best_position,
            best_sharpness=result.best_sharpness,
            curve=[pb.FocusSample(position=s.position, sharpness=s.sharpness) for s in result.curve],
            steps_taken=result.steps_taken,
        )
