"""The camera's tone curve: 8-bit sRGB values to linear light and back, and gains of light applied to 8-bit frames.

Exposure metering and flat-field correction work on light, which adds and
scales linearly; the frames they see are 8-bit values after the camera's tone
curve. The simulated camera develops its raw frames with the sRGB curve, and
the Pi's ISP applies a gamma close to it, so both undo the sRGB curve.

:class:`GainImage` scales the light of every pixel and colour of a frame by its
own gain (the flat-field correction) without leaving 8 bits: the gains are
quantised to :data:`GAIN_LEVELS` levels, spaced evenly in log over the range
the image spans, and a table gives the corrected 8-bit value of every (level,
value) pair, so a full frame costs an add and a table lookup per sample.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from veriscope.device.types import RGBImage

F32 = npt.NDArray[np.float32]

_ENCODE_STEPS = 65535
"""Linear levels of the encoding table: fine enough that decoding then encoding gives back every 8-bit value."""
_LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
"""Rec. 709 weights of red, green and blue in luminance."""
GAIN_LEVELS = 256
"""Levels a :class:`GainImage` quantises its gains to (a level and an 8-bit value fit 16 bits)."""
GAIN_TOLERANCE = 0.45
"""Largest error, in 8-bit code values before rounding, that quantising the gains may add, so every sample stays
within one code value of the exact transform. It allows gains spanning a ratio of about 7.8 (a calibration's
spans about 2); wider-ranging gains are applied exactly, in float32."""
_MAX_SLOPE = 255.0 * 1.055 / 2.4
"""Largest change of an encoded 8-bit value per unit change of the log of its linear light (bright pixels)."""
_ROWS_PER_BLOCK = 32
"""Rows processed at a time, so the intermediate arrays stay in the CPU's cache."""


def _decode_table() -> npt.NDArray[np.float64]:
    v = np.arange(256, dtype=np.float64) / 255.0
    linear: npt.NDArray[np.float64] = np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)
    return linear


def _encode(linear: npt.NDArray[np.float64]) -> npt.NDArray[np.uint8]:
    x = np.clip(linear, 0.0, 1.0)
    srgb = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    out: npt.NDArray[np.uint8] = np.clip(np.round(srgb * 255.0), 0, 255).astype(np.uint8)
    return out


_TO_LINEAR_F64 = _decode_table()
_TO_LINEAR = _TO_LINEAR_F64.astype(np.float32)
_TO_SRGB = _encode(np.arange(_ENCODE_STEPS + 1, dtype=np.float64) / _ENCODE_STEPS)


def to_linear(pixels: RGBImage) -> F32:
    """Linear light (0..1 of full scale, float32) of 8-bit sRGB pixels, same shape."""
    out: F32 = np.take(_TO_LINEAR, pixels)
    return out


def to_srgb(linear: F32) -> RGBImage:
    """8-bit sRGB pixels of linear light (0..1 of full scale; values outside are clipped), same shape."""
    index = np.clip(linear * np.float32(_ENCODE_STEPS) + np.float32(0.5), 0.0, float(_ENCODE_STEPS))
    out: RGBImage = _TO_SRGB[index.astype(np.int32)]
    return out


def luminance(linear: F32) -> F32:
    """Relative luminance (Rec. 709) of an H x W x 3 linear image, H x W."""
    return np.asarray(linear @ _LUMA, dtype=np.float32)


class GainImage:
    """Per-pixel, per-colour gains of linear light for frames of one size, ready to apply to 8-bit sRGB frames.

    Made once per frame size (it costs about as much as applying it a few
    times) and immutable afterwards, so threads may share it. Applied, each
    sample comes out within one code value of the exact transform (decode,
    multiply, encode, round); the quantised path adds at most
    ``GAIN_TOLERANCE`` code values before the rounding.
    """

    def __init__(self, gains: F32) -> None:
        """Prepare ``gains`` (H x W x 3, > 0). Raises :class:`ValueError` for another shape or a gain <= 0."""
        if gains.ndim != 3 or gains.shape[2] != 3:
            raise ValueError(f"gains must be H x W x 3, got {gains.shape}")
        gains = np.ascontiguousarray(gains, dtype=np.float32)  # row by row, as the frames are read
        lo, hi = float(gains.min()), float(gains.max())
        if not lo > 0.0 or not math.isfinite(hi):
            raise ValueError(f"gains must be finite and > 0, got {lo}..{hi}")
        self.shape: tuple[int, int] = (int(gains.shape[0]), int(gains.shape[1]))
        """(height, width) of the frames the gains fit."""
        span = math.log(hi / lo)
        step = span / (GAIN_LEVELS - 1) if span > 0 else 1.0
        self._codes: npt.NDArray[np.uint16] | None = None
        self._table: npt.NDArray[np.uint8] | None = None
        self._gains: F32 | None = None
        if 0.5 * step * _MAX_SLOPE <= GAIN_TOLERANCE:
            levels = np.rint((np.log(gains, dtype=np.float32) - np.float32(math.log(lo))) * np.float32(1.0 / step))
            codes = np.clip(levels, 0, GAIN_LEVELS - 1).astype(np.uint16) << np.uint16(8)
            codes.setflags(write=False)
            level_gains = np.exp(math.log(lo) + step * np.arange(GAIN_LEVELS, dtype=np.float64))
            table = _encode(level_gains[:, None] * _TO_LINEAR_F64[None, :]).ravel()
            table.setflags(write=False)
            self._codes, self._table = codes, table
        else:
            exact = gains.copy()
            exact.setflags(write=False)
            self._gains = exact

    @property
    def quantised(self) -> bool:
        """True when the gains are applied through the table, False when exactly in float32 (a very wide range)."""
        return self._codes is not None

    def apply(self, pixels: RGBImage) -> RGBImage:
        """``pixels`` (H x W x 3 uint8 sRGB, the size of the gains) with their linear light multiplied by the gains.

        Light beyond full scale clips to 255. Raises :class:`ValueError` for a frame of another shape.
        """
        if pixels.shape != (*self.shape, 3) or pixels.dtype != np.uint8:
            raise ValueError(f"frame {pixels.shape} {pixels.dtype} does not fit gains of {self.shape}")
        out = np.empty_like(pixels)
        block = min(_ROWS_PER_BLOCK, self.shape[0])
        if self._codes is not None and self._table is not None:
            combined = np.empty((block, self.shape[1], 3), dtype=np.uint16)
            index = np.empty(combined.shape, dtype=np.intp)
            for top in range(0, self.shape[0], block):
                rows = slice(top, min(top + block, self.shape[0]))
                n = rows.stop - top
                np.bitwise_or(self._codes[rows], pixels[rows], out=combined[:n])
                index[:n] = combined[:n]
                np.take(self._table, index[:n], out=out[rows])
            return out
        assert self._gains is not None
        linear = np.empty((block, self.shape[1], 3), dtype=np.float32)
        steps = np.empty(linear.shape, dtype=np.int32)
        for top in range(0, self.shape[0], block):
            rows = slice(top, min(top + block, self.shape[0]))
            n = rows.stop - top
            np.take(_TO_LINEAR, pixels[rows], out=linear[:n])
            np.multiply(linear[:n], self._gains[rows], out=linear[:n])
            np.multiply(linear[:n], np.float32(_ENCODE_STEPS), out=linear[:n])
            np.add(linear[:n], np.float32(0.5), out=linear[:n])
            np.minimum(linear[:n], np.float32(_ENCODE_STEPS), out=linear[:n])
            steps[:n] = linear[:n]
            np.take(_TO_SRGB, steps[:n], out=out[rows])
        return out
