"""ScanService.ReadScanImage over real gRPC: stored bytes in 1 MiB chunks, and stored JPEGs converted to PNG."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
from device_daemon import InProcessDaemon
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from veriscope.device import codec
from veriscope.v1 import common_pb2, scan_service_pb2_grpc
from veriscope.v1 import scan_service_pb2 as pb

MiB = 1024 * 1024
ITEM = "scarf-twill"
REGION = "twill"


def _noise(width: int, height: int, seed: int) -> np.ndarray:
    """Pixels that compress badly, so that even the JPEG spans several chunks."""
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


@dataclass
class Stored:
    stub: scan_service_pb2_grpc.ScanServiceStub
    scan: pb.Scan
    png: bytes
    jpeg: bytes
    png_id: str
    jpeg_id: str


def _upload(stub: scan_service_pb2_grpc.ScanServiceStub, name: str, data: bytes) -> pb.ScanImage:
    header = pb.UploadImageHeader(name=name, region=REGION, size_bytes=len(data))
    chunks = [pb.UploadImageRequest(chunk=data[i : i + MiB]) for i in range(0, len(data), MiB)]
    return stub.UploadImage(iter([pb.UploadImageRequest(header=header), *chunks])).image


@pytest.fixture(scope="module")
def stored(daemon: InProcessDaemon) -> Stored:
    stub = scan_service_pb2_grpc.ScanServiceStub(daemon.channel)
    png = codec.encode(_noise(1200, 900, 1), codec.ImageFormat.PNG)
    jpeg = codec.encode(_noise(1600, 1200, 2), codec.ImageFormat.JPEG, jpeg_quality=95)
    assert len(png) > 2 * MiB and len(jpeg) > MiB
    scan = stub.CreateScan(pb.CreateScanRequest(scan=pb.Scan(item_type=ITEM))).scan
    png_image = _upload(stub, scan.name, png)
    jpeg_image = _upload(stub, scan.name, jpeg)
    assert (png_image.format, jpeg_image.format) == (common_pb2.IMAGE_FORMAT_PNG, common_pb2.IMAGE_FORMAT_JPEG)
    return Stored(stub, scan, png, jpeg, png_image.image_id, jpeg_image.image_id)


def _read(stored: Stored, image_id: str, fmt: int = 0) -> list[pb.ReadScanImageResponse]:
    request = pb.ReadScanImageRequest(name=f"{stored.scan.name}/images/{image_id}", format=fmt)  # type: ignore[arg-type]
    return list(stored.stub.ReadScanImage(request))


def _check_stream(messages: list[pb.ReadScanImageResponse]) -> bytes:
    """The bytes of a stream, once its chunks and first-message fields are as the API says."""
    first, rest = messages[0], messages[1:]
    data = b"".join(m.chunk for m in messages)
    assert all(0 < len(m.chunk) <= MiB for m in messages)
    assert first.size_bytes == len(data) and first.sha256 == hashlib.sha256(data).hexdigest()
    assert first.HasField("image") and first.format != common_pb2.IMAGE_FORMAT_UNSPECIFIED
    # Metadata, format, size and SHA-256 come once, on the first message.
    assert not any(m.HasField("image") or m.size_bytes or m.sha256 or m.format for m in rest)
    return data


def test_a_stored_png_streams_as_stored_in_chunks(stored: Stored) -> None:
    for fmt in (common_pb2.IMAGE_FORMAT_UNSPECIFIED, common_pb2.IMAGE_FORMAT_PNG):
        messages = _read(stored, stored.png_id, fmt)
        assert len(messages) == -(-len(stored.png) // MiB) >= 3
        assert _check_stream(messages) == stored.png
        first = messages[0]
        assert first.format == common_pb2.IMAGE_FORMAT_PNG
        assert first.image.image_id == stored.png_id and first.image.region == REGION
        assert first.image.name == f"{stored.scan.name}/images/{stored.png_id}"
        assert first.image.sha256 == first.sha256 and first.image.metadata.width == 1200


def test_a_stored_jpeg_streams_as_stored_or_as_its_own_pixels_in_png(stored: Stored) -> None:
    as_stored = _read(stored, stored.jpeg_id)
    assert _check_stream(as_stored) == stored.jpeg and as_stored[0].format == common_pb2.IMAGE_FORMAT_JPEG
    assert _check_stream(_read(stored, stored.jpeg_id, common_pb2.IMAGE_FORMAT_JPEG)) == stored.jpeg

    messages = _read(stored, stored.jpeg_id, common_pb2.IMAGE_FORMAT_PNG)
    png = _check_stream(messages)
    first = messages[0]
    assert first.format == common_pb2.IMAGE_FORMAT_PNG and codec.sniff_format(png) is codec.ImageFormat.PNG
    # The image's own record still describes the stored JPEG; the stream's fields describe the PNG sent.
    assert first.image.sha256 == hashlib.sha256(stored.jpeg).hexdigest() != first.sha256
    assert first.image.format == common_pb2.IMAGE_FORMAT_JPEG
    assert len(messages) == -(-len(png) // MiB) > 1
    jpeg_pixels = codec.decode(stored.jpeg, max_pixels=10**8)
    np.testing.assert_array_equal(codec.decode(png, max_pixels=10**8), jpeg_pixels)
    again = _check_stream(_read(stored, stored.jpeg_id, common_pb2.IMAGE_FORMAT_PNG))
    assert again == png


def _error(stored: Stored, name: str, fmt: int = 0) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        list(stored.stub.ReadScanImage(pb.ReadScanImageRequest(name=name, format=fmt)))  # type: ignore[arg-type]
    return info.value.code(), info.value.details()


def test_unknown_scans_and_images_are_not_found(stored: Stored) -> None:
    code, details = _error(stored, "scans/0123abcd/images/001")
    assert code is grpc.StatusCode.NOT_FOUND and "0123abcd" in details
    code, details = _error(stored, f"{stored.scan.name}/images/999")
    assert code is grpc.StatusCode.NOT_FOUND and "999" in details and stored.png_id in details


@pytest.mark.parametrize(
    "name",
    [
        "",
        "scans/abc",
        "scans/abc/images",
        "scans/abc/images/",
        "scans/abc/pictures/001",
        "scans/a-b/images/001",
        "scans/abc/images/../001",
        "scans/abc/images/001/x",
        "images/001",
    ],
)
def test_malformed_names_are_invalid(stored: Stored, name: str) -> None:
    code, details = _error(stored, name)
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "scans/{scan_id}/images/{image_id}" in details


def test_bad_formats_are_invalid(stored: Stored) -> None:
    code, details = _error(stored, f"{stored.scan.name}/images/{stored.png_id}", common_pb2.IMAGE_FORMAT_JPEG)
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "stored as PNG" in details
    code, details = _error(stored, f"{stored.scan.name}/images/{stored.png_id}", 9)
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "format" in details


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], database=None)
@given(
    name=st.one_of(
        st.sampled_from(["scans/abc/images/001", "scans/abc/images/", "scans//images/001", "scans/abc/images/../x"]),
        st.text(max_size=40),
        st.from_regex(r"scans/[0-9a-f]{1,8}/images/[0-9]{1,3}", fullmatch=True),
    ),
    fmt=st.integers(-2, 12),
)
def test_any_request_gets_a_deliberate_status(stored: Stored, name: str, fmt: int) -> None:
    try:
        list(stored.stub.ReadScanImage(pb.ReadScanImageRequest(name=name, format=fmt)))  # type: ignore[arg-type]
    except grpc.RpcError as exc:
        assert exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), exc.details()
        assert exc.details()
