"""Codec for the controller's serial protocol, version 1: frames, the frame parser and payload layouts.

The wire format is specified in ``device/firmware/PROTOCOL.md`` and its constants in
``device/firmware/protocol.h``; this module mirrors both, and a test keeps them in step.
Nothing here does I/O: the driver, the emulated board and the tests all share it.
"""

from __future__ import annotations

import binascii
import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass

PROTOCOL_VERSION = 1
"""The protocol version this codec speaks."""

SOF = 0xA5
"""Start-of-frame byte; never printable, so console text cannot start a frame."""
PAYLOAD_MAX = 48
"""Largest payload, in bytes."""
FRAME_OVERHEAD = 6
"""SOF, LEN, SEQ, OP and two CRC bytes."""
FRAME_TIMEOUT_S = 0.050
"""A partial frame is dropped after this long without a new byte."""
RESPONSE_BIT = 0x80
"""A response carries its request's opcode with this bit set."""


class Op(enum.IntEnum):
    """Request opcodes, host to board."""

    HELLO = 0x01
    PING = 0x02
    GET_STATUS = 0x03
    GET_CONFIG = 0x04
    SET_HOST_TIMEOUT = 0x05
    SET_LEDS = 0x10
    MOVE_FOCUS = 0x20
    HOME_FOCUS = 0x21
    STOP_FOCUS = 0x22
    RESET = 0x30
    DEBUG_HANG = 0x31


class Event(enum.IntEnum):
    """Event opcodes, board to host, unsolicited."""

    BOOT = 0x40
    BUTTON = 0x41
    MOVE_DONE = 0x42
    OVER_TEMP = 0x43
    HOST_SILENT = 0x44


class Status(enum.IntEnum):
    """First payload byte of every response."""

    OK = 0
    UNKNOWN_OP = 1
    BAD_LENGTH = 2
    BAD_ARGUMENT = 3
    OUT_OF_RANGE = 4
    NOT_HOMED = 5
    BUSY = 6
    OVER_TEMP = 7


class MoveReason(enum.IntEnum):
    """Why the focus motor stopped, in MOVE_DONE."""

    REACHED = 0
    HOMED = 1
    STOPPED = 2
    HOME_FAILED = 3


class ResetCause(enum.IntEnum):
    """Why the board last reset, in BOOT and GET_STATUS."""

    POWER_OR_EXTERNAL = 0
    WATCHDOG = 1
    SOFTWARE = 2


class Motion(enum.IntEnum):
    """Focus motor state, in GET_STATUS."""

    IDLE = 0
    MOVING = 1
    HOMING = 2


class Board(enum.IntEnum):
    """Board kind, in HELLO."""

    ATMEGA328P = 1
    EMULATED = 127


LED_WHITE = 0x01
LED_RAKING = 0x02
LED_UV = 0x04
LED_COUNT = 3

FLAG_HOMED = 0x01
FLAG_OVER_TEMP = 0x02
FLAG_HOST_SILENT = 0x04
FLAG_BUTTON = 0x08
FLAG_HOME_SWITCH = 0x10

CAP_LEDS = 0x0001
CAP_FOCUS = 0x0002
CAP_TEMP = 0x0004
CAP_BUTTON = 0x0008
CAP_CONSOLE = 0x0010

FOCUS_MIN_STEPS = 0
FOCUS_MAX_STEPS = 12000
HOME_MAX_STEPS = 13000
STEP_RATE_SPS = 4000
HOST_TIMEOUT_DEFAULT_MS = 5000
HOST_TIMEOUT_MIN_MS = 100
HOST_TIMEOUT_MAX_MS = 60000
OVER_TEMP_CC = 7000
OVER_TEMP_CLEAR_CC = 6500

RESET_MAGIC = b"RST!"
HANG_MAGIC = b"HANG"


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) of ``data``."""
    return binascii.crc_hqx(data, 0xFFFF)


@dataclass(frozen=True)
class Frame:
    """One decoded frame: sequence number, opcode and payload."""

    seq: int
    op: int
    payload: bytes = b""

    @property
    def is_response(self) -> bool:
        """Whether this frame answers a request."""
        return bool(self.op & RESPONSE_BIT)

    @property
    def is_event(self) -> bool:
        """Whether this frame is an unsolicited event."""
        return self.op in _EVENT_OPS


_EVENT_OPS = frozenset(int(e) for e in Event)


def encode(seq: int, op: int, payload: bytes = b"") -> bytes:
    """Build the bytes of one frame.

    Raises ``ValueError`` when ``seq`` or ``op`` is not a byte or the payload is longer
    than :data:`PAYLOAD_MAX`.
    """
    if not 0 <= seq <= 0xFF or not 0 <= op <= 0xFF:
        raise ValueError(f"seq {seq} and op {op} must be bytes")
    if len(payload) > PAYLOAD_MAX:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {PAYLOAD_MAX}")
    body = bytes((len(payload), seq, op)) + payload
    return bytes((SOF,)) + body + struct.pack("<H", crc16(body))


class FrameParser:
    """Incremental frame parser that resynchronises after garbage, bad CRCs and partial frames.

    Feed it bytes as they arrive; it returns the complete frames. Bytes outside frames
    (console text, line noise) are counted in :attr:`junk_bytes` and handed to
    ``on_text`` if given. A rejected candidate drops only its SOF byte, so a real frame
    right behind a stray SOF is still found; ``on_reject`` is then called, so a console
    can discard the line that the broken frame's bytes would otherwise extend. Call
    :meth:`expire` when the line has been idle for :data:`FRAME_TIMEOUT_S` to drop a
    partial frame.
    """

    def __init__(
        self, on_text: Callable[[bytes], None] | None = None, on_reject: Callable[[], None] | None = None
    ) -> None:
        self._on_text = on_text
        self._on_reject = on_reject
        self._buf = bytearray()
        self.crc_errors = 0
        """Candidates rejected for a bad CRC or an impossible length."""
        self.timeouts = 0
        """Partial frames dropped by :meth:`expire`."""
        self.junk_bytes = 0
        """Bytes seen outside any frame."""

    @property
    def pending(self) -> int:
        """Bytes held as the start of a frame not yet complete."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        """Consume ``data`` and return the frames completed by it, in order."""
        self._buf += data
        frames: list[Frame] = []
        buf = self._buf
        while buf:
            if buf[0] != SOF:
                start = buf.find(SOF)
                skipped = len(buf) if start < 0 else start
                self.junk_bytes += skipped
                if self._on_text is not None:
                    self._on_text(bytes(buf[:skipped]))
                del buf[:skipped]
                continue
            if len(buf) < 2:
                break
            length = buf[1]
            if length > PAYLOAD_MAX:
                self._reject()
                continue
            total = length + FRAME_OVERHEAD
            if len(buf) < total:
                break
            body = bytes(buf[1 : 4 + length])
            (crc,) = struct.unpack_from("<H", buf, 4 + length)
            if crc != crc16(body):
                self._reject()
                continue
            frames.append(Frame(seq=body[1], op=body[2], payload=body[3:]))
            del buf[:total]
        return frames

    def expire(self) -> list[Frame]:
        """Drop a stalled partial frame and rescan what followed its SOF; return frames found."""
        if not self._buf:
            return []
        self.timeouts += 1
        del self._buf[:1]
        if self._on_reject is not None:
            self._on_reject()
        return self.feed(b"")

    def _reject(self) -> None:
        self.crc_errors += 1
        self.junk_bytes += 1
        del self._buf[:1]
        if self._on_reject is not None:
            self._on_reject()


@dataclass(frozen=True)
class Hello:
    """The HELLO reply: what the board is and which protocol it speaks."""

    protocol_version: int
    board: int
    firmware_version: tuple[int, int, int]
    capabilities: int
    payload_max: int
    build_id: str

    def encode(self) -> bytes:
        """Response payload, status byte included."""
        return (
            struct.pack(
                "<BBB3BHB",
                Status.OK,
                self.protocol_version,
                self.board,
                *self.firmware_version,
                self.capabilities,
                self.payload_max,
            )
            + self.build_id.encode("ascii")[:16]
        )

    @classmethod
    def decode(cls, payload: bytes) -> Hello:
        """Parse a HELLO response payload, status byte included. Raises ``ValueError`` if short."""
        if len(payload) < 9:
            raise ValueError(f"HELLO reply of {len(payload)} bytes is shorter than 9")
        _status, proto, board, major, minor, patch, caps, pmax = struct.unpack_from("<BBB3BHB", payload)
        build = payload[9:25].decode("ascii", errors="replace")
        return cls(proto, board, (major, minor, patch), caps, pmax, build)


@dataclass(frozen=True)
class StatusBlock:
    """The GET_STATUS reply."""

    led_duty_pct: tuple[int, int, int]
    """White ring, raking, UV."""
    focus_steps: int
    target_steps: int
    motion: int
    flags: int
    temperature_cc: int
    """Board temperature, hundredths of a degree Celsius."""
    uptime_ms: int
    reset_cause: int
    crc_errors: int
    frame_timeouts: int

    _FMT = "<B3BiiBBhIBHH"

    def encode(self) -> bytes:
        """Response payload, status byte included."""
        return struct.pack(
            self._FMT,
            Status.OK,
            *self.led_duty_pct,
            self.focus_steps,
            self.target_steps,
            self.motion,
            self.flags,
            self.temperature_cc,
            self.uptime_ms & 0xFFFFFFFF,
            self.reset_cause,
            self.crc_errors & 0xFFFF,
            self.frame_timeouts & 0xFFFF,
        )

    @classmethod
    def decode(cls, payload: bytes) -> StatusBlock:
        """Parse a GET_STATUS response payload, status byte included. Raises ``ValueError`` if short."""
        size = struct.calcsize(cls._FMT)
        if len(payload) < size:
            raise ValueError(f"GET_STATUS reply of {len(payload)} bytes is shorter than {size}")
        f = struct.unpack_from(cls._FMT, payload)
        return cls((f[1], f[2], f[3]), f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11], f[12])


@dataclass(frozen=True)
class ConfigBlock:
    """The GET_CONFIG reply."""

    focus_min_steps: int
    focus_max_steps: int
    step_rate_sps: int
    host_timeout_ms: int
    over_temp_cc: int
    over_temp_clear_cc: int

    _FMT = "<BiiHHhh"

    def encode(self) -> bytes:
        """Response payload, status byte included."""
        return struct.pack(
            self._FMT,
            Status.OK,
            self.focus_min_steps,
            self.focus_max_steps,
            self.step_rate_sps,
            self.host_timeout_ms,
            self.over_temp_cc,
            self.over_temp_clear_cc,
        )

    @classmethod
    def decode(cls, payload: bytes) -> ConfigBlock:
        """Parse a GET_CONFIG response payload, status byte included. Raises ``ValueError`` if short."""
        size = struct.calcsize(cls._FMT)
        if len(payload) < size:
            raise ValueError(f"GET_CONFIG reply of {len(payload)} bytes is shorter than {size}")
        return cls(*struct.unpack_from(cls._FMT, payload)[1:])


def status_name(code: int) -> str:
    """Name of a response status, or ``STATUS_<n>`` for an unknown one."""
    try:
        return Status(code).name
    except ValueError:
        return f"STATUS_{code}"


def op_name(op: int) -> str:
    """Name of a request or event opcode (response bit ignored), or ``OP_0x..``."""
    base = op & ~RESPONSE_BIT
    for kind in (Op, Event):
        try:
            return kind(base).name
        except ValueError:
            continue
    return f"OP_0x{op:02X}"


@dataclass(frozen=True)
class BootEvent:
    """BOOT: the firmware started; whatever the host had set is gone."""

    protocol_version: int
    firmware_version: tuple[int, int, int]
    reset_cause: int


@dataclass(frozen=True)
class ButtonEvent:
    """BUTTON: the trigger button was pressed (``True``) or released."""

    pressed: bool


@dataclass(frozen=True)
class MoveDoneEvent:
    """MOVE_DONE: the focus motor stopped at ``position_steps`` for ``reason``."""

    position_steps: int
    reason: int


@dataclass(frozen=True)
class OverTempEvent:
    """OVER_TEMP: the board crossed the trip (``active``) or the clear temperature."""

    active: bool
    temperature_cc: int


@dataclass(frozen=True)
class HostSilentEvent:
    """HOST_SILENT: the host said nothing for ``timeout_ms`` and the LEDs were switched off."""

    timeout_ms: int


BoardEvent = BootEvent | ButtonEvent | MoveDoneEvent | OverTempEvent | HostSilentEvent
"""Any decoded event."""


def decode_event(frame: Frame) -> BoardEvent | None:
    """Decode an event frame; ``None`` for an unknown or truncated event (hosts ignore those)."""
    p = frame.payload
    try:
        if frame.op == Event.BOOT:
            proto, major, minor, patch, cause = struct.unpack_from("<5B", p)
            return BootEvent(proto, (major, minor, patch), cause)
        if frame.op == Event.BUTTON:
            return ButtonEvent(bool(p[0]))
        if frame.op == Event.MOVE_DONE:
            pos, reason = struct.unpack_from("<iB", p)
            return MoveDoneEvent(pos, reason)
        if frame.op == Event.OVER_TEMP:
            active, temp = struct.unpack_from("<Bh", p)
            return OverTempEvent(bool(active), temp)
        if frame.op == Event.HOST_SILENT:
            (timeout,) = struct.unpack_from("<H", p)
            return HostSilentEvent(timeout)
    except (struct.error, IndexError):
        return None
    return None


def encode_event(event: BoardEvent) -> tuple[int, bytes]:
    """Opcode and payload of an event, for boards that send them."""
    if isinstance(event, BootEvent):
        return Event.BOOT, struct.pack("<5B", event.protocol_version, *event.firmware_version, event.reset_cause)
    if isinstance(event, ButtonEvent):
        return Event.BUTTON, bytes((int(event.pressed),))
    if isinstance(event, MoveDoneEvent):
        return Event.MOVE_DONE, struct.pack("<iB", event.position_steps, event.reason)
    if isinstance(event, OverTempEvent):
        return Event.OVER_TEMP, struct.pack("<Bh", int(event.active), event.temperature_cc)
    return Event.HOST_SILENT, struct.pack("<H", event.timeout_ms)
