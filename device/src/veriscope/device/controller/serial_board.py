"""The serial driver for the controller board: a :class:`Controller` over protocol v1 and pyserial.

It finds the board by port or USB VID:PID, refuses a protocol version it does not speak,
bounds every call with a timeout, resends lost requests with backoff, keeps the board's
host-silence timer fed, and reconnects after an unplug or a board reset: it then puts back
the LED duties and, if the focus had been homed, homes it again and returns to the last
target, so a scan in progress can carry on.

Errors are :class:`veriscope.device.errors.ControllerError` (and
:class:`~veriscope.device.errors.InvalidArgument` for bad arguments); pyserial's exceptions
never escape.
"""

from __future__ import annotations

import errno
import logging
import struct
import threading
import time
from collections.abc import Callable, Mapping

import serial
import serial.tools.list_ports

from veriscope.device.controller import Controller, ControllerInfo, FocusRange
from veriscope.device.controller import _protocol as proto
from veriscope.device.controller._link import READ_SLICE_S, Link, LinkLost, ReplyTimeout, SerialPort
from veriscope.device.errors import ControllerError, InvalidArgument
from veriscope.device.types import Lighting

_log = logging.getLogger(__name__)

BAUDRATE = 115200
"""Line rate of the controller's UART."""

CHANNELS: tuple[Lighting, Lighting, Lighting] = (Lighting.WHITE_RING, Lighting.RAKING, Lighting.UV)
"""LED channels in wire order (mask bits 0x01, 0x02, 0x04)."""

_BOARD_KINDS: dict[int, str] = {proto.Board.ATMEGA328P: "atmega328p", proto.Board.EMULATED: "emulated"}


def find_port(usb_id: str) -> str:
    """The device path of the serial port whose USB VID:PID is ``usb_id`` (hex, e.g. ``"1a86:7523"``).

    Raises :class:`ControllerError` when ``usb_id`` is malformed or no port matches; when
    several match, the first in sort order is used.
    """
    try:
        vid_s, pid_s = usb_id.split(":")
        vid, pid = int(vid_s, 16), int(pid_s, 16)
    except ValueError:
        raise ControllerError(f"USB id {usb_id!r} is not VID:PID in hex, for example 1a86:7523") from None
    ports = sorted(serial.tools.list_ports.comports(), key=lambda p: p.device)
    matches: list[str] = [p.device for p in ports if p.vid == vid and p.pid == pid]
    if not matches:
        seen = ", ".join(f"{p.device} ({p.vid or 0:04x}:{p.pid or 0:04x})" for p in ports if p.vid is not None)
        raise ControllerError(
            f"no serial port with USB id {vid:04x}:{pid:04x}; USB serial ports present: {seen or 'none'}"
        )
    if len(matches) > 1:
        _log.warning("several ports match USB id %04x:%04x: %s; using %s", vid, pid, ", ".join(matches), matches[0])
    return str(matches[0])


def open_serial(path: str) -> serial.Serial:
    """Open ``path`` at 115200 8N1 for the driver, translating failures into :class:`ControllerError`."""
    try:
        return serial.Serial(port=path, baudrate=BAUDRATE, timeout=READ_SLICE_S, write_timeout=1.0, exclusive=True)
    except serial.SerialException as exc:
        code = getattr(exc, "errno", None)
        if code == errno.ENOENT:
            reason = "it does not exist (is the controller plugged in?)"
        elif code == errno.EACCES:
            reason = "permission denied (is the user in the dialout group?)"
        elif code in (errno.EBUSY, errno.EWOULDBLOCK):
            reason = "another program has it open"
        else:
            reason = str(exc)
        raise ControllerError(f"cannot open serial port {path}: {reason}") from exc


class SerialController(Controller):
    """The controller board on a serial port, speaking protocol version 1.

    Give either ``port`` (a device path such as ``/dev/ttyUSB0``) or ``usb_id`` (VID:PID in
    hex, looked up again on every reconnect since the path may change after an unplug).
    ``opener`` replaces pyserial, for the emulated board.

    Every call waits at most ``timeout_s`` per attempt and makes ``attempts`` attempts.
    Opening resets an Arduino-class board, so the handshake waits up to
    ``handshake_timeout_s`` for the firmware to answer HELLO. A lost port is reopened for
    up to ``reconnect_timeout_s``. Unless ``keepalive_s`` is ``None``, a background thread
    pings the board when it has been idle that long, which feeds the board's host-silence
    timer and notices an unplug early. ``on_event`` receives every decoded board event,
    on the reader thread.

    Raises :class:`ControllerError` when the board cannot be opened, does not answer, or
    speaks another protocol version.
    """

    def __init__(
        self,
        port: str | None = None,
        *,
        usb_id: str | None = None,
        opener: Callable[[], SerialPort] | None = None,
        timeout_s: float = 0.5,
        attempts: int = 3,
        handshake_timeout_s: float = 5.0,
        reconnect_timeout_s: float = 5.0,
        keepalive_s: float | None = 1.0,
        host_timeout_ms: int = proto.HOST_TIMEOUT_DEFAULT_MS,
        on_event: Callable[[proto.BoardEvent], None] | None = None,
    ) -> None:
        if opener is None and (port is None) == (usb_id is None):
            raise ControllerError("give exactly one of a serial port path or a USB VID:PID")
        if not proto.HOST_TIMEOUT_MIN_MS <= host_timeout_ms <= proto.HOST_TIMEOUT_MAX_MS:
            raise InvalidArgument(
                f"host_timeout_ms {host_timeout_ms} is outside {proto.HOST_TIMEOUT_MIN_MS}..{proto.HOST_TIMEOUT_MAX_MS}"
            )
        self._port_path = port
        self._usb_id = usb_id
        self._opener = opener
        self._name = port or (f"USB {usb_id}" if usb_id else "emulated port")
        self._timeout_s = timeout_s
        self._attempts = attempts
        self._handshake_timeout_s = handshake_timeout_s
        self._reconnect_timeout_s = reconnect_timeout_s
        self._host_timeout_ms = host_timeout_ms
        self._on_event = on_event

        self._conn_lock = threading.RLock()
        self._motion_lock = threading.Lock()
        self._link: Link | None = None
        self._board_reset = False
        self._info: ControllerInfo | None = None
        self._range: FocusRange | None = None
        self._step_rate_sps = proto.STEP_RATE_SPS

        # What the host asked for, put back after the board resets.
        self._wanted_duty: dict[int, int] = {}
        self._wanted_homed = False
        self._wanted_target: int | None = None

        self._move_cond = threading.Condition()
        self._move_done: proto.MoveDoneEvent | None = None
        self._boots = 0
        self.reconnects = 0
        """How many times the driver reopened the port or re-handshook after a board reset."""

        self._stop = threading.Event()
        self._paused = False
        self._last_ok = time.monotonic()
        with self._conn_lock:
            self._connect(deadline=time.monotonic() + self._handshake_timeout_s, restore=False)
        self._keepalive: threading.Thread | None = None
        if keepalive_s is not None:
            self._keepalive = threading.Thread(
                target=self._keepalive_loop, args=(keepalive_s,), name=f"controller-keepalive {self._name}", daemon=True
            )
            self._keepalive.start()

    # -- Controller -------------------------------------------------------------------

    @property
    def info(self) -> ControllerInfo:
        """Identity of the board, from its last HELLO."""
        assert self._info is not None
        return self._info

    @property
    def focus_range(self) -> FocusRange:
        """Soft limits of the focus motor, read from the board."""
        assert self._range is not None
        return self._range

    def set_leds(self, duty_pct: Mapping[Lighting, int]) -> None:
        """Set the duty (0..100 %) of the listed channels; others keep theirs.

        Raises :class:`InvalidArgument` for a duty outside 0..100 and :class:`ControllerError`
        if the board refuses (over temperature) or does not answer.
        """
        mask = 0
        duties = [0, 0, 0]
        for channel, duty in duty_pct.items():
            if channel is Lighting.OFF:
                continue
            if not isinstance(duty, int) or not 0 <= duty <= 100:
                raise InvalidArgument(f"LED duty for {channel.value} must be an integer 0..100, got {duty!r}")
            index = CHANNELS.index(channel)
            mask |= 1 << index
            duties[index] = duty
        if not mask:
            return
        self._call(proto.Op.SET_LEDS, bytes((mask, *duties)))
        with self._conn_lock:
            for index in range(proto.LED_COUNT):
                if mask & (1 << index):
                    self._wanted_duty[index] = duties[index]

    def leds(self) -> dict[Lighting, int]:
        """Duty of every channel as the board reports it, in percent."""
        status = self.status()
        return dict(zip(CHANNELS, status.led_duty_pct, strict=True))

    def move_focus(self, target_steps: int) -> int:
        """Move the focus motor to ``target_steps`` and wait until it stops; return the position reached.

        Homes first if the board has not been homed since it started. Raises
        :class:`InvalidArgument` outside :attr:`focus_range` and :class:`ControllerError` if
        the motor does not get there in time.
        """
        limits = self.focus_range
        if not isinstance(target_steps, int) or not limits.min_steps <= target_steps <= limits.max_steps:
            raise InvalidArgument(
                f"focus target {target_steps!r} is outside the soft limits {limits.min_steps}..{limits.max_steps} steps"
            )
        with self._motion_lock:
            self._wanted_target = target_steps
            for _ in range(3):
                done = self._move_once(target_steps)
                if done is not None:
                    return done
            raise ControllerError(f"focus move to {target_steps} steps did not complete: the board kept resetting")

    def focus_position(self) -> int:
        """Current focus position as the board counts it, in steps from home."""
        return self.status().focus_steps

    def home_focus(self) -> None:
        """Drive the focus motor to its homing switch and zero the position.

        Raises :class:`ControllerError` if the switch is not found.
        """
        with self._motion_lock:
            for _ in range(3):
                if self._home_once():
                    self._wanted_homed = True
                    return
            raise ControllerError("focus homing did not complete: the board kept resetting")

    def temperature_c(self) -> float:
        """Board temperature in degrees Celsius."""
        return self.status().temperature_cc / 100.0

    def close(self) -> None:
        """Stop the keepalive thread and close the port. Idempotent."""
        self._stop.set()
        if self._keepalive is not None and self._keepalive is not threading.current_thread():
            self._keepalive.join(timeout=2.0)
        with self._conn_lock:
            if self._link is not None:
                self._link.close()
                self._link = None

    def __enter__(self) -> SerialController:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- extras -----------------------------------------------------------------------

    def status(self) -> proto.StatusBlock:
        """The board's full status block (LEDs, focus, flags, temperature, counters)."""
        return proto.StatusBlock.decode(self._call(proto.Op.GET_STATUS))

    def ping(self, payload: bytes = b"") -> None:
        """One PING round trip; raises :class:`ControllerError` if the echo differs."""
        reply = self._call(proto.Op.PING, payload)
        if reply[1:] != payload:
            raise ControllerError(f"PING echo from {self._name} differs from what was sent")

    def set_host_timeout(self, timeout_ms: int) -> None:
        """Set the board's host-silence timeout, in ms (100..60000); kept across reconnects."""
        if not proto.HOST_TIMEOUT_MIN_MS <= timeout_ms <= proto.HOST_TIMEOUT_MAX_MS:
            raise InvalidArgument(
                f"host timeout {timeout_ms} ms is outside {proto.HOST_TIMEOUT_MIN_MS}..{proto.HOST_TIMEOUT_MAX_MS}"
            )
        self._call(proto.Op.SET_HOST_TIMEOUT, struct.pack("<H", timeout_ms))
        self._host_timeout_ms = timeout_ms

    def send_raw(self, op: int, payload: bytes = b"") -> bytes:
        """Send any request and return its response payload, status byte first (maintenance and tests)."""
        return self._call(op, payload, check=False)

    # -- firmware maintenance ---------------------------------------------------------

    @property
    def port_path(self) -> str | None:
        """The device path of the board's serial port, looked up by USB id when configured so; None for a board
        behind an ``opener`` (the in-process emulated board), which no flash tool can open.

        Raises :class:`ControllerError` when the USB id matches no port.
        """
        if self._opener is not None:
            return None
        return self._port_path if self._port_path is not None else find_port(self._usb_id or "")

    @property
    def paused(self) -> bool:
        """True between :meth:`pause` and a successful :meth:`resume` or :meth:`unpause`."""
        return self._paused

    def pause(self) -> None:
        """Close the port and keep it closed, so that the bootloader's flash tool may open it. Idempotent.

        Until :meth:`resume` or :meth:`unpause`, every call raises :class:`ControllerError` at once and the
        keepalive stays quiet. A call in progress finishes first (the connection lock is taken).
        """
        with self._conn_lock:
            self._paused = True
            if self._link is not None:
                self._link.close()
                self._link = None
        _log.info("controller on %s paused; the port is free", self._name)

    def resume(self, handshake_timeout_s: float | None = None) -> ControllerInfo:
        """Reopen the port after :meth:`pause`, handshake and put back the host's LEDs and focus.

        Args:
            handshake_timeout_s: How long the board may take to answer HELLO, in seconds; the driver's
                ``handshake_timeout_s`` by default.

        Returns:
            The board's identity from its new HELLO.

        Raises:
            ControllerError: The board does not answer, speaks another protocol version, or restoring failed;
                the driver then stays paused and the port closed.
        """
        timeout_s = self._handshake_timeout_s if handshake_timeout_s is None else handshake_timeout_s
        with self._conn_lock:
            try:
                self._connect(deadline=time.monotonic() + timeout_s, restore=True)
            except BaseException:
                if self._link is not None:
                    self._link.close()
                    self._link = None
                raise
            self._paused = False
            return self.info

    def unpause(self) -> None:
        """End a pause without connecting: the next call reconnects, as after an unplug."""
        with self._conn_lock:
            self._paused = False

    # -- connection -------------------------------------------------------------------

    def _open_port(self) -> tuple[SerialPort, str]:
        if self._opener is not None:
            return self._opener(), self._name
        path = self._port_path if self._port_path is not None else find_port(self._usb_id or "")
        return open_serial(path), path

    def _connect(self, deadline: float, restore: bool) -> None:
        """Open the port, handshake, read the configuration and, if ``restore``, put back the host's state."""
        if self._link is not None:
            self._link.close()
            self._link = None
        port, name = self._open_port()
        try:
            port.reset_input_buffer()
        except Exception as exc:  # the port died between open and flush
            raise ControllerError(f"serial port {name} failed right after opening: {exc}") from exc
        link = Link(port, name, self._handle_event)
        try:
            hello = self._handshake(link, deadline)
            self._board_reset = False
            config = proto.ConfigBlock.decode(self._checked(link, proto.Op.GET_CONFIG))
            self._checked(link, proto.Op.SET_HOST_TIMEOUT, struct.pack("<H", self._host_timeout_ms))
        except BaseException:
            link.close()
            raise
        self._link = link
        self._info = ControllerInfo(
            kind=_BOARD_KINDS.get(hello.board, f"board-{hello.board}"),
            firmware_version=".".join(str(v) for v in hello.firmware_version),
            protocol_version=hello.protocol_version,
            build_id=hello.build_id,
        )
        self._range = FocusRange(config.focus_min_steps, config.focus_max_steps)
        self._step_rate_sps = max(1, config.step_rate_sps)
        self._last_ok = time.monotonic()
        if restore:
            self._restore(link)

    def _handshake(self, link: Link, deadline: float) -> proto.Hello:
        interval = 0.05
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ControllerError(
                    f"handshake timeout: no HELLO reply from {link.name} within {self._handshake_timeout_s:.1f} s; "
                    "is this the Veriscope controller, with its firmware flashed?"
                )
            try:
                reply = link.request(
                    proto.Op.HELLO, bytes((proto.PROTOCOL_VERSION,)), timeout_s=min(interval, remaining), attempts=1
                )
            except ReplyTimeout:
                interval = min(interval * 2, 0.4)
                continue
            try:
                hello = proto.Hello.decode(reply)
            except ValueError as exc:
                raise ControllerError(f"malformed HELLO reply from {link.name}: {exc}") from exc
            if hello.protocol_version != proto.PROTOCOL_VERSION:
                raise ControllerError(
                    f"protocol version mismatch: the board on {link.name} speaks version {hello.protocol_version}, "
                    f"this driver speaks version {proto.PROTOCOL_VERSION}; update the firmware or the software"
                )
            return hello

    def _restore(self, link: Link) -> None:
        """Put back what the host had set before the board reset."""
        self.reconnects += 1
        _log.info("controller on %s was reset or reconnected; restoring LEDs and focus", link.name)
        if any(self._wanted_duty.values()):
            duties = [self._wanted_duty.get(i, 0) for i in range(proto.LED_COUNT)]
            self._checked(link, proto.Op.SET_LEDS, bytes((0x07, *duties)))
        if self._wanted_homed:
            self._clear_move_done()
            self._checked(link, proto.Op.HOME_FOCUS)
            done = self._await_move(link, homing=True)
            if done is None or done.reason != proto.MoveReason.HOMED:
                raise ControllerError(f"re-homing the focus after a reset of the board on {link.name} failed")
            if self._wanted_target is not None:
                self._clear_move_done()
                self._checked(link, proto.Op.MOVE_FOCUS, struct.pack("<i", self._wanted_target))
                self._await_move(link)

    def _ensure_link(self) -> Link:
        """The live link, reconnecting (with backoff) and restoring state if the port or board was lost."""
        with self._conn_lock:
            if self._stop.is_set():
                raise ControllerError(f"the controller on {self._name} is closed")
            if self._paused:
                raise ControllerError(
                    f"the controller on {self._name} is paused while its firmware is flashed; retry when the "
                    "update ends"
                )
            link = self._link
            if link is not None and link.alive and not self._board_reset:
                return link
            if link is not None and link.alive and self._board_reset:
                # The port is fine but the board restarted under us: handshake again on the same link.
                self._board_reset = False
                self._handshake(link, time.monotonic() + self._handshake_timeout_s)
                self._checked(link, proto.Op.SET_HOST_TIMEOUT, struct.pack("<H", self._host_timeout_ms))
                self._restore(link)
                return link
            deadline = time.monotonic() + self._reconnect_timeout_s
            delay = 0.05
            while True:
                try:
                    self._connect(deadline=max(deadline, time.monotonic() + self._handshake_timeout_s), restore=True)
                    assert self._link is not None
                    return self._link
                except ControllerError as exc:
                    if time.monotonic() + delay > deadline or self._stop.is_set():
                        raise ControllerError(
                            f"lost the controller on {self._name} and could not get it back within "
                            f"{self._reconnect_timeout_s:.1f} s: {exc}"
                        ) from exc
                    _log.info("reconnecting to %s failed (%s); retrying in %.2f s", self._name, exc, delay)
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)

    def _call(self, op: int, payload: bytes = b"", *, check: bool = True, timeout_s: float | None = None) -> bytes:
        """One request with reconnect: at most one reconnect per call, then the error stands."""
        for attempt in range(2):
            with self._conn_lock:
                link = self._ensure_link()
                try:
                    reply = link.request(op, payload, timeout_s=timeout_s or self._timeout_s, attempts=self._attempts)
                except LinkLost:
                    if attempt:
                        raise
                    continue
                except ReplyTimeout:
                    # A board that stopped answering is treated like an unplugged one, once.
                    if attempt:
                        raise
                    link.close()
                    continue
            self._last_ok = time.monotonic()
            if check:
                self._check_status(op, reply)
            return reply
        raise AssertionError("unreachable")

    def _checked(self, link: Link, op: int, payload: bytes = b"") -> bytes:
        reply = link.request(op, payload, timeout_s=self._timeout_s, attempts=self._attempts)
        self._check_status(op, reply)
        return reply

    def _check_status(self, op: int, reply: bytes) -> None:
        if not reply:
            raise ControllerError(f"empty reply to {proto.op_name(op)} from {self._name}")
        code = reply[0]
        if code == proto.Status.OK:
            return
        name = proto.op_name(op)
        if code in (proto.Status.BAD_ARGUMENT, proto.Status.OUT_OF_RANGE, proto.Status.BAD_LENGTH):
            raise InvalidArgument(f"the controller refused {name}: {proto.status_name(code)}")
        if code == proto.Status.OVER_TEMP:
            raise ControllerError(f"the controller refused {name}: the board is over temperature, LEDs are held off")
        raise _StatusError(code, f"the controller refused {name}: {proto.status_name(code)}")

    # -- motion -----------------------------------------------------------------------

    def _move_once(self, target: int) -> int | None:
        """One MOVE_FOCUS and its wait; ``None`` when it must be tried again (homed first, or board reset)."""
        self._clear_move_done()
        boots = self._boots
        try:
            self._call(proto.Op.MOVE_FOCUS, struct.pack("<i", target))
        except _StatusError as exc:
            if exc.status == proto.Status.NOT_HOMED:
                if self._home_once():
                    self._wanted_homed = True
                return None
            if exc.status == proto.Status.BUSY:
                self._await_move(None, homing=True, boots=self._boots)
                return None
            raise
        done = self._await_move(None, boots=boots)
        if done is None:
            return None
        if done.reason == proto.MoveReason.STOPPED:
            raise ControllerError(f"focus move to {target} steps was stopped at {done.position_steps}")
        return done.position_steps

    def _home_once(self) -> bool:
        """One HOME_FOCUS and its wait; ``False`` if the board reset meanwhile."""
        self._clear_move_done()
        boots = self._boots
        self._call(proto.Op.HOME_FOCUS)
        done = self._await_move(None, homing=True, boots=boots)
        if done is None:
            return False
        if done.reason == proto.MoveReason.HOME_FAILED:
            raise ControllerError(
                f"focus homing failed: the homing switch did not close within {proto.HOME_MAX_STEPS} steps"
            )
        return done.reason == proto.MoveReason.HOMED

    def _clear_move_done(self) -> None:
        with self._move_cond:
            self._move_done = None

    def _await_move(
        self, link: Link | None, *, homing: bool = False, boots: int | None = None
    ) -> proto.MoveDoneEvent | None:
        """Wait for MOVE_DONE; ``None`` if the board reset meanwhile (the caller tries again).

        The wait is bounded by the longest possible travel (a full homing run) plus 2 s.
        A lost event is covered by polling the status every 0.25 s. ``link`` is given while
        restoring, when the connection lock is held and the link is not yet public.
        """
        deadline = time.monotonic() + proto.HOME_MAX_STEPS / self._step_rate_sps + 2.0
        while True:
            with self._move_cond:
                if self._move_done is None:
                    self._move_cond.wait(min(0.25, max(0.0, deadline - time.monotonic())))
                done = self._move_done
            if boots is not None and self._boots != boots:
                return None
            if done is not None:
                return done
            reply = self._checked(link, proto.Op.GET_STATUS) if link is not None else self._call(proto.Op.GET_STATUS)
            status = proto.StatusBlock.decode(reply)
            if boots is not None and self._boots != boots:
                return None
            if status.motion == proto.Motion.IDLE:
                with self._move_cond:
                    if self._move_done is not None:
                        return self._move_done
                if not homing:
                    return proto.MoveDoneEvent(status.focus_steps, proto.MoveReason.REACHED)
                homed = bool(status.flags & proto.FLAG_HOMED)
                return proto.MoveDoneEvent(
                    status.focus_steps, proto.MoveReason.HOMED if homed else proto.MoveReason.HOME_FAILED
                )
            if time.monotonic() > deadline:
                raise ControllerError(
                    f"the focus motor on {self._name} did not stop in time (still at {status.focus_steps})"
                )

    # -- events and keepalive ---------------------------------------------------------

    def _handle_event(self, frame: proto.Frame) -> None:
        event = proto.decode_event(frame)
        if event is None:
            return
        if isinstance(event, proto.BootEvent):
            self._boots += 1
            self._board_reset = True
            with self._move_cond:
                self._move_cond.notify_all()
        elif isinstance(event, proto.MoveDoneEvent):
            with self._move_cond:
                self._move_done = event
                self._move_cond.notify_all()
        elif isinstance(event, proto.HostSilentEvent | proto.OverTempEvent) and (
            isinstance(event, proto.HostSilentEvent) or event.active
        ):
            # The board switched the LEDs off for safety; do not switch them back on by ourselves.
            self._wanted_duty.clear()
        if self._on_event is not None:
            self._on_event(event)

    def _keepalive_loop(self, period_s: float) -> None:
        while not self._stop.wait(period_s / 4):
            if self._paused or time.monotonic() - self._last_ok < period_s:
                continue
            try:
                self._call(proto.Op.PING)
            except ControllerError as exc:
                if self._stop.is_set():
                    return
                _log.warning("keepalive to the controller on %s failed: %s", self._name, exc)
                self._last_ok = time.monotonic()  # back off one period before trying again


class _StatusError(ControllerError):
    """The board answered with a status the caller may handle (NOT_HOMED, BUSY...)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
