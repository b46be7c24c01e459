"""ScanService: guided scans, uploads and verdicts over gRPC."""

from __future__ import annotations

import asyncio
import errno
import tempfile
from collections.abc import AsyncIterator
from typing import IO

from veriscope.device.certificates import signing_key_sha256
from veriscope.device.errors import InvalidArgument, NotFound, ResourceExhausted
from veriscope.device.scans.filter import parse_filter
from veriscope.device.scans.manager import ImageContent, ScanManager
from veriscope.device.scans.records import ScanRecord
from veriscope.device.services._convert import (
    FORMAT_TO_PB,
    LABEL_FROM_PB,
    explanation_to_pb,
    image_to_pb,
    scan_to_pb,
    settings_from_pb,
    timestamp,
)
from veriscope.device.services._errors import ServicerContext, rpc, scan_id_from_name
from veriscope.v1 import common_pb2, scan_service_pb2_grpc
from veriscope.v1 import scan_service_pb2 as pb

_EVENT_TYPES = {
    "snapshot": pb.SCAN_EVENT_TYPE_SNAPSHOT,
    "image_accepted": pb.SCAN_EVENT_TYPE_IMAGE_ACCEPTED,
    "retake_requested": pb.SCAN_EVENT_TYPE_RETAKE_REQUESTED,
    "region_complete": pb.SCAN_EVENT_TYPE_REGION_COMPLETE,
    "analyzing": pb.SCAN_EVENT_TYPE_ANALYZING,
    "finished": pb.SCAN_EVENT_TYPE_FINISHED,
}
MAX_CHUNK_BYTES = 1024 * 1024 + 1024
SPOOL_MEMORY_BYTES = 1024 * 1024
"""An upload larger than this is spooled to the data volume as it arrives, so waiting uploads hold no memory."""
READ_CHUNK_BYTES = 1024 * 1024
"""Bytes per ReadScanImage message (the API's maximum)."""
_FORMAT_FROM_PB = {v: k for k, v in FORMAT_TO_PB.items()}


class ScanServicer(scan_service_pb2_grpc.ScanServiceServicer):
    """Serves ScanService from a :class:`ScanManager`."""

    def __init__(self, manager: ScanManager) -> None:
        self._m = manager

    def _scan(self, scan: ScanRecord) -> pb.Scan:
        return scan_to_pb(scan, self._m.region_specs(scan.item_type), self._m.next_region(scan))

    @rpc
    async def CreateScan(self, request: pb.CreateScanRequest, context: ServicerContext) -> pb.CreateScanResponse:
        scan = await self._m.create(request.scan.item_type, request.scan.partner_item_id)
        return pb.CreateScanResponse(scan=self._scan(scan))

    @rpc
    async def CaptureRegion(
        self, request: pb.CaptureRegionRequest, context: ServicerContext
    ) -> pb.CaptureRegionResponse:
        scan_id = scan_id_from_name(request.name)
        if not request.region:
            raise InvalidArgument("region is required")
        settings = settings_from_pb(request.settings) if request.HasField("settings") else None
        images, scan = await self._m.capture_region(scan_id, request.region, settings)
        # One frame per lighting channel the model needs: the region is retaken when any of them failed the gate.
        return pb.CaptureRegionResponse(
            image=image_to_pb(scan_id, images[0]),
            retake_required=any(not image.quality.ok for image in images),
            scan=self._scan(scan),
        )

    @rpc
    async def UploadImage(
        self, request_iterator: AsyncIterator[pb.UploadImageRequest], context: ServicerContext
    ) -> pb.UploadImageResponse:
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES, dir=str(self._m.spool_dir)) as spool:
            header = await self._receive_upload(request_iterator, spool)
            scan_id = scan_id_from_name(header.name, "header.name")
            image, scan = await self._m.upload_image(scan_id, header.region, spool, declared_sha256=header.sha256)
        return pb.UploadImageResponse(image=image_to_pb(scan_id, image), scan=self._scan(scan))

    async def _receive_upload(
        self, request_iterator: AsyncIterator[pb.UploadImageRequest], spool: IO[bytes]
    ) -> pb.UploadImageHeader:
        """Check an UploadImage stream's header and write its chunks to ``spool``; returns the header."""
        header: pb.UploadImageHeader | None = None
        received = 0
        limit = self._m.limits.max_upload_bytes
        async for message in request_iterator:
            kind = message.WhichOneof("payload")
            if header is None:
                if kind != "header":
                    raise InvalidArgument("the first UploadImage message must be the header")
                header = message.header
                scan_id_from_name(header.name, "header.name")
                if not header.region:
                    raise InvalidArgument("header.region is required")
                if header.size_bytes == 0:
                    raise InvalidArgument("header.size_bytes is required (the file's size, at least 1 byte)")
                if header.size_bytes > limit:
                    raise ResourceExhausted(
                        f"header.size_bytes {header.size_bytes} exceeds the upload limit of {limit} bytes"
                    )
                continue
            if kind != "chunk":
                raise InvalidArgument("only one header is allowed per UploadImage stream")
            if len(message.chunk) > MAX_CHUNK_BYTES:
                raise InvalidArgument(f"chunk of {len(message.chunk)} bytes is larger than 1 MiB")
            received += len(message.chunk)
            if received > header.size_bytes:
                raise InvalidArgument(f"received more bytes than header.size_bytes ({header.size_bytes})")
            try:
                if spool.tell() + len(message.chunk) > SPOOL_MEMORY_BYTES:
                    await asyncio.to_thread(spool.write, message.chunk)  # rolls over to, or writes, a file
                else:
                    spool.write(message.chunk)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise ResourceExhausted(
                        f"the data volume is full: could not receive the upload ({received} bytes in)"
                    ) from exc
                raise
        if header is None:
            raise InvalidArgument("UploadImage stream was empty; send a header then chunks")
        if received != header.size_bytes:
            raise InvalidArgument(f"upload ended after {received} of {header.size_bytes} bytes (truncated)")
        return header

    @rpc
    async def CompleteScan(self, request: pb.CompleteScanRequest, context: ServicerContext) -> pb.CompleteScanResponse:
        scan = await self._m.complete(scan_id_from_name(request.name))
        return pb.CompleteScanResponse(scan=self._scan(scan))

    @rpc
    async def GetScan(self, request: pb.GetScanRequest, context: ServicerContext) -> pb.GetScanResponse:
        return pb.GetScanResponse(scan=self._scan(self._m.get(scan_id_from_name(request.name))))

    @rpc
    async def ListScans(self, request: pb.ListScansRequest, context: ServicerContext) -> pb.ListScansResponse:
        scans, token = self._m.list(parse_filter(request.filter), request.page_size, request.page_token)
        return pb.ListScansResponse(scans=[self._scan(s) for s in scans], next_page_token=token)

    @rpc
    async def WatchScan(
        self, request: pb.WatchScanRequest, context: ServicerContext
    ) -> AsyncIterator[pb.WatchScanResponse]:
        async for event in self._m.watch(scan_id_from_name(request.name)):
            yield pb.WatchScanResponse(
                type=_EVENT_TYPES[event.type],
                event_time=timestamp(event.time),
                region=event.region,
                message=event.message,
                scan=self._scan(event.scan),
            )

    @rpc
    async def CancelScan(self, request: pb.CancelScanRequest, context: ServicerContext) -> pb.CancelScanResponse:
        return pb.CancelScanResponse(scan=self._scan(await self._m.cancel(scan_id_from_name(request.name))))

    @rpc
    async def GetScanExplanation(
        self, request: pb.GetScanExplanationRequest, context: ServicerContext
    ) -> pb.GetScanExplanationResponse:
        scan, images = await self._m.explain(scan_id_from_name(request.name, child="explanation"))
        return pb.GetScanExplanationResponse(explanation=explanation_to_pb(scan, images))

    @rpc
    async def GetScanCertificate(
        self, request: pb.GetScanCertificateRequest, context: ServicerContext
    ) -> pb.GetScanCertificateResponse:
        scan_id = scan_id_from_name(request.name, child="certificate")
        document = self._m.certificate(scan_id)
        certificate = pb.ScanCertificate(
            name=f"scans/{scan_id}/certificate",
            document=document.encode("utf-8"),
            signing_key_sha256=signing_key_sha256(document),
        )
        return pb.GetScanCertificateResponse(certificate=certificate)

    @rpc
    async def LabelScan(self, request: pb.LabelScanRequest, context: ServicerContext) -> pb.LabelScanResponse:
        scan_id = scan_id_from_name(request.name)
        if request.label not in LABEL_FROM_PB:
            raise InvalidArgument(f"label has unknown value {request.label}; use GENUINE, COUNTERFEIT or UNSPECIFIED")
        scan = await self._m.label(scan_id, LABEL_FROM_PB[request.label])
        return pb.LabelScanResponse(scan=self._scan(scan))

    @rpc
    async def ReadScanImage(
        self, request: pb.ReadScanImageRequest, context: ServicerContext
    ) -> AsyncIterator[pb.ReadScanImageResponse]:
        scan_id, image_id = _image_name(request.name)
        if request.format == common_pb2.IMAGE_FORMAT_UNSPECIFIED:
            fmt = None
        elif request.format in _FORMAT_FROM_PB:
            fmt = _FORMAT_FROM_PB[request.format]
        else:
            raise InvalidArgument(f"format has unknown value {request.format}; use UNSPECIFIED, PNG or JPEG")
        content = await self._m.image_content(scan_id, image_id, fmt)
        first = True
        async for chunk in _chunks(content):
            message = pb.ReadScanImageResponse(chunk=chunk)
            if first:
                message.image.CopyFrom(image_to_pb(scan_id, content.image))
                message.format = FORMAT_TO_PB[content.format]
                message.size_bytes = content.size_bytes
                message.sha256 = content.sha256
                first = False
            yield message


def _image_name(name: str) -> tuple[str, str]:
    """The scan and image ids in "scans/{scan_id}/images/{image_id}"; InvalidArgument for any other name."""
    parts = name.split("/")
    if len(parts) != 4 or (parts[0], parts[2]) != ("scans", "images") or not all(p.isalnum() for p in parts[1::2]):
        raise InvalidArgument(f"name must be 'scans/{{scan_id}}/images/{{image_id}}', got {name!r}")
    return parts[1], parts[3]


async def _chunks(content: ImageContent) -> AsyncIterator[bytes]:
    """The image's bytes in chunks of at most 1 MiB; a stored file is read as the chunks are sent."""
    if content.data is not None:
        data = memoryview(content.data)
        for offset in range(0, len(data), READ_CHUNK_BYTES):
            yield bytes(data[offset : offset + READ_CHUNK_BYTES])
        return
    assert content.path is not None
    try:
        file = await asyncio.to_thread(content.path.open, "rb")
    except FileNotFoundError:
        raise NotFound(f"image {content.image.image_id!r} is no longer stored") from None
    with file:
        while chunk := await asyncio.to_thread(file.read, READ_CHUNK_BYTES):
            yield chunk
