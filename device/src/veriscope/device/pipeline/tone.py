"""The camera's tone curve: 8-bit sRGB values to linear light and back.

Exposure metering and flat-field correction work on light, which adds and
scales linearly; the frames they see are 8-bit values after the camera's tone
curve. The simulated camera develops its raw frames with the sRGB curve, and
the Pi's ISP applies a gamma close to it, so both undo the sRGB curve.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from veriscope.device.types import RGBImage

F32 = npt.NDArray[np.float32]

_ENCODE_STEPS = 65535
"""Linear levels of the encoding table: fine enough that decoding then encoding gives back every 8-bit value."""
_LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
"""Rec. 709 weights of red, green and blue in luminance."""


def _decode_table() -> F32:
    v = np.arange(256, dtype=np.float64) / 255.0
    linear = np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)
    return linear.astype(np.float32)


def _encode_table() -> npt.NDArray[np.uint8]:
    x = np.arange(_ENCODE_STEPS + 1, dtype=np.float64) / _ENCODE_STEPS
    srgb = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    return np.clip(np.round(srgb * 255.0), 0, 255).astype(np.uint8)


_TO_LINEAR = _decode_table()
_TO_SRGB = _encode_table()


def to_linear(pixels: RGBImage) -> F32:
    """Linear light (0..1 of full scale, float32) of 8-bit sRGB pixels, same shape."""
    return _TO_LINEAR[pixels]


def to_srgb(linear: F32) -> RGBImage:
    """8-bit sRGB pixels of linear light (0..1 of full scale; values outside are clipped), same shape."""
    index = np.clip(linear * np.float32(_ENCODE_STEPS) + np.float32(0.5), 0.0, float(_ENCODE_STEPS))
    out: RGBImage = _TO_SRGB[index.astype(np.int32)]
    return out


def luminance(linear: F32) -> F32:
    """Relative luminance (Rec. 709) of an H x W x 3 linear image, H x W."""
    return np.asarray(linear @ _LUMA, dtype=np.float32)
