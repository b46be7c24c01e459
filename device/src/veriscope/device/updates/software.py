"""Over-the-air device software updates: A/B virtual environments, a symlink swap, a trial, commit or rollback.

Layout, under ``DATA_DIR/software``:

- ``a/`` and ``b/``: two slots, each a complete virtual environment holding one version of the daemon, marked
  complete by its ``slot.json`` (written last);
- ``current``: a symlink naming the slot that runs (``a`` or ``b``); without it the base install runs. It is
  replaced atomically (a temporary symlink renamed over it);
- ``trial.json``: present while the slot ``current`` names is on trial: the slot, the one to fall back to, and
  how many times the daemon was started on it;
- ``state.json``: what each slot holds, the rollback target and the latest software update's result.

The order of an install is what makes it safe (the running slot is never touched):

1. The bundle is verified (signature, hashes, kind, hardware, version); nothing is written before.
2. ``state.json`` forgets the inactive slot; the slot's venv is built in a hidden directory beside it, marked
   complete, and renamed to ``a`` or ``b``.
3. ``trial.json`` names the slot, then ``current`` is swapped to it, and the daemon exits with
   :data:`EXIT_RESTART` so that systemd starts the new software.
4. Each start on trial is counted (by the launcher, :func:`launch`, before the daemon's code is even imported).
   The daemon checks its health (it serves and the model passes its self-test) within ``trial_timeout_s``;
   then the commit is the removal of ``trial.json``. A failed check, or a second start on trial without a
   commit (a crash, a hang the watchdog killed, a power cut), swaps ``current`` back and restarts.

See device/docs/updates.md, "Device software".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import site
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import ed25519

from veriscope.device import __version__
from veriscope.device.errors import FailedPrecondition
from veriscope.device.fsutil import fsync_dir, write_atomic
from veriscope.device.updates.slots import Result, SlotInfo, check_acceptance, now_rfc3339
from veriscope.tools import bundles

_log = logging.getLogger("veriscope.device.updates")

KIND: Final = "device-software"
"""The bundle kind this updater installs."""
EXIT_RESTART: Final = 76
"""The daemon's exit code when it must be started again on other software (after an install or a rollback);
the systemd unit restarts it (``RestartForceExitStatus``)."""
BASE: Final = "builtin"
"""The label of the base install (the unit's package), which runs when ``current`` names no complete slot."""
LABELS: Final = ("a", "b")
"""The labels of the installable slots."""
CURRENT: Final = "current"
TRIAL: Final = "trial.json"
STATE: Final = "state.json"
SLOT_MARK: Final = "slot.json"
"""Written last into a slot's venv: a slot without it is incomplete and never run."""
SOFTWARE_JSON: Final = "software.json"
WHEELS: Final = "wheels"
PACKAGE: Final = "veriscope-device"
"""The distribution a slot installs, at the bundle's version."""
ENV_SLOT: Final = "VERISCOPE_SOFTWARE_SLOT"
"""Set by the launcher to the slot it started (``a``, ``b`` or ``builtin``), after counting a start on trial."""
ENV_BASE_SITE: Final = "VERISCOPE_BASE_SITE"
"""Set by the launcher to the base install's site-packages (``os.pathsep``-separated), which every slot sees."""

VenvBuilder = Callable[[Path, str, Path], None]
"""Builds a slot: ``(wheelhouse, version, dest)`` makes a venv at ``dest`` with ``veriscope-device==version``
installed from ``wheelhouse`` only. Raises on failure."""
HealthCheck = Callable[[], Awaitable[None]]
"""The trial's health check: returns when the daemon serves and its model passes the self-test, raises otherwise."""


@dataclass(frozen=True)
class Trial:
    """The content of ``trial.json``.

    Attributes:
        slot: The slot on trial (what ``current`` names once the swap is done).
        previous: The slot to fall back to: ``a``, ``b`` or ``builtin``.
        version: The version on trial.
        start_time: When it was installed (RFC 3339).
        starts: How many times a daemon was started on it; a second start without a commit rolls back.
    """

    slot: str
    previous: str
    version: str
    start_time: str
    starts: int = 0


@dataclass(frozen=True)
class SoftwareState:
    """The content of ``state.json``.

    Attributes:
        slots: What each installed slot holds, by label.
        previous: The slot the last committed update replaced (the rollback target), or None.
        result: The latest device software update, or None.
        base_version: The base install's version, recorded by the first install from it.
    """

    slots: dict[str, SlotInfo] = field(default_factory=dict)
    previous: str | None = None
    result: Result | None = None
    base_version: str = ""


@dataclass(frozen=True)
class Start:
    """What a start on this unit's software should do (:meth:`SoftwareSlots.on_start`).

    Attributes:
        slot: The slot to run: ``a``, ``b`` or ``builtin``.
        trial: True when that slot is on trial: the daemon must pass its health check, then commit.
        rolled_back: True when this start rolled a trial back (``slot`` is the fallback).
    """

    slot: str
    trial: bool = False
    rolled_back: bool = False


@dataclass(frozen=True)
class SoftwareSlotView:
    """One device software slot as GetUpdateStatus reports it.

    Attributes:
        label: ``builtin``, ``a`` or ``b``.
        state: ``active``, ``trial``, ``previous``, ``failed`` or ``standby``.
        name: The distribution, ``veriscope-device``.
        version: The version installed (for ``builtin``, as recorded by the first install from it).
        install_time: When it was installed (RFC 3339), empty for the base install.
    """

    label: str
    state: str
    name: str
    version: str
    install_time: str


def _write_json(path: Path, data: Any) -> None:
    """Replace ``path`` with ``data`` as JSON, crash-safely (:func:`~veriscope.device.fsutil.write_atomic`)."""
    write_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


class SoftwareSlots:
    """The slots, ``current``, ``trial.json`` and ``state.json`` of one ``DATA_DIR/software`` directory.

    Args:
        directory: ``DATA_DIR/software``.
        step: Called with a step's name after each filesystem step of an install, commit or rollback; the
            power-loss tests stop there.
    """

    def __init__(self, directory: Path, *, step: Callable[[str], None] | None = None) -> None:
        self.directory = directory
        self._step = step or (lambda name: None)

    def slot_dir(self, label: str) -> Path:
        """The directory of an installable slot."""
        if label not in LABELS:
            raise ValueError(f"not an installable slot: {label!r}")
        return self.directory / label

    def is_complete(self, label: str) -> bool:
        """True when slot ``label`` holds a finished venv."""
        return label in LABELS and (self.slot_dir(label) / SLOT_MARK).is_file()

    # --- current ---

    def current(self) -> str:
        """The slot ``current`` names when it is complete, else ``builtin``."""
        try:
            target = os.readlink(self.directory / CURRENT)
        except OSError:
            return BASE
        return target if self.is_complete(target) else BASE

    def swap(self, label: str) -> None:
        """Point ``current`` at ``label`` atomically (``builtin`` removes it): a crash leaves the old or the new."""
        link = self.directory / CURRENT
        if label == BASE:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(link)
        else:
            if not self.is_complete(label):
                raise ValueError(f"software slot {label} is not complete")
            tmp = self.directory / f".{CURRENT}.tmp"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            os.symlink(label, tmp)
            os.replace(tmp, link)
        fsync_dir(self.directory)
        self._step("swap")

    # --- trial.json ---

    def read_trial(self) -> Trial | None:
        """The trial marker, or None (none, or unreadable: a marker is written atomically, so that is no trial)."""
        try:
            raw = json.loads((self.directory / TRIAL).read_text())
            trial = Trial(**raw)
        except (OSError, ValueError, TypeError):
            return None
        return trial if trial.slot in LABELS and trial.previous in (*LABELS, BASE) else None

    def write_trial(self, trial: Trial) -> None:
        """Replace the trial marker atomically."""
        self.directory.mkdir(parents=True, exist_ok=True)
        _write_json(self.directory / TRIAL, asdict(trial))
        self._step("trial")

    def clear_trial(self) -> None:
        """Remove the trial marker: for the slot that runs, this is the commit."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.directory / TRIAL)
        fsync_dir(self.directory)
        self._step("clear-trial")

    # --- state.json ---

    def read_state(self) -> SoftwareState:
        """The state; empty when there is none or it cannot be read."""
        try:
            raw = json.loads((self.directory / STATE).read_text())
            slots = {k: SlotInfo(**v) for k, v in raw.get("slots", {}).items() if k in LABELS}
            result = Result(**raw["result"]) if raw.get("result") else None
        except (OSError, ValueError, TypeError):
            return SoftwareState()
        previous = raw.get("previous") if raw.get("previous") in (*LABELS, BASE) else None
        base_version = raw.get("base_version") if isinstance(raw.get("base_version"), str) else ""
        return SoftwareState(slots=slots, previous=previous, result=result, base_version=base_version)

    def write_state(self, state: SoftwareState) -> None:
        """Replace the state atomically."""
        self.directory.mkdir(parents=True, exist_ok=True)
        _write_json(self.directory / STATE, asdict(state))
        self._step("state")

    # --- start, commit, roll back ---

    def on_start(self) -> Start:
        """Decide what this start runs, counting a start on trial; rolls back a trial started before uncommitted.

        Also settles what a stop left half done: a marker naming a slot ``current`` does not name (the swap never
        happened, or a rollback swapped already) is removed, and a result still ``trial`` without a marker is
        settled by what ``current`` names.
        """
        trial = self.read_trial()
        current = self.current()
        if trial is None:
            self._settle(current)
            return Start(current)
        if trial.slot != current:
            self.clear_trial()
            self._settle(current, "the unit restarted before the new software was started")
            return Start(current)
        if trial.starts >= 1:
            self.roll_back(
                trial,
                f"the daemon was started on software {trial.version} {trial.starts + 1} times without passing its "
                "health check (it crashed, hung or lost power)",
            )
            return Start(self.current(), rolled_back=True)
        self.write_trial(replace(trial, starts=trial.starts + 1))
        return Start(current, trial=True)

    def _settle(self, current: str, message: str = "the unit restarted before the trial committed") -> None:
        state = self.read_state()
        result = state.result
        if result is None or result.outcome != "trial":
            return
        if current == result.label:
            self._commit_state(state, result)
        else:
            self._fail_state(state, result.label, message)

    def commit(self) -> Result:
        """Commit the slot on trial, which runs: remove the marker (the commit point), then record it.

        Raises:
            FailedPrecondition: No trial names the running slot.
        """
        trial = self.read_trial()
        if trial is None or trial.slot != self.current():
            raise FailedPrecondition("no device software trial to commit")
        self.clear_trial()
        state = self.read_state()
        result = state.result or Result(trial.slot, trial.version, "trial", "", trial.start_time)
        return self._commit_state(replace(state, previous=trial.previous), result)

    def _commit_state(self, state: SoftwareState, result: Result) -> Result:
        done = replace(result, outcome="committed", message="", end_time=now_rfc3339())
        self.write_state(replace(state, result=done))
        return done

    def roll_back(self, trial: Trial, message: str) -> Result:
        """Swap ``current`` back to the trial's fallback, mark the slot failed, then remove the marker."""
        fallback = trial.previous if trial.previous == BASE or self.is_complete(trial.previous) else BASE
        self.swap(fallback)
        result = self._fail_state(self.read_state(), trial.slot, message)
        self.clear_trial()
        _log.error("device software %s in slot %s rolled back to %s: %s", trial.version, trial.slot, fallback, message)
        return result

    def _fail_state(self, state: SoftwareState, label: str, message: str) -> Result:
        slots = dict(state.slots)
        if label in slots:
            slots[label] = replace(slots[label], failed=True)
        info = slots.get(label)
        result = state.result or Result(label, info.version if info else "", "trial", "", now_rfc3339())
        result = replace(result, outcome="rolled_back", message=message, end_time=now_rfc3339())
        self.write_state(replace(state, slots=slots, result=result))
        return result

    # --- install ---

    def build_slot(self, label: str, wheelhouse: Path, version: str, builder: VenvBuilder) -> None:
        """Build slot ``label`` from ``wheelhouse``: the old copy is removed, the venv is built in a hidden
        directory, marked complete and renamed into place. ``current`` must not name ``label``."""
        if self.current() == label:
            raise ValueError(f"software slot {label} runs; it is never rebuilt")
        dest = self.slot_dir(label)
        for stale in self.directory.glob(f".{label}.*"):
            shutil.rmtree(stale, ignore_errors=True)
        if dest.exists():
            aside = dest.with_name(f".{label}.old")
            dest.rename(aside)
            shutil.rmtree(aside, ignore_errors=True)
            self._step("remove-old")
        building = self.directory / f".{label}.new"
        builder(wheelhouse, version, building)
        self._step("venv")
        mark = building / SLOT_MARK
        with mark.open("w") as f:
            json.dump({"name": PACKAGE, "version": version}, f)
            f.flush()
            os.fsync(f.fileno())
        # pip does not fsync what it writes: everything must be on disk before the slot counts as complete.
        os.sync()
        self._step("mark")
        os.rename(building, dest)
        fsync_dir(self.directory)
        self._step("rename")


def _base_site_packages() -> list[str]:
    configured = os.environ.get(ENV_BASE_SITE)
    if configured:
        return [p for p in configured.split(os.pathsep) if p]
    return [p for p in site.getsitepackages() if Path(p).is_dir()]


def build_venv(wheelhouse: Path, version: str, dest: Path) -> None:
    """Build a slot: ``python -m venv --system-site-packages dest``, then install every wheel of ``wheelhouse``
    into it and check that ``veriscope-device==version`` has its dependencies, offline (``pip install --no-index
    --find-links``).

    The base install's site-packages are appended to the venv's path (a ``.pth`` file), so dependencies the
    wheelhouse does not carry come from the base install, and the system's (the Pi's apt picamera2) stay visible.
    The slot is run as ``DEST/bin/python -m veriscope.device.cli``: the venv's console scripts name the
    directory it was built in, which is renamed afterwards.

    Raises:
        FailedPrecondition: venv or pip failed; the message ends with pip's last output lines.
    """
    python = getattr(sys, "_base_executable", None) or sys.executable
    venv_python = dest / "bin" / "python"
    # The running pip installs into the venv (--python): the venv needs no pip of its own.
    pip = [sys.executable, "-m", "pip", "--python", str(venv_python), "install", "--no-index", "--no-cache-dir"]
    pip += ["--disable-pip-version-check", "--find-links", str(wheelhouse)]
    try:
        _run([python, "-m", "venv", "--system-site-packages", "--without-pip", str(dest)], 300)
        purelib = _run([str(venv_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], 60)
        # addsitedir, not a bare path: the base's own .pth files (its editable installs) are read too.
        lines = "".join(f"import site; site.addsitedir({p!r})\n" for p in _base_site_packages())
        Path(purelib.strip(), "veriscope-base.pth").write_text(lines)
        # Every wheel of the wheelhouse goes into the slot, even at a version the base install has ...
        _run([*pip, "--no-deps", "--force-reinstall", *map(str, sorted(wheelhouse.glob("*.whl")))], 900)
        # ... and the daemon's dependencies must then be satisfied: by those wheels or the base install.
        _run([*pip, f"{PACKAGE}=={version}"], 900)
    except subprocess.CalledProcessError as exc:
        tail = "\n".join((exc.stderr or exc.stdout or "").strip().splitlines()[-5:])
        raise FailedPrecondition(f"building the software slot failed: {tail}") from None
    except subprocess.TimeoutExpired as exc:
        raise FailedPrecondition(f"building the software slot timed out ({exc.timeout:g} s)") from None


def _run(command: Sequence[str], timeout_s: float) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True, timeout=timeout_s).stdout


class SoftwareUpdater:
    """Installs device software bundles into the inactive slot, and runs a trial at start-up.

    Args:
        directory: ``DATA_DIR/software``.
        trust: The update public key; None refuses every install.
        accepted_hardware: The ``compatible_hardware`` names this unit accepts.
        trial_timeout_s: How long a new daemon has to serve and pass its health check, in seconds.
        builder: Builds a slot's venv; :func:`build_venv` unless a test replaces it.
        running_version: The version of the software that runs (anti-rollback compares against it).
        running_slot: The slot this daemon was started on, as the launcher set :data:`ENV_SLOT`; None when it
            was started without the launcher, which then never commits a trial (it may not run the slot on trial).
        step: Passed to :class:`SoftwareSlots` (power-loss tests).
    """

    def __init__(
        self,
        directory: Path,
        *,
        trust: ed25519.Ed25519PublicKey | None,
        accepted_hardware: tuple[str, ...],
        trial_timeout_s: float = 60.0,
        builder: VenvBuilder = build_venv,
        running_version: str = __version__,
        running_slot: str | None = None,
        step: Callable[[str], None] | None = None,
    ) -> None:
        self.slots_store = SoftwareSlots(directory, step=step)
        self.trust = trust
        self.accepted_hardware = accepted_hardware
        self.trial_timeout_s = trial_timeout_s
        self.builder = builder
        self.running_version = running_version
        self.running_slot = running_slot
        self.restart = asyncio.Event()
        """Set when the daemon must exit with :data:`EXIT_RESTART` (new software installed, or a trial failed)."""
        self._busy = threading.Lock()

    @property
    def busy(self) -> bool:
        """True while an install runs."""
        return self._busy.locked()

    # --- status ---

    def result(self) -> Result | None:
        """The latest device software update, or None."""
        return self.slots_store.read_state().result

    def slots(self) -> list[SoftwareSlotView]:
        """The base install and every installed slot, the running one first."""
        store = self.slots_store
        state, trial, current = store.read_state(), store.read_trial(), store.current()
        views = [
            SoftwareSlotView(
                BASE,
                "active" if current == BASE else _other_state(state, trial, BASE, current),
                PACKAGE,
                self.running_version if current == BASE else state.base_version,
                "",
            )
        ]
        for label in LABELS:
            info = state.slots.get(label)
            if info is None or not store.is_complete(label):
                continue
            if label == current:
                view_state = "trial" if trial is not None and trial.slot == label else "active"
            else:
                view_state = _other_state(state, trial, label, current)
            views.append(SoftwareSlotView(label, view_state, info.name, info.version, info.install_time))
        views.sort(key=lambda v: v.state not in ("active", "trial"))
        return views

    # --- install ---

    def verify(self, path: Path, *, allow_downgrade: bool, is_admin: bool) -> bundles.VerifiedBundle:
        """Verify a device software bundle file and check that this unit may install it. Writes nothing.

        Raises:
            FailedPrecondition: No update key; the bundle is refused (tampered, wrong key, kind, hardware or
                payload, too old an installed version, not newer than the running software).
            PermissionDenied: A downgrade was asked for by a caller who is not an admin.
        """
        if self.trust is None:
            raise FailedPrecondition("this unit has no update key ([update] trust_key)")
        try:
            verified = bundles.read_bundle(path, self.trust)
        except bundles.BundleError as exc:
            raise FailedPrecondition(f"bundle refused: {exc.reason}") from None
        manifest = verified.manifest
        if manifest.kind != KIND:
            raise FailedPrecondition(f"bundle refused: kind {manifest.kind!r} is not {KIND!r}")
        try:
            bundles.check_software_payloads([p.path for p in manifest.payloads], manifest.version)
        except bundles.BundleError as exc:
            raise FailedPrecondition(f"bundle refused: {exc.reason}") from None
        check_acceptance(
            manifest,
            self.running_version,
            self.accepted_hardware,
            subject="device software",
            allow_downgrade=allow_downgrade,
            is_admin=is_admin,
        )
        if self.slots_store.read_trial() is not None:
            raise FailedPrecondition("a device software update is on trial; wait for it to commit or roll back")
        return verified

    def install(self, verified: bundles.VerifiedBundle) -> Result:
        """Build the inactive slot from a verified bundle, mark it on trial and swap ``current`` to it.

        Blocking (pip runs); call it from a thread. The daemon must then exit with :data:`EXIT_RESTART`
        (:attr:`restart` is set when an event loop runs it through :meth:`install_async`).

        Raises:
            FailedPrecondition: Another install runs, or the payload or the venv build failed (``current`` and
                the running slot are untouched).
        """
        if not self._busy.acquire(blocking=False):
            raise FailedPrecondition("a device software update is being installed; wait for it to end")
        try:
            return self._install(verified)
        finally:
            self._busy.release()

    async def install_async(self, verified: bundles.VerifiedBundle) -> Result:
        """:meth:`install` in a thread, then ask the daemon to restart into the new software."""
        result = await asyncio.to_thread(self.install, verified)
        self.restart.set()
        return result

    def _install(self, verified: bundles.VerifiedBundle) -> Result:
        store = self.slots_store
        manifest = verified.manifest
        current = store.current()
        state = store.read_state()
        if current == BASE:
            state = replace(state, base_version=self.running_version)
        # The slot that does not run; from the base install, preferably not the rollback target.
        candidates = [lbl for lbl in LABELS if lbl != current]
        label = next((lbl for lbl in candidates if lbl != state.previous), candidates[0])
        if label in state.slots or state.previous == label:
            slots = {k: v for k, v in state.slots.items() if k != label}
            state = replace(state, slots=slots, previous=None if state.previous == label else state.previous)
            store.write_state(state)
        payload = store.directory / f".incoming-{label}"
        store.directory.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(payload, ignore_errors=True)
        try:
            try:
                bundles.extract_verified(verified, payload)
            except bundles.BundleError as exc:
                raise FailedPrecondition(f"bundle refused while installing: {exc.reason}") from None
            _check_software_json(payload / SOFTWARE_JSON, manifest.version)
            store.build_slot(label, payload / WHEELS, manifest.version, self.builder)
        finally:
            shutil.rmtree(payload, ignore_errors=True)
        started = now_rfc3339()
        result = Result(label, manifest.version, "trial", "", started)
        slots = dict(state.slots)
        slots[label] = SlotInfo(PACKAGE, manifest.version, started)
        store.write_state(replace(state, slots=slots, result=result))
        store.write_trial(Trial(label, current, manifest.version, started))
        store.swap(label)
        _log.info("device software %s installed in slot %s; restarting into it for its trial", manifest.version, label)
        return result

    # --- trial ---

    async def run_trial(self, check: HealthCheck) -> Result | None:
        """Run the health check of a daemon started on trial, within ``trial_timeout_s``; commit or roll back.

        Returns None when the running slot is not on trial. On a rollback :attr:`restart` is set.
        """
        store = self.slots_store
        trial = await asyncio.to_thread(store.read_trial)
        if trial is None or trial.slot != store.current():
            return None
        if trial.slot != self.running_slot:
            _log.warning(
                "device software slot %s is on trial but this daemon was not started on it (started without "
                "the launcher, see device/docs/updates.md); the trial waits for a daemon started on it",
                trial.slot,
            )
            return None
        try:
            await asyncio.wait_for(check(), self.trial_timeout_s)
        except TimeoutError:
            message = f"the daemon did not pass its health check within {self.trial_timeout_s:g} s"
        except Exception as exc:  # any failure of the new software rolls back
            message = f"health check failed: {exc}"
        else:
            result = await asyncio.to_thread(store.commit)
            _log.info("device software %s in slot %s committed", trial.version, trial.slot)
            return result
        result = await asyncio.to_thread(store.roll_back, trial, message)
        self.restart.set()
        return result


def _other_state(state: SoftwareState, trial: Trial | None, label: str, current: str) -> str:
    if label != BASE and (info := state.slots.get(label)) is not None and info.failed:
        return "failed"
    target = trial.previous if trial is not None and trial.slot == current else state.previous
    if label == (target or (BASE if current != BASE else None)):
        return "previous"
    return "standby"


def _check_software_json(path: Path, version: str) -> None:
    try:
        bundles.parse_software_metadata(path.read_bytes(), version)
    except OSError as exc:
        raise FailedPrecondition(f"bundle refused: {SOFTWARE_JSON} cannot be read: {exc.strerror}") from None
    except bundles.BundleError as exc:
        raise FailedPrecondition(f"bundle refused: {exc.reason}") from None


# --- launcher ----------------------------------------------------------------------------------------------------

Exec = Callable[[str, list[str], dict[str, str]], Any]


def launch(data_dir: Path, args: Sequence[str], *, exec_: Exec = os.execve) -> Any:
    """Start the daemon on the software ``current`` names: count a start on trial (rolling back a trial that was
    started before without committing), then exec ``SLOT/bin/python -m veriscope.device.cli ARGS``, or the base
    install's interpreter when no complete slot is current.

    Run by systemd through the base install (see device/packaging/systemd/veriscope-device.service), so it works
    even when the new software does not import.
    """
    start = SoftwareSlots(data_dir / "software").on_start()
    env = dict(os.environ)
    env[ENV_SLOT] = start.slot
    env.setdefault(ENV_BASE_SITE, os.pathsep.join(_base_site_packages()))
    slot_python = data_dir / "software" / start.slot / "bin" / "python"
    python = sys.executable if start.slot == BASE else str(slot_python)
    return exec_(python, [python, "-m", "veriscope.device.cli", *args], env)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m veriscope.device.updates.software launch DATA_DIR [--] ARGS...``: see :func:`launch`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2 or argv[0] != "launch":
        print("usage: python -m veriscope.device.updates.software launch DATA_DIR [--] ARGS...", file=sys.stderr)
        return 2
    rest = argv[2:]
    if rest[:1] == ["--"]:
        rest = rest[1:]
    launch(Path(argv[1]), rest)
    return 0  # pragma: no cover - exec does not return


if __name__ == "__main__":
    sys.exit(main())
