"""One open connection to a controller: framed requests and responses, and a reader thread for events.

The link knows nothing about LEDs or focus: it numbers requests, resends them on a
timeout (the board answers a resent request from memory, so resending is safe), and hands
every event frame to a callback. When the port fails it marks itself lost, wakes any
waiting caller with :class:`LinkLost` and stops; reconnecting is the caller's job.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from veriscope.device.controller import _protocol as proto
from veriscope.device.errors import ControllerError

_log = logging.getLogger(__name__)

READ_SLICE_S = 0.02
"""How long one read of the port should wait (the opener sets it); bounds how late a partial frame expires."""


class SerialPort(Protocol):
    """The part of :class:`serial.Serial` the link uses; the emulated board offers the same."""

    @property
    def in_waiting(self) -> int: ...

    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes) -> int | None: ...

    def reset_input_buffer(self) -> None: ...

    def close(self) -> None: ...


class LinkLost(ControllerError):
    """The port failed or was closed under the link (unplug, I/O error)."""


class ReplyTimeout(ControllerError):
    """The board did not answer a request in time, after every attempt."""


class Link:
    """Request/response over one open port, with a reader thread dispatching events.

    Thread-safe: concurrent :meth:`request` calls are serialised, one request on the wire
    at a time. ``on_event`` runs on the reader thread and must not call :meth:`request`.
    """

    def __init__(
        self,
        port: SerialPort,
        name: str,
        on_event: Callable[[proto.Frame], None],
    ) -> None:
        self._port = port
        self.name = name
        """Human name of the port, for messages."""
        self._on_event = on_event
        self._parser = proto.FrameParser()
        self._request_lock = threading.Lock()
        self._cond = threading.Condition()
        self._seq = 0
        self._waiting: tuple[int, int] | None = None
        self._reply: bytes | None = None
        self._lost: Exception | None = None
        self._closed = False
        self.last_rx_time = time.monotonic()
        """Monotonic time of the last byte received."""
        self._reader = threading.Thread(target=self._read_loop, name=f"controller-reader {name}", daemon=True)
        self._reader.start()

    @property
    def alive(self) -> bool:
        """Whether the port is still usable."""
        return self._lost is None and not self._closed

    @property
    def crc_errors(self) -> int:
        """Frames from the board rejected for a bad CRC or length."""
        return self._parser.crc_errors

    def request(
        self, op: int, payload: bytes = b"", *, timeout_s: float, attempts: int = 3, backoff_s: float = 0.05
    ) -> bytes:
        """Send one request and return its response payload (status byte first).

        Each attempt waits ``timeout_s``; attempts after the first resend the same frame
        (same sequence number) after a backoff that doubles from ``backoff_s``.
        Raises :class:`LinkLost` if the port fails and :class:`ReplyTimeout` if no attempt
        got an answer.
        """
        with self._request_lock:
            self._seq = (self._seq + 1) & 0xFF
            seq = self._seq
            frame = proto.encode(seq, op, payload)
            want = (seq, op | proto.RESPONSE_BIT)
            with self._cond:
                self._waiting = want
                self._reply = None
            try:
                for attempt in range(attempts):
                    if attempt:
                        time.sleep(backoff_s * (2 ** (attempt - 1)))
                        _log.debug(
                            "%s: resending %s seq %d (attempt %d)", self.name, proto.op_name(op), seq, attempt + 1
                        )
                    self._write(frame)
                    reply = self._wait_reply(timeout_s)
                    if reply is not None:
                        return reply
            finally:
                with self._cond:
                    self._waiting = None
            raise ReplyTimeout(
                f"no reply to {proto.op_name(op)} (seq {seq}) from the controller on {self.name}: "
                f"{attempts} attempt(s) of {timeout_s:.2f} s each"
            )

    def close(self) -> None:
        """Stop the reader and close the port. Idempotent."""
        self._closed = True
        try:
            self._port.close()
        except Exception:  # closing a dead port may fail in many ways; nothing to do about it
            _log.debug("%s: error closing port", self.name, exc_info=True)
        with self._cond:
            self._cond.notify_all()
        if self._reader is not threading.current_thread():
            self._reader.join(timeout=1.0)

    def _write(self, data: bytes) -> None:
        self._raise_if_lost()
        try:
            self._port.write(data)
        except Exception as exc:  # pyserial raises SerialException, OSError or TypeError on a dead port
            self._mark_lost(exc)
            self._raise_if_lost()

    def _wait_reply(self, timeout_s: float) -> bytes | None:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._reply is None:
                self._raise_if_lost()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return self._reply

    def _raise_if_lost(self) -> None:
        if self._closed:
            raise LinkLost(f"the connection to the controller on {self.name} was closed")
        if self._lost is not None:
            raise LinkLost(f"lost the controller on {self.name}: {self._lost}") from self._lost

    def _mark_lost(self, exc: Exception) -> None:
        with self._cond:
            if self._lost is None and not self._closed:
                _log.warning("%s: port failed: %s", self.name, exc)
                self._lost = exc
            self._cond.notify_all()

    def _read_loop(self) -> None:
        while not self._closed and self._lost is None:
            try:
                waiting = self._port.in_waiting
                data = self._port.read(max(1, waiting))
            except Exception as exc:  # any failure of the port ends the link
                if not self._closed:
                    self._mark_lost(exc)
                return
            now = time.monotonic()
            if data:
                self.last_rx_time = now
                frames = self._parser.feed(data)
            elif self._parser.pending and now - self.last_rx_time > proto.FRAME_TIMEOUT_S:
                frames = self._parser.expire()
            else:
                continue
            for frame in frames:
                self._dispatch(frame)

    def _dispatch(self, frame: proto.Frame) -> None:
        if frame.is_response:
            with self._cond:
                if self._waiting == (frame.seq, frame.op) and self._reply is None:
                    self._reply = frame.payload
                    self._cond.notify_all()
                else:
                    _log.debug("%s: dropping stale %s seq %d", self.name, proto.op_name(frame.op), frame.seq)
            return
        if frame.is_event:
            try:
                self._on_event(frame)
            except Exception:  # a faulty handler must not kill the reader
                _log.exception("%s: event handler failed on %s", self.name, proto.op_name(frame.op))
            return
        _log.debug("%s: ignoring frame with opcode 0x%02X", self.name, frame.op)
