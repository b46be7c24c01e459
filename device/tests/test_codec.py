import contextlib
import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from veriscope.device import codec
from veriscope.device.errors import InvalidArgument


def _frame(w: int = 64, h: int = 48) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_png_round_trip_is_lossless() -> None:
    frame = _frame()
    data = codec.encode(frame, codec.ImageFormat.PNG)
    assert codec.sniff_format(data) is codec.ImageFormat.PNG
    assert np.array_equal(codec.decode(data, max_pixels=10_000), frame)


def test_jpeg_round_trip_is_close() -> None:
    frame = np.full((48, 64, 3), 120, dtype=np.uint8)
    data = codec.encode(frame, codec.ImageFormat.JPEG, jpeg_quality=90)
    assert codec.sniff_format(data) is codec.ImageFormat.JPEG
    assert np.abs(codec.decode(data, max_pixels=10_000).astype(int) - 120).max() <= 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "0 bytes"),
        (b"GIF89a" + b"\0" * 50, "neither PNG nor JPEG"),
    ],
)
def test_not_an_image(data: bytes, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        codec.decode(data, max_pixels=10_000)


def test_truncated_files_are_refused() -> None:
    for fmt in codec.ImageFormat:
        data = codec.encode(_frame(), fmt)
        with pytest.raises(InvalidArgument, match="corrupt or truncated"):
            codec.decode(data[: len(data) // 2], max_pixels=10_000)


def test_decompression_bomb_is_refused_before_decoding() -> None:
    # A 7000x7000 black PNG compresses to about 50 KB but declares 49 million pixels.
    out = io.BytesIO()
    Image.new("L", (7000, 7000)).save(out, format="PNG", compress_level=9)
    assert len(out.getvalue()) < 200_000
    with pytest.raises(InvalidArgument, match="more than the limit"):
        codec.decode(out.getvalue(), max_pixels=40_000_000)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    with contextlib.suppress(InvalidArgument):
        codec.decode(data, max_pixels=1_000_000)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=400), st.binary(min_size=1, max_size=64))
def test_corrupted_png_never_crashes(offset: int, junk: bytes) -> None:
    data = bytearray(codec.encode(_frame(32, 32), codec.ImageFormat.PNG))
    pos = 8 + offset % max(1, len(data) - 8)
    data[pos : pos + len(junk)] = junk
    with contextlib.suppress(InvalidArgument):
        codec.decode(bytes(data), max_pixels=1_000_000)
