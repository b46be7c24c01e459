"""The fake ``Picamera2`` class and ``CompletedRequest``, with the real call signatures and failure modes."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import libcamera
import numpy as np
from libcamera import controls as lc

from picamera2 import _fake_hardware as hw

_BYTES_PER_PIXEL = {"RGB888": 3, "BGR888": 3, "XBGR8888": 4, "XRGB8888": 4}
_STRIDE_ALIGN = 64
_RAW_FORMAT = "SRGGB12_CSI2P"

_BOOL_CONTROLS = {"AeEnable", "AwbEnable"}
_INT_CONTROLS = {
    "ExposureTime",
    "AeMeteringMode",
    "AeConstraintMode",
    "AeExposureMode",
    "AwbMode",
    "NoiseReductionMode",
    "AfMode",
    "AfRange",
    "AfSpeed",
    "AfMetering",
    "AfTrigger",
    "AfPause",
    "ExposureTimeMode",
    "AnalogueGainMode",
}
_FLOAT_CONTROLS = {"AnalogueGain", "Brightness", "Contrast", "Saturation", "Sharpness", "ExposureValue", "LensPosition"}
_FLOAT_PAIR_CONTROLS = {"ColourGains"}
_INT_PAIR_CONTROLS = {"FrameDurationLimits"}


class CompletedRequest:
    """One completed frame. Hold it briefly: the camera has few buffers. ``release()`` exactly once."""

    def __init__(self, camera: hw.FakeCamera, frame: Any, config: dict[str, Any]) -> None:
        self._camera = camera
        self._frame = frame
        self.config = config
        self._released = False
        camera.outstanding_requests += 1

    def _check(self) -> None:
        if self._released:
            # The real request's buffers are gone after release; using it fails.
            raise RuntimeError("CompletedRequest: request used after release()")

    def make_array(self, name: str) -> np.ndarray:
        """The named stream's image as a numpy array, in the stream format's byte order."""
        self._check()
        stream = self.config.get(name)
        if stream is None:
            raise RuntimeError(f"Stream {name!r} is not defined")
        if name == "raw":
            raise NotImplementedError("the fake does not render raw Bayer frames")
        fmt = stream["format"]
        w, h = stream["size"]
        rgb = self._camera.render(self._frame, (w, h))
        if fmt == "RGB888":
            pixels = rgb[..., ::-1]  # memory order B, G, R
        elif fmt == "BGR888":
            pixels = rgb  # memory order R, G, B
        elif fmt in ("XBGR8888", "XRGB8888"):
            alpha = np.full((h, w, 1), 255, dtype=np.uint8)
            pixels = np.concatenate([rgb if fmt == "XBGR8888" else rgb[..., ::-1], alpha], axis=2)
        else:
            raise NotImplementedError(f"the fake renders RGB formats only, not {fmt}")
        # Mimic the padded buffer that picamera2 trims: the array is a fresh copy.
        stride = stream["stride"]
        buffer = np.zeros((h, stride), dtype=np.uint8)
        row = w * _BYTES_PER_PIXEL[fmt]
        buffer[:, :row] = pixels.reshape(h, row)
        return np.ascontiguousarray(buffer[:, :row]).reshape(h, w, _BYTES_PER_PIXEL[fmt])

    def get_metadata(self) -> dict[str, Any]:
        """The frame's metadata: libcamera control names mapped to Python values."""
        self._check()
        return self._camera.metadata(self._frame, self.config["main"]["size"])

    def release(self) -> None:
        """Give the buffer back to the camera."""
        if self._released:
            raise RuntimeError("CompletedRequest: lock now has negative ref_count")
        self._released = True
        self._camera.outstanding_requests -= 1


class Picamera2:
    """The fake camera object. Only the methods Veriscope (or a careful user) needs exist."""

    @staticmethod
    def global_camera_info() -> list[dict[str, Any]]:
        """One dict per attached camera: Model, Location, Rotation, Id, Num."""
        cameras = [
            {"Model": c.spec.model, "Location": 2, "Rotation": 180, "Id": c.camera_id, "Num": c.number}
            for c in hw.cameras()
        ]
        return sorted(cameras, key=lambda c: ("/usb" not in c["Id"], c["Id"]), reverse=True)

    def __init__(self, camera_num: int = 0, verbose_console: Any = None, tuning: Any = None, allocator: Any = None):
        # The real class indexes the list the same way, so a missing camera is an IndexError.
        number = self.global_camera_info()[camera_num]["Num"]
        camera = hw.cameras()[number]
        if camera.acquired:
            raise RuntimeError("Camera __init__ sequence did not complete.")
        camera.acquired = True
        self._camera: hw.FakeCamera | None = camera
        self.is_open = True
        self.started = False
        self.camera_config: dict[str, Any] | None = None
        self.sensor_resolution = camera.spec.pixel_array_size
        self.sensor_format = _RAW_FORMAT
        self._controls_info = camera.controls

    # ---- properties ----------------------------------------------------------------

    @property
    def camera_properties(self) -> dict[str, Any]:
        """libcamera's properties of the camera; empty once closed."""
        if self._camera is None:
            return {}
        spec = self._camera.spec
        w, h = spec.pixel_array_size
        return {
            "Model": spec.model,
            "UnitCellSize": spec.unit_cell_size,
            "Location": 2,
            "Rotation": 180,
            "PixelArraySize": (w, h),
            "PixelArrayActiveAreas": [(0, 0, w, h)],
            "ColorFilterArrangement": 0,
            "ScalerCropMaximum": (0, 0, w, h),
            "SystemDevices": (20749, 20737, 20738, 20739),
        }

    @property
    def camera_controls(self) -> dict[str, tuple[Any, Any, Any]]:
        """Controls the camera advertises: name -> (min, max, default); empty once closed."""
        return {} if self._camera is None else dict(self._controls_info)

    def _open_camera(self) -> hw.FakeCamera:
        if self._camera is None:
            raise RuntimeError("Camera not opened")
        return self._camera

    # ---- configurations --------------------------------------------------------------

    def _stream(self, defaults: dict[str, Any], updates: Mapping[str, Any] | None) -> dict[str, Any] | None:
        if updates is None:
            return None
        stream = dict(defaults)
        for key, value in updates.items():
            if key not in ("format", "size", "stride", "preserve_ar"):
                raise ValueError(f"Bad key {key!r}: valid stream configuration keys are ('format', 'size', ...)")
            stream[key] = value
        self.align_stream(stream, optimal=False)
        return stream

    def _config(
        self,
        use_case: str,
        main_defaults: dict[str, Any],
        main: Mapping[str, Any] | None,
        lores: Mapping[str, Any] | None,
        raw: Mapping[str, Any] | None,
        transform: Any,
        colour_space: Any,
        buffer_count: int,
        controls: Mapping[str, Any],
        default_controls: dict[str, Any],
        display: str | None,
        encode: str | None,
        queue: bool,
        sensor: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        self._open_camera()
        main_stream = self._stream(main_defaults, main)
        assert main_stream is not None
        lores_stream = self._stream({"format": "YUV420", "size": main_stream["size"], "preserve_ar": False}, lores)
        raw_stream = None
        if raw is not None:
            raw_stream = {"format": self.sensor_format, "size": main_stream["size"], **raw}
        return {
            "use_case": use_case,
            "transform": transform if transform is not None else libcamera.Transform(),
            "colour_space": colour_space if colour_space is not None else libcamera.ColorSpace.Sycc(),
            "buffer_count": buffer_count,
            "queue": queue,
            "main": main_stream,
            "lores": lores_stream,
            "raw": raw_stream,
            "controls": default_controls | dict(controls),
            "sensor": dict(sensor) if sensor is not None else None,
            "display": display,
            "encode": encode,
        }

    # Mutable defaults as in picamera2's signatures; they are never mutated.
    def create_preview_configuration(
        self,
        main: Mapping[str, Any] | None = {},
        lores: Mapping[str, Any] | None = None,
        raw: Mapping[str, Any] | None = {},
        transform: Any = None,
        colour_space: Any = None,
        buffer_count: int = 4,
        controls: Mapping[str, Any] = {},
        display: str | None = "main",
        encode: str | None = "main",
        queue: bool = True,
        sensor: Mapping[str, Any] | None = {},
        use_case: str = "preview",
    ) -> dict[str, Any]:
        """A configuration for a streaming preview: XBGR8888 640x480 unless told, 4 buffers, 12 fps or faster."""
        defaults = {"NoiseReductionMode": lc.draft.NoiseReductionModeEnum.Minimal, "FrameDurationLimits": (100, 83333)}
        return self._config(
            use_case,
            {"format": "XBGR8888", "size": (640, 480), "preserve_ar": True},
            main,
            lores,
            raw,
            transform,
            colour_space,
            buffer_count,
            controls,
            defaults,
            display,
            encode,
            queue,
            sensor,
        )

    def create_still_configuration(
        self,
        main: Mapping[str, Any] | None = {},
        lores: Mapping[str, Any] | None = None,
        raw: Mapping[str, Any] | None = {},
        transform: Any = None,
        colour_space: Any = None,
        buffer_count: int = 1,
        controls: Mapping[str, Any] = {},
        display: str | None = None,
        encode: str | None = None,
        queue: bool = True,
        sensor: Mapping[str, Any] | None = {},
        use_case: str = "still",
    ) -> dict[str, Any]:
        """A configuration for stills: BGR888 at full resolution unless told, one buffer, long exposures allowed."""
        defaults = {
            "NoiseReductionMode": lc.draft.NoiseReductionModeEnum.HighQuality,
            "FrameDurationLimits": (100, 1000000 * 1000),
        }
        return self._config(
            use_case,
            {"format": "BGR888", "size": self.sensor_resolution, "preserve_ar": True},
            main,
            lores,
            raw,
            transform,
            colour_space,
            buffer_count,
            controls,
            defaults,
            display,
            encode,
            queue,
            sensor,
        )

    @staticmethod
    def align_stream(stream_config: dict[str, Any], optimal: bool = True) -> None:
        """Round the stream size down to what the ISP can produce."""
        align = 32 if optimal else 2
        w, h = stream_config["size"]
        stream_config["size"] = (w - w % align, h - h % 2)

    @staticmethod
    def align_configuration(config: dict[str, Any], optimal: bool = True) -> None:
        """Align the main and lores streams."""
        Picamera2.align_stream(config["main"], optimal=optimal)
        if config.get("lores") is not None:
            Picamera2.align_stream(config["lores"], optimal=optimal)

    @staticmethod
    def _check_stream(stream: Any, name: str) -> None:
        if not isinstance(stream, dict):
            raise RuntimeError(name + " stream should be a dictionary")
        if "format" not in stream or "size" not in stream:
            raise RuntimeError(f"format and size must be given for the {name} stream")
        size = stream["size"]
        if type(size) is not tuple or len(size) != 2:
            raise RuntimeError("size in " + name + " stream should be (width, height)")
        if size[0] % 2 or size[1] % 2:
            raise RuntimeError("width and height should be even")
        if name == "main" and stream["format"] not in (*_BYTES_PER_PIXEL, "YUV420"):
            raise RuntimeError("Bad format " + str(stream["format"]) + " in stream " + name)

    def configure(self, camera_config: Any = None) -> None:
        """Configure the camera; it must be stopped."""
        camera = self._open_camera()
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        if camera_config is None or camera_config == "preview":
            camera_config = self.create_preview_configuration()
        elif camera_config == "still":
            camera_config = self.create_still_configuration()
        config = dict(camera_config)
        for key in ("colour_space", "transform", "main", "lores", "raw"):
            if key not in config:
                raise RuntimeError(f"{key!r} key expected in camera configuration")
        self._check_stream(config["main"], "main")
        if config["lores"] is not None:
            self._check_stream(config["lores"], "lores")
        main = config["main"]
        w, h = main["size"]
        if w > self.sensor_resolution[0] * 2 or h > self.sensor_resolution[1] * 2:
            raise RuntimeError(f"Invalid camera configuration: {config}")
        main["stride"] = -(-w * _BYTES_PER_PIXEL.get(main["format"], 1) // _STRIDE_ALIGN) * _STRIDE_ALIGN
        main["framesize"] = main["stride"] * h
        raw_size = config["raw"]["size"] if config["raw"] is not None else main["size"]
        # Pending controls are replaced by the configuration's, as in picamera2.
        camera.configure_sensor(tuple(raw_size), dict(config.get("controls") or {}))
        self.camera_config = config

    def start(self, config: Any = None, show_preview: Any = False) -> None:
        """Start streaming, configuring first (with ``config``, or the preview default) when needed."""
        camera = self._open_camera()
        if self.camera_config is None and config is None:
            config = "preview"
        if config is not None:
            self.configure(config)
        if self.started:
            return
        camera.start()
        self.started = True

    def stop(self) -> None:
        """Stop streaming; does nothing when stopped."""
        self.started = False

    def close(self) -> None:
        """Stop and release the camera; closing twice does nothing."""
        if self._camera is None:
            return
        self.stop()
        self._camera.acquired = False
        self._camera = None
        self.is_open = False
        self.camera_config = None

    def __enter__(self) -> Picamera2:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def switch_mode(self, camera_config: Any, wait: Any = None, signal_function: Any = None) -> dict[str, Any]:
        """Stop, configure and restart in another mode; runs in the camera's event loop."""
        if not self.started:
            # The job goes to the event loop, which only runs while the camera does.
            raise RuntimeError("fake picamera2: switch_mode on a stopped camera would wait forever")
        self.stop()
        self.configure(camera_config)
        self.start()
        assert self.camera_config is not None
        return self.camera_config

    def set_controls(self, controls: Mapping[str, Any]) -> None:
        """Queue controls for the next request; unknown names raise at once, as in picamera2."""
        camera = self._open_camera()
        if not isinstance(controls, dict):
            raise RuntimeError(f"Cannot update controls with {type(controls)} type")
        for name, value in controls.items():
            if name not in self._controls_info:
                raise RuntimeError(f"Control {name} is not advertised by libcamera")
            _check_type(name, value)
        camera.queue_controls(dict(controls), started=self.started)

    def cancel_all_and_flush(self) -> None:
        """Cancel jobs waiting in the event loop (after a timeout)."""

    # ---- capture --------------------------------------------------------------------

    def capture_request(self, wait: Any = None, signal_function: Any = None, flush: Any = None) -> CompletedRequest:
        """The next completed request (see ``FakeCamera.next_frame``); release it when done."""
        camera = self._open_camera()
        fault = camera.take_fault()
        if fault is not None:
            raise fault
        config = self.camera_config
        if not self.started or config is None:
            if isinstance(wait, int | float) and not isinstance(wait, bool):
                raise TimeoutError()
            raise RuntimeError("fake picamera2: capture_request on a stopped camera would wait forever")
        if camera.outstanding_requests >= config["buffer_count"]:
            raise RuntimeError("fake picamera2: every buffer is held by the application; this would wait forever")
        if flush is True:
            flush = camera.clock_ns()
        queue = bool(config["queue"]) and config["buffer_count"] > 1
        frame = camera.next_frame(queue=queue, flush_ns=flush or None)
        return CompletedRequest(camera, frame, config)

    def capture_metadata(self, wait: Any = None, signal_function: Any = None) -> dict[str, Any]:
        """The metadata of the next frame."""
        request = self.capture_request(wait=wait)
        try:
            return request.get_metadata()
        finally:
            request.release()

    def capture_array(self, name: str = "main", wait: Any = None, signal_function: Any = None) -> np.ndarray:
        """The next frame of stream ``name`` as an array."""
        request = self.capture_request(wait=wait)
        try:
            return request.make_array(name)
        finally:
            request.release()


def _check_type(name: str, value: Any) -> None:
    """Refuse values libcamera cannot convert to the control's type."""
    ok = True
    if name in _BOOL_CONTROLS:
        ok = isinstance(value, bool)
    elif name in _INT_CONTROLS:
        ok = isinstance(value, numbers.Integral)
    elif name in _FLOAT_CONTROLS:
        ok = isinstance(value, numbers.Real)
    elif name in _FLOAT_PAIR_CONTROLS:
        ok = isinstance(value, tuple | list) and len(value) == 2 and all(isinstance(v, numbers.Real) for v in value)
    elif name in _INT_PAIR_CONTROLS:
        ok = isinstance(value, tuple | list) and len(value) == 2 and all(isinstance(v, numbers.Integral) for v in value)
    if not ok:
        raise TypeError(f"control {name}: cannot convert {value!r} ({type(value).__name__})")
