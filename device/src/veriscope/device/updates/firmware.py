"""Over-the-air controller firmware: flash a verified bundle's image through the bootloader, check it, fall back.

The order of an install is what makes it safe:

1. The bundle is verified completely (signature, manifest, every payload's SHA-256), then its kind, hardware,
   board, protocol version, minimum installed version and anti-rollback rule are checked against the running
   firmware, and its ``firmware.hex`` is parsed (it must fit below the bootloader at 0x7E00). Nothing is flashed.
2. The scan manager's camera lock is taken (a scan that owns the camera refuses the install), and the serial
   driver is paused: its port is closed and no call reaches the board until the update ends.
3. The fallback is kept in ``previous.hex``: the image recorded as the board's last good one (``current.hex``,
   when its version and build id match the handshake), else the application area read back through the
   bootloader, checked against the handshake's identity; ``state.json`` names it as the previous image before
   anything is flashed, so a unit stopped after the flash can still flash it back (:meth:`FirmwareUpdater.revert`).
4. The new image is flashed through Optiboot with every page verified (:func:`veriscope.tools.flash.flash_image`),
   the driver reconnects, and the board's HELLO must report the bundle's firmware version (and build id when the
   image carries one) within the handshake timeout.
5. Any failure in step 4 flashes ``previous.hex`` back, verifies it, and checks that the board answers with the
   old version: the update is rolled back, with the reason. Success records the new image as ``current.hex``.

Layout, under ``DATA_DIR/firmware``: ``state.json`` (what the board runs, what ran before it, the latest result;
replaced atomically), ``current.hex`` and ``previous.hex``. A bundle is extracted into a fresh directory under
``incoming/`` only while it is checked; the image is then held in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import ed25519
from intelhex import IntelHex

from veriscope.device.controller import Controller, ControllerInfo
from veriscope.device.controller import _protocol as proto
from veriscope.device.controller.serial_board import SerialController
from veriscope.device.errors import ControllerError, FailedPrecondition
from veriscope.device.fsutil import write_atomic
from veriscope.device.scans.manager import ScanManager
from veriscope.device.updates.slots import Result, check_acceptance, now_rfc3339, semver_key
from veriscope.tools import bundles, flash
from veriscope.tools._stk500 import Stk500Client, Stk500Error

_log = logging.getLogger("veriscope.device.updates.firmware")

KIND: Final = "controller-firmware"
"""The bundle kind this module installs."""
BOARD_LABEL: Final = "board"
"""The slot label of the firmware the board runs."""
PREVIOUS_LABEL: Final = "previous"
"""The slot label of the firmware that ran before it."""
STATE: Final = "state.json"
CURRENT_HEX: Final = "current.hex"
PREVIOUS_HEX: Final = "previous.hex"
_READ_ATTEMPTS: Final = 3


@dataclass(frozen=True)
class FirmwareRecord:
    """One firmware image the unit knows.

    Attributes:
        version: The version its handshake reports.
        build_id: Its build id, empty when unknown.
        sha256: The hex SHA-256 of its ``.hex`` file in ``DATA_DIR/firmware``, empty when no file is kept.
        install_time: When it was flashed (RFC 3339), empty when it was found on the board.
    """

    version: str
    build_id: str = ""
    sha256: str = ""
    install_time: str = ""


@dataclass(frozen=True)
class FirmwareState:
    """The content of ``state.json``.

    Attributes:
        current: The image the board runs, when known (``current.hex``).
        previous: The image that ran before it (``previous.hex`` held it as the fallback of that update).
        result: The latest firmware update, or None.
    """

    current: FirmwareRecord | None = None
    previous: FirmwareRecord | None = None
    result: Result | None = None


@dataclass(frozen=True)
class PreparedFirmware:
    """A verified controller-firmware bundle, extracted and parsed, ready to flash.

    Attributes:
        manifest: The bundle's signed manifest; None for the previous image flashed back by :meth:`revert`.
        hex_data: The bytes of its ``firmware.hex``.
        image: The parsed image.
        version: The firmware version the board must report once it runs the image.
        build_id: The build id it must report, empty when the image carries no identity block.
    """

    manifest: bundles.Manifest | None
    hex_data: bytes
    image: flash.FirmwareImage
    version: str
    build_id: str


@dataclass(frozen=True)
class FirmwareSlotView:
    """One controller firmware slot as GetUpdateStatus reports it.

    Attributes:
        label: ``board`` (what runs) or ``previous`` (what ran before it).
        state: ``active`` or ``previous``.
        name: The board kind, e.g. ``atmega328p``.
        version: The firmware version.
        install_time: When it was flashed (RFC 3339), empty when unknown.
    """

    label: str
    state: str
    name: str
    version: str
    install_time: str


class _RolledBack(Exception):
    """The new image failed; the fallback was restored."""


def serial_board(controller: Controller | None) -> SerialController | None:
    """The serial driver behind ``controller`` (unwrapping a bench mirror), or None for a simulated board."""
    board = getattr(controller, "board", controller)
    return board if isinstance(board, SerialController) else None


class FirmwareUpdater:
    """Flashes controller-firmware bundles through the board's bootloader, verifies them, and falls back.

    Args:
        directory: ``DATA_DIR/firmware``.
        controller: The daemon's controller; only a serial board (or the emulated one on a pty) can be flashed.
        manager: The scan manager whose camera lock the flash holds; None on a unit without a camera.
        trust: The update public key; None refuses every install.
        accepted_hardware: The ``compatible_hardware`` names this unit accepts.
        handshake_timeout_s: How long the board may take to answer HELLO after a flash, in seconds.
        sync_timeout_s: How long the bootloader may take to answer after the port is opened, in seconds.
    """

    def __init__(
        self,
        directory: Path,
        controller: Controller | None,
        manager: ScanManager | None,
        *,
        trust: ed25519.Ed25519PublicKey | None,
        accepted_hardware: tuple[str, ...],
        handshake_timeout_s: float = 10.0,
        sync_timeout_s: float = 5.0,
    ) -> None:
        self.directory = directory
        self._controller = controller
        self._board = serial_board(controller)
        self._manager = manager
        self.trust = trust
        self.accepted_hardware = accepted_hardware
        self.handshake_timeout_s = handshake_timeout_s
        self.sync_timeout_s = sync_timeout_s
        self._busy = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        state = self.read_state()
        if state.result is not None and state.result.outcome == "trial":
            # The daemon stopped mid-update; the driver's handshake at start tells what the board runs now.
            done = dataclasses.replace(
                state.result,
                outcome="failed",
                message="the daemon stopped while the firmware was being flashed",
                end_time=now_rfc3339(),
            )
            self._write_state(dataclasses.replace(state, result=done))

    # --- status ---

    @property
    def busy(self) -> bool:
        """True while a firmware update runs."""
        return self._busy.locked()

    def read_state(self) -> FirmwareState:
        """``state.json``; the empty state when there is none or it cannot be read."""
        try:
            raw = json.loads((self.directory / STATE).read_text())
        except (OSError, ValueError):
            return FirmwareState()
        try:
            return FirmwareState(
                current=FirmwareRecord(**raw["current"]) if raw.get("current") else None,
                previous=FirmwareRecord(**raw["previous"]) if raw.get("previous") else None,
                result=Result(**raw["result"]) if raw.get("result") else None,
            )
        except TypeError:
            return FirmwareState()

    def result(self) -> Result | None:
        """The latest firmware update and how it ended, or None."""
        return self.read_state().result

    def installed_version(self) -> str | None:
        """The firmware version of the board's last handshake; None without a controller."""
        return self._controller.info.firmware_version if self._controller is not None else None

    def slots(self) -> list[FirmwareSlotView]:
        """What the board runs (its handshake) and what ran before it; empty without a controller."""
        if self._controller is None:
            return []
        info = self._controller.info
        state = self.read_state()
        current = (
            state.current if state.current is not None and state.current.version == info.firmware_version else None
        )
        views = [
            FirmwareSlotView(
                BOARD_LABEL, "active", info.kind, info.firmware_version, current.install_time if current else ""
            )
        ]
        previous = state.previous
        if previous is not None and previous.version != info.firmware_version:
            views.append(
                FirmwareSlotView(PREVIOUS_LABEL, "previous", info.kind, previous.version, previous.install_time)
            )
        return views

    # --- verify ---

    def verify(self, path: Path, *, allow_downgrade: bool, is_admin: bool) -> PreparedFirmware:
        """Verify a controller-firmware bundle, check that this board may run it, and extract its image.

        Writes only a temporary directory under ``DATA_DIR/firmware/incoming``; the board is not touched.

        Raises:
            FailedPrecondition: No update key; no serial board to flash (a simulated controller); the bundle is
                refused (tampered, wrong key or kind, wrong hardware, board or protocol version, an image that
                does not fit below the bootloader, too old an installed version, not newer than the running one).
            PermissionDenied: A downgrade was asked for by a caller who is not an admin.
        """
        if self.trust is None:
            raise FailedPrecondition("this unit has no update key: start the daemon with --update-trust PUBFILE")
        board = self._board
        if board is None or board.port_path is None:
            raise FailedPrecondition(
                "controller firmware bundles are flashed into a serial controller board through its bootloader; "
                "this unit's controller is simulated, so there is no firmware to update (run the daemon against "
                'the board, or the emulated board on its pty, with [controller] kind = "serial")'
            )
        try:
            verified = bundles.read_bundle(path, self.trust)
        except bundles.BundleError as exc:
            raise FailedPrecondition(f"bundle refused: {exc.reason}") from None
        manifest = verified.manifest
        if manifest.kind != KIND:
            raise FailedPrecondition(f"bundle refused: kind {manifest.kind!r} is not {KIND!r}")
        info = board.info
        extracted = self._extract(verified)
        try:
            meta = self._metadata(extracted)
            hex_data = (extracted / bundles.FIRMWARE_HEX).read_bytes()
            image = self._image(extracted / bundles.FIRMWARE_HEX)
        finally:
            shutil.rmtree(extracted.parent, ignore_errors=True)
        if meta.board is not None and meta.board != info.kind:
            raise FailedPrecondition(
                f"bundle refused: the firmware is for board {meta.board}, this board is {info.kind}"
            )
        protocol = image.info.protocol_version if image.info is not None else meta.protocol_version
        if protocol is not None and protocol != proto.PROTOCOL_VERSION:
            raise FailedPrecondition(
                f"bundle refused: the firmware speaks protocol version {protocol}, this daemon speaks "
                f"version {proto.PROTOCOL_VERSION}"
            )
        installed = info.firmware_version
        known: str | None = installed
        try:
            semver_key(installed)
        except ValueError:
            known = None  # a board reporting no semantic version may take any signed firmware
        check_acceptance(
            manifest,
            known,
            self.accepted_hardware,
            subject="firmware",
            allow_downgrade=allow_downgrade,
            is_admin=is_admin,
        )
        if image.info is not None:
            version, build_id = ".".join(map(str, image.info.version)), image.info.build_id
        else:
            version, build_id = meta.firmware_version or manifest.version, ""
        return PreparedFirmware(manifest, hex_data, image, version, build_id)

    def _extract(self, verified: bundles.VerifiedBundle) -> Path:
        """Extract into ``incoming/<fresh>/bundle`` and return that directory; the caller removes its parent."""
        incoming = self.directory / "incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        dest = Path(tempfile.mkdtemp(dir=incoming)) / "bundle"
        try:
            bundles.extract_verified(verified, dest)
        except bundles.BundleError as exc:
            shutil.rmtree(dest.parent, ignore_errors=True)
            raise FailedPrecondition(f"bundle refused while extracting: {exc.reason}") from None
        if not (dest / bundles.FIRMWARE_HEX).is_file():
            shutil.rmtree(dest.parent, ignore_errors=True)
            raise FailedPrecondition(f"bundle refused: it holds no {bundles.FIRMWARE_HEX}")
        return dest

    @staticmethod
    def _metadata(directory: Path) -> bundles.FirmwareMetadata:
        path = directory / bundles.FIRMWARE_METADATA
        if not path.is_file():
            return bundles.FirmwareMetadata()
        try:
            return bundles.parse_firmware_metadata(path.read_bytes())
        except bundles.BundleError as exc:
            raise FailedPrecondition(f"bundle refused: {exc.reason}") from None

    @staticmethod
    def _image(path: Path) -> flash.FirmwareImage:
        try:
            return flash.load_image(path)
        except flash.ImageError as exc:
            raise FailedPrecondition(f"bundle refused: its firmware will not flash: {exc}") from None

    # --- install ---

    async def install(self, prepared: PreparedFirmware) -> Result:
        """Start flashing a verified bundle; returns the update's result, on trial until the flash ends.

        The flash runs in the background holding the camera lock; :meth:`wait` waits for it.

        Raises:
            FailedPrecondition: A firmware update runs already, or a scan owns the camera.
        """
        if self._busy.locked():
            raise FailedPrecondition("a controller firmware update is running; wait for it to end")
        owner = self._manager.busy_owner() if self._manager is not None else None
        if owner is not None:
            raise FailedPrecondition(
                f"scans/{owner} owns the camera; flashing the controller would stop its lights and focus: "
                "complete or cancel the scan, then install again"
            )
        await self._busy.acquire()
        try:
            result = Result(BOARD_LABEL, prepared.version, "trial", "", now_rfc3339())
            self._write_state(dataclasses.replace(self.read_state(), result=result))
        except BaseException:
            self._busy.release()
            raise
        _log.info("controller firmware %s: flashing", prepared.version)
        self._task = asyncio.get_running_loop().create_task(self._run(prepared, result))
        return result

    async def revert(self, reason: str) -> Result:
        """Flash back the image that ran before the latest committed update (``previous.hex``), verify it and
        check its handshake, as an update; returns the result, ``rolled_back`` for the version undone when the
        old image runs again, ``failed`` otherwise.

        Raises:
            FailedPrecondition: No previous image is kept, an update runs, or a scan owns the camera.
        """
        state = self.read_state()
        previous, path = state.previous, self.directory / PREVIOUS_HEX
        data = path.read_bytes() if path.is_file() else b""
        if previous is None or not data or _sha256(data) != previous.sha256:
            raise FailedPrecondition("no previous controller firmware is kept to flash back")
        undone = self.installed_version() or ""
        image = await asyncio.to_thread(flash.load_image, path)
        await self.install(PreparedFirmware(None, data, image, previous.version, previous.build_id))
        await self.wait()
        done = self.result()
        assert done is not None
        if done.outcome == "committed":
            outcome, message = "rolled_back", f"{reason}; the previous firmware {previous.version} runs again"
        else:
            outcome, message = "failed", f"{reason}; flashing back firmware {previous.version} failed: {done.message}"
        result = dataclasses.replace(done, version=undone, outcome=outcome, message=message)
        self._write_state(dataclasses.replace(self.read_state(), result=result))
        return result

    async def wait(self) -> None:
        """Wait until the running firmware update, if any, has ended."""
        task = self._task
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)

    async def _run(self, prepared: PreparedFirmware, result: Result) -> None:
        try:
            camera_lock = self._manager.camera_lock if self._manager is not None else asyncio.Lock()
            try:
                async with camera_lock:
                    outcome, message = await asyncio.to_thread(self._flash_blocking, prepared)
            except Exception as exc:  # recorded, so the result never stays on trial
                outcome, message = "failed", f"the firmware update stopped: {exc}"
            done = dataclasses.replace(result, outcome=outcome, message=message, end_time=now_rfc3339())
            self._write_state(dataclasses.replace(self.read_state(), result=done))
            log = _log.info if outcome == "committed" else _log.error
            log("controller firmware %s: %s%s", prepared.version, outcome, f": {message}" if message else "")
        finally:
            self._busy.release()

    def _flash_blocking(self, prepared: PreparedFirmware) -> tuple[str, str]:
        """Keep the fallback, flash, check the handshake, fall back on failure; returns (outcome, message)."""
        board = self._board
        assert board is not None
        port = board.port_path
        assert port is not None
        before = board.info
        board.pause()
        try:
            return self._update_paused(board, port, before, prepared)
        except BaseException:
            board.unpause()  # never leave the driver paused by a fault of this module
            raise

    def _update_paused(
        self, board: SerialController, port: str, before: ControllerInfo, prepared: PreparedFirmware
    ) -> tuple[str, str]:
        try:
            fallback, fallback_record = self._keep_fallback(port, before)
        except (flash.FlashError, Stk500Error, OSError, ValueError) as exc:
            # Nothing was written; the board still holds its image, so it should simply answer again.
            problem = f"nothing was flashed: could not keep the running image as the fallback: {exc}"
            try:
                board.resume(self.handshake_timeout_s)
            except ControllerError as again:
                board.unpause()
                return "failed", f"{problem}; and the board no longer answers: {again}"
            return "rolled_back", problem
        try:
            self._flash_and_check(board, port, prepared.image, prepared.version, prepared.build_id)
        except _RolledBack as exc:
            reason = str(exc)
            try:
                board.pause()
                self._flash_and_check(board, port, fallback, before.firmware_version, before.build_id)
            except _RolledBack as again:
                board.unpause()
                return "failed", (
                    f"{reason}; restoring the previous firmware {before.firmware_version} failed too: {again}; "
                    "flash the board with 'veriscope-tool flash-controller'"
                )
            self._record_rollback(fallback_record)
            return "rolled_back", f"{reason}; the previous firmware {before.firmware_version} runs again"
        self._record_success(prepared, fallback_record)
        return "committed", ""

    def _flash_and_check(
        self, board: SerialController, port: str, image: flash.FirmwareImage, version: str, build_id: str
    ) -> None:
        """Flash ``image`` with verify, reconnect the driver and check the handshake; raise :class:`_RolledBack`."""
        try:
            ser = flash.open_port(port)
        except flash.FlashError as exc:
            raise _RolledBack(str(exc)) from None
        try:
            flash.flash_image(ser, image, sync_timeout_s=self.sync_timeout_s, port_name=port)
        except flash.FlashError as exc:
            raise _RolledBack(f"flashing {version} failed: {exc}") from None
        finally:
            with contextlib.suppress(OSError):
                ser.close()
        try:
            info = board.resume(self.handshake_timeout_s)
        except ControllerError as exc:
            raise _RolledBack(
                f"firmware {version} was flashed and verified but the board does not answer: {exc}"
            ) from None
        if info.firmware_version != version or (build_id and info.build_id != build_id):
            board.pause()
            raise _RolledBack(
                f"firmware {version} was flashed but the board reports {info.firmware_version} (build {info.build_id})"
            )

    # --- the fallback ---

    def _keep_fallback(self, port: str, running: ControllerInfo) -> tuple[flash.FirmwareImage, FirmwareRecord]:
        """Write the running image to ``previous.hex`` and return it, parsed, with its record."""
        state = self.read_state()
        current = state.current
        target = self.directory / PREVIOUS_HEX
        recorded = self.directory / CURRENT_HEX
        if (
            current is not None
            and current.version == running.firmware_version
            and current.build_id == running.build_id
            and recorded.is_file()
            and _sha256(recorded.read_bytes()) == current.sha256
        ):
            data = recorded.read_bytes()
            record = current
        else:
            data = _to_hex(self._read_back(port))
            record = FirmwareRecord(running.firmware_version, running.build_id, _sha256(data))
        _write_atomic(target, data)
        image = flash.load_image(target)
        if image.info is not None and (
            ".".join(map(str, image.info.version)) != running.firmware_version
            or image.info.build_id != running.build_id
        ):
            raise ValueError(
                f"the image read back is {image.info.describe()}, but the board's handshake reported "
                f"{running.firmware_version} build {running.build_id}"
            )
        record = dataclasses.replace(record, sha256=_sha256(data))
        # Recorded before anything is flashed: a unit stopped after the flash, before its record, can still revert.
        self._write_state(dataclasses.replace(self.read_state(), previous=record))
        return image, record

    def _read_back(self, port: str) -> bytes:
        """The application area (below the bootloader) as the board holds it, each page read twice to agree."""
        ser = flash.open_port(port)
        try:
            client = Stk500Client(ser, timeout_s=0.5)
            deadline = time.monotonic() + self.sync_timeout_s
            while True:
                try:
                    client.sync()
                    client.sync()
                    break
                except Stk500Error:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
            signature = client.read_signature()
            if signature != flash.ATMEGA328P_SIGNATURE:
                raise ValueError(f"the chip's signature is {signature.hex(' ').upper()}, not the ATmega328P's")
            data = bytearray()
            for addr in range(0, flash.APP_LIMIT, flash.PAGE_SIZE):
                data += self._read_page(client, addr)
            client.leave_programming()
        finally:
            with contextlib.suppress(OSError):
                ser.close()
        end = len(data.rstrip(b"\xff"))
        if end == 0:
            raise ValueError("the board's application area is blank")
        return bytes(data[: end + end % 2])

    @staticmethod
    def _read_page(client: Stk500Client, addr: int) -> bytes:
        last = b""
        for _ in range(_READ_ATTEMPTS):
            client.load_address(addr)
            first = client.read_page(flash.PAGE_SIZE)
            client.load_address(addr)
            last = client.read_page(flash.PAGE_SIZE)
            if first == last:
                return last
        raise ValueError(f"page 0x{addr:04X} reads back differently each time")

    # --- records ---

    def _record_success(self, prepared: PreparedFirmware, fallback: FirmwareRecord) -> None:
        data = prepared.hex_data
        _write_atomic(self.directory / CURRENT_HEX, data)
        current = FirmwareRecord(prepared.version, prepared.build_id, _sha256(data), now_rfc3339())
        self._write_state(dataclasses.replace(self.read_state(), current=current, previous=fallback))

    def _record_rollback(self, fallback: FirmwareRecord) -> None:
        state = self.read_state()
        if state.current != fallback:
            # The board runs the fallback again: keep it as the last good image, so the next update need not
            # read it back.
            _write_atomic(self.directory / CURRENT_HEX, (self.directory / PREVIOUS_HEX).read_bytes())
            self._write_state(dataclasses.replace(state, current=fallback))

    def _write_state(self, state: FirmwareState) -> None:
        payload: dict[str, Any] = dataclasses.asdict(state)
        _write_atomic(self.directory / STATE, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def _to_hex(data: bytes) -> bytes:
    ih = IntelHex()
    ih.frombytes(data, offset=0)
    text = io.StringIO()
    ih.write_hex_file(text, byte_count=16)
    return text.getvalue().encode("ascii")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` crash-safely (:func:`~veriscope.device.fsutil.write_atomic`), creating its directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)
