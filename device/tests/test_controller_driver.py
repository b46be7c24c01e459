"""The serial driver against the pure-Python emulated board: handshake, errors, retries, recovery, events."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
import serial
import serial.tools.list_ports
from serial.tools.list_ports_common import ListPortInfo

from veriscope.device.controller import Controller
from veriscope.device.controller import _protocol as proto
from veriscope.device.controller.emulated import EmulatedBoard, EmulatedPort
from veriscope.device.controller.serial_board import SerialController, find_port
from veriscope.device.errors import ControllerError, InvalidArgument
from veriscope.device.types import Lighting


def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


@pytest.fixture
def board() -> Iterator[EmulatedBoard]:
    b = EmulatedBoard()
    yield b
    b.close()


@pytest.fixture
def events() -> list[proto.BoardEvent]:
    return []


@pytest.fixture
def ctl(board: EmulatedBoard, events: list[proto.BoardEvent]) -> Iterator[SerialController]:
    c = SerialController(opener=board.open, keepalive_s=None, on_event=events.append)
    yield c
    c.close()


class LossyPort:
    """Wraps a port and drops whole writes the test chooses, to lose requests on the wire."""

    def __init__(self, inner: EmulatedPort, drop: Callable[[bytes], bool]) -> None:
        self._inner = inner
        self._drop = drop

    @property
    def in_waiting(self) -> int:
        return self._inner.in_waiting

    def read(self, size: int = 1) -> bytes:
        return self._inner.read(size)

    def write(self, data: bytes) -> int:
        if self._drop(data):
            return len(data)
        return self._inner.write(data)

    def reset_input_buffer(self) -> None:
        self._inner.reset_input_buffer()

    def close(self) -> None:
        self._inner.close()


def test_driver_is_a_controller_and_reports_the_board(ctl: SerialController) -> None:
    assert isinstance(ctl, Controller)
    assert ctl.info.kind == "emulated"
    assert ctl.info.protocol_version == proto.PROTOCOL_VERSION
    assert ctl.info.firmware_version == "1.0.0"
    assert ctl.focus_range.min_steps == 0
    assert ctl.focus_range.max_steps == 12000


def test_leds_reach_the_outputs(ctl: SerialController, board: EmulatedBoard) -> None:
    ctl.set_leds({Lighting.WHITE_RING: 40, Lighting.UV: 7})
    assert board.led_duty_pct == {"white": 40, "raking": 0, "uv": 7}
    ctl.light_only(Lighting.RAKING, 55)
    assert board.led_duty_pct == {"white": 0, "raking": 55, "uv": 0}
    assert ctl.leds() == {Lighting.WHITE_RING: 0, Lighting.RAKING: 55, Lighting.UV: 0}


@pytest.mark.parametrize("duty", [-1, 101, 12.5])
def test_bad_duty_is_refused_before_the_wire(ctl: SerialController, duty: object) -> None:
    with pytest.raises(InvalidArgument, match=r"0\.\.100"):
        ctl.set_leds({Lighting.UV: duty})  # type: ignore[dict-item]


def test_move_homes_first_and_moves_the_motor(ctl: SerialController, board: EmulatedBoard) -> None:
    assert ctl.move_focus(800) == 800
    assert ctl.focus_position() == 800
    # The emulated motor started 400 steps from the switch: homing referenced it.
    assert board.physical_focus_steps == 800
    assert ctl.move_focus(300) == 300
    assert board.physical_focus_steps == 300


def test_move_outside_limits_is_invalid(ctl: SerialController) -> None:
    with pytest.raises(InvalidArgument, match=r"soft limits 0\.\.12000"):
        ctl.move_focus(12001)
    with pytest.raises(InvalidArgument):
        ctl.move_focus(-1)


def test_home_zeroes_the_position(ctl: SerialController, board: EmulatedBoard, events: list[proto.BoardEvent]) -> None:
    ctl.home_focus()
    assert ctl.focus_position() == 0
    assert board.physical_focus_steps == 0
    assert proto.MoveDoneEvent(0, proto.MoveReason.HOMED) in events


def test_temperature(ctl: SerialController, board: EmulatedBoard) -> None:
    board.temperature_c = 31.5
    assert ctl.temperature_c() == pytest.approx(31.5)


def test_protocol_version_mismatch_is_refused() -> None:
    board = EmulatedBoard(protocol_version=2)
    try:
        with pytest.raises(
            ControllerError, match=r"protocol version mismatch: .* speaks version 2, this driver speaks version 1"
        ):
            SerialController(opener=board.open, keepalive_s=None)
    finally:
        board.close()


def test_silent_port_gives_handshake_timeout(board: EmulatedBoard) -> None:
    def deaf() -> LossyPort:
        return LossyPort(board.open(), drop=lambda data: True)

    with pytest.raises(ControllerError, match=r"handshake timeout: no HELLO reply .* within 0.5 s"):
        SerialController(opener=deaf, handshake_timeout_s=0.5, keepalive_s=None)


def test_missing_port_is_named() -> None:
    with pytest.raises(ControllerError, match=r"cannot open serial port /dev/nonexistent-veriscope: it does not exist"):
        SerialController("/dev/nonexistent-veriscope", keepalive_s=None)


def test_usb_id_lookup_errors_are_clear() -> None:
    with pytest.raises(ControllerError, match="not VID:PID"):
        find_port("nonsense")
    with pytest.raises(ControllerError, match="no serial port with USB id ffff:fffe"):
        find_port("ffff:fffe")


def test_opens_by_usb_id_and_looks_it_up_again_on_reconnect(
    board: EmulatedBoard, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = board.serve_pty()
    lookups: list[int] = []

    def comports() -> list[ListPortInfo]:
        lookups.append(1)
        other = ListPortInfo("/dev/ttyACM7", skip_link_detection=True)
        other.vid, other.pid = 0x2341, 0x0043
        ours = ListPortInfo(path, skip_link_detection=True)
        ours.vid, ours.pid = 0x1A86, 0x7523
        return [other, ours]

    monkeypatch.setattr(serial.tools.list_ports, "comports", comports)
    assert find_port("1A86:7523") == path
    ctl = SerialController(usb_id="1a86:7523", keepalive_s=None)
    try:
        ctl.set_leds({Lighting.UV: 12})
        assert board.led_duty_pct["uv"] == 12
        assert ctl.port_path == path
        before = len(lookups)
        link = ctl._link
        assert link is not None
        link._port.close()  # the port goes away; after an unplug its path may have changed
        assert ctl.leds()[Lighting.UV] == 12
        assert len(lookups) > before
        assert ctl.reconnects == 1
    finally:
        ctl.close()


def test_exactly_one_of_port_and_usb_id() -> None:
    with pytest.raises(ControllerError, match="exactly one"):
        SerialController("/dev/ttyUSB0", usb_id="1a86:7523")


def test_bootloader_window_is_cut_short_by_hello() -> None:
    board = EmulatedBoard(bootloader_s=1.0)
    try:
        start = time.monotonic()
        ctl = SerialController(opener=board.open, keepalive_s=None)
        # Our HELLO bytes end the bootloader's wait, as with the real one.
        assert time.monotonic() - start < 0.9
        ctl.close()
    finally:
        board.close()


def test_lost_requests_are_resent(board: EmulatedBoard) -> None:
    drops = {"left": 2}

    def drop(data: bytes) -> bool:
        if data[3] == proto.Op.SET_LEDS and drops["left"]:
            drops["left"] -= 1
            return True
        return False

    ctl = SerialController(opener=lambda: LossyPort(board.open(), drop), timeout_s=0.1, keepalive_s=None)
    try:
        ctl.set_leds({Lighting.UV: 20})
        assert drops["left"] == 0
        assert board.led_duty_pct["uv"] == 20
    finally:
        ctl.close()


def test_resent_move_is_not_run_twice(board: EmulatedBoard) -> None:
    # Lose the reply, not the request: the board must answer the resend from memory.
    ctl = SerialController(opener=board.open, keepalive_s=None)
    try:
        ctl.move_focus(100)
        link = ctl._link
        assert link is not None
        seq_before = board.step_count
        reply1 = link.request(proto.Op.MOVE_FOCUS, (500).to_bytes(4, "little", signed=True), timeout_s=0.5)
        link._seq -= 1  # resend with the same sequence number
        reply2 = link.request(proto.Op.MOVE_FOCUS, (500).to_bytes(4, "little", signed=True), timeout_s=0.5)
        assert reply1 == reply2 == b"\x00"
        wait_until(lambda: board.physical_focus_steps == 500)
        time.sleep(0.05)
        assert board.step_count - seq_before == 400
    finally:
        ctl.close()


def test_garbage_and_partial_frames_on_the_line(ctl: SerialController, board: EmulatedBoard) -> None:
    # Noise towards the board, including a stray SOF and half a frame.
    board.inject(b"\x00\xff\xa5\x30garbage" + proto.encode(200, proto.Op.PING, b"half")[:6])
    time.sleep(proto.FRAME_TIMEOUT_S * 2)
    ctl.set_leds({Lighting.WHITE_RING: 10})
    # Noise towards the host between frames.
    port = board._port
    assert port is not None
    with board._cond:
        port._rx += b"\xa5\x05junk\x13" + bytes(range(0, 256, 7))
    ctl.ping(b"still alive")
    assert board.led_duty_pct["white"] == 10
    status = ctl.status()
    assert status.crc_errors + status.frame_timeouts >= 1


def test_reconnects_after_unplug_and_restores_state(ctl: SerialController, board: EmulatedBoard) -> None:
    ctl.set_leds({Lighting.UV: 25})
    ctl.move_focus(600)
    board.unplug()
    assert board.led_duty_pct["uv"] == 0
    # The next call notices, reopens, and puts the LEDs and focus back.
    assert ctl.focus_position() == 600
    assert board.led_duty_pct["uv"] == 25
    assert board.physical_focus_steps == 600
    assert ctl.reconnects == 1


def test_board_reset_is_noticed_and_state_restored(
    ctl: SerialController, board: EmulatedBoard, events: list[proto.BoardEvent]
) -> None:
    ctl.set_leds({Lighting.WHITE_RING: 60})
    ctl.move_focus(250)
    ctl.send_raw(proto.Op.DEBUG_HANG, proto.HANG_MAGIC)
    wait_until(lambda: any(isinstance(e, proto.BootEvent) for e in events), timeout_s=3)
    boot = next(e for e in events if isinstance(e, proto.BootEvent))
    assert boot.reset_cause == proto.ResetCause.WATCHDOG
    assert ctl.leds()[Lighting.WHITE_RING] == 60
    assert ctl.focus_position() == 250
    assert ctl.status().reset_cause == proto.ResetCause.WATCHDOG


def test_host_silence_switches_leds_off(board: EmulatedBoard, events: list[proto.BoardEvent]) -> None:
    ctl = SerialController(opener=board.open, keepalive_s=None, host_timeout_ms=150, on_event=events.append)
    try:
        ctl.set_leds({Lighting.UV: 80})
        wait_until(lambda: board.led_duty_pct["uv"] == 0, timeout_s=2)
        wait_until(lambda: proto.HostSilentEvent(150) in events, timeout_s=1)
        status = ctl.status()
        assert status.flags & proto.FLAG_HOST_SILENT == 0  # cleared by our GET_STATUS...
        assert status.led_duty_pct == (0, 0, 0)  # ...but the LEDs stay off until set again
    finally:
        ctl.close()


def test_keepalive_holds_off_host_silence(board: EmulatedBoard) -> None:
    ctl = SerialController(opener=board.open, keepalive_s=0.05, host_timeout_ms=300)
    try:
        ctl.set_leds({Lighting.UV: 80})
        time.sleep(0.8)
        assert board.led_duty_pct["uv"] == 80
    finally:
        ctl.close()


def test_over_temperature_forces_leds_off_and_refuses_them(
    ctl: SerialController, board: EmulatedBoard, events: list[proto.BoardEvent]
) -> None:
    ctl.set_leds({Lighting.WHITE_RING: 50})
    board.temperature_c = 72.0
    wait_until(lambda: proto.OverTempEvent(True, 7200) in events)
    assert board.led_duty_pct["white"] == 0
    with pytest.raises(ControllerError, match="over temperature"):
        ctl.set_leds({Lighting.WHITE_RING: 50})
    board.temperature_c = 60.0
    wait_until(lambda: proto.OverTempEvent(False, 6000) in events)
    ctl.set_leds({Lighting.WHITE_RING: 50})
    assert board.led_duty_pct["white"] == 50


def test_button_events_reach_the_callback(
    ctl: SerialController, board: EmulatedBoard, events: list[proto.BoardEvent]
) -> None:
    board.press_button()
    board.release_button()
    wait_until(lambda: proto.ButtonEvent(False) in events)
    assert events[-2:] == [proto.ButtonEvent(True), proto.ButtonEvent(False)]


def test_concurrent_callers_are_serialised(ctl: SerialController, board: EmulatedBoard) -> None:
    errors: list[BaseException] = []
    duties = {Lighting.WHITE_RING: 0, Lighting.RAKING: 0, Lighting.UV: 0}

    def worker(channel: Lighting) -> None:
        try:
            for duty in range(0, 101, 5):
                ctl.set_leds({channel: duty})
                assert 10 < ctl.temperature_c() < 40
            duties[channel] = duty
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(c,)) for c in duties]
    threads.append(threading.Thread(target=lambda: ctl.move_focus(700)))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert errors == []
    assert board.led_duty_pct == {"white": 100, "raking": 100, "uv": 100}
    assert ctl.focus_position() == 700


def test_unknown_opcode_and_bad_length_statuses(ctl: SerialController) -> None:
    assert ctl.send_raw(0x2F) == bytes((proto.Status.UNKNOWN_OP,))
    assert ctl.send_raw(proto.Op.SET_LEDS, b"\x01") == bytes((proto.Status.BAD_LENGTH,))
    assert ctl.send_raw(proto.Op.RESET, b"nope") == bytes((proto.Status.BAD_ARGUMENT,))


def test_closed_controller_refuses_calls(ctl: SerialController) -> None:
    ctl.close()
    with pytest.raises(ControllerError, match="closed"):
        ctl.leds()


def test_pyserial_over_a_pty(board: EmulatedBoard) -> None:
    # The real pyserial path: the emulated board on a pseudo-terminal.
    path = board.serve_pty()
    ctl = SerialController(path, keepalive_s=None)
    try:
        ctl.set_leds({Lighting.RAKING: 33})
        assert board.led_duty_pct["raking"] == 33
        assert ctl.info.kind == "emulated"
    finally:
        ctl.close()


def test_console_is_typable(board: EmulatedBoard) -> None:
    port = board.open()
    port.reset_input_buffer()

    def ask(line: bytes) -> str:
        port.write(line)
        buf = b""
        deadline = time.monotonic() + 2
        while not buf.endswith(b"\r\n") and time.monotonic() < deadline:
            buf += port.read(64)
        return buf.decode()

    assert ask(b"led uv 30\r").strip() == "ok led white=0 raking=0 uv=30"
    assert board.led_duty_pct["uv"] == 30
    assert ask(b"move 20000\n").strip() == "err OUT_OF_RANGE limits 0..12000"
    assert ask(b"ledd\x08 raking 5\n").strip() == "ok led white=0 raking=5 uv=30"
    assert ask(b"frobnicate\n").strip() == "err UNKNOWN_OP try help"
    assert ask(b"home\n").strip() == "ok homing"
    wait_until(lambda: b"! move_done pos=0 reason=homed" in port.read(200), timeout_s=2)
    with pytest.raises(serial.SerialException):
        board.unplug()
        port.read(1)
