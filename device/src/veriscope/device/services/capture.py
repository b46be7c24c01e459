"""CaptureService: single frames, the live preview and autofocus, outside of scans."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from veriscope.device import codec
from veriscope.device.errors import FailedPrecondition, InvalidArgument
from veriscope.device.imager import Imager
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
from veriscope.v1 import capture_service_pb2 as pb
from veriscope.v1 import capture_service_pb2_grpc, common_pb2


class CaptureServicer(capture_service_pb2_grpc.CaptureServiceServicer):
    """Serves CaptureService. Shares the scan manager's camera lock, and refuses while a scan owns the camera."""

    def __init__(self, imager: Imager, manager: ScanManager) -> None:
        self._imager = imager
        self._manager = manager

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
        self._check_free()
        async with self._manager.camera_lock:
            judged = await asyncio.to_thread(self._imager.capture, settings)
        data = await asyncio.to_thread(codec.encode, judged.frame.pixels, fmt, jpeg_quality=request.jpeg_quality or 92)
        meta = meta_to_pb(ImageMeta.of_frame(judged.frame, device_id=""))
        return pb.CaptureResponse(
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
        while request.max_frames == 0 or sent < request.max_frames:
            # Pace frames; when the client is slow, skip the slots we missed instead of queueing frames.
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
            data = await asyncio.to_thread(
                codec.encode, frame.pixels, codec.ImageFormat.JPEG, jpeg_quality=jpeg_quality
            )
            yield pb.StreamPreviewResponse(
                jpeg=data,
                sequence=sequence,
                capture_time=timestamp(frame.capture_time),
                width=frame.width,
                height=frame.height,
                sharpness=quality.sharpness(frame.pixels),
            )
            sequence += 1
            sent += 1

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
