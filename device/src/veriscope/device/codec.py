"""Encoding frames to PNG/JPEG, and decoding untrusted image files safely.

Decoding checks the container type from the file's own bytes, refuses images
whose header declares more pixels than allowed *before* decompressing them
(decompression bombs), and turns every decoder failure into
:class:`~veriscope.device.errors.InvalidArgument` naming what was wrong.
"""

from __future__ import annotations

import enum
import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from veriscope.device.errors import InvalidArgument
from veriscope.device.types import RGBImage


class ImageFormat(enum.StrEnum):
    """An encoding of a stored or transferred image."""

    PNG = "png"
    JPEG = "jpeg"

    @property
    def mime_type(self) -> str:
        """The MIME type of the encoding."""
        return "image/png" if self is ImageFormat.PNG else "image/jpeg"


_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


def sniff_format(data: bytes) -> ImageFormat:
    """Tell PNG from JPEG by the file's magic bytes; anything else is InvalidArgument."""
    if data.startswith(_PNG_MAGIC):
        return ImageFormat.PNG
    if data.startswith(_JPEG_MAGIC):
        return ImageFormat.JPEG
    head = data[:8].hex(" ") if data else "nothing (0 bytes)"
    raise InvalidArgument(f"image is neither PNG nor JPEG (starts with {head})")


def encode(pixels: RGBImage, fmt: ImageFormat = ImageFormat.PNG, *, jpeg_quality: int = 92) -> bytes:
    """Encode an HxWx3 uint8 frame. PNG uses fast compression: frames are noisy, and level 1 is near the best ratio."""
    if not 1 <= jpeg_quality <= 100:
        raise InvalidArgument(f"jpeg_quality must be 1..100, got {jpeg_quality}")
    image = Image.fromarray(np.ascontiguousarray(pixels), mode="RGB")
    out = io.BytesIO()
    if fmt is ImageFormat.PNG:
        image.save(out, format="PNG", compress_level=1)
    else:
        image.save(out, format="JPEG", quality=jpeg_quality)
    return out.getvalue()


def decode(data: bytes, *, max_pixels: int) -> RGBImage:
    """Decode a PNG or JPEG file into an HxWx3 uint8 RGB array.

    Raises :class:`InvalidArgument` when the bytes are empty, not PNG/JPEG,
    truncated or corrupt, or declare more than ``max_pixels`` pixels.
    """
    fmt = sniff_format(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[fmt.name])
            width, height = image.size
            if width * height > max_pixels:
                raise InvalidArgument(
                    f"image declares {width}x{height} = {width * height} pixels, more than the limit of {max_pixels}"
                )
            if width < 16 or height < 16:
                raise InvalidArgument(f"image of {width}x{height} pixels is too small (at least 16x16)")
            image.load()
            rgb = image.convert("RGB")
    except InvalidArgument:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidArgument(f"image refused as a decompression bomb: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InvalidArgument(f"{fmt.name} image is corrupt or truncated: {exc}") from None
    return np.asarray(rgb, dtype=np.uint8)
