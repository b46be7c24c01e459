"""A camera that replays image files from a folder, so integrators can run the daemon on real captures.

Frames are the PNG and JPEG files under the folder, found recursively (a
training set laid out as ``ROOT/<material>/<source>/<item_id>/*.png`` works
as it is), played in sorted path order and, by default, looped. Files and
folders whose names start with a dot are skipped.

A sidecar JSON file beside an image, with the same stem (``0001.png`` and
``0001.json``), holds the metadata of the original capture; every key is
optional and unknown keys are ignored::

    {"exposure_us": 8000, "analogue_gain": 1.0, "lighting": "white_ring",
     "led_duty_pct": 60, "focus_steps": 120, "lens_position": 0.0,
     "capture_time": "2025-05-01T10:30:00+00:00", "camera_model": "imx477"}

A frame's :class:`AppliedSettings` take each value from its sidecar, and
otherwise from the request. Files are read only when played and decoded with
the daemon's safe decoder, so a decompression bomb in the folder is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from veriscope.device import codec
from veriscope.device.camera import Camera, CameraInfo
from veriscope.device.errors import CameraError, InvalidArgument
from veriscope.device.types import AppliedSettings, CaptureSettings, Frame, Lighting, RGBImage

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
"""File name endings played as frames (case-insensitive)."""
DEFAULT_MAX_PIXELS = 40_000_000
"""Largest image decoded, in pixels; larger files are refused as decompression bombs."""
MIN_WIDTH_PX = 16
MODEL = "replay"


@dataclass(frozen=True)
class _Sidecar:
    exposure_us: int | None = None
    analogue_gain: float | None = None
    lighting: Lighting | None = None
    led_duty_pct: int | None = None
    focus_steps: int | None = None
    lens_position: float | None = None
    capture_time: datetime | None = None
    camera_model: str | None = None


class ReplayCamera(Camera):
    """Plays the images under ``folder`` as frames.

    ``loop`` starts again after the last file; without it, a capture past the
    end raises :class:`CameraError`. With ``match_lighting`` each capture
    takes the next frame whose sidecar names the requested lighting channel
    (frames without one count as white ring, as the training set is lit).
    ``max_pixels`` bounds the decoded size of a file.

    Raises :class:`CameraError` when the folder does not exist or holds no
    image, or its first image cannot be decoded (the first image gives
    :attr:`info` its size).
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        loop: bool = True,
        match_lighting: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self._folder = Path(folder)
        if not self._folder.is_dir():
            raise CameraError(f"replay folder {self._folder} does not exist or is not a folder")
        self._loop = loop
        self._match_lighting = match_lighting
        self._max_pixels = max_pixels
        try:
            self._files = sorted(
                (p for p in self._folder.rglob("*") if _is_frame(p, self._folder)),
                key=lambda p: p.relative_to(self._folder).as_posix(),
            )
        except OSError as exc:
            raise CameraError(f"cannot list replay folder {self._folder}: {exc}") from exc
        if not self._files:
            raise CameraError(f"replay folder {self._folder} holds no PNG or JPEG image")
        self._sidecars: dict[int, _Sidecar] = {}
        self._cursor = 0
        self._last_path: Path | None = None
        first = self._decode(self._files[0])
        self._info = CameraInfo(MODEL, int(first.shape[1]), int(first.shape[0]), has_lens_focus=False)

    @property
    def info(self) -> CameraInfo:
        """Model "replay"; the size is that of the first image in play order."""
        return self._info

    @property
    def frame_count(self) -> int:
        """How many image files are played."""
        return len(self._files)

    @property
    def last_path(self) -> Path | None:
        """The file behind the last frame returned; ``None`` before the first capture."""
        return self._last_path

    def reset(self) -> None:
        """Play from the first file again."""
        self._cursor = 0

    def capture(self, settings: CaptureSettings, *, width: int | None = None) -> Frame:
        """The next image as a frame, scaled down to ``width`` (keeping its aspect ratio) when given.

        Raises :class:`InvalidArgument` for a ``width`` outside 16..the
        first image's width, and :class:`CameraError` naming the file when a
        file or its sidecar cannot be read or decoded, when the replay has
        ended (``loop`` off), or when no frame has the requested lighting.
        """
        if width is not None and not MIN_WIDTH_PX <= width <= self._info.sensor_width:
            raise InvalidArgument(f"width must be {MIN_WIDTH_PX}..{self._info.sensor_width} px, got {width}")
        index = self._next_index(settings.lighting)
        # Move on before decoding, so one bad file fails one capture, not all that follow.
        self._cursor = index + 1
        path = self._files[index]
        pixels = self._decode(path)
        if width is not None and pixels.shape[1] > width:
            pixels = _scale_to_width(pixels, width)
        meta = self._sidecar(index)
        applied = AppliedSettings(
            exposure_us=_first(meta.exposure_us, settings.exposure_us, 0),
            analogue_gain=_first(meta.analogue_gain, settings.analogue_gain, 0.0),
            lighting=_first(meta.lighting, settings.lighting),
            led_duty_pct=_first(meta.led_duty_pct, settings.led_duty_pct, 0),
            focus_steps=_first(meta.focus_steps, settings.focus_steps, 0),
            lens_position=_first(meta.lens_position, settings.lens_position, 0.0),
        )
        self._last_path = path
        return Frame(pixels, applied, meta.camera_model or MODEL, meta.capture_time or datetime.now(UTC))

    def _next_index(self, lighting: Lighting) -> int:
        count = len(self._files)
        if self._loop:
            candidates = [(self._cursor + k) % count for k in range(count)]
        else:
            candidates = list(range(self._cursor, count))
            if not candidates:
                raise CameraError(f"replay of {self._folder} has ended: all {count} frames were played (loop is off)")
        if not self._match_lighting:
            return candidates[0]
        for index in candidates:
            if (self._sidecar(index).lighting or Lighting.WHITE_RING) is lighting:
                return index
        where = "" if self._loop else " from here on"
        raise CameraError(f"no frame in replay folder {self._folder}{where} is lit by {lighting.value}")

    def _decode(self, path: Path) -> RGBImage:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CameraError(f"cannot read replay frame {path}: {exc.strerror or exc}") from exc
        try:
            return codec.decode(data, max_pixels=self._max_pixels)
        except InvalidArgument as exc:
            raise CameraError(f"replay frame {path}: {exc}") from exc

    def _sidecar(self, index: int) -> _Sidecar:
        if index not in self._sidecars:
            self._sidecars[index] = _read_sidecar(self._files[index].with_suffix(".json"))
        return self._sidecars[index]


def _is_frame(path: Path, root: Path) -> bool:
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return False
    if any(part.startswith(".") for part in path.relative_to(root).parts):
        return False
    return path.is_file()


def _first(*values: Any) -> Any:
    return next(v for v in values if v is not None)


def _read_sidecar(path: Path) -> _Sidecar:
    """Parse a sidecar file; a missing one is empty. Raises CameraError naming the file and key."""
    if not path.is_file():
        return _Sidecar()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CameraError(f"sidecar {path} cannot be read as JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CameraError(f"sidecar {path} must hold a JSON object, not {type(data).__name__}")

    def bad(key: str, expected: str) -> CameraError:
        return CameraError(f"sidecar {path}: {key} must be {expected}, got {data[key]!r}")

    def number(key: str, *, integer: bool) -> Any:
        value = data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
            raise bad(key, "an integer" if integer else "a number")
        return value if integer else float(value)

    lighting = data.get("lighting")
    if lighting is not None:
        try:
            lighting = Lighting(str(lighting).lower())
        except ValueError:
            raise bad("lighting", " or ".join(repr(v.value) for v in Lighting)) from None
    capture_time = data.get("capture_time")
    if capture_time is not None:
        try:
            capture_time = datetime.fromisoformat(str(capture_time))
        except ValueError:
            raise bad("capture_time", "an ISO 8601 time") from None
        if capture_time.tzinfo is None:
            capture_time = capture_time.replace(tzinfo=UTC)
    camera_model = data.get("camera_model")
    if camera_model is not None and not isinstance(camera_model, str):
        raise bad("camera_model", "a string")
    return _Sidecar(
        exposure_us=number("exposure_us", integer=True),
        analogue_gain=number("analogue_gain", integer=False),
        lighting=lighting,
        led_duty_pct=number("led_duty_pct", integer=True),
        focus_steps=number("focus_steps", integer=True),
        lens_position=number("lens_position", integer=False),
        capture_time=capture_time,
        camera_model=camera_model,
    )


def _scale_to_width(pixels: RGBImage, width: int) -> RGBImage:
    """Scale down to ``width`` keeping the aspect ratio; area averaging is alias-free and 4x faster than Lanczos."""
    h, w = pixels.shape[:2]
    height = max(1, round(h * width / w))
    image = Image.fromarray(pixels, mode="RGB").resize((width, height), Image.Resampling.BOX)
    return np.asarray(image, dtype=np.uint8)
