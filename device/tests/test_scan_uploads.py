"""UploadImage against hostile files and streams: each is refused with a status naming the problem, and the
scan keeps the images it had and can still be completed.

The cases here extend ``test_scan_service.test_uploads_are_checked`` (truncated PNG, size lies, SHA-256
mismatch, empty and foreign files, an oversize header): a JPEG cut in its entropy-coded data, decompression
bombs, a PNG with a bad chunk CRC, images too small or of an absurd aspect ratio, and 100 MB streams sent
to a daemon in its own process, whose memory is watched while it refuses them.
"""

from __future__ import annotations

import errno
import hashlib
import struct
import tempfile
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from device_daemon import InProcessDaemon

from veriscope.device import codec
from veriscope.device.launch import DaemonProcess, spawn_daemon
from veriscope.device.specimen import imaging
from veriscope.device.specimen.surface import VirtualItem
from veriscope.device.types import Lighting
from veriscope.v1 import scan_service_pb2 as pb
from veriscope.v1 import scan_service_pb2_grpc

ITEM = "tote-classic"
MIB = 1024 * 1024
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def scans(daemon: InProcessDaemon) -> scan_service_pb2_grpc.ScanServiceStub:
    return scan_service_pb2_grpc.ScanServiceStub(daemon.channel)


@pytest.fixture(scope="module")
def canvas_png() -> bytes:
    """A 640x480 simulated microscope image of genuine canvas that passes the quality gate."""
    return codec.encode(_render("canvas", 1), codec.ImageFormat.PNG)


def _render(region: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    optics = imaging.Optics(sensor_width_px=640, sensor_height_px=480)
    pose = imaging.good_pose(rng)
    return imaging.render(
        VirtualItem(ITEM, "genuine", 5).surface(region),
        pose,
        duties={Lighting.WHITE_RING: 60},
        exposure_us=8000,
        analogue_gain=1.0,
        focus_steps=imaging.in_focus_steps(pose, optics),
        rng=rng,
        optics=optics,
    )


def _requests(name: str, region: str, data: bytes, *, size: int | None = None) -> Iterator[pb.UploadImageRequest]:
    header = pb.UploadImageHeader(name=name, region=region, size_bytes=len(data) if size is None else size)
    yield pb.UploadImageRequest(header=header)
    for i in range(0, len(data), MIB):
        yield pb.UploadImageRequest(chunk=data[i : i + MIB])


def _upload(stub: scan_service_pb2_grpc.ScanServiceStub, name: str, data: bytes) -> pb.UploadImageResponse:
    return stub.UploadImage(_requests(name, "canvas", data))


def _chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk with a correct CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_declaring(width: int, height: int) -> bytes:
    """A small, well-formed PNG whose header declares ``width`` x ``height`` RGB pixels (its data holds 8 rows)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress((b"\x00" + bytes(3 * width)) * 8, 9)
    return PNG_MAGIC + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", rows) + _chunk(b"IEND", b"")


def _jpeg_declaring(width: int, height: int) -> bytes:
    """A real 64x48 JPEG whose start-of-frame marker is rewritten to declare ``width`` x ``height``."""
    data = bytearray(codec.encode(np.full((48, 64, 3), 128, np.uint8), codec.ImageFormat.JPEG))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _bad_crc(png: bytes) -> bytes:
    """``png`` with the CRC of its first IDAT chunk flipped; the pixel data itself is intact."""
    at = png.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", png[at : at + 4])
    crc_at = at + 8 + length
    return png[:crc_at] + bytes(b ^ 0xFF for b in png[crc_at : crc_at + 4]) + png[crc_at + 4 :]


def _cut_jpeg(jpeg: bytes) -> bytes:
    """``jpeg`` cut half-way through its entropy-coded data: every header is intact."""
    start = jpeg.index(b"\xff\xda")  # start of scan: entropy-coded data follows its header
    cut = start + (len(jpeg) - start) // 2
    return jpeg[:cut]


def _noise(height: int, width: int) -> bytes:
    """Mid-grey noise: busy enough to pass the quality gate, so only the shape can be wrong."""
    return codec.encode(np.random.default_rng(height * width).integers(60, 200, (height, width, 3), np.uint8))


def test_hostile_files_are_refused_by_name_and_the_scan_keeps_its_images(
    scans: scan_service_pb2_grpc.ScanServiceStub, canvas_png: bytes
) -> None:
    scan = scans.CreateScan(pb.CreateScanRequest(scan=pb.Scan(item_type=ITEM))).scan
    first = _upload(scans, scan.name, canvas_png).image
    assert first.image_id == "001" and first.quality.ok, first.quality

    jpeg = codec.encode(_render("canvas", 2), codec.ImageFormat.JPEG)
    cases: list[tuple[str, bytes, grpc.StatusCode, tuple[str, ...]]] = [
        ("truncated JPEG", _cut_jpeg(jpeg), grpc.StatusCode.INVALID_ARGUMENT, ("JPEG", "truncated")),
        ("PNG bomb", _png_declaring(30_000, 30_000), grpc.StatusCode.INVALID_ARGUMENT, ("decompression bomb",)),
        ("JPEG bomb", _jpeg_declaring(30_000, 30_000), grpc.StatusCode.INVALID_ARGUMENT, ("decompression bomb",)),
        (
            "PNG over the pixel limit",
            _png_declaring(8_000, 8_000),
            grpc.StatusCode.INVALID_ARGUMENT,
            ("8000x8000", "more than the limit"),
        ),
        ("PNG with a bad CRC", _bad_crc(canvas_png), grpc.StatusCode.INVALID_ARGUMENT, ("IDAT", "CRC")),
        ("1x1 PNG", codec.encode(np.zeros((1, 1, 3), np.uint8)), grpc.StatusCode.INVALID_ARGUMENT, ("1x1",)),
        ("1x1 JPEG", _jpeg_declaring(1, 1), grpc.StatusCode.INVALID_ARGUMENT, ("1x1", "too small")),
        ("a 30x30000 strip", _noise(30_000, 30), grpc.StatusCode.INVALID_ARGUMENT, ("30x30000", "aspect ratio")),
        ("a 4000x16 strip", _noise(16, 4_000), grpc.StatusCode.INVALID_ARGUMENT, ("4000x16", "aspect ratio")),
        # Passes the gate but is too flat to hold one of the model's tiles: it must not fail the whole scan later.
        ("a 600x100 strip", _noise(100, 600), grpc.StatusCode.INVALID_ARGUMENT, ("600x100", "aspect ratio")),
    ]
    for what, data, code, words in cases:
        with pytest.raises(grpc.RpcError) as info:
            _upload(scans, scan.name, data)
        assert info.value.code() == code, (what, info.value.details())
        details = info.value.details() or ""
        assert all(w in details for w in words), (what, details)

    kept = scans.GetScan(pb.GetScanRequest(name=scan.name)).scan
    assert kept.state == pb.SCAN_STATE_IN_PROGRESS
    assert [(i.image_id, i.sha256) for i in kept.images] == [("001", first.sha256)]
    # The scan carries on: the next image gets the next id, and the scan completes with a verdict.
    second = _upload(scans, scan.name, codec.encode(_render("canvas", 3), codec.ImageFormat.PNG)).image
    assert second.image_id == "002"
    done = scans.CompleteScan(pb.CompleteScanRequest(name=scan.name)).scan
    assert done.state == pb.SCAN_STATE_COMPLETED
    assert [len(r.images) for r in done.result.regions if r.region == "canvas"] == [2]


def test_wide_and_tall_images_within_the_aspect_limit_are_analysed(
    scans: scan_service_pb2_grpc.ScanServiceStub,
) -> None:
    scan = scans.CreateScan(pb.CreateScanRequest(scan=pb.Scan(item_type=ITEM))).scan
    for height, width in [(128, 512), (512, 128), (16, 16)]:
        image = _upload(scans, scan.name, _noise(height, width)).image
        assert (image.metadata.width, image.metadata.height) == (width, height)
    done = scans.CompleteScan(pb.CompleteScanRequest(name=scan.name)).scan
    assert done.state == pb.SCAN_STATE_COMPLETED, done.error_message


# ---- 100 MB streams against a daemon in its own process, watching its memory -----------------------


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


class _PeakRss:
    """Samples a process's resident set every few milliseconds while in the ``with`` block."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._stop = threading.Event()
        self.start_kib = _rss_kib(pid)
        self.peak_kib = self.start_kib
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak_kib = max(self.peak_kib, _rss_kib(self._pid))

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kib = max(self.peak_kib, _rss_kib(self._pid))

    @property
    def growth_mib(self) -> float:
        """How far the resident set rose above where it started, in MiB."""
        return (self.peak_kib - self.start_kib) / 1024


@pytest.fixture(scope="module")
def unit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    proc = spawn_daemon(tmp_path_factory.mktemp("uploads") / "data")
    yield proc
    assert proc.stop() == 0, "".join(proc.output)


def _stream(name: str, declared: int, sent_mib: int, counter: list[int]) -> Iterator[pb.UploadImageRequest]:
    """A header declaring ``declared`` bytes, then ``sent_mib`` 1 MiB chunks; counts the chunks taken."""
    yield pb.UploadImageRequest(header=pb.UploadImageHeader(name=name, region="canvas", size_bytes=declared))
    chunk = PNG_MAGIC + bytes(MIB - len(PNG_MAGIC))
    for _ in range(sent_mib):
        counter[0] += 1
        yield pb.UploadImageRequest(chunk=chunk)


@pytest.mark.parametrize(
    ("declared_mib", "code", "words"),
    [
        # Honest: the header says 100 MiB, so the daemon refuses before reading any chunk.
        (100, grpc.StatusCode.RESOURCE_EXHAUSTED, "exceeds the upload limit"),
        # Lies: the header says 1 MiB, or the limit itself, and the stream goes on to 100 MiB.
        (1, grpc.StatusCode.INVALID_ARGUMENT, "more bytes than header.size_bytes"),
        (32, grpc.StatusCode.INVALID_ARGUMENT, "more bytes than header.size_bytes"),
    ],
)
def test_a_100_mib_stream_is_cut_without_being_buffered(
    unit: DaemonProcess, canvas_png: bytes, declared_mib: int, code: grpc.StatusCode, words: str
) -> None:
    pid = unit.process.pid
    with grpc.insecure_channel(unit.address) as channel:
        stub = scan_service_pb2_grpc.ScanServiceStub(channel)
        scan = stub.CreateScan(pb.CreateScanRequest(scan=pb.Scan(item_type=ITEM))).scan
        first = _upload(stub, scan.name, canvas_png).image  # also warms the daemon's upload path
        taken = [0]
        with _PeakRss(pid) as rss, pytest.raises(grpc.RpcError) as info:
            stub.UploadImage(_stream(scan.name, declared_mib * MIB, 100, taken), timeout=60)
        assert info.value.code() == code, info.value.details()
        assert words in (info.value.details() or "")
        # What the daemon may hold is the declared size, never the 100 MiB that were pushed at it.
        # The stream was cut: the client was stopped long before it had pushed its 100 chunks.
        assert taken[0] < 100
        assert rss.growth_mib < declared_mib + 40, (rss.start_kib, rss.peak_kib)
        kept = stub.GetScan(pb.GetScanRequest(name=scan.name)).scan
        assert kept.state == pb.SCAN_STATE_IN_PROGRESS
        assert [i.sha256 for i in kept.images] == [first.sha256]
        stub.CancelScan(pb.CancelScanRequest(name=scan.name))


def test_a_large_upload_is_spooled_to_the_data_volume_and_stored_intact(
    daemon: InProcessDaemon, scans: scan_service_pb2_grpc.ScanServiceStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[tempfile.SpooledTemporaryFile[bytes]] = []
    real = tempfile.SpooledTemporaryFile

    def recording(*args: object, **kwargs: object) -> tempfile.SpooledTemporaryFile[bytes]:
        spool: tempfile.SpooledTemporaryFile[bytes] = real(*args, **kwargs)  # type: ignore[call-overload]
        made.append(spool)
        return spool

    monkeypatch.setattr(tempfile, "SpooledTemporaryFile", recording)
    data = _noise(1200, 1600)  # about 4 MiB of PNG: several chunks, past the in-memory spool
    assert len(data) > 3 * MIB
    scan = scans.CreateScan(pb.CreateScanRequest(scan=pb.Scan(item_type=ITEM))).scan
    image = _upload(scans, scan.name, data).image
    assert made and made[0]._rolled  # type: ignore[attr-defined]  # written to a file on the data volume, not held in memory
    assert image.sha256 == hashlib.sha256(data).hexdigest()
    stored = daemon.daemon.context.manager._store.read_image(image.sha256, codec.ImageFormat.PNG)
    assert stored == data


def test_a_full_volume_while_receiving_is_resource_exhausted_and_the_scan_keeps_its_images(
    scans: scan_service_pb2_grpc.ScanServiceStub, canvas_png: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    from veriscope.device.services import scan as scan_service

    scan = scans.CreateScan(pb.CreateScanRequest(scan=pb.Scan(item_type=ITEM))).scan
    first = _upload(scans, scan.name, canvas_png).image
    real = tempfile.SpooledTemporaryFile

    class FullVolume(real):  # type: ignore[misc, valid-type]
        def write(self, data: bytes) -> int:
            if self.tell() + len(data) > scan_service.SPOOL_MEMORY_BYTES:
                raise OSError(errno.ENOSPC, "No space left on device")
            return int(super().write(data))

    monkeypatch.setattr(tempfile, "SpooledTemporaryFile", FullVolume)
    with pytest.raises(grpc.RpcError) as info:
        _upload(scans, scan.name, _noise(1200, 1600))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "data volume is full" in (info.value.details() or "")
    kept = scans.GetScan(pb.GetScanRequest(name=scan.name)).scan
    assert kept.state == pb.SCAN_STATE_IN_PROGRESS
    assert [i.sha256 for i in kept.images] == [first.sha256]
