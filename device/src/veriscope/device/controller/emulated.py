"""A pure-Python controller board that speaks protocol v1 byte for byte, for fast tests without simavr.

:class:`EmulatedBoard` models the firmware (frames, sequence memory, console, host-silence
timeout, over-temperature, watchdog) and the hardware around it (LED outputs, a focus motor
with a homing switch, a temperature sensor, a trigger button) on the wall clock. The host
reaches it through :meth:`EmulatedBoard.open`, which returns a pyserial-like port, so the
real driver runs unchanged against it::

    board = EmulatedBoard()
    ctl = SerialController(opener=board.open)

or through a pseudo-terminal from :meth:`EmulatedBoard.serve_pty`, for tools that want a
device path.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import time
import tty

import serial

from veriscope.device.controller import _protocol as proto

FIRMWARE_VERSION = (1, 0, 0)
"""Firmware version the emulation reports."""

_CHANNEL_NAMES = ("white", "raking", "uv")
_REASON_NAMES = ("reached", "homed", "stopped", "home_failed")
_MOTION_NAMES = ("idle", "moving", "homing")
_WATCHDOG_S = 0.25
"""Watchdog period: the interrupt after one period, the reset after two."""


class EmulatedPort:
    """The host's end of the emulated board's serial port; the subset of :class:`serial.Serial` the driver uses.

    Reads and writes raise :class:`serial.SerialException` once the board is unplugged or
    the port is closed, as pyserial does for a vanished device.
    """

    def __init__(self, board: EmulatedBoard, timeout: float | None) -> None:
        self._board = board
        self.timeout = timeout
        """Read timeout in seconds (``None`` blocks)."""
        self._rx = bytearray()
        self._open = True
        self._unplugged = False

    @property
    def is_open(self) -> bool:
        """Whether the port can still be used."""
        return self._open and not self._unplugged

    @property
    def in_waiting(self) -> int:
        """Bytes ready to read."""
        self._check()
        return len(self._rx)

    def read(self, size: int = 1) -> bytes:
        """Up to ``size`` bytes, waiting at most :attr:`timeout` for the first."""
        cond = self._board._cond
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        with cond:
            while not self._rx:
                self._check()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return b""
                cond.wait(remaining)
            data = bytes(self._rx[:size])
            del self._rx[:size]
            return data

    def write(self, data: bytes) -> int:
        """Send ``data`` to the board."""
        with self._board._cond:
            self._check()
            self._board._receive(bytes(data))
        return len(data)

    def reset_input_buffer(self) -> None:
        """Discard received bytes not yet read."""
        with self._board._cond:
            self._check()
            self._rx.clear()

    def close(self) -> None:
        """Close the port; the board keeps running."""
        with self._board._cond:
            self._open = False
            if self._board._port is self:
                self._board._port = None
            self._board._cond.notify_all()

    def _check(self) -> None:
        if self._unplugged:
            raise serial.SerialException("device reports readiness to read but returned no data (device disconnected?)")
        if not self._open:
            raise serial.PortNotOpenError()


class EmulatedBoard:
    """The controller board, emulated in Python on the wall clock.

    ``focus_start_steps`` is where the motor physically sits at power-up (the switch
    closes at 0 or below). ``bootloader_s`` emulates the bootloader's wait after a reset:
    bytes arriving then end it early, as with the real bootloader. ``reset_on_open``
    resets the board whenever :meth:`open` is called, as DTR does.
    ``protocol_version`` lets a test present a board of another version.
    """

    def __init__(
        self,
        *,
        protocol_version: int = proto.PROTOCOL_VERSION,
        firmware_version: tuple[int, int, int] = FIRMWARE_VERSION,
        build_id: str = "emulated",
        focus_start_steps: int = 400,
        temperature_c: float = 25.0,
        step_rate_sps: int = proto.STEP_RATE_SPS,
        bootloader_s: float = 0.0,
        reset_on_open: bool = True,
    ) -> None:
        self._cond = threading.Condition()
        self.protocol_version = protocol_version
        self.firmware_version = firmware_version
        self.build_id = build_id
        self.step_rate_sps = step_rate_sps
        self.bootloader_s = bootloader_s
        self.reset_on_open = reset_on_open
        self._temperature_cc = round(temperature_c * 100)
        self._button_down = False
        self._physical_steps = focus_start_steps
        self.boots = 0
        """How many times the firmware has started."""
        self.step_count = 0
        """Step pulses issued since power-up, both directions."""
        self._port: EmulatedPort | None = None
        self._pty_master: int | None = None
        self._closed = False
        self._reset_state(proto.ResetCause.POWER_OR_EXTERNAL, now=time.monotonic(), bootloader=False)
        self._thread = threading.Thread(target=self._run, name="emulated-controller", daemon=True)
        self._thread.start()

    # -- host side --------------------------------------------------------------------

    def open(self, timeout: float | None = 0.02) -> EmulatedPort:
        """Open the board's port as a host would; resets the board if :attr:`reset_on_open`."""
        with self._cond:
            if self._port is not None:
                self._port.close()
            port = EmulatedPort(self, timeout)
            self._port = port
            if self.reset_on_open:
                self._reset_state(proto.ResetCause.POWER_OR_EXTERNAL, now=time.monotonic(), bootloader=True)
            self._cond.notify_all()
            return port

    def serve_pty(self) -> str:
        """Expose the board on a new pseudo-terminal and return its device path.

        The pty does not reset the board when opened (a pty cannot report that).
        """
        master, slave = os.openpty()
        tty.setraw(slave)
        path = os.ttyname(slave)
        with self._cond:
            self._pty_master = master
        self._pty_slave = slave  # held open so the master never reads EIO between host sessions
        threading.Thread(target=self._pty_pump, args=(master,), name="emulated-controller-pty", daemon=True).start()
        return path

    def unplug(self) -> None:
        """Pull the USB cable: the open port fails, and the board powers down until the next :meth:`open`."""
        with self._cond:
            if self._port is not None:
                self._port._unplugged = True
                self._port = None
            self._reset_state(proto.ResetCause.POWER_OR_EXTERNAL, now=time.monotonic(), bootloader=False)
            self._cond.notify_all()

    def close(self) -> None:
        """Stop the emulation thread and any pty."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=1.0)
        if self._pty_master is not None:
            with contextlib.suppress(OSError):
                os.close(self._pty_slave)
            with contextlib.suppress(OSError):
                os.close(self._pty_master)
            self._pty_master = None

    # -- physical world ---------------------------------------------------------------

    @property
    def led_duty_pct(self) -> dict[str, int]:
        """Duty now driven on each LED output, by channel name (white, raking, uv)."""
        with self._cond:
            return dict(zip(_CHANNEL_NAMES, self._leds, strict=True))

    @property
    def physical_focus_steps(self) -> int:
        """Where the motor really is, in steps from the homing switch."""
        with self._cond:
            self._advance(time.monotonic())
            return self._physical_steps

    @property
    def temperature_c(self) -> float:
        """Board temperature the sensor reads, in degrees Celsius."""
        return self._temperature_cc / 100

    @temperature_c.setter
    def temperature_c(self, value: float) -> None:
        with self._cond:
            self._temperature_cc = round(value * 100)
            self._cond.notify_all()

    def press_button(self) -> None:
        """Press the trigger button (and keep it held)."""
        self._set_button(True)

    def release_button(self) -> None:
        """Release the trigger button."""
        self._set_button(False)

    def inject(self, data: bytes) -> None:
        """Deliver line noise to the board, as if it came from the host."""
        with self._cond:
            self._receive(data)

    # -- firmware model ---------------------------------------------------------------

    def _reset_state(self, cause: int, *, now: float, bootloader: bool) -> None:
        self._leds = [0, 0, 0]
        self._pos = 0
        self._target = 0
        self._motion: int = proto.Motion.IDLE
        self._move_t0 = now
        self._move_from = 0
        self._home_phys_from = 0
        self._homed = False
        self._host_timeout_ms = proto.HOST_TIMEOUT_DEFAULT_MS
        self._last_host = now
        self._host_silent = False
        self._over_temp = False
        self._event_seq = 0
        self._last_req: tuple[int, int] | None = None
        self._last_reply = b""
        self._console_mode = False
        self._line = bytearray()
        self._line_poisoned = False
        self._parser = proto.FrameParser(on_text=self._console_bytes, on_reject=self._poison_line)
        self._last_rx = now
        self._boot_t = now
        self._reset_cause = cause
        self._hang_t: float | None = None
        self._reboot_at: tuple[float, int] | None = None
        self._booting_until: float | None = now + self.bootloader_s if bootloader and self.bootloader_s > 0 else None
        self._pending_rx = bytearray()
        if self._booting_until is None:
            self._start_firmware()

    def _start_firmware(self) -> None:
        self.boots += 1
        cause = self._reset_cause
        self._send_text(
            f"veriscope-controller {'.'.join(map(str, self.firmware_version))} protocol {self.protocol_version} "
            f"build {self.build_id} reset={cause}; type help"
        )
        self._send_event(proto.BootEvent(self.protocol_version, self.firmware_version, cause))

    def _receive(self, data: bytes) -> None:
        self._pending_rx += data
        self._cond.notify_all()

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                self._service(now)
                self._cond.wait(self._next_wakeup(now))

    def _next_wakeup(self, now: float) -> float:
        if self._motion != proto.Motion.IDLE or self._parser.pending or self._hang_t or self._reboot_at:
            return 0.005
        if self._booting_until is not None:
            return max(0.001, self._booting_until - now)
        if any(self._leds):
            return max(0.005, self._last_host + self._host_timeout_ms / 1000 - now)
        return 0.25

    def _service(self, now: float) -> None:
        if self._reboot_at is not None and now >= self._reboot_at[0]:
            self._reset_state(self._reboot_at[1], now=now, bootloader=False)
        if self._booting_until is not None:
            if self._pending_rx:
                # The bootloader gives up on a byte that is not an STK500 command.
                self._pending_rx.clear()
                self._booting_until = min(self._booting_until, now + 0.016)
            if now < self._booting_until:
                return
            self._booting_until = None
            self._start_firmware()
        if self._hang_t is not None:
            self._pending_rx.clear()
            if now - self._hang_t >= _WATCHDOG_S:
                self._leds = [0, 0, 0]  # the watchdog interrupt makes the outputs safe before the reset
            if now - self._hang_t >= 2 * _WATCHDOG_S:
                self._reset_state(proto.ResetCause.WATCHDOG, now=now, bootloader=False)
            return
        if self._pending_rx:
            data = bytes(self._pending_rx)
            self._pending_rx.clear()
            self._last_rx = now
            for frame in self._parser.feed(data):
                self._handle_frame(frame, now)
        elif self._parser.pending and now - self._last_rx > proto.FRAME_TIMEOUT_S:
            for frame in self._parser.expire():
                self._handle_frame(frame, now)
        self._advance(now)
        if any(self._leds) and now - self._last_host > self._host_timeout_ms / 1000:
            self._leds = [0, 0, 0]
            self._host_silent = True
            self._send_event(proto.HostSilentEvent(self._host_timeout_ms))
        if not self._over_temp and self._temperature_cc >= proto.OVER_TEMP_CC:
            self._over_temp = True
            self._leds = [0, 0, 0]
            self._send_event(proto.OverTempEvent(True, self._temperature_cc))
        elif self._over_temp and self._temperature_cc < proto.OVER_TEMP_CLEAR_CC:
            self._over_temp = False
            self._send_event(proto.OverTempEvent(False, self._temperature_cc))

    def _advance(self, now: float) -> None:
        """Step the motor up to ``now``."""
        if self._motion == proto.Motion.IDLE:
            return
        due = int((now - self._move_t0) * self.step_rate_sps)
        if self._motion == proto.Motion.MOVING:
            distance = self._target - self._move_from
            done = min(due, abs(distance))
            step = 1 if distance >= 0 else -1
            new_pos = self._move_from + step * done
            self._step_to(new_pos)
            if new_pos == self._target:
                self._finish_move(proto.MoveReason.REACHED)
            return
        # Homing: backwards until the switch closes, which happens at physical position 0.
        done = min(due, proto.HOME_MAX_STEPS, max(0, self._home_phys_from))
        self._step_to(self._move_from - done)
        if self._physical_steps <= 0:
            self._pos = 0
            self._homed = True
            self._finish_move(proto.MoveReason.HOMED)
        elif done >= proto.HOME_MAX_STEPS:
            self._finish_move(proto.MoveReason.HOME_FAILED)

    def _step_to(self, new_pos: int) -> None:
        delta = new_pos - self._pos
        self._pos = new_pos
        self._physical_steps += delta
        self.step_count += abs(delta)

    def _finish_move(self, reason: int) -> None:
        self._motion = proto.Motion.IDLE
        self._target = self._pos
        self._send_event(proto.MoveDoneEvent(self._pos, reason))

    def _start_motion(self, motion: int, target: int, now: float) -> None:
        self._advance(now)
        self._motion = motion
        self._target = target
        self._move_from = self._pos
        self._home_phys_from = self._physical_steps
        self._move_t0 = now
        if motion == proto.Motion.MOVING and target == self._pos:
            self._finish_move(proto.MoveReason.REACHED)

    def _set_button(self, down: bool) -> None:
        with self._cond:
            if down != self._button_down:
                self._button_down = down
                if self._booting_until is None and self._hang_t is None:
                    self._send_event(proto.ButtonEvent(down))

    # -- requests ---------------------------------------------------------------------

    def _handle_frame(self, frame: proto.Frame, now: float) -> None:
        self._host_contact(now)
        self._console_mode = False
        if frame.op == proto.Op.HELLO:
            self._last_req = None
        elif self._last_req == (frame.seq, frame.op):
            self._send_frame(frame.seq, frame.op | proto.RESPONSE_BIT, self._last_reply)
            return
        reply = self._execute(frame.op, frame.payload, now)
        self._last_req = (frame.seq, frame.op)
        self._last_reply = reply
        self._send_frame(frame.seq, frame.op | proto.RESPONSE_BIT, reply)
        self._after_reply(frame.op, frame.payload, reply, now)

    def _host_contact(self, now: float) -> None:
        self._last_host = now
        self._host_silent = False

    def _execute(self, op: int, p: bytes, now: float) -> bytes:
        S = proto.Status

        def status(code: int) -> bytes:
            return bytes((code,))

        if op == proto.Op.HELLO:
            if len(p) != 1:
                return status(S.BAD_LENGTH)
            return proto.Hello(
                self.protocol_version,
                proto.Board.EMULATED,
                self.firmware_version,
                proto.CAP_LEDS | proto.CAP_FOCUS | proto.CAP_TEMP | proto.CAP_BUTTON | proto.CAP_CONSOLE,
                proto.PAYLOAD_MAX,
                self.build_id,
            ).encode()
        if op == proto.Op.PING:
            return status(S.OK) + p if len(p) < proto.PAYLOAD_MAX else status(S.BAD_LENGTH)
        if op in (proto.Op.GET_STATUS, proto.Op.GET_CONFIG, proto.Op.HOME_FOCUS, proto.Op.STOP_FOCUS) and p:
            return status(S.BAD_LENGTH)
        if op == proto.Op.GET_STATUS:
            self._advance(now)
            return self._status_block(now).encode()
        if op == proto.Op.GET_CONFIG:
            return proto.ConfigBlock(
                proto.FOCUS_MIN_STEPS,
                proto.FOCUS_MAX_STEPS,
                self.step_rate_sps,
                self._host_timeout_ms,
                proto.OVER_TEMP_CC,
                proto.OVER_TEMP_CLEAR_CC,
            ).encode()
        if op == proto.Op.SET_HOST_TIMEOUT:
            if len(p) != 2:
                return status(S.BAD_LENGTH)
            (ms,) = struct.unpack("<H", p)
            if not proto.HOST_TIMEOUT_MIN_MS <= ms <= proto.HOST_TIMEOUT_MAX_MS:
                return status(S.BAD_ARGUMENT)
            self._host_timeout_ms = ms
            return status(S.OK)
        if op == proto.Op.SET_LEDS:
            if len(p) != 4:
                return status(S.BAD_LENGTH)
            mask, duties = p[0], p[1:]
            if mask & ~0x07 or any(d > 100 for d in duties):
                return status(S.BAD_ARGUMENT)
            if self._over_temp and any(duties[i] for i in range(3) if mask & (1 << i)):
                return status(S.OVER_TEMP)
            for i in range(3):
                if mask & (1 << i):
                    self._leds[i] = duties[i]
            return status(S.OK) + bytes(self._leds)
        if op == proto.Op.MOVE_FOCUS:
            if len(p) != 4:
                return status(S.BAD_LENGTH)
            (target,) = struct.unpack("<i", p)
            check = self._move_check(target)
            if check != S.OK:
                return status(check)
            return status(S.OK)
        if op == proto.Op.HOME_FOCUS or op == proto.Op.STOP_FOCUS:
            return status(S.OK)
        if op == proto.Op.RESET:
            return status(S.OK) if p == proto.RESET_MAGIC else status(S.BAD_ARGUMENT)
        if op == proto.Op.DEBUG_HANG:
            return status(S.OK) if p == proto.HANG_MAGIC else status(S.BAD_ARGUMENT)
        return status(S.UNKNOWN_OP)

    def _move_check(self, target: int) -> int:
        if not proto.FOCUS_MIN_STEPS <= target <= proto.FOCUS_MAX_STEPS:
            return proto.Status.OUT_OF_RANGE
        if self._motion == proto.Motion.HOMING:
            return proto.Status.BUSY
        if not self._homed:
            return proto.Status.NOT_HOMED
        return proto.Status.OK

    def _after_reply(self, op: int, payload: bytes, reply: bytes, now: float) -> None:
        """Start what a request set in motion, once its reply is on the wire (MOVE_DONE after the reply)."""
        if reply[:1] != b"\x00":
            return
        if op == proto.Op.MOVE_FOCUS:
            (target,) = struct.unpack("<i", payload)
            self._start_motion(proto.Motion.MOVING, target, now)
        elif op == proto.Op.HOME_FOCUS:
            self._start_motion(proto.Motion.HOMING, 0, now)
        elif op == proto.Op.STOP_FOCUS:
            self._advance(now)
            if self._motion != proto.Motion.IDLE:
                self._finish_move(proto.MoveReason.STOPPED)
        elif op == proto.Op.RESET:
            self._reboot_at = (now + 0.02, proto.ResetCause.SOFTWARE)
        elif op == proto.Op.DEBUG_HANG:
            self._hang_t = now

    def _status_block(self, now: float) -> proto.StatusBlock:
        flags = (
            (proto.FLAG_HOMED if self._homed else 0)
            | (proto.FLAG_OVER_TEMP if self._over_temp else 0)
            | (proto.FLAG_HOST_SILENT if self._host_silent else 0)
            | (proto.FLAG_BUTTON if self._button_down else 0)
            | (proto.FLAG_HOME_SWITCH if self._physical_steps <= 0 else 0)
        )
        return proto.StatusBlock(
            (self._leds[0], self._leds[1], self._leds[2]),
            self._pos,
            self._target,
            self._motion,
            flags,
            self._temperature_cc,
            int((now - self._boot_t) * 1000),
            self._reset_cause,
            self._parser.crc_errors,
            self._parser.timeouts,
        )

    # -- output -----------------------------------------------------------------------

    def _send_frame(self, seq: int, op: int, payload: bytes) -> None:
        self._emit(proto.encode(seq, op, payload))

    def _send_event(self, event: proto.BoardEvent) -> None:
        if self._console_mode:
            self._send_text("! " + _event_text(event))
        else:
            op, payload = proto.encode_event(event)
            self._send_frame(self._event_seq, op, payload)
        self._event_seq = (self._event_seq + 1) & 0xFF

    def _send_text(self, line: str) -> None:
        self._emit(line.encode("ascii") + b"\r\n")

    def _emit(self, data: bytes) -> None:
        if self._port is not None:
            self._port._rx += data
            self._cond.notify_all()
        if self._pty_master is not None:
            with contextlib.suppress(OSError):
                os.write(self._pty_master, data)

    def _pty_pump(self, master: int) -> None:
        while not self._closed:
            try:
                data = os.read(master, 256)
            except OSError:
                return
            if data:
                with self._cond:
                    self._receive(data)

    # -- console ----------------------------------------------------------------------

    def _poison_line(self) -> None:
        self._line_poisoned = True

    def _console_bytes(self, data: bytes) -> None:
        for b in data:
            if b in (0x0D, 0x0A):
                line, poisoned = bytes(self._line), self._line_poisoned
                self._line.clear()
                self._line_poisoned = False
                if line and not poisoned:
                    self._console_line(line.decode("ascii").strip(), time.monotonic())
            elif b in (0x08, 0x7F):
                if self._line:
                    del self._line[-1]
            elif 0x20 <= b < 0x7F and len(self._line) < 40:
                self._line.append(b)
            else:
                # A control byte, a non-ASCII byte or an overlong line: drop the whole line, as the firmware does.
                self._line_poisoned = True

    def _console_line(self, line: str, now: float) -> None:
        self._host_contact(now)
        self._console_mode = True
        self._send_text(self._console_command(line.split(), now))

    def _console_command(self, words: list[str], now: float) -> str:
        if not words:
            return "err UNKNOWN_OP try help"
        cmd, args = words[0].lower(), words[1:]
        if cmd == "help":
            return "ok commands: hello status led off home move stop timeout reset"
        if cmd == "hello":
            version = ".".join(map(str, self.firmware_version))
            return f"ok veriscope-controller {version} protocol {self.protocol_version} build {self.build_id}"
        if cmd == "status":
            self._advance(now)
            s = self._status_block(now)
            t = s.temperature_cc
            return (
                f"ok {_led_text(self._leds)} focus={s.focus_steps} target={s.target_steps} "
                f"motion={_MOTION_NAMES[s.motion]} homed={int(self._homed)} temp={_centi_text(t)} "
                f"flags=0x{s.flags:02x} uptime_ms={s.uptime_ms}"
            )
        if cmd == "led":
            if len(args) != 2 or args[0] not in _CHANNEL_NAMES or not args[1].isdigit() or int(args[1]) > 100:
                return "err BAD_ARGUMENT led <white|raking|uv> <0-100>"
            channel, duty = _CHANNEL_NAMES.index(args[0]), int(args[1])
            if duty and self._over_temp:
                return "err OVER_TEMP LEDs held off"
            self._leds[channel] = duty
            return "ok " + _led_text(self._leds)
        if cmd == "off":
            self._leds = [0, 0, 0]
            return "ok " + _led_text(self._leds)
        if cmd == "home":
            if self._motion == proto.Motion.HOMING:
                return "err BUSY homing"
            self._start_motion(proto.Motion.HOMING, 0, now)
            return "ok homing"
        if cmd == "move":
            if len(args) != 1 or not args[0].lstrip("-").isdigit():
                return "err BAD_ARGUMENT move <steps>"
            target = int(args[0])
            check = self._move_check(target)
            if check == proto.Status.OUT_OF_RANGE:
                return f"err OUT_OF_RANGE limits {proto.FOCUS_MIN_STEPS}..{proto.FOCUS_MAX_STEPS}"
            if check != proto.Status.OK:
                return f"err {proto.status_name(check)}"
            self._start_motion(proto.Motion.MOVING, target, now)
            return f"ok moving to {target}"
        if cmd == "stop":
            self._advance(now)
            if self._motion != proto.Motion.IDLE:
                self._finish_move(proto.MoveReason.STOPPED)
            return "ok stopped"
        if cmd == "timeout":
            if (
                len(args) != 1
                or not args[0].isdigit()
                or not (proto.HOST_TIMEOUT_MIN_MS <= int(args[0]) <= proto.HOST_TIMEOUT_MAX_MS)
            ):
                return f"err BAD_ARGUMENT timeout <{proto.HOST_TIMEOUT_MIN_MS}-{proto.HOST_TIMEOUT_MAX_MS}>"
            self._host_timeout_ms = int(args[0])
            return f"ok timeout_ms={self._host_timeout_ms}"
        if cmd == "reset":
            self._reboot_at = (now + 0.02, proto.ResetCause.SOFTWARE)
            return "ok resetting"
        return "err UNKNOWN_OP try help"


def _led_text(leds: list[int]) -> str:
    return "led " + " ".join(f"{name}={duty}" for name, duty in zip(_CHANNEL_NAMES, leds, strict=True))


def _centi_text(value: int) -> str:
    sign = "-" if value < 0 else ""
    return f"{sign}{abs(value) // 100}.{abs(value) % 100:02d}"


def _event_text(event: proto.BoardEvent) -> str:
    if isinstance(event, proto.BootEvent):
        return f"boot reset={event.reset_cause}"
    if isinstance(event, proto.ButtonEvent):
        return "button " + ("pressed" if event.pressed else "released")
    if isinstance(event, proto.MoveDoneEvent):
        return f"move_done pos={event.position_steps} reason={_REASON_NAMES[event.reason]}"
    if isinstance(event, proto.OverTempEvent):
        return f"over_temp {'on' if event.active else 'off'} temp={_centi_text(event.temperature_cc)}"
    return f"host_silent timeout_ms={event.timeout_ms}"
