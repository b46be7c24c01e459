"""The real firmware on the emulated ATmega328P (simavr, real time, Optiboot), driven by the real driver.

The tests read the chip's pins through the emulator: LED PWM duty and step pulses. They
need the AVR toolchain and simavr; without them they are skipped, except under CI.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable, Iterator

import pytest
import serial

from veriscope.device.controller import _protocol as proto
from veriscope.device.controller.avrsim import AvrSim, FirmwarePaths, Observation, build_firmware, toolchain_missing
from veriscope.device.controller.serial_board import SerialController
from veriscope.device.errors import ControllerError
from veriscope.device.types import Lighting

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def firmware() -> FirmwarePaths:
    reason = toolchain_missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must emulate the firmware: {reason}")
        pytest.skip(reason)
    return build_firmware()


@pytest.fixture(scope="module")
def sim(firmware: FirmwarePaths) -> Iterator[AvrSim]:
    with AvrSim(flash=firmware.hex) as s:
        yield s


@pytest.fixture
def events() -> list[proto.BoardEvent]:
    return []


@pytest.fixture
def ctl(sim: AvrSim, events: list[proto.BoardEvent]) -> Iterator[SerialController]:
    c = SerialController(str(sim.port), keepalive_s=None, timeout_s=1.0, handshake_timeout_s=15, on_event=events.append)
    yield c
    c.close()


def duty_is(**expected: int) -> Callable[[Observation], bool]:
    """Predicate on a ``led`` observation: every named channel at the expected percent, to the PWM's resolution."""
    return lambda o: all(abs(o.as_float(ch) - pct) < 0.5 for ch, pct in expected.items())


def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def test_handshake_reports_the_built_firmware(ctl: SerialController, firmware: FirmwarePaths) -> None:
    assert ctl.info.kind == "atmega328p"
    assert ctl.info.protocol_version == proto.PROTOCOL_VERSION
    assert ctl.info.firmware_version == "1.0.0"
    # The build id the board reports is the one baked into this image.
    assert ctl.info.build_id.encode() in firmware.hex.with_suffix(".elf").read_bytes()
    assert ctl.focus_range.max_steps == proto.FOCUS_MAX_STEPS


def test_opening_the_port_resets_through_the_bootloader(sim: AvrSim) -> None:
    mark = sim.mark()
    c = SerialController(str(sim.port), keepalive_s=None, handshake_timeout_s=15)
    c.close()
    opened = sim.wait_for("client", lambda o: "open" in o.flags, since=mark)
    reset = sim.wait_for("reset", since=mark)
    assert reset.words["cause"] == "ext"
    assert reset.t_us == opened.t_us
    # Our HELLO bytes make the bootloader leave at once, through its watchdog.
    assert sim.wait_for("reset", lambda o: o.words["cause"] == "wdt", since=mark).t_us - reset.t_us < 600_000


def test_leds_drive_the_pwm_pins(sim: AvrSim, ctl: SerialController) -> None:
    mark = sim.mark()
    ctl.set_leds({Lighting.WHITE_RING: 50, Lighting.RAKING: 1, Lighting.UV: 99})
    sim.wait_for("led", duty_is(white=50, raking=1, uv=99), since=mark)
    ctl.light_only(Lighting.UV, 100)
    sim.wait_for("led", duty_is(white=0, raking=0, uv=100), since=mark)
    assert ctl.leds() == {Lighting.WHITE_RING: 0, Lighting.RAKING: 0, Lighting.UV: 100}
    ctl.set_leds({Lighting.UV: 0})
    sim.wait_for("led", duty_is(white=0, raking=0, uv=0), since=mark)


def test_focus_moves_make_step_pulses(sim: AvrSim, ctl: SerialController) -> None:
    before = sim.state()
    assert ctl.move_focus(300) == 300  # homes first: the motor runs down to the switch
    after_home_and_move = sim.state()
    assert after_home_and_move.focus_steps == 300
    assert after_home_and_move.step_count - before.step_count == before.focus_steps + 300
    assert ctl.move_focus(120) == 120
    assert sim.state().focus_steps == 120
    ctl.home_focus()
    state = sim.state()
    assert state.focus_steps == 0
    assert state.home_switch_closed
    assert ctl.focus_position() == 0


def test_temperature_and_button(sim: AvrSim, ctl: SerialController, events: list[proto.BoardEvent]) -> None:
    sim.set_temperature(41.0)
    wait_until(lambda: abs(ctl.temperature_c() - 41.0) < 0.6)
    sim.press_button()
    wait_until(lambda: proto.ButtonEvent(True) in events)
    sim.release_button()
    wait_until(lambda: proto.ButtonEvent(False) in events)
    sim.set_temperature(25.0)


def test_over_temperature_forces_the_leds_off(
    sim: AvrSim, ctl: SerialController, events: list[proto.BoardEvent]
) -> None:
    mark = sim.mark()
    ctl.set_leds({Lighting.WHITE_RING: 80})
    sim.wait_for("led", duty_is(white=80), since=mark)
    sim.set_temperature(75.0)
    sim.wait_for("led", duty_is(white=0), since=mark)
    wait_until(lambda: any(isinstance(e, proto.OverTempEvent) and e.active for e in events))
    with pytest.raises(ControllerError, match="over temperature"):
        ctl.set_leds({Lighting.WHITE_RING: 80})
    sim.set_temperature(25.0)
    wait_until(lambda: any(isinstance(e, proto.OverTempEvent) and not e.active for e in events))
    ctl.set_leds({Lighting.WHITE_RING: 80})
    sim.wait_for("led", duty_is(white=80), since=mark)
    ctl.set_leds({Lighting.WHITE_RING: 0})


def test_garbage_and_partial_frames(sim: AvrSim, ctl: SerialController) -> None:
    link = ctl._link
    assert link is not None
    # Noise, a stray SOF claiming a long payload, a frame with a bad CRC, and half a frame.
    bad = bytearray(proto.encode(77, proto.Op.SET_LEDS, bytes((7, 100, 100, 100))))
    bad[-1] ^= 0xFF
    link._port.write(b"\x00\xff\x13garbage\xa5\x30" + bytes(bad) + proto.encode(78, proto.Op.PING, b"cut")[:5])
    time.sleep(0.2)
    mark = sim.mark()
    ctl.set_leds({Lighting.RAKING: 20})
    sim.wait_for("led", duty_is(white=0, raking=20, uv=0), since=mark)
    status = ctl.status()
    assert status.crc_errors >= 1
    assert status.frame_timeouts >= 1
    ctl.set_leds({Lighting.RAKING: 0})


def test_a_resent_request_is_answered_from_memory(ctl: SerialController, events: list[proto.BoardEvent]) -> None:
    # A retry after a lost response keeps its sequence number; the firmware must not run it twice.
    ctl.move_focus(250)
    link = ctl._link
    assert link is not None
    here = struct.pack("<i", 250)

    def moves_done() -> int:
        return sum(isinstance(e, proto.MoveDoneEvent) for e in events)

    before = moves_done()
    assert link.request(proto.Op.MOVE_FOCUS, here, timeout_s=1.0) == b"\x00"  # runs: MOVE_DONE at once
    link._seq -= 1
    assert link.request(proto.Op.MOVE_FOCUS, here, timeout_s=1.0) == b"\x00"  # the same request again
    ctl.ping()  # the board sends an event before it reads the next request, so this reply fences it
    assert moves_done() == before + 1
    # Same sequence number and opcode: the remembered response comes back, not a new one.
    assert link.request(proto.Op.PING, b"first", timeout_s=1.0) == b"\x00first"
    link._seq -= 1
    assert link.request(proto.Op.PING, b"second", timeout_s=1.0) == b"\x00first"
    assert link.request(proto.Op.PING, b"third", timeout_s=1.0) == b"\x00third"


def test_console_is_usable_from_a_terminal(sim: AvrSim) -> None:
    with serial.Serial(str(sim.port), 115200, timeout=0.2) as term:
        # The firmware greets with a text banner, then a binary BOOT event frame; take both before typing.
        deadline = time.monotonic() + 10
        seen = b""
        boots: list[proto.BoardEvent | None] = []
        parser = proto.FrameParser()
        while not boots and time.monotonic() < deadline:
            chunk = term.read(256)
            seen += chunk
            boots += [proto.decode_event(f) for f in parser.feed(chunk)]
        assert b"veriscope-controller 1.0.0 protocol 1" in seen
        assert isinstance(boots[0], proto.BootEvent)

        def ask(line: bytes) -> str:
            term.write(line)
            buf = b""
            end = time.monotonic() + 5
            while not buf.endswith(b"\r\n") and time.monotonic() < end:
                buf += term.read(1)
            return buf.decode().strip()

        mark = sim.mark()
        assert ask(b"led uv 30\r") == "ok led white=0 raking=0 uv=30"
        sim.wait_for("led", duty_is(uv=30), since=mark)
        assert ask(b"move 20000\r") == "err OUT_OF_RANGE limits 0..12000"
        assert ask(b"ledd\x08 raking 5\r") == "ok led white=0 raking=5 uv=30"
        assert ask(b"HELP\r").startswith("ok commands:")
        assert ask(b"status\r").startswith("ok led white=0 raking=5 uv=30 focus=")
        assert ask(b"off\r") == "ok led white=0 raking=0 uv=0"


def test_host_silence_switches_the_leds_off(sim: AvrSim, events: list[proto.BoardEvent]) -> None:
    c = SerialController(
        str(sim.port), keepalive_s=None, host_timeout_ms=300, handshake_timeout_s=15, on_event=events.append
    )
    try:
        mark = sim.mark()
        c.set_leds({Lighting.UV: 60})
        lit = sim.wait_for("led", duty_is(uv=60), since=mark)
        off = sim.wait_for("led", duty_is(uv=0), since=mark)
        # Off after the 300 ms timeout of chip time, not before. The timer counts whole 1 ms ticks from the
        # frame's last byte, which arrives just before the LED changes, so allow up to 2 ms of tick phase.
        assert 298_000 <= off.t_us - lit.t_us < 600_000
        wait_until(lambda: proto.HostSilentEvent(300) in events)
    finally:
        c.close()


def test_watchdog_recovers_a_hung_firmware(sim: AvrSim, ctl: SerialController, events: list[proto.BoardEvent]) -> None:
    mark = sim.mark()
    ctl.set_leds({Lighting.WHITE_RING: 40})
    sim.wait_for("led", duty_is(white=40), since=mark)
    assert ctl.send_raw(proto.Op.DEBUG_HANG, proto.HANG_MAGIC) == b"\x00"
    off = sim.wait_for("led", duty_is(white=0), since=mark)
    reset = sim.wait_for("reset", lambda o: o.words["cause"] == "wdt", since=mark)
    # The watchdog interrupt switches the LEDs off first, the reset comes one period later.
    assert off.t_us < reset.t_us
    wait_until(lambda: proto.BootEvent(1, (1, 0, 0), proto.ResetCause.WATCHDOG) in events)
    # The driver notices the reboot and puts the LED back.
    assert ctl.leds()[Lighting.WHITE_RING] == 40
    sim.wait_for("led", duty_is(white=40), since=mark)
    assert ctl.status().reset_cause == proto.ResetCause.WATCHDOG
    ctl.set_leds({Lighting.WHITE_RING: 0})


def test_homing_gives_up_when_the_switch_never_closes(firmware: FirmwarePaths) -> None:
    # The motor starts further from the switch than homing may travel, as with a broken switch.
    with AvrSim(flash=firmware.hex, focus_start_steps=proto.HOME_MAX_STEPS + 5000) as far:
        c = SerialController(str(far.port), keepalive_s=None, handshake_timeout_s=15)
        try:
            with pytest.raises(ControllerError, match=f"homing switch did not close within {proto.HOME_MAX_STEPS}"):
                c.home_focus()
            state = far.state()
            assert state.step_count == proto.HOME_MAX_STEPS
            assert not state.home_switch_closed
            status = c.status()
            assert status.motion == proto.Motion.IDLE
            assert not status.flags & proto.FLAG_HOMED
        finally:
            c.close()


def test_driver_reconnects_when_the_port_is_closed_and_reopened(sim: AvrSim, ctl: SerialController) -> None:
    # Mid-scan: a channel lit and the focus at a scan position.
    ctl.set_leds({Lighting.RAKING: 35})
    ctl.move_focus(250)
    mark = sim.mark()
    link = ctl._link
    assert link is not None
    link._port.close()  # the port goes away under the driver
    # The next call reopens it, which resets the board; the driver restores the scan's state.
    assert ctl.focus_position() == 250
    assert sim.wait_for("reset", lambda o: o.words["cause"] == "ext", since=mark)
    sim.wait_for("led", duty_is(raking=35), since=mark)
    assert sim.state().focus_steps == 250
    assert ctl.reconnects >= 1
    ctl.set_leds({Lighting.RAKING: 0})


def test_driver_survives_an_unplug(sim: AvrSim, ctl: SerialController) -> None:
    ctl.set_leds({Lighting.UV: 15})
    ctl.move_focus(180)
    mark = sim.mark()
    sim.unplug(300)
    sim.wait_for("ready", since=mark)
    assert ctl.leds()[Lighting.UV] == 15
    assert sim.state().focus_steps == 180
    sim.wait_for("led", duty_is(uv=15), since=mark)
    ctl.set_leds({Lighting.UV: 0})
