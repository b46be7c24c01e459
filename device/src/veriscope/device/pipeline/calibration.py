"""Flat-field and white-balance calibration from a white reference target, and its correction of every capture.

A technician puts the white reference target (a flat, clean, matte white
diffuser) under the lens and runs ``veriscope calibrate``. For each lighting
channel, :func:`calibrate`:

1. auto-exposes the target so its 99th percentile reaches ``TARGET_LEVEL`` of
   full scale, at analogue gain 1.0 (a white target never needs gain);
2. averages N full-resolution frames in linear light, reduced on the way to a
   grid four times finer than the stored map;
3. checks that the target is white, uniform and well exposed, and refuses it
   with a :class:`CalibrationError` that names the problem otherwise;
4. low-passes the average (4 x 4 block medians, which ignore dust and specks,
   then a light smoothing) into a ``MAP_WIDTH_PX``-wide map, and stores per
   pixel and colour channel the gain that brings the map to its centre's level
   (the flat field), and per colour channel the gain that makes the centre
   neutral (the white balance, green 1.0).

A capture is corrected by :meth:`Calibration.apply`: its pixels are taken to
linear light, multiplied by the flat-field gains (bilinear between map cells)
and the white-balance gains of the capture's lighting channel, and encoded
again. The centre keeps its level, so exposure and the quality gate see what
they saw before; the corners lose the vignetting. The gains of each frame size
are prepared once, as a :class:`~veriscope.device.pipeline.tone.GainImage`
(quantised gains and a table of corrected 8-bit values), so a full-resolution
correction costs a small fraction of the capture.

:class:`CalibrationStore` keeps one calibration per camera under the daemon's
data directory, as ``<camera>.npz`` (the maps) and ``<camera>.json`` (a
summary with the SHA-256 of the maps), and validates both on load.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import re
import threading
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from veriscope.device.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from veriscope.device.fsutil import write_atomic
from veriscope.device.pipeline import tone
from veriscope.device.pipeline.exposure import ExposureParams, ExposureResult
from veriscope.device.types import Lighting, RGBImage

F32 = tone.F32
_log = logging.getLogger("veriscope.device.calibration")

FORMAT_VERSION = 1
MAP_WIDTH_PX = 64
"""Width of the stored flat-field map in cells; its height follows the sensor's aspect ratio."""
_GRID_FACTOR = 4
"""Frames are reduced to a grid this many times finer than the map, whose cells are medians of grid blocks."""
TARGET_LEVEL = 0.7
"""Level (fraction of full scale) the 99th percentile of the white target is exposed to: bright, never clipped."""
_TARGET_TOLERANCE = 0.1
DEFAULT_FRAMES = 8
"""Frames averaged per lighting channel when the request does not say."""
MAX_FRAMES = 64
CALIBRATABLE = (Lighting.WHITE_RING, Lighting.RAKING)
"""Channels a white target calibrates; under UV it only fluoresces, and OFF lights nothing."""
MAX_TEXTURE = 0.04
"""Largest fine texture (robust spread of detail relative to the local level) of a white reference."""
MAX_CHANNEL_RATIO = 1.5
"""Largest ratio between the red, green and blue levels of the target's centre (a white target is near 1)."""
MIN_CORNER_RATIO = 0.35
"""Smallest level of a map corner relative to the centre: darker means a tilted target or a blocked light."""
MAX_CLIPPED_FRACTION = 0.001
"""Largest fraction of pixels of a calibration frame with a channel at 254 or 255."""
GAIN_RANGE = (0.25, 4.0)
"""Every stored flat-field and white-balance gain lies in this range."""


class CalibrationError(FailedPrecondition):
    """The target under the lens cannot calibrate the camera; the message says what is wrong and what to do."""


class CalibrationFileError(FailedPrecondition):
    """A stored calibration is missing a part, malformed or inconsistent; the message names the file and the problem."""


@dataclass(frozen=True)
class ChannelCalibration:
    """The calibration of one lighting channel."""

    lighting: Lighting
    flat_gain: F32 = field(repr=False)
    """Flat-field gains, map height x ``MAP_WIDTH_PX`` x 3 (red, green, blue), 1.0 at the centre."""
    white_balance: tuple[float, float, float]
    """Gains of red, green and blue (green 1.0) that make the white target neutral."""
    exposure_us: int
    """Exposure time the target was calibrated at."""
    analogue_gain: float
    level: float
    """Metered 99th percentile of the target's linear luminance, 0..1 of full scale."""
    vignetting_depth: float
    """1 - the darkest map corner's luminance relative to the centre, before correction (0: no vignetting)."""
    texture: float
    """Fine texture of the target: the robust spread of detail relative to the local level (0: perfectly smooth)."""

    @property
    def corner_ratio(self) -> float:
        """The darkest map corner's luminance relative to the centre, before correction."""
        return 1.0 - self.vignetting_depth


@dataclass(frozen=True)
class Calibration:
    """A complete calibration: one :class:`ChannelCalibration` per calibrated lighting channel."""

    calibration_id: str
    """Unique id: the UTC creation time and a digest of the maps, for example "20260528T101500Z-3fa2c1d0"."""
    create_time: datetime
    device_id: str
    camera_model: str
    frames: int
    """Frames averaged per channel."""
    channels: tuple[ChannelCalibration, ...]
    _gains: dict[tuple[Lighting, int, int], tone.GainImage] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )
    _gains_lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False, hash=False
    )

    def channel(self, lighting: Lighting) -> ChannelCalibration | None:
        """The calibration of ``lighting``, or None when that channel was not calibrated."""
        return next((c for c in self.channels if c.lighting is lighting), None)

    def apply(self, pixels: RGBImage, lighting: Lighting) -> RGBImage | None:
        """Correct an 8-bit sRGB frame taken under ``lighting``; None when that channel is not calibrated.

        Frames of any size are corrected (previews too): the map is stretched
        over the whole frame, which must show the sensor's full field of view.
        """
        if self.channel(lighting) is None:
            return None
        h, w = int(pixels.shape[0]), int(pixels.shape[1])
        return self._gain_image(lighting, h, w).apply(pixels)

    def _gain_image(self, lighting: Lighting, h: int, w: int) -> tone.GainImage:
        key = (lighting, h, w)
        with self._gains_lock:
            cached = self._gains.get(key)
        if cached is not None:
            return cached
        channel = self.channel(lighting)
        assert channel is not None
        grid = channel.flat_gain * np.asarray(channel.white_balance, dtype=np.float32)
        gains = tone.GainImage(
            np.clip(_upsample(grid, h, w), GAIN_RANGE[0], GAIN_RANGE[1] * max(channel.white_balance))
        )
        with self._gains_lock:
            if len(self._gains) >= 4:  # a capture size and a preview size or two
                self._gains.pop(next(iter(self._gains)))
            self._gains[key] = gains
        return gains


# --- Calibrating ---------------------------------------------------------------------------------------------------


def exposure_params(base: ExposureParams) -> ExposureParams:
    """Auto-exposure settings for the white target: ``TARGET_LEVEL``, tightly, with the unit's time limits."""
    return replace(
        base,
        percentile=99.0,
        target_level=TARGET_LEVEL,
        tolerance=_TARGET_TOLERANCE,
        max_frames=max(base.max_frames, 10),
    )


def check_channels(lightings: Sequence[Lighting]) -> tuple[Lighting, ...]:
    """The channels to calibrate, in order and without repeats; white ring alone when none are given.

    Raises :class:`InvalidArgument` for a channel a white target cannot calibrate.
    """
    chosen: list[Lighting] = []
    for lighting in lightings:
        if lighting not in CALIBRATABLE:
            names = ", ".join(c.value for c in CALIBRATABLE)
            raise InvalidArgument(
                f"lighting channel {lighting.value} cannot be calibrated on a white target; use {names}"
            )
        if lighting not in chosen:
            chosen.append(lighting)
    return tuple(chosen) or (Lighting.WHITE_RING,)


def check_exposure(lighting: Lighting, result: ExposureResult) -> None:
    """Refuse a white target that auto-exposure could not bring to ``TARGET_LEVEL`` at gain 1.0."""
    place = "place the white reference target flat under the lens"
    if not result.converged:
        what = "too dark" if result.level < result.target_level else "too bright"
        raise CalibrationError(
            f"cannot calibrate {lighting.value}: the target is {what} ({result.reason}, level {result.level:.0%} "
            f"of full scale); {place} and check that the {lighting.value} light works"
        )
    if result.analogue_gain > 1.01:
        raise CalibrationError(
            f"target too dark for a white reference under {lighting.value}: it needed analogue gain "
            f"{result.analogue_gain:.1f} at {result.exposure_us} us; {place}"
        )


class WhiteFrames:
    """Accumulates the frames of one channel of a white target, reduced to the calibration grid as they arrive."""

    def __init__(self, lighting: Lighting) -> None:
        self.lighting = lighting
        self._sum: F32 | None = None
        self._count = 0
        self._shape: tuple[int, int] | None = None
        self._clipped = 0.0

    @property
    def count(self) -> int:
        """Frames added so far."""
        return self._count

    def add(self, pixels: RGBImage) -> None:
        """Add one 8-bit sRGB frame. Raises :class:`InvalidArgument` for a frame of another size than the first."""
        if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
            raise InvalidArgument(f"calibration frames must be H x W x 3 uint8, got {pixels.shape} {pixels.dtype}")
        h, w = int(pixels.shape[0]), int(pixels.shape[1])
        if self._shape is None:
            self._shape = (h, w)
        elif self._shape != (h, w):
            raise InvalidArgument(
                f"calibration frame of {w}x{h} px differs from the first, {self._shape[1]}x{self._shape[0]}"
            )
        self._clipped = max(self._clipped, float(np.mean(np.max(pixels, axis=2) >= 254)))
        mh, mw = map_shape(h, w)
        grid = _reduce(tone.to_linear(pixels), mh * _GRID_FACTOR, mw * _GRID_FACTOR)
        self._sum = grid if self._sum is None else self._sum + grid
        self._count += 1

    def finish(self, result: ExposureResult) -> ChannelCalibration:
        """The channel's calibration from the frames added. Raises :class:`CalibrationError` for an unfit target."""
        if self._sum is None or self._shape is None:
            raise CalibrationError(f"no frames of the white target were taken under {self.lighting.value}")
        mean = self._sum / np.float32(self._count)
        name = self.lighting.value
        place = "place the clean white reference target flat under the lens"
        texture = _texture(tone.luminance(mean))
        if texture > MAX_TEXTURE:
            raise CalibrationError(
                f"target is not a white reference under {name}: fine texture {texture:.1%} of the level (a white "
                f"reference shows under {MAX_TEXTURE:.0%}); {place}"
            )
        mh, mw = mean.shape[0] // _GRID_FACTOR, mean.shape[1] // _GRID_FACTOR
        smooth = _smooth(_block_median(mean, _GRID_FACTOR))
        centre = _centre(smooth)
        red, green, blue = (float(v) for v in centre)
        if min(red, green, blue) <= 1e-4 or max(red, green, blue) / min(red, green, blue) > MAX_CHANNEL_RATIO:
            raise CalibrationError(
                f"target not white under {name}: red/green {red / max(green, 1e-6):.2f}, blue/green "
                f"{blue / max(green, 1e-6):.2f} (a white reference is within {1 / MAX_CHANNEL_RATIO:.2f}.."
                f"{MAX_CHANNEL_RATIO:.2f}); {place}"
            )
        if self._clipped > MAX_CLIPPED_FRACTION:
            raise CalibrationError(
                f"target overexposed under {name}: {self._clipped:.2%} of the pixels are clipped; {place}, "
                "away from strong ambient light"
            )
        flat = smooth / centre[None, None, :]
        corners = tone.luminance(flat[[0, 0, -1, -1], [0, -1, 0, -1]][None, :, :])[0]
        corner_ratio = float(corners.min())
        if corner_ratio < MIN_CORNER_RATIO:
            raise CalibrationError(
                f"target not uniform under {name}: corner/centre ratio {corner_ratio:.2f} (at least "
                f"{MIN_CORNER_RATIO:.2f} expected); place the white reference flat, covering the whole field"
            )
        gain = (1.0 / np.maximum(flat, np.float32(1e-3))).astype(np.float32)
        assert gain.shape == (mh, mw, 3)
        lo, hi = float(gain.min()), float(gain.max())
        if lo < GAIN_RANGE[0] or hi > GAIN_RANGE[1]:
            raise CalibrationError(
                f"target not uniform under {name}: it would need flat-field gains of {lo:.2f}..{hi:.2f} (at most "
                f"{GAIN_RANGE[0]}..{GAIN_RANGE[1]}); place the white reference flat, covering the whole field"
            )
        # Stored as float32, so rounded to it here: a reloaded calibration equals the one made.
        wb = np.asarray([green / red, 1.0, green / blue], dtype=np.float32)
        white_balance = (float(wb[0]), float(wb[1]), float(wb[2]))
        return ChannelCalibration(
            lighting=self.lighting,
            flat_gain=gain,
            white_balance=white_balance,
            exposure_us=result.exposure_us,
            analogue_gain=result.analogue_gain,
            level=result.level,
            vignetting_depth=1.0 - corner_ratio,
            texture=texture,
        )


def calibrate(
    expose: Callable[[Lighting, ExposureParams], ExposureResult],
    shoot: Callable[[Lighting, ExposureResult, int, Callable[[RGBImage], None]], None],
    lightings: Sequence[Lighting],
    *,
    frames: int,
    params: ExposureParams,
    device_id: str,
    camera_model: str,
    now: datetime | None = None,
) -> Calibration:
    """Calibrate each channel in ``lightings`` from the white target under the lens.

    ``expose(lighting, params)`` auto-exposes the target, uncorrected;
    ``shoot(lighting, exposure, count, on_frame)`` takes ``count``
    full-resolution frames at that exposure, uncorrected, and hands each to
    ``on_frame``. ``params`` are the unit's auto-exposure limits (the target
    level is the calibration's own). Raises :class:`InvalidArgument` for a bad
    channel or frame count and :class:`CalibrationError` when the target is
    unfit; errors of the callables propagate.
    """
    if not 1 <= frames <= MAX_FRAMES:
        raise InvalidArgument(f"frames must be 1..{MAX_FRAMES}, got {frames}")
    chosen = check_channels(lightings)
    white_params = exposure_params(params)
    channels = []
    for lighting in chosen:
        result = expose(lighting, white_params)
        check_exposure(lighting, result)
        accumulated = WhiteFrames(lighting)
        shoot(lighting, result, frames, accumulated.add)
        channels.append(accumulated.finish(result))
    return new_calibration(
        channels, device_id=device_id, camera_model=camera_model, frames=frames, now=now or datetime.now(UTC)
    )


def new_calibration(
    channels: Sequence[ChannelCalibration], *, device_id: str, camera_model: str, frames: int, now: datetime
) -> Calibration:
    """A calibration of ``channels`` made at ``now``, with its id."""
    digest = hashlib.sha256()
    for channel in channels:
        digest.update(channel.lighting.value.encode())
        digest.update(np.ascontiguousarray(channel.flat_gain).tobytes())
        digest.update(np.asarray(channel.white_balance, dtype=np.float64).tobytes())
    stamp = now.astimezone(UTC)
    return Calibration(
        calibration_id=f"{stamp:%Y%m%dT%H%M%SZ}-{digest.hexdigest()[:8]}",
        create_time=stamp,
        device_id=device_id,
        camera_model=camera_model,
        frames=frames,
        channels=tuple(channels),
    )


def map_shape(height: int, width: int) -> tuple[int, int]:
    """(rows, columns) of the flat-field map of frames ``height`` x ``width``."""
    return max(8, round(MAP_WIDTH_PX * height / width)), MAP_WIDTH_PX


# --- Storage -------------------------------------------------------------------------------------------------------


def camera_key(camera_model: str) -> str:
    """The file name stem of a camera's calibration: its model, made safe ("default" when empty)."""
    key = re.sub(r"[^A-Za-z0-9._-]+", "-", camera_model).strip(".-")
    return key or "default"


class CalibrationStore:
    """The calibration of one camera, kept in ``directory`` as ``<key>.npz`` and ``<key>.json``."""

    def __init__(self, directory: Path, key: str) -> None:
        self.directory = directory
        self.key = key

    @property
    def maps_path(self) -> Path:
        """The file of the flat-field maps and white-balance gains."""
        return self.directory / f"{self.key}.npz"

    @property
    def summary_path(self) -> Path:
        """The JSON summary of the calibration."""
        return self.directory / f"{self.key}.json"

    def save(self, calibration: Calibration) -> None:
        """Write the calibration atomically (maps first, then the summary that names their digest).

        Raises :class:`ResourceExhausted` when the files cannot be written.
        """
        arrays: dict[str, Any] = {}
        for channel in calibration.channels:
            arrays[f"flat_{channel.lighting.value}"] = channel.flat_gain
            arrays[f"wb_{channel.lighting.value}"] = np.asarray(channel.white_balance, dtype=np.float32)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        maps = buffer.getvalue()
        summary = summary_of(calibration)
        summary["maps_sha256"] = hashlib.sha256(maps).hexdigest()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            write_atomic(self.maps_path, maps)
            write_atomic(self.summary_path, (json.dumps(summary, indent=2) + "\n").encode())
        except OSError as exc:
            raise ResourceExhausted(
                f"cannot store the calibration in {self.directory}: {exc.strerror or exc}"
            ) from None

    def load(self) -> Calibration | None:
        """The stored calibration, or None when there is none.

        Raises :class:`CalibrationFileError` naming the file and the problem when
        only one of the two files exists, or either is unreadable, malformed or
        out of range, or they do not belong together.
        """
        have_maps, have_summary = self.maps_path.is_file(), self.summary_path.is_file()
        if not have_maps and not have_summary:
            return None
        if not have_summary:
            raise CalibrationFileError(f"{self.summary_path} is missing (its maps {self.maps_path.name} exist)")
        if not have_maps:
            raise CalibrationFileError(f"{self.maps_path} is missing (its summary {self.summary_path.name} exists)")
        try:
            summary_text = self.summary_path.read_text(encoding="utf-8")
            maps = self.maps_path.read_bytes()
        except (OSError, UnicodeDecodeError) as exc:
            raise CalibrationFileError(f"cannot read the calibration in {self.directory}: {exc}") from None
        try:
            summary = json.loads(summary_text)
        except json.JSONDecodeError as exc:
            raise CalibrationFileError(f"{self.summary_path} is not valid JSON: {exc}") from None
        return _parse(summary, maps, self.summary_path, self.maps_path)


def load_at_start(store: CalibrationStore) -> tuple[Calibration | None, str]:
    """The stored calibration and ""; or None and the problem (logged as a warning) when it cannot be used.

    A daemon must start and capture even with a broken calibration file, so
    no error escapes; without any calibration it logs that captures are not corrected.
    """
    try:
        found = store.load()
    except CalibrationFileError as exc:
        _log.warning(
            "the stored calibration cannot be used, so captures are not corrected until the camera is calibrated "
            "again ('veriscope calibrate'): %s",
            exc,
        )
        return None, str(exc)
    if found is None:
        _log.info(
            "no calibration of camera %r in %s: captures are not flat-field corrected; calibrate with "
            "'veriscope calibrate'",
            store.key,
            store.directory,
        )
    else:
        _log.info("applying calibration %s of %s to every capture", found.calibration_id, found.create_time)
    return found, ""


def summary_of(calibration: Calibration) -> dict[str, Any]:
    """The JSON summary of a calibration (without the maps)."""
    return {
        "format": FORMAT_VERSION,
        "calibration_id": calibration.calibration_id,
        "create_time": calibration.create_time.isoformat(),
        "device_id": calibration.device_id,
        "camera_model": calibration.camera_model,
        "frames": calibration.frames,
        "map_size": [int(calibration.channels[0].flat_gain.shape[1]), int(calibration.channels[0].flat_gain.shape[0])]
        if calibration.channels
        else [0, 0],
        "channels": {
            c.lighting.value: {
                "exposure_us": c.exposure_us,
                "analogue_gain": c.analogue_gain,
                "level": c.level,
                "vignetting_depth": c.vignetting_depth,
                "white_balance": list(c.white_balance),
                "texture": c.texture,
            }
            for c in calibration.channels
        },
    }


def _parse(summary: Any, maps: bytes, summary_path: Path, maps_path: Path) -> Calibration:
    def bad(message: str) -> CalibrationFileError:
        return CalibrationFileError(f"{summary_path}: {message}")

    if not isinstance(summary, dict):
        raise bad("must hold a JSON object")
    if summary.get("format") != FORMAT_VERSION:
        raise bad(f"format {summary.get('format')!r} is not {FORMAT_VERSION}")
    digest = hashlib.sha256(maps).hexdigest()
    if summary.get("maps_sha256") != digest:
        raise bad(
            f"maps_sha256 does not match {maps_path.name} (its SHA-256 is {digest}): the files do not belong together"
        )
    try:
        create_time = datetime.fromisoformat(str(summary["create_time"]))
        calibration_id = _text(summary["calibration_id"], "calibration_id")
        device_id = _text(summary["device_id"], "device_id")
        camera_model = _text(summary["camera_model"], "camera_model")
        frames = summary["frames"]
        described = summary["channels"]
    except KeyError as exc:
        raise bad(f"lacks the key {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise bad(str(exc)) from None
    if create_time.tzinfo is None:
        raise bad("create_time has no time zone")
    if not isinstance(frames, int) or not 1 <= frames <= MAX_FRAMES:
        raise bad(f"frames must be 1..{MAX_FRAMES}, got {frames!r}")
    if not isinstance(described, dict) or not described:
        raise bad("channels must be a non-empty object")
    try:
        with np.load(io.BytesIO(maps), allow_pickle=False) as npz:
            arrays = {name: np.asarray(npz[name]) for name in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise CalibrationFileError(f"{maps_path} is not a readable .npz file: {exc}") from None
    channels = []
    shape: tuple[int, ...] | None = None
    for name, info in described.items():
        try:
            lighting = Lighting(name)
        except ValueError:
            raise bad(f"unknown lighting channel {name!r}") from None
        if lighting not in CALIBRATABLE:
            raise bad(f"lighting channel {name!r} cannot be calibrated")
        flat = arrays.get(f"flat_{name}")
        wb = arrays.get(f"wb_{name}")
        if flat is None or wb is None:
            raise CalibrationFileError(f"{maps_path} lacks the maps of channel {name!r}")
        if flat.ndim != 3 or flat.shape[2] != 3 or not 8 <= flat.shape[0] <= 1024 or flat.shape[1] != MAP_WIDTH_PX:
            raise CalibrationFileError(
                f"{maps_path}: flat field of {name!r} has shape {flat.shape}, expected (rows, {MAP_WIDTH_PX}, 3)"
            )
        if shape is not None and flat.shape != shape:
            raise CalibrationFileError(f"{maps_path}: flat fields of different shapes {shape} and {flat.shape}")
        shape = flat.shape
        if wb.shape != (3,):
            raise CalibrationFileError(f"{maps_path}: white balance of {name!r} has shape {wb.shape}, expected (3,)")
        for what, values in (("flat field", flat), ("white balance", wb)):
            if not np.all(np.isfinite(values)):
                raise CalibrationFileError(f"{maps_path}: {what} of {name!r} holds NaN or infinite values")
            lo, hi = float(np.min(values)), float(np.max(values))
            if lo < GAIN_RANGE[0] or hi > GAIN_RANGE[1]:
                raise CalibrationFileError(
                    f"{maps_path}: {what} gains of {name!r} span {lo:.3g}..{hi:.3g}, outside "
                    f"{GAIN_RANGE[0]}..{GAIN_RANGE[1]}"
                )
        if not isinstance(info, dict):
            raise bad(f"channels.{name} must be an object")
        try:
            channels.append(
                ChannelCalibration(
                    lighting=lighting,
                    flat_gain=flat.astype(np.float32),
                    white_balance=(float(wb[0]), float(wb[1]), float(wb[2])),
                    exposure_us=int(info["exposure_us"]),
                    analogue_gain=_number(info["analogue_gain"], f"channels.{name}.analogue_gain"),
                    level=_number(info["level"], f"channels.{name}.level"),
                    vignetting_depth=_number(info["vignetting_depth"], f"channels.{name}.vignetting_depth"),
                    texture=_number(info["texture"], f"channels.{name}.texture"),
                )
            )
        except KeyError as exc:
            raise bad(f"channels.{name} lacks the key {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise bad(str(exc)) from None
    return Calibration(
        calibration_id=calibration_id,
        create_time=create_time,
        device_id=device_id,
        camera_model=camera_model,
        frames=frames,
        channels=tuple(channels),
    )


def _text(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{key} must be a string, got {value!r}")
    return value


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError(f"{key} must be a finite number, got {value!r}")
    return float(value)


# --- Array helpers -------------------------------------------------------------------------------------------------


def _reduce(linear: F32, rows: int, cols: int) -> F32:
    """Box-average an H x W x 3 linear frame to ``rows`` x ``cols`` x 3."""
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(linear[..., k])).resize((cols, rows), Image.Resampling.BOX),
            dtype=np.float32,
        )
        for k in range(3)
    ]
    return np.stack(channels, axis=-1)


def _block_median(grid: F32, factor: int) -> F32:
    """Median of each ``factor`` x ``factor`` block of a grid: a low-pass that ignores specks smaller than a block."""
    rows, cols = grid.shape[0] // factor, grid.shape[1] // factor
    blocks = grid[: rows * factor, : cols * factor].reshape(rows, factor, cols, factor, 3)
    return np.median(blocks.transpose(0, 2, 4, 1, 3).reshape(rows, cols, 3, factor * factor), axis=-1).astype(
        np.float32
    )


def _smooth(grid: F32) -> F32:
    """A [1, 2, 1] / 4 filter along both axes; the edges are extended linearly, so smooth slopes stay unbiased."""
    out = grid
    for axis in (0, 1):
        first = 2 * np.take(out, [0], axis=axis) - np.take(out, [1], axis=axis)
        last = 2 * np.take(out, [-1], axis=axis) - np.take(out, [-2], axis=axis)
        padded = np.concatenate([first, out, last], axis=axis)
        n = out.shape[axis]
        out = (
            np.take(padded, range(0, n), axis=axis)
            + 2 * np.take(padded, range(1, n + 1), axis=axis)
            + np.take(padded, range(2, n + 2), axis=axis)
        ) / np.float32(4.0)
    return out.astype(np.float32)


def _centre(grid: F32) -> F32:
    """Mean of the 4 x 4 cells at the centre of a map, per colour channel."""
    rows, cols = grid.shape[:2]
    r, c = rows // 2, cols // 2
    return np.asarray(grid[r - 2 : r + 2, c - 2 : c + 2].reshape(-1, 3).mean(axis=0), dtype=np.float32)


def _box_mean(image: F32, radius: int) -> F32:
    """Mean over a (2 radius + 1)^2 box around each pixel, the edges repeated."""
    padded = np.pad(image, radius, mode="edge").astype(np.float64)
    size = 2 * radius + 1
    summed = np.cumsum(np.cumsum(padded, axis=0), axis=1)
    summed = np.pad(summed, ((1, 0), (1, 0)))
    box = summed[size:, size:] - summed[:-size, size:] - summed[size:, :-size] + summed[:-size, :-size]
    return (box / (size * size)).astype(np.float32)


def _texture(luminance: F32) -> float:
    """Robust spread (1.4826 MAD) of the detail of a luminance grid relative to its local mean, away from the edges."""
    radius = 4
    local = _box_mean(luminance, radius)
    detail = luminance / np.maximum(local, np.float32(1e-6)) - np.float32(1.0)
    inner = detail[radius:-radius, radius:-radius]
    return float(1.4826 * np.median(np.abs(inner - np.median(inner))))


def _upsample(grid: F32, h: int, w: int) -> F32:
    """Bilinear interpolation of a map over an ``h`` x ``w`` frame, extended linearly beyond the outer cell centres."""
    rows, cols = grid.shape[:2]

    def axis(n_out: int, n_in: int) -> tuple[Any, Any]:
        pos = (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * np.float32(n_in / n_out) - np.float32(0.5)
        lo = np.clip(np.floor(pos).astype(np.int64), 0, n_in - 2)
        return lo, (pos - lo).astype(np.float32)

    y0, fy = axis(h, rows)
    x0, fx = axis(w, cols)
    by_row = grid[y0] * (1 - fy)[:, None, None] + grid[y0 + 1] * fy[:, None, None]
    out = by_row[:, x0] * (1 - fx)[None, :, None] + by_row[:, x0 + 1] * fx[None, :, None]
    return np.asarray(out, dtype=np.float32)
