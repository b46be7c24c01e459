"""Run the real firmware on the emulated chip (``veriscope-avr-sim``) and watch its pins.

For tests, and for trying the firmware without a board::

    with AvrSim(flash=firmware_paths().hex) as sim:
        ctl = SerialController(str(sim.port))      # the driver, unchanged, on the emulated UART
        ctl.set_leds({Lighting.UV: 30})
        sim.wait_for("led", lambda e: e.as_float("uv") == 29.7)
        print(sim.state().focus_steps)

The harness (``device/firmware/sim/avr_sim.c``, built by ``make firmware``) runs an
ATmega328P at 16 MHz in real time with the Optiboot bootloader, exposes UART0 on a pty
(symlinked at :attr:`AvrSim.port`), resets the chip each time the port is opened, and
reports LED PWM duty, step pulses and resets on its stdout, which this module parses.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from veriscope.device.errors import ControllerError

BOOTLOADER_HEX = Path("/usr/share/arduino/hardware/arduino/avr/bootloaders/optiboot/optiboot_atmega328.hex")
"""Optiboot for the ATmega328P at 16 MHz, from Debian's arduino-core-avr."""

_REPO = Path(__file__).resolve().parents[5]
_WORD = re.compile(r"(\w+)=(\S+)")


class AvrSimError(ControllerError):
    """The emulator could not be built, started, or did not report in time."""


@dataclass(frozen=True)
class FirmwarePaths:
    """Where ``make firmware`` puts its outputs."""

    hex: Path
    elf: Path
    sim: Path


def firmware_paths() -> FirmwarePaths:
    """Paths of the firmware image and the emulator: ``$VERISCOPE_FIRMWARE_DIR`` or ``<repo>/build/firmware``."""
    root = Path(os.environ.get("VERISCOPE_FIRMWARE_DIR", _REPO / "build" / "firmware"))
    return FirmwarePaths(
        root / "veriscope-controller.hex", root / "veriscope-controller.elf", root / "veriscope-avr-sim"
    )


def toolchain_missing() -> str | None:
    """Why the firmware cannot be built and emulated here, or ``None`` when everything is installed."""
    missing = []
    if shutil.which("avr-gcc") is None:
        missing.append("gcc-avr")
    if not Path("/usr/lib/avr/include/avr/io.h").exists():
        missing.append("avr-libc")
    if not Path("/usr/include/simavr/sim_avr.h").exists():
        missing.append("libsimavr-dev")
    if not BOOTLOADER_HEX.exists():
        missing.append("arduino-core-avr")
    return f"missing Debian packages: {' '.join(missing)}" if missing else None


def build_firmware() -> FirmwarePaths:
    """Run ``make firmware`` (a no-op when up to date) and return the outputs.

    Raises :class:`AvrSimError` with make's output when the build fails.
    """
    paths = firmware_paths()
    result = subprocess.run(
        ["make", "-s", "-C", str(_REPO / "device" / "firmware"), f"OUT={paths.sim.parent}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not paths.hex.exists() or not paths.sim.exists():
        raise AvrSimError(f"make firmware failed:\n{result.stdout}\n{result.stderr}")
    return paths


@dataclass(frozen=True)
class Observation:
    """One line the emulator reported: its kind (``led``, ``steps``, ``reset``...) and its words."""

    kind: str
    words: dict[str, str]
    flags: frozenset[str]
    """Bare words without ``=``, such as ``open`` in ``client ... open``."""

    def as_int(self, key: str) -> int:
        """A word as an integer."""
        return int(self.words[key], 0)

    def as_float(self, key: str) -> float:
        """A word as a float."""
        return float(self.words[key])

    @property
    def t_us(self) -> int:
        """Chip time of the observation, in microseconds since the emulator started."""
        return self.as_int("t_us")


@dataclass(frozen=True)
class PinState:
    """What the emulated board's pins show at one moment."""

    led_duty_pct: dict[str, float]
    """PWM duty on each LED pin: ``white``, ``raking``, ``uv``."""
    focus_steps: int
    """Where the focus motor is, counted from the step pulses, in steps above the switch."""
    step_count: int
    """Step pulses since the emulator started."""
    home_switch_closed: bool
    button_down: bool
    temperature_c: float
    resets: int
    """Chip resets since the emulator started (power-on included)."""
    clients: int
    """Programs that have the port open."""
    t_us: int
    """Chip time of the snapshot, in microseconds since the emulator started."""


class AvrSim:
    """One emulated controller board, running until :meth:`close`.

    ``flash`` is the application image (``None`` leaves the flash erased, to be flashed
    through the bootloader); ``focus_start_steps`` is where the motor sits at power-up.
    Raises :class:`AvrSimError` if the emulator is missing or does not start.
    """

    def __init__(
        self,
        *,
        flash: Path | None,
        bootloader: Path = BOOTLOADER_HEX,
        focus_start_steps: int = 400,
        temperature_c: float = 25.0,
        binary: Path | None = None,
    ) -> None:
        binary = binary or firmware_paths().sim
        if not binary.exists():
            raise AvrSimError(f"{binary} does not exist; run make firmware")
        self._dir = tempfile.TemporaryDirectory(prefix="veriscope-avr-sim-")
        self.port = Path(self._dir.name) / "ttyVS0"
        """Symlink to the emulated UART's pty; opening it resets the chip."""
        args = [str(binary), "--bootloader", str(bootloader), "--pty-link", str(self.port)]
        args += ["--focus-start", str(focus_start_steps), "--temp-c", str(temperature_c)]
        if flash is not None:
            args += ["--flash", str(flash)]
        self._log = open(Path(self._dir.name) / "stderr.log", "w+b")  # noqa: SIM115 - closed in close()
        self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True)
        self._cond = threading.Condition()
        self.observations: list[Observation] = []
        """Everything the emulator reported, in order."""
        self._reader = threading.Thread(target=self._read, name="avr-sim-reader", daemon=True)
        self._reader.start()
        try:
            self.wait_for("ready", timeout_s=10)
        except AvrSimError:
            self.close()
            raise

    def __enter__(self) -> AvrSim:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the emulator and remove its pty link. Idempotent."""
        if self._proc.poll() is None:
            try:
                self._send("quit")
                self._proc.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        self._reader.join(timeout=2)
        if self._proc.stdin:
            self._proc.stdin.close()
        if self._proc.stdout:
            self._proc.stdout.close()
        self._log.close()
        self._dir.cleanup()

    @property
    def stderr(self) -> str:
        """What the emulator (and simavr) printed on stderr so far."""
        self._log.flush()
        return (
            (Path(self._dir.name) / "stderr.log").read_text(errors="replace") if Path(self._dir.name).exists() else ""
        )

    # -- observations -----------------------------------------------------------------

    def mark(self) -> int:
        """Index to pass as ``since`` to only see later observations."""
        with self._cond:
            return len(self.observations)

    def wait_for(
        self,
        kind: str,
        predicate: Callable[[Observation], bool] = lambda o: True,
        *,
        since: int = 0,
        timeout_s: float = 10.0,
    ) -> Observation:
        """The first observation of ``kind`` from index ``since`` on that satisfies ``predicate``.

        Raises :class:`AvrSimError` after ``timeout_s`` seconds, or if the emulator exits.
        """
        deadline = time.monotonic() + timeout_s
        with self._cond:
            index = since
            while True:
                while index < len(self.observations):
                    obs = self.observations[index]
                    index += 1
                    if obs.kind == kind and predicate(obs):
                        return obs
                if self._proc.poll() is not None and not self._reader.is_alive():
                    raise AvrSimError(f"the emulator exited with {self._proc.returncode}: {self.stderr[-2000:]}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    recent = "; ".join(f"{o.kind} {o.words}" for o in self.observations[-5:])
                    raise AvrSimError(f"no {kind!r} observation in {timeout_s} s (last: {recent})")
                self._cond.wait(remaining)

    def of_kind(self, kind: str, since: int = 0) -> list[Observation]:
        """All observations of ``kind`` from index ``since``."""
        with self._cond:
            return [o for o in self.observations[since:] if o.kind == kind]

    def state(self) -> PinState:
        """Ask the emulator for the whole picture now."""
        mark = self.mark()
        self._send("query")
        s = self.wait_for("state", since=mark, timeout_s=5)
        return PinState(
            led_duty_pct={c: s.as_float(c) for c in ("white", "raking", "uv")},
            focus_steps=s.as_int("pos"),
            step_count=s.as_int("steps"),
            home_switch_closed=bool(s.as_int("home")),
            button_down=bool(s.as_int("button")),
            temperature_c=s.as_float("temp_c"),
            resets=s.as_int("resets"),
            clients=s.as_int("clients"),
            t_us=s.t_us,
        )

    # -- the world around the chip ----------------------------------------------------

    def press_button(self) -> None:
        """Press the trigger button and hold it."""
        self._send("button press")

    def release_button(self) -> None:
        """Release the trigger button."""
        self._send("button release")

    def set_temperature(self, temperature_c: float) -> None:
        """Make the temperature sensor read ``temperature_c``."""
        self._send(f"temp {temperature_c:.2f}")

    def reset(self) -> None:
        """Pulse the reset pin (the bootloader runs first)."""
        self._send("reset")

    def unplug(self, off_ms: int) -> None:
        """Pull the USB cable for ``off_ms``: the pty goes away (clients see I/O errors), the chip loses power,
        then a new pty appears behind the same :attr:`port` link and the chip powers up."""
        self._send(f"unplug {off_ms}")

    def _send(self, line: str) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(line + "\n")
        self._proc.stdin.flush()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            parts = line.split()
            if not parts:
                continue
            obs = Observation(
                parts[0],
                dict(_WORD.findall(line)),
                frozenset(p for p in parts[1:] if "=" not in p),
            )
            with self._cond:
                self.observations.append(obs)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()
