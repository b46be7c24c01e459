"""Flash the controller board's firmware through its Optiboot bootloader, and verify it.

:func:`load_image` reads an Intel HEX file and refuses one that does not fit below the
bootloader (0x7E00) or is not an ATmega328P application. :func:`flash_image` then, over
STK500v1: syncs, checks the chip's signature, erases page 0 first (so a half-written image
can never start: its reset vector is blank and the bootloader keeps control), writes every
other page, reads them all back, writes page 0 last and verifies it, and leaves programming
mode. Failed commands are retried after a resync; a page that reads back wrong is written
again. Any failure after the first page was sent raises :class:`FlashError` with
``partial=True``, naming the address ranges written and the state of the reset vector: a
half-written image is always reported, never silent.

Veriscope images carry an identity block, found by its magic ``VSFWINFO``::

    offset size field
    0      8    "VSFWINFO"
    8      1    layout version (1)
    9      3    device signature of the MCU the image is for (1E 95 0F: ATmega328P)
    12     1    protocol version
    13     3    firmware version: major, minor, patch
    16     16   build id, ASCII, NUL-padded
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import serial
from intelhex import HexRecordError, IntelHex, IntelHexError

from veriscope.tools._stk500 import BytePort, Stk500Client, Stk500Error

ATMEGA328P_SIGNATURE = bytes((0x1E, 0x95, 0x0F))
"""Device signature of the controller's MCU."""
PAGE_SIZE = 128
"""Flash page of the ATmega328P, in bytes."""
APP_LIMIT = 0x7E00
"""First byte of the bootloader; an application must end below it."""
FLASH_SIZE = 0x8000
"""Bytes of program flash on the ATmega328P; data at or above it is for another MCU or memory."""
VECTOR_COUNT = 26
"""Interrupt vectors of the ATmega328P, 4 bytes each."""
INFO_MAGIC = b"VSFWINFO"

Progress = Callable[[str, int, int], None]
"""Called as ``progress(phase, done_bytes, total_bytes)``; phases are ``write`` and ``verify``."""


class FlashError(Exception):
    """Flashing failed.

    ``partial`` tells whether the board may now hold a half-written image. ``written`` lists
    the flash ranges whose pages were written before the failure, as ``(first, end)`` byte
    addresses with ``end`` exclusive, in address order; empty when nothing was written.
    """

    def __init__(self, message: str, *, partial: bool, written: tuple[tuple[int, int], ...] = ()) -> None:
        super().__init__(message)
        self.partial = partial
        self.written = written


class ImageError(FlashError):
    """The firmware file is unreadable, too large, or not for this MCU; nothing was written."""

    def __init__(self, message: str) -> None:
        super().__init__(message, partial=False)


@dataclass(frozen=True)
class FirmwareInfo:
    """The identity block of a Veriscope image."""

    signature: bytes
    protocol_version: int
    version: tuple[int, int, int]
    build_id: str

    def describe(self) -> str:
        """One line for people."""
        v = ".".join(map(str, self.version))
        return f"veriscope-controller {v} (build {self.build_id}, protocol {self.protocol_version})"


@dataclass(frozen=True)
class FirmwareImage:
    """A firmware image, cut into the flash pages that hold data."""

    pages: dict[int, bytes]
    """Page address -> PAGE_SIZE bytes (gaps filled with 0xFF)."""
    size: int
    """One past the highest byte address used."""
    info: FirmwareInfo | None

    @property
    def byte_count(self) -> int:
        """Bytes that will be written (whole pages)."""
        return len(self.pages) * PAGE_SIZE


@dataclass
class FlashReport:
    """What a successful flash did."""

    bytes_written: int
    pages: int
    seconds: float
    write_seconds: float
    retries: int
    signature: bytes
    info: FirmwareInfo | None = None
    notes: list[str] = field(default_factory=list)


def load_image(path: Path) -> FirmwareImage:
    """Read an Intel HEX file as an ATmega328P application.

    Raises :class:`ImageError` if the file cannot be parsed, holds data outside the
    ATmega328P's 32 KiB of flash, does not fit below the bootloader, or is not built for the
    ATmega328P (by its identity block or, without one, its interrupt vector table).
    """
    try:
        ih = IntelHex(str(path))
    except (OSError, HexRecordError, IntelHexError, ValueError) as exc:
        raise ImageError(f"cannot read {path} as Intel HEX: {exc}") from exc
    addresses = ih.addresses()
    if not addresses:
        raise ImageError(f"{path} holds no data")
    end = max(addresses) + 1
    if end > FLASH_SIZE:
        raise ImageError(
            f"{path} is not an ATmega328P application: it holds data at 0x{max(addresses):X}, beyond the chip's "
            f"{FLASH_SIZE // 1024} KiB of flash (0x0000..0x{FLASH_SIZE - 1:04X}); an image for a larger MCU, or "
            "EEPROM or fuse data, cannot be flashed here"
        )
    if end > APP_LIMIT:
        raise ImageError(
            f"{path} does not fit: it ends at 0x{end:04X}, but the application must end below the bootloader at "
            f"0x{APP_LIMIT:04X} ({APP_LIMIT} bytes)"
        )
    data = bytes(ih.tobinarray(start=0, size=end))
    info = _find_info(data)
    if info is not None:
        if info.signature != ATMEGA328P_SIGNATURE:
            raise ImageError(
                f"{path} is built for the MCU with signature {info.signature.hex(' ').upper()}, "
                f"not the ATmega328P ({ATMEGA328P_SIGNATURE.hex(' ').upper()})"
            )
    else:
        _check_vectors(path, data)
    pages: dict[int, bytes] = {}
    for addr in sorted({a - a % PAGE_SIZE for a in addresses}):
        pages[addr] = bytes(ih.tobinarray(start=addr, size=PAGE_SIZE))
    return FirmwareImage(pages, end, info)


def page_ranges(pages: set[int]) -> tuple[tuple[int, int], ...]:
    """Page addresses merged into ``(first, end)`` byte ranges (``end`` exclusive), in address order."""
    ranges: list[tuple[int, int]] = []
    for addr in sorted(pages):
        if ranges and ranges[-1][1] == addr:
            ranges[-1] = (ranges[-1][0], addr + PAGE_SIZE)
        else:
            ranges.append((addr, addr + PAGE_SIZE))
    return tuple(ranges)


def _find_info(data: bytes) -> FirmwareInfo | None:
    at = data.find(INFO_MAGIC)
    if at < 0 or len(data) < at + 32 or data[at + 8] != 1:
        return None
    block = data[at : at + 32]
    build = block[16:32].split(b"\0", 1)[0].decode("ascii", errors="replace")
    return FirmwareInfo(bytes(block[9:12]), block[12], (block[13], block[14], block[15]), build)


def _check_vectors(path: Path, data: bytes) -> None:
    """An ATmega328P application starts with 26 four-byte ``jmp`` vectors into the image."""
    if len(data) < VECTOR_COUNT * 4:
        raise ImageError(f"{path} is too short to hold the ATmega328P vector table")
    for i in range(VECTOR_COUNT):
        op = data[4 * i] | data[4 * i + 1] << 8
        target = (data[4 * i + 2] | data[4 * i + 3] << 8) * 2
        if op & 0xFE0E != 0x940C or target >= len(data):
            raise ImageError(
                f"{path} is not an ATmega328P application: vector {i} at 0x{4 * i:04X} is not a jump into the image "
                "(and the image carries no Veriscope identity block)"
            )


def open_port(port: str, baudrate: int = 115200) -> serial.Serial:
    """Open ``port`` for the bootloader and pulse DTR to reset the board, as the Arduino IDE does.

    Raises :class:`FlashError` if the port cannot be opened.
    """
    try:
        ser = serial.Serial(port, baudrate, timeout=0.05, write_timeout=2.0)
    except serial.SerialException as exc:
        raise FlashError(f"cannot open serial port {port}: {exc}", partial=False) from exc
    try:
        ser.dtr = False
        time.sleep(0.05)
        ser.dtr = True
    except (OSError, serial.SerialException):
        pass  # pseudo-terminals have no DTR; the emulator resets on open instead
    # Bytes sent while the reset pulse is still on are lost, so let it pass before syncing.
    time.sleep(0.05)
    return ser


def flash_image(
    port: BytePort,
    image: FirmwareImage,
    *,
    attempts: int = 3,
    sync_timeout_s: float = 5.0,
    command_timeout_s: float = 0.5,
    progress: Progress | None = None,
    port_name: str = "the port",
) -> FlashReport:
    """Write ``image`` through the bootloader on ``port`` and verify it; see the module docstring.

    Each command waits ``command_timeout_s`` for its answer and is tried ``attempts`` times;
    the first sync keeps trying for ``sync_timeout_s``. Raises :class:`FlashError`:
    ``partial`` tells whether the board may now hold a half-written image, ``written``
    which address ranges were written, and the message says both and the state of the
    reset vector.
    """
    client = Stk500Client(port, timeout_s=command_timeout_s)
    start = time.monotonic()
    retries = 0
    touched = False  # a PROG_PAGE was sent: Optiboot may have erased or written a page from here on
    written: set[int] = set()  # pages whose new data the bootloader acknowledged
    vector = "untouched"  # page 0: untouched, blanking, blank, writing, written
    complete = False  # every page written and verified
    total = image.byte_count
    done = {"write": 0, "verify": 0}

    def tick(phase: str) -> None:
        done[phase] += PAGE_SIZE
        if progress is not None:
            progress(phase, done[phase], total)

    def fail(what: str, exc: Exception | None = None) -> FlashError:
        detail = f": {exc}" if exc else ""
        if not touched:
            return FlashError(f"flashing failed while {what}{detail}; nothing was written", partial=False)
        ranges = page_ranges(written)
        where = ", ".join(f"0x{first:04X}..0x{end - 1:04X}" for first, end in ranges)
        if complete:
            return FlashError(
                f"flashing stopped while {what}{detail}, after the whole image was written and verified "
                f"({where}); reset the board (unplug it or open its port again) to start the new firmware",
                partial=False,
                written=ranges,
            )
        state = {
            "untouched": "the image has no page 0x0000, so the old reset vector may start a mix of old and new code",
            "blanking": "page 0x0000 (the reset vector) was being blanked, so the previous firmware may no longer start",
            "blank": "page 0x0000 (the reset vector) is blank, so the bootloader keeps control",
            "writing": "page 0x0000 (the reset vector) was being written and may be blank or wrong",
            "written": "page 0x0000 (the reset vector) was written but does not read back right",
        }[vector]
        return FlashError(
            f"flashing stopped while {what}{detail}. The board now holds a HALF-WRITTEN image: "
            f"{len(written)} of {len(image.pages)} pages written{f' (bytes {where})' if ranges else ''}; {state}. "
            "Run flash-controller again.",
            partial=True,
            written=ranges,
        )

    def resync() -> None:
        for _ in range(attempts * 3):
            try:
                client.sync()
                return
            except Stk500Error:
                time.sleep(0.05)
        raise Stk500Error("the bootloader does not answer GET_SYNC any more")

    def run(what: str, action: Callable[[], bytes | None]) -> bytes | None:
        nonlocal retries
        last: Exception | None = None
        for attempt in range(attempts):
            if attempt:
                retries += 1
                try:
                    resync()
                except Stk500Error as exc:
                    raise fail(what, exc) from exc
            try:
                return action()
            except Stk500Error as exc:
                last = exc
        raise fail(what, last)

    # 1. Sync within the bootloader's window after the reset.
    deadline = time.monotonic() + sync_timeout_s
    while True:
        try:
            client.sync()
            break
        except Stk500Error as exc:
            if time.monotonic() > deadline:
                raise FlashError(
                    f"no answer from the bootloader on {port_name} within {sync_timeout_s:.1f} s ({exc}); "
                    "is the board connected, and did opening the port reset it?",
                    partial=False,
                ) from exc
            time.sleep(0.02)
    # The window may be cut short by stray bytes, so make sure two syncs in a row work.
    run("syncing", client.sync)
    signature = run("reading the signature", client.read_signature) or b""
    if signature != ATMEGA328P_SIGNATURE:
        raise FlashError(
            f"the chip on {port_name} has signature {signature.hex(' ').upper()}, not the ATmega328P's "
            f"{ATMEGA328P_SIGNATURE.hex(' ').upper()}; nothing was written",
            partial=False,
        )
    run("entering programming mode", client.enter_programming)

    def write_page(addr: int, data: bytes) -> None:
        client.load_address(addr)
        client.program_page(data)

    def read_page(addr: int) -> bytes:
        client.load_address(addr)
        return client.read_page(PAGE_SIZE)

    def write_and_verify(addr: int, data: bytes) -> None:
        nonlocal retries
        for attempt in range(attempts):
            if attempt:
                retries += 1
                run(f"rewriting page 0x{addr:04X}", partial(write_page, addr, data))
            if run(f"reading back page 0x{addr:04X}", partial(read_page, addr)) == data:
                return
        raise fail(f"verifying page 0x{addr:04X}: it still reads back wrong after {attempts} writes")

    body = [addr for addr in sorted(image.pages) if addr != 0]
    vector_page = 0 in image.pages
    write_seconds = 0.0

    def timed_write(addr: int, data: bytes, what: str) -> None:
        nonlocal write_seconds, touched
        t0 = time.monotonic()
        touched = True
        run(what, partial(write_page, addr, data))
        write_seconds += time.monotonic() - t0

    if vector_page:
        # Blank the reset vector before anything else, so that no half image ever runs.
        vector = "blanking"
        timed_write(0, b"\xff" * PAGE_SIZE, "erasing page 0x0000")
        vector = "blank"
    for addr in body:
        timed_write(addr, image.pages[addr], f"writing page 0x{addr:04X}")
        written.add(addr)
        tick("write")
    for addr in body:
        write_and_verify(addr, image.pages[addr])
        tick("verify")
    if vector_page:
        # Only now that the rest reads back right does the image become startable.
        vector = "writing"
        timed_write(0, image.pages[0], "writing page 0x0000")
        vector = "written"
        written.add(0)
        tick("write")
        write_and_verify(0, image.pages[0])
        tick("verify")
    complete = True
    run("leaving programming mode", client.leave_programming)
    return FlashReport(
        bytes_written=image.byte_count,
        pages=len(image.pages),
        seconds=time.monotonic() - start,
        write_seconds=write_seconds,
        retries=retries,
        signature=signature,
        info=image.info,
    )
