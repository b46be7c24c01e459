"""STK500 version 1, the subset the Optiboot bootloader speaks: sync, signature, load address, program and read pages, leave.

Every command is its opcode and arguments followed by ``CRC_EOP`` (0x20); the bootloader
answers ``STK_INSYNC`` (0x14), any data, then ``STK_OK`` (0x10). Addresses are in 16-bit
words, page lengths in bytes, big-endian. The client only frames the commands and checks
the replies; retrying is the caller's business.
"""

from __future__ import annotations

import time
from typing import Protocol

STK_OK = 0x10
STK_INSYNC = 0x14
CRC_EOP = 0x20
STK_GET_SYNC = 0x30
STK_ENTER_PROGMODE = 0x50
STK_LEAVE_PROGMODE = 0x51
STK_LOAD_ADDRESS = 0x55
STK_PROG_PAGE = 0x64
STK_READ_PAGE = 0x74
STK_READ_SIGN = 0x75
MEMTYPE_FLASH = ord("F")


class BytePort(Protocol):
    """What the client needs of a serial port (pyserial's :class:`serial.Serial` fits)."""

    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes) -> int | None: ...

    def reset_input_buffer(self) -> None: ...


class Stk500Error(Exception):
    """The bootloader did not answer, or answered out of step."""


class Stk500Timeout(Stk500Error):
    """No complete answer within the timeout."""


class Stk500OutOfSync(Stk500Error):
    """The answer did not start with STK_INSYNC or end with STK_OK."""


class Stk500PortError(Stk500Error):
    """The serial port failed (unplugged, closed)."""


class Stk500Client:
    """Commands to an STK500v1 bootloader over ``port``, each waiting at most ``timeout_s`` for its answer."""

    def __init__(self, port: BytePort, *, timeout_s: float = 0.5) -> None:
        self._port = port
        self.timeout_s = timeout_s

    def sync(self) -> None:
        """One GET_SYNC exchange, after discarding whatever was waiting."""
        try:
            self._port.reset_input_buffer()
        except Exception as exc:  # pyserial raises SerialException, OSError or termios.error for a dead port
            raise Stk500PortError(f"serial port failed: {exc}") from exc
        self._command(bytes((STK_GET_SYNC,)), 0)

    def read_signature(self) -> bytes:
        """The three device signature bytes."""
        return self._command(bytes((STK_READ_SIGN,)), 3)

    def enter_programming(self) -> None:
        """Enter programming mode (Optiboot accepts it as a no-op)."""
        self._command(bytes((STK_ENTER_PROGMODE,)), 0)

    def leave_programming(self) -> None:
        """Leave programming mode; Optiboot then starts the application within about 16 ms."""
        self._command(bytes((STK_LEAVE_PROGMODE,)), 0)

    def load_address(self, byte_address: int) -> None:
        """Set the address of the next page operation (sent as a word address)."""
        if byte_address % 2:
            raise ValueError(f"flash address 0x{byte_address:04X} is odd")
        word = byte_address // 2
        self._command(bytes((STK_LOAD_ADDRESS, word & 0xFF, word >> 8)), 0)

    def program_page(self, data: bytes) -> None:
        """Write ``data`` (one page) to flash at the loaded address."""
        n = len(data)
        self._command(bytes((STK_PROG_PAGE, n >> 8, n & 0xFF, MEMTYPE_FLASH)) + data, 0)

    def read_page(self, length: int) -> bytes:
        """Read ``length`` bytes of flash from the loaded address."""
        return self._command(bytes((STK_READ_PAGE, length >> 8, length & 0xFF, MEMTYPE_FLASH)), length)

    def _command(self, body: bytes, reply_len: int) -> bytes:
        try:
            self._port.write(body + bytes((CRC_EOP,)))
            reply = self._read_exactly(reply_len + 2)
        except Exception as exc:  # pyserial raises SerialException, OSError or termios.error for a dead port
            raise Stk500PortError(f"serial port failed: {exc}") from exc
        if reply[0] != STK_INSYNC or reply[-1] != STK_OK:
            raise Stk500OutOfSync(f"command 0x{body[0]:02X}: expected 14 .. 10, got {reply.hex(' ')}")
        return reply[1:-1]

    def _read_exactly(self, n: int) -> bytes:
        deadline = time.monotonic() + self.timeout_s
        buf = b""
        while len(buf) < n:
            if time.monotonic() > deadline:
                got = buf.hex(" ") or "nothing"
                raise Stk500Timeout(f"expected {n} bytes within {self.timeout_s:.2f} s, got {got}")
            buf += self._port.read(n - len(buf))
        return buf
