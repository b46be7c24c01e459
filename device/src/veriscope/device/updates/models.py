"""Over-the-air model updates: verify a bundle, install it into the inactive slot, try it, commit or roll back.

The order of an install is what makes it safe:

1. The bundle file is verified completely (signature, manifest, every payload's SHA-256) before anything is
   written; then its kind, hardware, minimum installed version and anti-rollback rule are checked.
2. The pointer forgets what the inactive slot (``a`` or ``b``) held, and stops naming it as the rollback
   target; then the payloads are extracted into it, all or nothing.
3. The pointer records the slot as on trial, then the daemon loads the model and runs :func:`self_test` within
   the trial timeout. Until this succeeds the old model keeps serving every scan.
4. On success the scan manager swaps to the new model (one reference assignment) and the pointer makes the
   slot active, with the old one as the rollback target. On failure or timeout the pointer rolls back: the
   slot is marked failed and the old model never stopped serving.

A daemon that starts with a trial recorded in the pointer was stopped before the trial committed: it rolls back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from veriscope.device.errors import FailedPrecondition, VeriscopeError
from veriscope.device.inference import ModelBundle, load_bundle
from veriscope.device.pipeline.inference import Analyzer
from veriscope.device.scans.manager import ActiveModel, ScanManager
from veriscope.device.updates.selftest import self_test
from veriscope.device.updates.slots import (
    BUILTIN,
    LABELS,
    Pointer,
    Result,
    SlotInfo,
    SlotStore,
    check_acceptance,
    now_rfc3339,
)
from veriscope.tools import bundles

_log = logging.getLogger("veriscope.device.updates")

TRUST_FLAG = "--update-trust"
"""The daemon flag that names the update public key."""

_KIND_REFUSALS = {
    "device-software": "device software updates (kind 'device-software') are installed by the software "
    "updater, which this daemon was built without",
    "controller-firmware": "controller firmware updates (kind 'controller-firmware') are installed by the "
    "firmware updater, which this daemon was built without",
    "combined": "combined bundles (kind 'combined') are installed by the combined updater, which this daemon was "
    "built without",
}


def _refusal(kind: str) -> str:
    why = _KIND_REFUSALS.get(kind, f"kind {kind!r} is not installable")
    return f"this unit installs model bundles over the air; {why}; see device/docs/updates.md"


@dataclass(frozen=True)
class SlotView:
    """One model slot as status and ListModels report it.

    Attributes:
        label: ``builtin``, ``a`` or ``b``.
        state: ``active``, ``trial``, ``previous``, ``failed`` or ``standby``.
        name: The bundle's name.
        version: The version installed.
        install_time: When it was installed (RFC 3339), empty for the built-in bundle.
    """

    label: str
    state: str
    name: str
    version: str
    install_time: str


class ModelUpdater:
    """Installs, tries, commits and rolls back model bundles for one daemon.

    Args:
        models_dir: ``DATA_DIR/models``.
        builtin_dir: The bundle the daemon ships with, the fallback.
        trust: The update public key; None refuses every install (FAILED_PRECONDITION naming the flag).
        accepted_hardware: The ``compatible_hardware`` names this unit accepts.
        trial_timeout_s: How long a new model may take to load and pass its self-test, in seconds.
        num_threads: Threads each loaded interpreter may use.
        check: The health check a model must pass; :func:`self_test` unless a test replaces it.
    """

    def __init__(
        self,
        models_dir: Path,
        builtin_dir: Path,
        *,
        trust: ed25519.Ed25519PublicKey | None,
        accepted_hardware: tuple[str, ...],
        trial_timeout_s: float = 60.0,
        num_threads: int | None = None,
        check: Callable[[Analyzer], None] = self_test,
    ) -> None:
        self.store = SlotStore(models_dir)
        self.builtin_dir = builtin_dir
        self.trust = trust
        self.accepted_hardware = accepted_hardware
        self.trial_timeout_s = trial_timeout_s
        self._num_threads = num_threads
        self._check = check
        self._manager: ScanManager | None = None
        self._bundles: dict[str, ModelBundle] = {}
        self._busy = asyncio.Lock()
        self._trial_task: asyncio.Task[None] | None = None

    # --- start-up ---

    def load_at_start(self) -> ActiveModel:
        """Load the model the pointer names, rolling back a trial the last run did not commit.

        A slot that no longer loads falls back to the previous slot, then to the built-in bundle.

        Raises:
            ModelError: Not even the built-in bundle loads.
        """
        pointer = self.store.read()
        if pointer.trial is not None:
            label = pointer.trial
            info = pointer.slots.get(label)
            message = "the unit restarted before the trial committed"
            _log.warning("model update %s in slot %s: %s; rolled back", info and info.version, label, message)
            pointer = self._failed(pointer, label, message)
            self.store.write(pointer)
        for label in dict.fromkeys([pointer.active, pointer.previous or BUILTIN, BUILTIN]):
            try:
                model = self._load(label, pointer, check=label != BUILTIN)
            except VeriscopeError as exc:
                if label == BUILTIN:
                    raise
                _log.error("model slot %s does not load (%s); falling back", label, exc)
                continue
            if label != pointer.active:
                self.store.write(pointer.evolve(active=label, previous=None))
            return model
        raise AssertionError("unreachable: the built-in bundle either loads or raises")

    def attach(self, manager: ScanManager) -> None:
        """Serve swaps into ``manager``, whose model :meth:`load_at_start` returned."""
        self._manager = manager
        self._bundles[self.store.read().active] = manager.bundle

    # --- status ---

    @property
    def busy(self) -> bool:
        """True while an install's trial or a rollback runs."""
        return self._busy.locked()

    def installed_version(self) -> str:
        """The version of the model that serves (the active slot's)."""
        return self._active_bundle().version

    def pointer(self) -> Pointer:
        """The pointer as on disk."""
        return self.store.read()

    def slots(self) -> list[SlotView]:
        """Every model slot with what it holds, the active one first."""
        pointer = self.store.read()
        views: list[SlotView] = []
        for label in (BUILTIN, *LABELS):
            if label == BUILTIN:
                bundle = self.bundle(BUILTIN)
                name, version, installed = (bundle.name, bundle.version, "") if bundle else ("", "", "")
                if bundle is None:
                    continue
            else:
                info = pointer.slots.get(label)
                if info is None:
                    continue
                name, version, installed = info.name, info.version, info.install_time
            views.append(SlotView(label, _state(pointer, label), name, version, installed))
        views.sort(key=lambda v: v.state != "active")
        return views

    def bundle(self, label: str) -> ModelBundle | None:
        """The bundle a slot holds, loaded once (no interpreter); None when it does not load or has failed."""
        if label in self._bundles:
            return self._bundles[label]
        pointer = self.store.read()
        if label != BUILTIN and (label not in pointer.slots or pointer.slots[label].failed):
            return None
        try:
            bundle = self._read_bundle(label, pointer)
        except VeriscopeError:
            return None
        self._bundles[label] = bundle
        return bundle

    # --- install ---

    def verify(self, path: Path, *, allow_downgrade: bool, is_admin: bool) -> bundles.VerifiedBundle:
        """Verify a bundle file and check that this unit may install it. Writes nothing.

        Raises:
            FailedPrecondition: No update key is configured; the bundle is refused (tampered, wrong key, wrong
                kind or hardware, too old an installed version, not newer than the installed one).
            PermissionDenied: A downgrade was asked for by a caller who is not an admin.
        """
        if self.trust is None:
            raise FailedPrecondition(
                f"this unit has no update key: start the daemon with {TRUST_FLAG} PUBFILE ([update] trust_key)"
            )
        try:
            verified = bundles.read_bundle(path, self.trust)
        except bundles.BundleError as exc:
            raise FailedPrecondition(f"bundle refused: {exc.reason}") from None
        manifest = verified.manifest
        if manifest.kind != "model":
            raise FailedPrecondition(_refusal(manifest.kind))
        check_acceptance(
            manifest,
            self._active_bundle().version,
            self.accepted_hardware,
            subject="model",
            allow_downgrade=allow_downgrade,
            is_admin=is_admin,
        )
        return verified

    async def install(self, verified: bundles.VerifiedBundle) -> Result:
        """Extract a verified bundle into the inactive slot and start its trial; returns the trial's result.

        Raises:
            FailedPrecondition: A trial is running already, or extraction failed (nothing changed).
        """
        if self._busy.locked():
            raise FailedPrecondition("a model update is on trial; wait for it to commit or roll back")
        # Held until the trial ends (released by _run_trial), so installs and rollbacks wait their turn.
        await self._busy.acquire()
        try:
            pointer = self.store.read()
            label = next(lbl for lbl in LABELS if lbl != pointer.active)
            manifest = verified.manifest
            if label in pointer.slots or pointer.previous == label:
                # The slot is emptied before it is overwritten: the pointer must never describe (or roll back
                # to) a slot whose files are being replaced. The rollback target becomes the built-in bundle.
                slots = {k: v for k, v in pointer.slots.items() if k != label}
                previous = None if pointer.previous == label else pointer.previous
                pointer = pointer.evolve(slots=slots, previous=previous)
                self._bundles.pop(label, None)
                await asyncio.to_thread(self.store.write, pointer)
            await asyncio.to_thread(self._extract, verified, label)
            started = now_rfc3339()
            slots = dict(pointer.slots)
            slots[label] = SlotInfo(manifest.name, manifest.version, started)
            result = Result(label, manifest.version, "trial", "", started)
            self._bundles.pop(label, None)
            self.store.write(pointer.evolve(trial=label, slots=slots, result=result))
        except BaseException:
            self._busy.release()
            raise
        _log.info("model %s %s installed in slot %s; on trial", manifest.name, manifest.version, label)
        self._trial_task = asyncio.get_running_loop().create_task(self._run_trial(label))
        return result

    def _extract(self, verified: bundles.VerifiedBundle, label: str) -> None:
        dest = self.store.slot_dir(label)
        # What an interrupted install of this slot left: the old copy set aside, a half-extracted directory.
        for stale in dest.parent.glob(f".{label}.*"):
            shutil.rmtree(stale, ignore_errors=True)
        if dest.exists():
            aside = dest.with_name(f".{label}.old")
            dest.rename(aside)
            shutil.rmtree(aside, ignore_errors=True)
        try:
            bundles.extract_verified(verified, dest)
        except bundles.BundleError as exc:
            raise FailedPrecondition(f"bundle refused while installing: {exc.reason}") from None

    async def _run_trial(self, label: str) -> None:
        try:
            pointer = self.store.read()
            try:
                model = await asyncio.wait_for(
                    asyncio.to_thread(self._load, label, pointer, check=True), self.trial_timeout_s
                )
            except TimeoutError:
                self._roll_back(
                    label, f"the model did not load and pass its self-test within {self.trial_timeout_s:g} s"
                )
                return
            except Exception as exc:  # any failure of the new model rolls back
                self._roll_back(label, str(exc))
                return
            assert self._manager is not None
            self._manager.swap_model(model)
            pointer = self.store.read()
            result = pointer.result
            assert result is not None
            done = dataclasses.replace(result, outcome="committed", end_time=now_rfc3339())
            self._bundles[label] = model.bundle
            self.store.write(pointer.evolve(active=label, previous=pointer.active, trial=None, result=done))
            _log.info("model update %s in slot %s committed", done.version, label)
        finally:
            self._busy.release()

    async def wait_for_trial(self) -> None:
        """Wait until the running trial, if any, has committed or rolled back."""
        task = self._trial_task
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)

    def _roll_back(self, label: str, message: str) -> None:
        _log.error("model update in slot %s failed its trial: %s; rolled back", label, message)
        self.store.write(self._failed(self.store.read(), label, message))

    @staticmethod
    def _failed(pointer: Pointer, label: str, message: str) -> Pointer:
        slots = dict(pointer.slots)
        if label in slots:
            slots[label] = dataclasses.replace(slots[label], failed=True)
        info = slots.get(label)
        result = pointer.result or Result(label, info.version if info else "", "trial", "", now_rfc3339())
        result = dataclasses.replace(result, outcome="rolled_back", message=message, end_time=now_rfc3339())
        return pointer.evolve(trial=None, slots=slots, result=result)

    # --- rollback ---

    async def roll_back(self, *, reason: str | None = None) -> SlotView:
        """Make the previous slot (or the built-in bundle) active again; returns the now active slot.

        The result is ``manual_rollback`` (a technician's), or with ``reason`` ``rolled_back`` for the version
        rolled back from, saying why (a combined update undoing its model part).

        Raises:
            FailedPrecondition: A trial is running, or the built-in bundle is active already.
            ModelError: The previous model no longer loads; nothing changed.
        """
        if self._busy.locked():
            raise FailedPrecondition("a model update is on trial; wait for it to commit or roll back first")
        async with self._busy:
            pointer = self.store.read()
            target = pointer.previous or BUILTIN
            if target == pointer.active:
                raise FailedPrecondition("the built-in model is active; there is nothing to roll back to")
            model = await asyncio.to_thread(self._load, target, pointer, check=True)
            assert self._manager is not None
            self._manager.swap_model(model)
            self._bundles[target] = model.bundle
            now = now_rfc3339()
            if reason is None:
                result = Result(
                    target, model.bundle.version, "manual_rollback", f"rolled back from {pointer.active}", now, now
                )
            else:
                undone = pointer.slots.get(pointer.active)
                version = undone.version if undone is not None else ""
                message = f"{reason}; model {model.bundle.version} (slot {target}) is active again"
                result = Result(pointer.active, version, "rolled_back", message, now, now)
            self.store.write(pointer.evolve(active=target, previous=None, result=result))
            _log.warning("model rolled back from slot %s to %s", pointer.active, target)
            return next(v for v in self.slots() if v.label == target)

    # --- loading ---

    def _active_bundle(self) -> ModelBundle:
        if self._manager is not None:
            return self._manager.bundle
        bundle = self.bundle(self.store.read().active)
        if bundle is None:
            raise FailedPrecondition("the active model slot does not load")
        return bundle

    def _read_bundle(self, label: str, pointer: Pointer) -> ModelBundle:
        if label == BUILTIN:
            return load_bundle(self.builtin_dir)
        info = pointer.slots.get(label)
        if info is None:
            raise FailedPrecondition(f"model slot {label} is empty")
        # The update bundle's version is the one the unit reports, in status and in every result.
        return dataclasses.replace(load_bundle(self.store.slot_dir(label)), version=info.version)

    def _load(self, label: str, pointer: Pointer, *, check: bool) -> ActiveModel:
        bundle = self._read_bundle(label, pointer)
        analyzer = Analyzer(bundle, num_threads=self._num_threads)
        if check:
            self._check(analyzer)
        return ActiveModel(bundle, analyzer)


def _state(pointer: Pointer, label: str) -> str:
    if label == pointer.trial:
        return "trial"
    if label == pointer.active:
        return "active"
    info = pointer.slots.get(label)
    if info is not None and info.failed:
        return "failed"
    if label == (pointer.previous or (BUILTIN if pointer.active != BUILTIN else None)):
        return "previous"
    return "standby"
