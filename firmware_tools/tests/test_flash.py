"""The flasher against a pure-Python Optiboot: image checks, page order, retries, verification, partial writes."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from intelhex import IntelHex

from veriscope.tools import _stk500 as stk
from veriscope.tools.cli import main
from veriscope.tools.flash import (
    APP_LIMIT,
    ATMEGA328P_SIGNATURE,
    FLASH_SIZE,
    PAGE_SIZE,
    FlashError,
    ImageError,
    flash_image,
    load_image,
)


class FakeOptiboot:
    """Answers STK500v1 like Optiboot, over an in-memory port, with faults the test can switch on."""

    def __init__(self, signature: bytes = ATMEGA328P_SIGNATURE) -> None:
        self.flash = bytearray(b"\xff" * 0x8000)
        self.signature = signature
        self.address = 0
        self.writes: list[int] = []
        self.left = False
        self._in = bytearray()
        self._out = bytearray()
        self.drop_replies: set[int] = set()
        """Command numbers whose reply is lost on the wire."""
        self.corrupt_pages: dict[int, int] = {}
        """Page address -> how many more writes of it store a flipped byte."""
        self.dead_after: int | None = None
        """Stop answering after this many commands (an unplugged cable)."""
        self.dead_ops: set[int] = set()
        """Opcodes that are never answered."""
        self.commands = 0

    # The port, as the flasher sees it.
    def write(self, data: bytes) -> int:
        self._in += data
        self._run()
        return len(data)

    def read(self, size: int = 1) -> bytes:
        out = bytes(self._out[:size])
        del self._out[:size]
        return out

    def reset_input_buffer(self) -> None:
        self._out.clear()

    def _run(self) -> None:
        while self._in:
            need = self._length(self._in)
            if need is None or len(self._in) < need:
                return
            cmd = bytes(self._in[:need])
            del self._in[:need]
            self.commands += 1
            if self.dead_after is not None and self.commands > self.dead_after:
                continue
            if cmd[0] in self.dead_ops:
                continue
            reply = self._execute(cmd)
            if self.commands not in self.drop_replies:
                self._out += reply

    @staticmethod
    def _length(buf: bytearray) -> int | None:
        op = buf[0]
        if op == stk.STK_LOAD_ADDRESS:
            return 4
        if op == stk.STK_PROG_PAGE:
            return None if len(buf) < 3 else 5 + (buf[1] << 8 | buf[2])
        if op == stk.STK_READ_PAGE:
            return 5
        return 2

    def _execute(self, cmd: bytes) -> bytes:
        assert cmd[-1] == stk.CRC_EOP
        ok = bytes((stk.STK_INSYNC,))
        op = cmd[0]
        if op == stk.STK_READ_SIGN:
            return ok + self.signature + bytes((stk.STK_OK,))
        if op == stk.STK_LOAD_ADDRESS:
            self.address = (cmd[1] | cmd[2] << 8) * 2
        elif op == stk.STK_PROG_PAGE:
            data = bytearray(cmd[4:-1])
            if self.corrupt_pages.get(self.address, 0) > 0:
                self.corrupt_pages[self.address] -= 1
                data[5] ^= 0x40
            self.flash[self.address : self.address + len(data)] = data
            self.writes.append(self.address)
        elif op == stk.STK_READ_PAGE:
            n = cmd[1] << 8 | cmd[2]
            return ok + bytes(self.flash[self.address : self.address + n]) + bytes((stk.STK_OK,))
        elif op == stk.STK_LEAVE_PROGMODE:
            self.left = True
        return ok + bytes((stk.STK_OK,))


def make_hex(path: Path, *, size: int = 1000, signature: bytes = ATMEGA328P_SIGNATURE, info: bool = True) -> bytes:
    """An ATmega328P-shaped image: 26 jmp vectors, an identity block, filler."""
    code = bytearray()
    for _ in range(26):
        code += struct.pack("<HH", 0x940C, 0x34)  # jmp 0x68
    if info:
        code += b"VSFWINFO" + bytes((1,)) + signature + bytes((1, 1, 2, 3)) + b"testbuild".ljust(16, b"\0")
    code += bytes((i * 7 + 3) & 0xFF for i in range(size - len(code)))
    ih = IntelHex()
    ih.frombytes(bytes(code), offset=0)
    ih.write_hex_file(str(path))
    return bytes(code)


def test_flash_writes_verifies_and_puts_the_vector_page_last(tmp_path: Path) -> None:
    code = make_hex(tmp_path / "fw.hex", size=700)
    image = load_image(tmp_path / "fw.hex")
    assert image.info is not None
    assert image.info.describe() == "veriscope-controller 1.2.3 (build testbuild, protocol 1)"
    board = FakeOptiboot()
    seen: list[tuple[str, int]] = []
    report = flash_image(board, image, progress=lambda phase, done, total: seen.append((phase, done)))
    assert bytes(board.flash[: len(code)]) == code
    assert board.flash[len(code) : 0x8000] == b"\xff" * (0x8000 - len(code))
    # Page 0 is blanked first and written last, after the rest verified.
    assert board.writes[0] == 0 and board.writes[-1] == 0
    assert board.writes[1:-1] == [128, 256, 384, 512, 640]
    assert board.left
    assert report.pages == 6 and report.retries == 0
    assert ("write", 6 * PAGE_SIZE) in seen and ("verify", 6 * PAGE_SIZE) in seen


def test_lost_replies_are_retried(tmp_path: Path) -> None:
    make_hex(tmp_path / "fw.hex", size=600)
    board = FakeOptiboot()
    board.drop_replies = {5, 9, 30}
    report = flash_image(board, load_image(tmp_path / "fw.hex"), command_timeout_s=0.05)
    assert report.retries >= 3
    assert board.left


def test_a_page_that_reads_back_wrong_is_written_again(tmp_path: Path) -> None:
    code = make_hex(tmp_path / "fw.hex", size=600)
    board = FakeOptiboot()
    board.corrupt_pages = {256: 1}
    report = flash_image(board, load_image(tmp_path / "fw.hex"))
    assert bytes(board.flash[: len(code)]) == code
    assert report.retries == 1
    assert board.writes.count(256) == 2


def test_a_page_that_never_verifies_is_reported_as_a_partial_image(tmp_path: Path) -> None:
    make_hex(tmp_path / "fw.hex", size=600)
    board = FakeOptiboot()
    board.corrupt_pages = {384: 99}
    with pytest.raises(FlashError, match=r"page 0x0180.*HALF-WRITTEN") as err:
        flash_image(board, load_image(tmp_path / "fw.hex"), attempts=2)
    assert err.value.partial
    assert not board.left


def test_unplug_mid_write_is_reported_and_the_half_image_cannot_start(tmp_path: Path) -> None:
    make_hex(tmp_path / "fw.hex", size=2000)
    board = FakeOptiboot()
    board.dead_after = 20
    with pytest.raises(FlashError, match="HALF-WRITTEN") as err:
        flash_image(board, load_image(tmp_path / "fw.hex"), attempts=2, command_timeout_s=0.05)
    assert err.value.partial
    assert "Run flash-controller again" in str(err.value)
    # The reset vector was blanked first, so the bootloader keeps control.
    assert board.flash[:PAGE_SIZE] == b"\xff" * PAGE_SIZE
    # The report names exactly the pages the bootloader took, as one range after the vector page.
    written = sorted({a for a in board.writes if a})
    assert written and written == list(range(PAGE_SIZE, written[-1] + PAGE_SIZE, PAGE_SIZE))
    assert err.value.written == ((PAGE_SIZE, written[-1] + PAGE_SIZE),)
    assert f"{len(written)} of 16 pages written (bytes 0x0080..0x{written[-1] + PAGE_SIZE - 1:04X})" in str(err.value)
    assert "page 0x0000 (the reset vector) is blank" in str(err.value)


def test_unplug_while_blanking_the_vector_page_is_still_reported(tmp_path: Path) -> None:
    make_hex(tmp_path / "fw.hex", size=600)
    board = FakeOptiboot()
    board.dead_after = 5  # sync, sync, signature, enter, load address: the first page write goes unanswered
    with pytest.raises(FlashError, match="HALF-WRITTEN image: 0 of 5 pages written; page 0x0000") as err:
        flash_image(board, load_image(tmp_path / "fw.hex"), attempts=2, command_timeout_s=0.05)
    assert err.value.partial
    assert err.value.written == ()
    assert "was being blanked, so the previous firmware may no longer start" in str(err.value)


def test_a_vector_page_that_never_verifies_is_reported_with_every_page(tmp_path: Path) -> None:
    make_hex(tmp_path / "fw.hex", size=700)
    board = FakeOptiboot()
    board.corrupt_pages = {0: 99}
    with pytest.raises(FlashError, match=r"verifying page 0x0000.*HALF-WRITTEN") as err:
        flash_image(board, load_image(tmp_path / "fw.hex"), attempts=2)
    assert err.value.partial
    assert err.value.written == ((0, 6 * PAGE_SIZE),)
    assert "6 of 6 pages written (bytes 0x0000..0x02FF)" in str(err.value)
    assert "was written but does not read back right" in str(err.value)


def test_failing_to_leave_after_a_verified_image_is_not_a_partial_image(tmp_path: Path) -> None:
    code = make_hex(tmp_path / "fw.hex", size=700)
    board = FakeOptiboot()
    board.dead_ops = {stk.STK_LEAVE_PROGMODE}
    with pytest.raises(FlashError, match="leaving programming mode") as err:
        flash_image(board, load_image(tmp_path / "fw.hex"), attempts=2, command_timeout_s=0.05)
    assert not err.value.partial
    assert err.value.written == ((0, 6 * PAGE_SIZE),)
    assert "after the whole image was written and verified (0x0000..0x02FF)" in str(err.value)
    assert bytes(board.flash[: len(code)]) == code


def test_wrong_chip_is_refused_before_writing(tmp_path: Path) -> None:
    make_hex(tmp_path / "fw.hex")
    board = FakeOptiboot(signature=bytes((0x1E, 0x95, 0x14)))
    with pytest.raises(
        FlashError, match=r"signature 1E 95 14, not the ATmega328P's 1E 95 0F; nothing was written"
    ) as err:
        flash_image(board, load_image(tmp_path / "fw.hex"))
    assert not err.value.partial
    assert board.writes == []


def test_silent_bootloader_is_reported(tmp_path: Path) -> None:
    make_hex(tmp_path / "fw.hex")
    board = FakeOptiboot()
    board.dead_after = 0
    with pytest.raises(FlashError, match="no answer from the bootloader") as err:
        flash_image(board, load_image(tmp_path / "fw.hex"), sync_timeout_s=0.3, command_timeout_s=0.05)
    assert not err.value.partial


def test_image_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    ih = IntelHex()
    ih.frombytes(b"\x0c\x94\x34\x00" * 26, offset=0)
    ih.frombytes(b"\x00\x00", offset=APP_LIMIT)  # reaches into the bootloader
    ih.write_hex_file(str(tmp_path / "big.hex"))
    with pytest.raises(ImageError, match="does not fit: it ends at 0x7E02"):
        load_image(tmp_path / "big.hex")


def test_image_with_data_beyond_the_chips_flash_is_refused(tmp_path: Path) -> None:
    ih = IntelHex()
    ih.frombytes(b"\x0c\x94\x34\x00" * 26, offset=0)
    ih.frombytes(b"\x00\x00", offset=0x1F000)  # flash of a larger AVR, such as the ATmega2560
    ih.write_hex_file(str(tmp_path / "m2560.hex"))
    with pytest.raises(ImageError, match=r"not an ATmega328P application: it holds data at 0x1F001, beyond"):
        load_image(tmp_path / "m2560.hex")
    # EEPROM contents, which avr-objcopy places at 0x810000, are refused the same way.
    ih = IntelHex()
    ih.frombytes(b"\x0c\x94\x34\x00" * 26, offset=0)
    ih.frombytes(b"\x42", offset=0x810000)
    ih.write_hex_file(str(tmp_path / "eeprom.hex"))
    with pytest.raises(ImageError, match=rf"beyond the chip's {FLASH_SIZE // 1024} KiB of flash"):
        load_image(tmp_path / "eeprom.hex")


def test_image_for_another_mcu_is_refused(tmp_path: Path) -> None:
    make_hex(tmp_path / "m2560.hex", signature=bytes((0x1E, 0x98, 0x01)))
    with pytest.raises(ImageError, match=r"signature 1E 98 01, not the ATmega328P"):
        load_image(tmp_path / "m2560.hex")
    # Without an identity block, the vector table must look like the ATmega328P's.
    ih = IntelHex()
    ih.frombytes(b"\x00\xc0" * 200, offset=0)  # rjmp vectors: a smaller AVR
    ih.write_hex_file(str(tmp_path / "tiny.hex"))
    with pytest.raises(ImageError, match="not an ATmega328P application"):
        load_image(tmp_path / "tiny.hex")


def test_image_without_identity_but_with_the_right_vectors_is_accepted(tmp_path: Path) -> None:
    make_hex(tmp_path / "plain.hex", info=False)
    image = load_image(tmp_path / "plain.hex")
    assert image.info is None
    assert image.size == 1000


def test_unreadable_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "junk.hex").write_text("this is not intel hex\n")
    with pytest.raises(ImageError, match="cannot read"):
        load_image(tmp_path / "junk.hex")
    with pytest.raises(ImageError, match="cannot read"):
        load_image(tmp_path / "missing.hex")


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_hex(tmp_path / "fw.hex")
    assert main(["flash-controller", "--port", "/dev/nonexistent-veriscope", str(tmp_path / "fw.hex")]) == 1
    assert "cannot open serial port /dev/nonexistent-veriscope" in capsys.readouterr().err
    (tmp_path / "junk.hex").write_text("junk\n")
    assert main(["flash-controller", "--port", "/dev/null", str(tmp_path / "junk.hex")]) == 2
    assert "refused" in capsys.readouterr().err
