"""Combined updates: a bundle of part bundles (controller firmware, model, device software) installed as one.

The order of an install is what keeps the unit consistent:

1. The combined bundle is verified (signature, every hash, kind, hardware), its parts are extracted, and each
   part is verified by its own updater exactly as a bundle of its kind would be (signature, hashes, kind,
   hardware, board, minimum installed version, anti-rollback). A part at the version installed already is
   skipped. Any refusal refuses the whole bundle; nothing is installed.
2. ``DATA_DIR/updates/combined.json`` records the update and each part, and is rewritten (atomically) as each
   part ends.
3. The parts are installed in :data:`~veriscope.tools.bundles.COMBINED_PARTS` order, each waiting for the one
   before to commit: the controller firmware first (a failed flash falls back by itself), then the model (its
   trial runs while the old model serves), then the device software, whose trial needs a restart.
4. A part that fails ends the update: the parts committed before it are undone in reverse order (the model
   rolled back to the slot it replaced, the previous firmware image flashed back), and the update is
   ``rolled_back``. With device software, the daemon restarts into it; its trial's commit commits the update,
   and its rollback (or a crash loop the launcher rolls back) undoes the firmware and model at the next start.
5. A daemon that starts with the update still on trial and no device software on trial was stopped midway:
   it undoes every part whose new version runs (:meth:`CombinedUpdater.settle`), so the unit ends on the old
   versions of every part.

See device/docs/updates.md, "Combined bundles".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import tempfile
from collections.abc import Awaitable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import ed25519

from veriscope.device.errors import FailedPrecondition
from veriscope.device.fsutil import write_atomic
from veriscope.device.updates.firmware import FirmwareUpdater
from veriscope.device.updates.models import ModelUpdater
from veriscope.device.updates.slots import Result, now_rfc3339
from veriscope.device.updates.software import SoftwareUpdater
from veriscope.tools import bundles

_log = logging.getLogger("veriscope.device.updates")

KIND: Final = "combined"
"""The bundle kind this updater installs."""
STATE: Final = "combined.json"
"""The record of the latest combined update, under ``DATA_DIR/updates``."""
FIRMWARE, MODEL, SOFTWARE = bundles.COMBINED_PARTS


@dataclass(frozen=True)
class PartState:
    """One part of a combined update and how it ended.

    Attributes:
        kind: ``controller-firmware``, ``model`` or ``device-software``.
        name: The part bundle's name.
        version: The part's version.
        outcome: ``pending``, ``skipped`` (that version is installed already), ``installing``, ``trial`` (device
            software swapped in, its trial awaiting the restart), ``committed``, ``rolled_back`` (failed and fell
            back, or undone after a later part failed) or ``failed``.
        message: Why it rolled back or failed; empty otherwise.
    """

    kind: str
    name: str
    version: str
    outcome: str = "pending"
    message: str = ""


@dataclass(frozen=True)
class CombinedState:
    """The content of ``combined.json``.

    Attributes:
        result: The update as a whole: label is the bundle's name, outcome ``trial``, ``committed``,
            ``rolled_back`` or ``failed`` (a part could not be undone).
        parts: Its parts, in install order.
    """

    result: Result
    parts: tuple[PartState, ...]

    def part(self, kind: str) -> PartState | None:
        """The part of ``kind``, or None."""
        return next((p for p in self.parts if p.kind == kind), None)

    def with_part(self, kind: str, **changes: Any) -> CombinedState:
        """A copy with the part of ``kind`` changed."""
        return replace(self, parts=tuple(replace(p, **changes) if p.kind == kind else p for p in self.parts))

    def summary(self) -> str:
        """Each part and how it ended, e.g. ``model veriscope-demo 0.4.0 committed; ...``."""
        return "; ".join(f"{p.kind} {p.name} {p.version} {p.outcome}" for p in self.parts)


@dataclass(frozen=True)
class PreparedCombined:
    """A verified combined bundle whose parts are extracted and verified, ready to install.

    Attributes:
        manifest: The combined bundle's manifest.
        work_dir: Where the parts were extracted; removed when the update ends.
        parts: Each part's state (``pending`` or ``skipped``), in install order.
        prepared: What each updater's ``verify`` returned for a part that is installed, by kind.
    """

    manifest: bundles.Manifest
    work_dir: Path
    parts: tuple[PartState, ...]
    prepared: dict[str, Any]


class CombinedUpdater:
    """Installs combined bundles through the model, firmware and software updaters, and undoes a partial one.

    Args:
        directory: ``DATA_DIR/updates``.
        models: The model updater.
        firmware: The firmware updater; None refuses bundles with a firmware part.
        software: The software updater; None refuses bundles with a software part.
    """

    def __init__(
        self,
        directory: Path,
        models: ModelUpdater,
        *,
        firmware: FirmwareUpdater | None = None,
        software: SoftwareUpdater | None = None,
    ) -> None:
        self.directory = directory
        self.models = models
        self.firmware = firmware
        self.software = software
        self._busy = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def trust(self) -> ed25519.Ed25519PublicKey | None:
        """The update public key (the model updater's)."""
        return self.models.trust

    # --- status ---

    def read_state(self) -> CombinedState | None:
        """The latest combined update, or None (none, or unreadable)."""
        try:
            raw = json.loads((self.directory / STATE).read_text())
            return CombinedState(Result(**raw["result"]), tuple(PartState(**p) for p in raw["parts"]))
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def result(self) -> Result | None:
        """The latest combined update as one result, its message listing the parts; None when there was none."""
        state = self.read_state()
        if state is None:
            return None
        message = state.summary() if not state.result.message else f"{state.result.message} ({state.summary()})"
        return replace(state.result, message=message)

    @property
    def busy(self) -> bool:
        """True while a combined update runs here, or is recorded on trial (awaiting its device software)."""
        state = self.read_state()
        return self._busy.locked() or (state is not None and state.result.outcome == "trial")

    def _write(self, state: CombinedState) -> None:
        data = asdict(state)
        write_atomic(self.directory / STATE, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())

    # --- verify ---

    def verify(self, path: Path, *, allow_downgrade: bool, is_admin: bool) -> PreparedCombined:
        """Verify a combined bundle and every part it holds; writes only the extracted parts.

        Raises:
            FailedPrecondition: No update key; the bundle or any part is refused (the reason names the part);
                a part's updater is missing or busy; every part is installed already.
            PermissionDenied: A part is a downgrade and the caller is not an admin.
        """
        if self.trust is None:
            raise FailedPrecondition("this unit has no update key: start the daemon with --update-trust PUBFILE")
        if self.busy:
            raise FailedPrecondition("a combined update is running; wait for it to end")
        try:
            verified = bundles.read_bundle(path, self.trust)
        except bundles.BundleError as exc:
            raise FailedPrecondition(f"bundle refused: {exc.reason}") from None
        manifest = verified.manifest
        if manifest.kind != KIND:
            raise FailedPrecondition(f"bundle refused: kind {manifest.kind!r} is not {KIND!r}")
        accepted = self.models.accepted_hardware
        if not set(manifest.compatible_hardware) & set(accepted):
            raise FailedPrecondition(
                f"bundle refused: it is for {', '.join(manifest.compatible_hardware)}, this unit is {accepted[0]}"
            )
        if manifest.min_installed_version is not None:
            raise FailedPrecondition("bundle refused: a combined bundle names no minimum installed version")
        self.directory.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".combined-", dir=self.directory))
        try:
            try:
                bundles.extract_verified(verified, work / "parts")
            except bundles.BundleError as exc:
                raise FailedPrecondition(f"bundle refused while extracting: {exc.reason}") from None
            parts, prepared = self._verify_parts(manifest, work / "parts", allow_downgrade, is_admin)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        return PreparedCombined(manifest, work, parts, prepared)

    def _verify_parts(
        self, manifest: bundles.Manifest, parts_dir: Path, allow_downgrade: bool, is_admin: bool
    ) -> tuple[tuple[PartState, ...], dict[str, Any]]:
        files = {p.path for p in manifest.payloads}
        states: list[PartState] = []
        prepared: dict[str, Any] = {}
        for kind in bundles.COMBINED_PARTS:
            if bundles.part_payload(kind) not in files:
                continue
            path = parts_dir / bundles.part_payload(kind)
            try:
                part = bundles.inspect_bundle(path)
            except bundles.BundleError as exc:
                raise FailedPrecondition(f"bundle refused: its {kind} part: {exc.reason}") from None
            installed, updater = self._installed(kind)
            if installed == part.version:
                states.append(PartState(kind, part.name, part.version, "skipped", "installed already"))
                continue
            try:
                prepared[kind] = updater.verify(path, allow_downgrade=allow_downgrade, is_admin=is_admin)
            except FailedPrecondition as exc:
                raise FailedPrecondition(f"its {kind} part: {exc}") from None
            states.append(PartState(kind, part.name, part.version))
        unknown = sorted(files - {bundles.part_payload(k) for k in bundles.COMBINED_PARTS})
        if unknown or not states:
            raise FailedPrecondition(f"bundle refused: it holds no parts but {', '.join(unknown)}")
        if not prepared:
            raise FailedPrecondition(
                f"bundle refused: every part is installed already ({'; '.join(f'{p.kind} {p.version}' for p in states)})"
            )
        return tuple(states), prepared

    def _installed(self, kind: str) -> tuple[str | None, Any]:
        """The version of ``kind`` installed, and its updater; refuses a kind this daemon cannot install."""
        if kind == MODEL:
            if self.models.busy:
                raise FailedPrecondition("a model update is on trial; wait for it to commit or roll back")
            return self.models.installed_version(), self.models
        if kind == FIRMWARE:
            if self.firmware is None:
                raise FailedPrecondition("bundle refused: this daemon installs no controller firmware")
            if self.firmware.busy:
                raise FailedPrecondition("a controller firmware update is running; wait for it to end")
            return self.firmware.installed_version(), self.firmware
        if self.software is None:
            raise FailedPrecondition("bundle refused: this daemon installs no device software")
        if self.software.busy:
            raise FailedPrecondition("a device software update is being installed; wait for it to end")
        return self.software.running_version, self.software

    # --- install ---

    async def install(self, prepared: PreparedCombined) -> Result:
        """Record the update and start installing its parts in the background; returns the result, on trial.

        Raises:
            FailedPrecondition: A combined update runs already (the prepared parts are removed).
        """
        if self._busy.locked():
            shutil.rmtree(prepared.work_dir, ignore_errors=True)
            raise FailedPrecondition("a combined update is running; wait for it to end")
        await self._busy.acquire()
        try:
            result = Result(prepared.manifest.name, prepared.manifest.version, "trial", "", now_rfc3339())
            await asyncio.to_thread(self._write, CombinedState(result, prepared.parts))
        except BaseException:
            self._busy.release()
            shutil.rmtree(prepared.work_dir, ignore_errors=True)
            raise
        _log.info(
            "combined update %s %s: %s", result.label, result.version, CombinedState(result, prepared.parts).summary()
        )
        self._task = asyncio.get_running_loop().create_task(self._run(prepared))
        return result

    async def wait(self) -> None:
        """Wait until the running combined update, if any, has ended here (or handed over to a restart)."""
        task = self._task
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)

    async def _run(self, prepared: PreparedCombined) -> None:
        state = self.read_state()
        assert state is not None
        try:
            for part in prepared.parts:
                if part.outcome == "skipped":
                    continue
                state = state.with_part(part.kind, outcome="installing")
                await asyncio.to_thread(self._write, state)
                try:
                    outcome, message = await self._install_part(part.kind, prepared.prepared[part.kind])
                except Exception as exc:  # a part that could not even start fails the update
                    outcome, message = "failed", str(exc)
                state = state.with_part(part.kind, outcome=outcome, message=message)
                await asyncio.to_thread(self._write, state)
                if outcome == "trial":
                    return  # device software: the daemon restarts into it, and settle() ends the update
                if outcome != "committed":
                    await self._undo(
                        state, f"the {part.kind} part {part.version} {outcome.replace('_', ' ')}: {message}"
                    )
                    return
            done = replace(state.result, outcome="committed", end_time=now_rfc3339())
            await asyncio.to_thread(self._write, replace(state, result=done))
            _log.info("combined update %s %s committed", done.label, done.version)
        finally:
            shutil.rmtree(prepared.work_dir, ignore_errors=True)
            self._busy.release()

    async def _install_part(self, kind: str, prepared: Any) -> tuple[str, str]:
        """Install one part and wait for it; returns its outcome and message."""
        if kind == FIRMWARE:
            assert self.firmware is not None
            await self.firmware.install(prepared)
            await self.firmware.wait()
            result = self.firmware.result()
        elif kind == MODEL:
            await self.models.install(prepared)
            await self.models.wait_for_trial()
            result = self.models.pointer().result
        else:
            assert self.software is not None
            await self.software.install_async(prepared)
            return "trial", ""
        assert result is not None
        return result.outcome, result.message

    # --- undo, and settling at start ---

    async def _undo(self, state: CombinedState, reason: str) -> CombinedState:
        """Undo, in reverse order, every part whose new version runs; record the update rolled back (or failed)."""
        problems: list[str] = []
        for part in reversed(state.parts):
            if part.outcome == "skipped" or not await self._runs(part):
                if part.outcome in ("pending", "installing", "trial"):
                    state = state.with_part(part.kind, outcome="rolled_back", message="not installed")
                continue
            try:
                if part.kind == MODEL:
                    await self.models.roll_back(reason=f"combined update {state.result.version} undone")
                elif part.kind == FIRMWARE:
                    assert self.firmware is not None
                    undone = await self.firmware.revert(f"combined update {state.result.version} undone")
                    if undone.outcome != "rolled_back":
                        raise FailedPrecondition(undone.message)
                else:  # pragma: no cover - device software is installed last, so it never runs when undone
                    raise FailedPrecondition("device software is never undone")
            except Exception as exc:  # recorded: the update failed, and says which part still runs
                problems.append(f"undoing the {part.kind} part failed: {exc}")
                state = state.with_part(part.kind, outcome="failed", message=str(exc))
                continue
            state = state.with_part(part.kind, outcome="rolled_back", message="undone")
        outcome = "failed" if problems else "rolled_back"
        message = "; ".join([reason, *problems])
        state = replace(state, result=replace(state.result, outcome=outcome, message=message, end_time=now_rfc3339()))
        await asyncio.to_thread(self._write, state)
        _log.error("combined update %s %s %s: %s", state.result.label, state.result.version, outcome, message)
        return state

    async def _runs(self, part: PartState) -> bool:
        """Whether the part's new version is what runs now."""
        if part.kind == MODEL:
            return await asyncio.to_thread(self.models.installed_version) == part.version
        if part.kind == FIRMWARE:
            return self.firmware is not None and self.firmware.installed_version() == part.version
        return self._software_status(part.version) == "committed"

    def _software_status(self, version: str) -> str:
        """``trial`` when software ``version`` runs on trial, ``committed`` when it runs committed, else ``other``."""
        if self.software is None:
            return "other"
        store = self.software.slots_store
        trial, current = store.read_trial(), store.current()
        if trial is not None and trial.slot == current and trial.version == version:
            return "trial"
        result = store.read_state().result
        if result is not None and (result.label, result.version, result.outcome) == (current, version, "committed"):
            return "committed"
        return "other"

    async def settle(self) -> Result | None:
        """End a combined update this daemon found on trial at start (after the device software trial, if any).

        Committed when its device software part committed; left on trial while that part is still on trial
        (a daemon started on it commits it); otherwise every part whose new version runs is undone. Returns the
        update's result, or None when none was on trial.
        """
        state = await asyncio.to_thread(self.read_state)
        if state is None or state.result.outcome != "trial" or self._busy.locked():
            return None
        software = state.part(SOFTWARE)
        if software is not None and software.outcome != "skipped":
            status = await asyncio.to_thread(self._software_status, software.version)
            if status == "trial":
                if software.outcome != "trial":
                    await asyncio.to_thread(self._write, state.with_part(SOFTWARE, outcome="trial"))
                return state.result
            if status == "committed":
                done = replace(state.result, outcome="committed", end_time=now_rfc3339())
                state = replace(state.with_part(SOFTWARE, outcome="committed"), result=done)
                await asyncio.to_thread(self._write, state)
                _log.info("combined update %s %s committed", done.label, done.version)
                return done
            if software.outcome == "trial":
                assert self.software is not None
                why = self.software.result()
                message = why.message if why is not None and why.version == software.version else "it did not commit"
                state = state.with_part(SOFTWARE, outcome="rolled_back", message=message)
                reason = f"the device-software part {software.version} rolled back: {message}"
                return (await self._undo(state, reason)).result
        return (await self._undo(state, "the unit restarted before the combined update completed")).result

    async def run_at_start(self, software_trial: Awaitable[Result | None]) -> None:
        """Wait for this start's device software trial, then :meth:`settle` what it leaves; a trial that rolled
        back (the daemon restarts) leaves it to the next start. Also removes parts a stopped update left."""
        for stale in self.directory.glob(".combined-*"):
            shutil.rmtree(stale, ignore_errors=True)
        await software_trial
        if self.software is not None and self.software.restart.is_set():
            return
        await self.settle()
