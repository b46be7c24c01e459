"""The unit's self-test: one check per part, each a pass, warning, failure or skip with its readings.

Checks, in order (:data:`CHECKS`):

- ``camera``: a frame under the white ring; its level, sharpness and the quality gate's findings.
- ``controller``: the board's handshake identity and a live round trip (LED duties, focus position).
- ``leds``: each LED channel lit alone, auto-exposed, against a dark frame at the same exposure; a
  channel whose light does not change the frame fails.
- ``focus``: the focus motor end to end and back, every reported position against its target, then an
  autofocus search: sharpness must change across the travel (flat sharpness is a warning: nothing
  textured under the lens).
- ``temperature``: the board's and the SoC's temperatures against their limits.
- ``model_checksums``: the SHA-256 of the active bundle's files against its manifest.
- ``storage``: free space against the retention floor, SQLite ``quick_check``, and a probe file
  written, fsynced, read back and removed.

A check never raises: whatever goes wrong becomes its FAIL. A check that
needs a part that already failed (the camera or the controller) is SKIPPED.
Hardware checks leave the LEDs off and the focus where they found it. The
methods block; the caller holds the camera (as a scan would) and runs them in a
worker thread.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import math
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from veriscope.device import codec
from veriscope.device.controller import Controller
from veriscope.device.errors import VeriscopeError
from veriscope.device.imager import DEFAULT_DUTY_PCT, Imager
from veriscope.device.inference import ModelBundle
from veriscope.device.pipeline import quality
from veriscope.device.types import CaptureSettings, Lighting, RGBImage

CHECKS = ("camera", "controller", "leds", "focus", "temperature", "model_checksums", "storage")
"""The checks of the self-test, in the order they run."""
IMAGE_WIDTH_PX = 640
"""Width of the frames the checks take and send as evidence."""
FOCUS_STOPS = 9
"""Positions the focus motor is sent to from one end of its travel to the other (and back)."""
MIN_SHARPNESS_RATIO = 1.5
"""Sharpest over least sharp frame along the focus travel below which the lens seems not to move the focus."""
MIN_LED_CHANGE = 0.02
"""Least rise of the mean frame level (0..1 of full scale) a lit channel must cause over a dark frame."""
DIM_LED_LEVEL = 0.1
"""Mean level of a lit frame, at the longest exposure, below which a channel is dim."""
DARK_FRAME_LEVEL = 0.01
"""Mean level below which a lit camera frame is black."""
SATURATED_LEVEL = 0.98
"""Mean level above which a camera frame is saturated."""
BOARD_WARN_C, BOARD_FAIL_C = 60.0, 75.0
"""Board temperatures, degrees Celsius, that warn and fail."""
SOC_WARN_C, SOC_FAIL_C = 80.0, 85.0
"""SoC temperatures, degrees Celsius, that warn and fail (the Raspberry Pi throttles from 80 C)."""
PROBE_BYTES = 256 * 1024
"""Size of the storage probe file."""
THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")
"""The SoC temperature in millidegrees Celsius, where the kernel provides it."""
_HASH_CHUNK = 1024 * 1024


class CheckStatus(enum.Enum):
    """The outcome of one check."""

    PASS = "pass"
    """The part works as it should."""
    WARN = "warn"
    """The part works, with a reading that deserves a look."""
    FAIL = "fail"
    """The part does not work."""
    SKIPPED = "skipped"
    """The check did not run: the part is missing or a part it needs failed."""


@dataclass(frozen=True)
class CheckImage:
    """An image a check took as evidence."""

    name: str
    """What it shows, for example "white_ring" or "dark"."""
    png: bytes
    """The image as PNG, at most :data:`IMAGE_WIDTH_PX` wide."""


@dataclass(frozen=True)
class CheckResult:
    """The result of one check."""

    name: str
    """One of :data:`CHECKS`."""
    status: CheckStatus
    message: str
    """What was found; on WARN or FAIL, what is wrong and what to do."""
    measurements: Mapping[str, float] = field(default_factory=dict)
    """Readings by name, with units in the names."""
    images: tuple[CheckImage, ...] = ()
    duration_s: float = 0.0
    """How long the check ran, in seconds."""


class _Outcome(Exception):
    """Ends a check early with a result (status and message)."""

    def __init__(self, status: CheckStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Check:
    """What a running check gathers."""

    measurements: dict[str, float] = field(default_factory=dict)
    images: list[CheckImage] = field(default_factory=list)


class SelfTest:
    """Runs the checks of one self-test against the unit's parts.

    ``imager`` is None on a unit without a camera and controller (their checks
    are then SKIPPED); ``min_free_bytes`` is the retention floor of the data
    volume; ``thermal_zone`` is where the SoC temperature is read.
    """

    def __init__(
        self,
        *,
        imager: Imager | None,
        bundle: ModelBundle,
        data_dir: Path,
        min_free_bytes: int,
        thermal_zone: Path = THERMAL_ZONE,
    ) -> None:
        self._imager = imager
        self._bundle = bundle
        self._data_dir = data_dir
        self._min_free_bytes = min_free_bytes
        self._thermal_zone = thermal_zone
        self._failed: set[str] = set()

    def run(self, name: str) -> CheckResult:
        """Run the check ``name`` (one of :data:`CHECKS`) and return its result; never raises."""
        checks: dict[str, Callable[[_Check], str]] = {
            "camera": self._camera,
            "controller": self._controller,
            "leds": self._leds,
            "focus": self._focus,
            "temperature": self._temperature,
            "model_checksums": self._model_checksums,
            "storage": self._storage,
        }
        if name not in checks:
            raise ValueError(f"unknown check {name!r}; the checks are {', '.join(CHECKS)}")
        gathered = _Check()
        start = time.monotonic()
        try:
            status, message = CheckStatus.PASS, checks[name](gathered)
        except _Outcome as outcome:
            status, message = outcome.status, outcome.message
        except VeriscopeError as exc:
            status, message = CheckStatus.FAIL, str(exc)
        except Exception as exc:  # a check reports what broke; it never takes the self-test down
            status, message = CheckStatus.FAIL, f"{type(exc).__name__}: {exc}"
        if status is CheckStatus.FAIL:
            self._failed.add(name)
        return CheckResult(
            name, status, message, dict(gathered.measurements), tuple(gathered.images), time.monotonic() - start
        )

    # Helpers

    def _parts(self, *needs: str) -> Imager:
        imager = self._imager
        if imager is None:
            raise _Outcome(CheckStatus.SKIPPED, "this unit has no camera or controller board")
        failed = [n for n in needs if n in self._failed]
        if failed:
            raise _Outcome(CheckStatus.SKIPPED, f"not run: the {' and the '.join(failed)} check failed")
        return imager

    @staticmethod
    def _frame(imager: Imager, lighting: Lighting, exposure_us: int, gain: float, width: int) -> RGBImage:
        """One frame at ``width`` under ``lighting`` alone (OFF: dark) at a fixed exposure; lights off after."""
        controller = imager.controller
        duty = DEFAULT_DUTY_PCT[lighting]
        controller.light_only(lighting, duty)
        try:
            settings = CaptureSettings(
                exposure_us=exposure_us,
                analogue_gain=gain,
                lighting=lighting,
                led_duty_pct=duty or None,
                focus_steps=controller.focus_position(),
            )
            return imager.camera.capture(settings, width=min(width, imager.camera.info.sensor_width)).pixels
        finally:
            controller.light_only(Lighting.OFF, 0)

    # Checks

    def _camera(self, out: _Check) -> str:
        imager = self._parts()
        found = imager.auto_expose(Lighting.WHITE_RING, corrected=False)
        pixels = self._frame(imager, Lighting.WHITE_RING, found.exposure_us, found.analogue_gain, IMAGE_WIDTH_PX)
        height, width = pixels.shape[:2]
        report = quality.assess(pixels, lighting=Lighting.WHITE_RING.value)
        level = _mean_level(pixels)
        sharp = quality.sharpness(pixels)
        out.measurements.update(
            width_px=width,
            height_px=height,
            mean_level=level,
            sharpness=sharp,
            exposure_us=found.exposure_us,
            analogue_gain=found.analogue_gain,
        )
        out.images.append(CheckImage("white_ring", _png(pixels)))
        model = imager.camera.info.model
        if level < DARK_FRAME_LEVEL:
            raise _Outcome(
                CheckStatus.FAIL,
                f"camera {model} gives a black frame (mean level {level:.3f}) under the white ring: check the "
                "camera cable and the lens cap",
            )
        if level > SATURATED_LEVEL:
            raise _Outcome(CheckStatus.WARN, f"camera {model} gives a saturated frame (mean level {level:.3f})")
        findings = ", ".join(report.issue_codes) if report.issue_codes else "none"
        return (
            f"camera {model} captured a {width}x{height} frame: mean level {level:.2f}, sharpness {sharp:.4f}, "
            f"quality gate findings: {findings}"
        )

    def _controller(self, out: _Check) -> str:
        imager = self._parts()
        controller: Controller = imager.controller
        info = controller.info
        duties = controller.leds()
        position = controller.focus_position()
        out.measurements.update(protocol_version=info.protocol_version, focus_steps=position)
        lit = [f"{ch.value} {duty}%" for ch, duty in sorted(duties.items()) if duty > 0]
        return (
            f"controller {info.kind} answered: firmware {info.firmware_version} (build {info.build_id}, protocol "
            f"{info.protocol_version}), focus at {position} steps, LEDs {', '.join(lit) or 'off'}"
        )

    def _leds(self, out: _Check) -> str:
        imager = self._parts("camera", "controller")
        dead: list[str] = []
        dim: list[str] = []
        summary: list[str] = []
        dark_shown = False
        for channel in (Lighting.WHITE_RING, Lighting.RAKING, Lighting.UV):
            found = imager.auto_expose(channel, corrected=False)
            lit = self._frame(imager, channel, found.exposure_us, found.analogue_gain, IMAGE_WIDTH_PX)
            dark = self._frame(imager, Lighting.OFF, found.exposure_us, found.analogue_gain, IMAGE_WIDTH_PX)
            lit_level, dark_level = _mean_level(lit), _mean_level(dark)
            change = lit_level - dark_level
            name = channel.value
            out.measurements.update(
                {
                    f"{name}_level": lit_level,
                    f"{name}_dark_level": dark_level,
                    f"{name}_change": change,
                    f"{name}_exposure_us": found.exposure_us,
                }
            )
            out.images.append(CheckImage(name, _png(lit)))
            if not dark_shown:
                out.images.append(CheckImage("dark", _png(dark)))
                dark_shown = True
            if change < MIN_LED_CHANGE:
                dead.append(name)
            elif lit_level < DIM_LED_LEVEL:
                dim.append(name)
            summary.append(f"{name} +{change:.2f}")
        if dead:
            raise _Outcome(
                CheckStatus.FAIL,
                f"LED channel {', '.join(dead)} does not light the camera frame (brightness change below "
                f"{MIN_LED_CHANGE}): check its LED, driver and wiring; changes: {', '.join(summary)}",
            )
        if dim:
            raise _Outcome(
                CheckStatus.WARN,
                f"LED channel {', '.join(dim)} is dim even at the longest exposure; changes: {', '.join(summary)}",
            )
        return f"every LED channel lights the frame; brightness changes: {', '.join(summary)}"

    def _focus(self, out: _Check) -> str:
        imager = self._parts("camera", "controller")
        controller = imager.controller
        rng = controller.focus_range
        start = controller.focus_position()
        forward = [round(v) for v in np.linspace(rng.min_steps, rng.max_steps, FOCUS_STOPS)]
        wrong: list[str] = []
        try:
            for target in [*forward, *forward[-2::-1]]:
                reached = controller.move_focus(target)
                reported = controller.focus_position()
                if reached != target or reported != target:
                    wrong.append(f"{target} (moved to {reached}, reports {reported})")
            # The depth of field spans a few dozen steps: the autofocus search finds the peak that a coarse
            # sweep would step over.
            found = imager.autofocus(Lighting.WHITE_RING) if not wrong else None
        finally:
            # Autofocus leaves the white ring lit for the capture that normally follows it.
            with contextlib.suppress(VeriscopeError):
                controller.light_only(Lighting.OFF, 0)
            with contextlib.suppress(VeriscopeError):
                controller.move_focus(start)
        sharpness = [s.sharpness for s in found.curve] if found else []
        ratio = max(sharpness) / max(min(sharpness), 1e-9) if sharpness else 0.0
        out.measurements.update(
            min_steps=rng.min_steps,
            max_steps=rng.max_steps,
            positions_checked=2 * len(forward) - 1,
            position_errors=len(wrong),
            sharpness_min=min(sharpness, default=0.0),
            sharpness_max=max(sharpness, default=0.0),
            sharpness_ratio=ratio,
        )
        if wrong:
            raise _Outcome(
                CheckStatus.FAIL,
                f"the focus motor did not reach {len(wrong)} of its targets: {'; '.join(wrong[:5])}: check the "
                "motor, its driver and the homing switch",
            )
        assert found is not None
        out.measurements["sharpest_steps"] = found.best_position
        travel = f"the focus motor reached every target from {rng.min_steps} to {rng.max_steps} steps and back"
        if ratio < MIN_SHARPNESS_RATIO:
            raise _Outcome(
                CheckStatus.WARN,
                f"{travel}, but sharpness hardly changed (x{ratio:.2f}): place a textured item under the lens and "
                "run again",
            )
        return f"{travel}; sharpness changed x{ratio:.1f} over the travel, sharpest at {found.best_position} steps"

    def _temperature(self, out: _Check) -> str:
        readings: list[str] = []
        problems: list[tuple[CheckStatus, str]] = []
        imager = self._imager
        if imager is not None and "controller" not in self._failed:
            board = imager.controller.temperature_c()
            if math.isfinite(board):
                out.measurements["board_temperature_c"] = board
                readings.append(f"board {board:.1f} C")
                problems += _limit("board", board, BOARD_WARN_C, BOARD_FAIL_C)
        soc = _read_thermal_zone(self._thermal_zone)
        if soc is not None:
            out.measurements["soc_temperature_c"] = soc
            readings.append(f"SoC {soc:.1f} C")
            problems += _limit("SoC", soc, SOC_WARN_C, SOC_FAIL_C)
        if not readings:
            raise _Outcome(CheckStatus.SKIPPED, "no temperature sensor answered (no controller, no thermal zone)")
        for status in (CheckStatus.FAIL, CheckStatus.WARN):
            found = [text for s, text in problems if s is status]
            if found:
                raise _Outcome(status, f"{'; '.join(found)} ({', '.join(readings)}): check the ventilation")
        return ", ".join(readings)

    def _model_checksums(self, out: _Check) -> str:
        bundle = self._bundle
        expected: dict[str, str] = {bundle.model_path.name: bundle.sha256}
        listed = bundle.manifest.get("files")
        if isinstance(listed, Mapping):
            for name, entry in listed.items():
                digest = entry.get("sha256") if isinstance(entry, Mapping) else entry
                if isinstance(digest, str):
                    expected[str(name)] = digest
        bad: list[str] = []
        hashed = 0
        for name, digest in sorted(expected.items()):
            path = bundle.path / name
            try:
                actual, size = _sha256(path)
            except OSError as exc:
                bad.append(f"{name} is unreadable ({exc.strerror or exc})")
                continue
            hashed += size
            if actual != digest:
                bad.append(f"{name} has SHA-256 {actual[:12]}..., the manifest says {digest[:12]}...")
        out.measurements.update(files_checked=len(expected), bytes_hashed=hashed)
        where = f"bundle {bundle.name}@{bundle.version} in {bundle.path}"
        if bad:
            raise _Outcome(CheckStatus.FAIL, f"{where}: {'; '.join(bad)}: the model is corrupt; reinstall the bundle")
        return f"{where}: {len(expected)} files match the manifest"

    def _storage(self, out: _Check) -> str:
        data_dir = self._data_dir
        free = shutil.disk_usage(data_dir).free
        floor = self._min_free_bytes
        out.measurements.update(free_bytes=free, floor_bytes=floor)
        problems: list[tuple[CheckStatus, str]] = []
        if free < floor:
            problems.append((CheckStatus.FAIL, f"{_mib(free)} free, below the retention floor of {_mib(floor)}"))
        elif free < 2 * floor:
            problems.append((CheckStatus.WARN, f"{_mib(free)} free, close to the retention floor of {_mib(floor)}"))
        integrity = _quick_check(data_dir / "scans.sqlite3")
        if integrity != "ok":
            problems.append((CheckStatus.FAIL, f"the scan database fails its integrity check: {integrity}"))
        start = time.monotonic()
        probe_problem = _probe(data_dir)
        out.measurements["probe_seconds"] = time.monotonic() - start
        if probe_problem:
            problems.append((CheckStatus.FAIL, probe_problem))
        for status in (CheckStatus.FAIL, CheckStatus.WARN):
            found = [text for s, text in problems if s is status]
            if found:
                raise _Outcome(status, f"data volume {data_dir}: {'; '.join(found)}")
        return (
            f"data volume {data_dir}: {_mib(free)} free (floor {_mib(floor)}), database intact, "
            f"probe file written, synced and read back"
        )


def _mean_level(pixels: RGBImage) -> float:
    return float(np.asarray(pixels, dtype=np.float32).mean() / 255.0)


def _png(pixels: RGBImage) -> bytes:
    """``pixels`` as PNG, downscaled to at most :data:`IMAGE_WIDTH_PX` wide."""
    height, width = pixels.shape[:2]
    if width > IMAGE_WIDTH_PX:
        size = (IMAGE_WIDTH_PX, max(1, round(height * IMAGE_WIDTH_PX / width)))
        pixels = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BOX))
    return codec.encode(pixels, codec.ImageFormat.PNG)


def _limit(what: str, value: float, warn: float, fail: float) -> list[tuple[CheckStatus, str]]:
    if value >= fail:
        return [(CheckStatus.FAIL, f"{what} at {value:.1f} C, at or above {fail:.0f} C")]
    if value >= warn:
        return [(CheckStatus.WARN, f"{what} at {value:.1f} C, at or above {warn:.0f} C")]
    return []


def _read_thermal_zone(path: Path) -> float | None:
    try:
        return int(path.read_text().strip()) / 1000.0
    except (OSError, ValueError):
        return None


def _sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _quick_check(path: Path) -> str:
    """``ok``, or what SQLite's quick_check found wrong with the database at ``path``."""
    if not path.is_file():
        return f"{path} is missing"
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            rows = [str(r[0]) for r in db.execute("PRAGMA quick_check").fetchall()]
        finally:
            db.close()
    except sqlite3.Error as exc:
        return str(exc)
    return "ok" if rows == ["ok"] else "; ".join(rows[:5])


def _probe(data_dir: Path) -> str:
    """Write, fsync, read back and remove a probe file; "" when all went well, else what failed."""
    path = data_dir / f".selftest-probe-{os.getpid()}"
    data = os.urandom(PROBE_BYTES)
    try:
        with path.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if path.read_bytes() != data:
            return f"the probe file {path} read back different from what was written"
    except OSError as exc:
        return f"cannot write and read back {path}: {exc.strerror or exc}"
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
    return ""


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MiB"
