"""UploadImage throughput for a 12 MP JPEG against raw loopback TCP measured in the same run.

The upload is timed client-side around the whole ``upload_image`` call, so it
includes what the daemon does before answering: hashing, decoding, the quality
gate, the analysis and storing the file. Those server-side parts are timed
in-process on the same image, to tell transport from processing. The transport
ceiling is measured too: the same bytes, in the same 1 MiB chunks, streamed to
a gRPC server in its own process that does nothing but count them.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from _common import median, time_calls
from bench_load import ITEM

from veriscope.device import codec
from veriscope.device.launch import spawn_daemon
from veriscope.device.pipeline import quality
from veriscope.device.specimen import imaging
from veriscope.device.specimen.surface import VirtualItem
from veriscope.device.types import Lighting
from veriscope.sdk import Client

FULL_SENSOR = (4056, 3040)
"""The IMX477's full resolution: 12.3 MP."""
LOOPBACK_BYTES = 512 * 1024 * 1024
CHUNK = 1024 * 1024


def render_jpeg(width: int = FULL_SENSOR[0], height: int = FULL_SENSOR[1], seed: int = 11) -> bytes:
    """One in-focus canvas image of a genuine item at ``width`` x ``height``, as a q92 JPEG."""
    optics = imaging.Optics(sensor_width_px=width, sensor_height_px=height)
    rng = np.random.default_rng(seed)
    pose = imaging.good_pose(rng)
    pixels = imaging.render(
        VirtualItem(ITEM, "genuine", seed).surface("canvas"),
        pose,
        duties={Lighting.WHITE_RING: 60},
        exposure_us=8000,
        analogue_gain=1.0,
        focus_steps=imaging.in_focus_steps(pose, optics),
        rng=rng,
        optics=optics,
    )
    return codec.encode(pixels, codec.ImageFormat.JPEG, jpeg_quality=92)


def loopback_mb_per_s(total_bytes: int = LOOPBACK_BYTES) -> float:
    """MB/s (10^6 bytes) of one TCP stream over 127.0.0.1: a sender thread and a receiver, 1 MiB writes."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    payload = b"\x5a" * CHUNK

    def send() -> None:
        with socket.create_connection(("127.0.0.1", port)) as out:
            for _ in range(total_bytes // CHUNK):
                out.sendall(payload)

    sender = threading.Thread(target=send, daemon=True)
    start = time.perf_counter()
    sender.start()
    conn, _ = server.accept()
    received = 0
    buffer = bytearray(CHUNK)
    with conn:
        while received < total_bytes:
            n = conn.recv_into(buffer)
            if n == 0:
                break
            received += n
    elapsed = time.perf_counter() - start
    sender.join()
    server.close()
    return received / elapsed / 1e6


def grpc_ceiling_mb_per_s(data: bytes, repeat: int = 10) -> float:
    """Median MB/s of streaming ``data`` in 1 MiB messages to a gRPC server (``_grpc_sink``) that only counts them."""
    sink = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("_grpc_sink.py"))], stdout=subprocess.PIPE, text=True
    )
    try:
        assert sink.stdout is not None
        port = int(sink.stdout.readline())
        options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            take = channel.stream_unary("/bench.Sink/Take")
            chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]

            def send() -> None:
                take(iter(chunks), timeout=60)

            seconds = time_calls(send, repeat, warmup=2)
    finally:
        sink.kill()
        sink.wait()
    return len(data) / median(seconds) / 1e6


def measure(uploads: int) -> dict[str, Any]:
    """Median UploadImage MB/s of a 12 MP JPEG, loopback MB/s, their ratio and the server-side parts in ms."""
    jpeg = render_jpeg()
    pixels = codec.decode(jpeg, max_pixels=40_000_000)
    decode_ms = median(time_calls(lambda: codec.decode(jpeg, max_pixels=40_000_000), 3, warmup=1)) * 1000
    gate_ms = median(time_calls(lambda: quality.assess(pixels), 3, warmup=1)) * 1000
    loopback = max(loopback_mb_per_s() for _ in range(3))
    ceiling = grpc_ceiling_mb_per_s(jpeg)
    scratch = Path(tempfile.mkdtemp(prefix="veriscope-upload-"))
    times: list[float] = []
    try:
        unit = spawn_daemon(scratch / "data")
        try:
            with Client(unit.address, timeout_s=120) as client:
                scan = client.create_scan(ITEM)
                client.upload_image(scan.scan_id, "canvas", jpeg)  # warm-up
                for _ in range(uploads):
                    start = time.perf_counter()
                    client.upload_image(scan.scan_id, "canvas", jpeg)
                    times.append(time.perf_counter() - start)
                client.cancel_scan(scan.scan_id)
        finally:
            unit.stop()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    upload = len(jpeg) / median(times) / 1e6
    return {
        "image_size": list(FULL_SENSOR),
        "jpeg_bytes": len(jpeg),
        "uploads": uploads,
        "upload_p50_ms": median(times) * 1000,
        "upload_mb_per_s": upload,
        "loopback_mb_per_s": loopback,
        "server_decode_ms": decode_ms,
        "server_quality_gate_ms": gate_ms,
        "upload_efficiency": upload / loopback,
        "grpc_ceiling_mb_per_s": ceiling,
        "grpc_ceiling_efficiency": ceiling / loopback,
        "upload_vs_grpc_ceiling": upload / ceiling,
    }
