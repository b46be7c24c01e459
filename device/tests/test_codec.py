import contextlib
import io
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from veriscope.device import codec
from veriscope.device.errors import InvalidArgument
from veriscope.device.specimen import Pose, in_focus_steps, material_surface, render
from veriscope.device.types import Lighting


def _frame(w: int = 64, h: int = 48) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_png_round_trip_is_lossless() -> None:
    frame = _frame()
    data = codec.encode(frame, codec.ImageFormat.PNG)
    assert codec.sniff_format(data) is codec.ImageFormat.PNG
    assert np.array_equal(codec.decode(data, max_pixels=10_000), frame)


@pytest.mark.parametrize("shape", [(1, 1), (2, 5), (16, 16), (37, 23), (480, 640)])
@pytest.mark.parametrize("bands", [1, 3])
def test_png_of_any_size_in_one_band_or_several_decodes_to_the_frame(
    shape: tuple[int, int], bands: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(codec, "PNG_WORKERS", bands)
    monkeypatch.setattr(codec, "PNG_BAND_BYTES", 1)
    frame = np.random.default_rng(shape[0]).integers(0, 256, (*shape, 3), dtype=np.uint8)
    frame[: shape[0] // 2] //= 8  # smooth rows too, not only noise
    data = codec.encode(frame, codec.ImageFormat.PNG)
    with Image.open(io.BytesIO(data)) as image:
        assert (image.format, image.mode, image.size) == ("PNG", "RGB", (shape[1], shape[0]))
        assert np.array_equal(np.asarray(image), frame)


def test_png_of_a_full_resolution_capture_is_smaller_than_a_fast_general_encoder_makes_it() -> None:
    frame = render(
        material_surface("grained-leather", "genuine", 1),
        Pose(),
        duties={Lighting.WHITE_RING: 60},
        exposure_us=8000,
        analogue_gain=1.0,
        focus_steps=in_focus_steps(Pose()),
        rng=np.random.default_rng(0),
    )
    ours = codec.encode(frame, codec.ImageFormat.PNG)
    general = io.BytesIO()
    Image.fromarray(frame).save(general, format="PNG", compress_level=1)
    assert len(ours) < len(general.getvalue()) < frame.nbytes
    assert np.array_equal(codec.decode(ours, max_pixels=4_000_000), frame)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=70_000))
def test_adler32_of_joined_bands_is_that_of_the_whole(first: bytes, second: bytes) -> None:
    joined = codec._adler32_combine(zlib.adler32(first), zlib.adler32(second), len(second))
    assert joined == zlib.adler32(first + second)


def test_frames_that_are_not_rgb_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="H x W x 3 uint8"):
        codec.encode(np.zeros((8, 8), dtype=np.uint8), codec.ImageFormat.PNG)
    with pytest.raises(InvalidArgument, match="H x W x 3 uint8"):
        codec.encode(np.zeros((8, 8, 3), dtype=np.float32), codec.ImageFormat.PNG)


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
