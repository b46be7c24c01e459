"""The protocol codec: frames, CRC, the resynchronising parser, payload layouts, and agreement with protocol.h."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veriscope.device.controller import _protocol as proto

HEADER = Path(__file__).resolve().parents[1] / "firmware" / "protocol.h"

frames = st.builds(
    proto.Frame,
    seq=st.integers(0, 255),
    op=st.integers(0, 255),
    payload=st.binary(max_size=proto.PAYLOAD_MAX),
)


def test_crc_is_ccitt_false() -> None:
    # The standard check value of CRC-16/CCITT-FALSE, quoted in PROTOCOL.md.
    assert proto.crc16(b"123456789") == 0x29B1


def test_encode_lays_out_the_documented_bytes() -> None:
    wire = proto.encode(7, proto.Op.PING)
    assert wire[:4] == bytes((0xA5, 0x00, 0x07, 0x02))
    assert struct.unpack("<H", wire[4:])[0] == proto.crc16(bytes((0x00, 0x07, 0x02)))


def test_encode_refuses_oversize_payload() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        proto.encode(0, proto.Op.PING, bytes(proto.PAYLOAD_MAX + 1))


@given(st.lists(frames, max_size=8), st.data())
def test_parser_returns_every_frame_whatever_the_chunking(sent: list[proto.Frame], data: st.DataObject) -> None:
    wire = b"".join(proto.encode(f.seq, f.op, f.payload) for f in sent)
    parser = proto.FrameParser()
    got: list[proto.Frame] = []
    pos = 0
    while pos < len(wire):
        step = data.draw(st.integers(1, 20))
        got += parser.feed(wire[pos : pos + step])
        pos += step
    assert got == sent
    assert parser.crc_errors == 0


@settings(max_examples=300)
@given(st.binary(max_size=200), frames)
def test_parser_finds_a_frame_after_any_garbage(garbage: bytes, frame: proto.Frame) -> None:
    parser = proto.FrameParser()
    parser.feed(garbage)
    # A stalled partial frame left by the garbage is dropped by the timeout, as on the wire.
    while parser.pending:
        parser.expire()
    assert parser.feed(proto.encode(frame.seq, frame.op, frame.payload)) == [frame]


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_parser_never_crashes_and_accounts_for_every_byte(noise: bytes) -> None:
    parser = proto.FrameParser()
    frames_out = parser.feed(noise)
    consumed = sum(len(f.payload) + proto.FRAME_OVERHEAD for f in frames_out)
    assert consumed + parser.junk_bytes + parser.pending == len(noise)


def test_frame_behind_a_stray_sof_is_still_found() -> None:
    # The stray SOF claims a 40-byte payload that swallows the real frame; rescanning recovers it.
    real = proto.encode(3, proto.Op.GET_STATUS)
    parser = proto.FrameParser()
    out = parser.feed(bytes((proto.SOF, 40)) + real + bytes(40))
    assert out == [proto.Frame(3, proto.Op.GET_STATUS)]
    assert parser.crc_errors == 1


def test_corrupted_frame_is_rejected_and_the_next_one_parsed() -> None:
    bad = bytearray(proto.encode(1, proto.Op.PING, b"abc"))
    bad[5] ^= 0x01
    good = proto.encode(2, proto.Op.PING, b"xyz")
    parser = proto.FrameParser()
    assert parser.feed(bytes(bad) + good) == [proto.Frame(2, proto.Op.PING, b"xyz")]
    assert parser.crc_errors == 1


def test_partial_frame_expires_and_following_bytes_are_rescanned() -> None:
    parser = proto.FrameParser()
    assert parser.feed(proto.encode(1, proto.Op.PING, b"hello")[:5]) == []
    assert parser.pending == 5
    parser.expire()
    assert parser.timeouts == 1
    assert parser.pending == 0
    assert parser.feed(proto.encode(2, proto.Op.PING)) == [proto.Frame(2, proto.Op.PING)]


def test_impossible_length_is_rejected_at_once() -> None:
    parser = proto.FrameParser()
    parser.feed(bytes((proto.SOF, proto.PAYLOAD_MAX + 1)))
    assert parser.pending == 0
    assert parser.crc_errors == 1


def test_text_around_frames_goes_to_the_console_and_rejects_poison_it() -> None:
    text: list[bytes] = []
    rejects: list[int] = []
    parser = proto.FrameParser(on_text=text.append, on_reject=lambda: rejects.append(1))
    frame = proto.encode(9, proto.Op.PING)
    assert parser.feed(b"status\r\n" + frame + b"help\n") == [proto.Frame(9, proto.Op.PING)]
    assert b"".join(text) == b"status\r\nhelp\n"
    parser.feed(bytes((proto.SOF, 99)))
    assert rejects == [1]


def test_payload_blocks_round_trip() -> None:
    hello = proto.Hello(1, proto.Board.ATMEGA328P, (1, 2, 3), 0x1F, 48, "0123456789ab")
    assert proto.Hello.decode(hello.encode()) == hello
    status = proto.StatusBlock((1, 2, 3), -5, 700, 1, 0x11, -1234, 2**32 - 1, 1, 7, 8)
    assert proto.StatusBlock.decode(status.encode()) == status
    assert len(status.encode()) == 25  # as tabled in PROTOCOL.md
    config = proto.ConfigBlock(0, 12000, 4000, 5000, 7000, 6500)
    assert proto.ConfigBlock.decode(config.encode()) == config
    assert len(config.encode()) == 17


@pytest.mark.parametrize(
    "event",
    [
        proto.BootEvent(1, (1, 0, 0), proto.ResetCause.WATCHDOG),
        proto.ButtonEvent(True),
        proto.MoveDoneEvent(-42, proto.MoveReason.HOMED),
        proto.OverTempEvent(True, 7012),
        proto.HostSilentEvent(5000),
    ],
)
def test_events_round_trip(event: proto.BoardEvent) -> None:
    op, payload = proto.encode_event(event)
    frame = proto.Frame(0, op, payload)
    assert frame.is_event
    assert proto.decode_event(frame) == event


def test_truncated_event_decodes_to_none() -> None:
    assert proto.decode_event(proto.Frame(0, proto.Event.MOVE_DONE, b"\x01")) is None


def test_short_blocks_raise_value_error() -> None:
    with pytest.raises(ValueError, match="shorter"):
        proto.StatusBlock.decode(b"\x00\x01")
    with pytest.raises(ValueError, match="shorter"):
        proto.Hello.decode(b"\x00")


def _header_defines() -> dict[str, str]:
    text = HEADER.read_text()
    return dict(re.findall(r"^#define (VS_\w+) (\S+)", text, flags=re.MULTILINE))


def test_python_constants_match_protocol_h() -> None:
    defines = _header_defines()
    expected: dict[str, object] = {
        "VS_PROTOCOL_VERSION": proto.PROTOCOL_VERSION,
        "VS_SOF": proto.SOF,
        "VS_PAYLOAD_MAX": proto.PAYLOAD_MAX,
        "VS_FRAME_OVERHEAD": proto.FRAME_OVERHEAD,
        "VS_FRAME_TIMEOUT_MS": round(proto.FRAME_TIMEOUT_S * 1000),
        "VS_OP_RESPONSE_BIT": proto.RESPONSE_BIT,
        "VS_FOCUS_MIN_STEPS": proto.FOCUS_MIN_STEPS,
        "VS_FOCUS_MAX_STEPS": proto.FOCUS_MAX_STEPS,
        "VS_HOME_MAX_STEPS": proto.HOME_MAX_STEPS,
        "VS_STEP_RATE_SPS": proto.STEP_RATE_SPS,
        "VS_HOST_TIMEOUT_DEFAULT_MS": proto.HOST_TIMEOUT_DEFAULT_MS,
        "VS_HOST_TIMEOUT_MIN_MS": proto.HOST_TIMEOUT_MIN_MS,
        "VS_HOST_TIMEOUT_MAX_MS": proto.HOST_TIMEOUT_MAX_MS,
        "VS_OVER_TEMP_CC": proto.OVER_TEMP_CC,
        "VS_OVER_TEMP_CLEAR_CC": proto.OVER_TEMP_CLEAR_CC,
        "VS_LED_WHITE": proto.LED_WHITE,
        "VS_LED_RAKING": proto.LED_RAKING,
        "VS_LED_UV": proto.LED_UV,
        "VS_LED_COUNT": proto.LED_COUNT,
        "VS_FLAG_HOMED": proto.FLAG_HOMED,
        "VS_FLAG_OVER_TEMP": proto.FLAG_OVER_TEMP,
        "VS_FLAG_HOST_SILENT": proto.FLAG_HOST_SILENT,
        "VS_FLAG_BUTTON": proto.FLAG_BUTTON,
        "VS_FLAG_HOME_SWITCH": proto.FLAG_HOME_SWITCH,
        "VS_CAP_LEDS": proto.CAP_LEDS,
        "VS_CAP_FOCUS": proto.CAP_FOCUS,
        "VS_CAP_TEMP": proto.CAP_TEMP,
        "VS_CAP_BUTTON": proto.CAP_BUTTON,
        "VS_CAP_CONSOLE": proto.CAP_CONSOLE,
        "VS_RESET_MAGIC": proto.RESET_MAGIC.decode(),
        "VS_HANG_MAGIC": proto.HANG_MAGIC.decode(),
    }
    for prefix, enum in [
        ("VS_OP_", proto.Op),
        ("VS_EV_", proto.Event),
        ("VS_STATUS_", proto.Status),
        ("VS_MOVE_", proto.MoveReason),
        ("VS_RESET_", proto.ResetCause),
        ("VS_MOTION_", proto.Motion),
        ("VS_BOARD_", proto.Board),
    ]:
        for member in enum:
            expected[prefix + member.name] = int(member)
    for name, value in expected.items():
        assert name in defines, f"{name} missing from protocol.h"
        raw = defines[name]
        parsed: object = raw.strip('"') if raw.startswith('"') else int(raw, 0)
        assert parsed == value, f"{name}: protocol.h has {raw}, Python has {value!r}"
    # And nothing in the header is left without a Python twin.
    assert set(defines) - set(expected) == set()
