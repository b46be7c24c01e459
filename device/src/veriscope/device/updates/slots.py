"""The model slots on disk and the pointer that names the active one.

Layout, under ``DATA_DIR/models``:

- ``a/`` and ``b/``: two slots, each holding one installed model bundle (its manifest.json and model file);
- ``current.json``: the pointer, replaced atomically (written beside it, fsynced, ``os.replace``), naming the
  active slot, the previous one kept for rollback, the slot on trial if any, and what each slot holds.

``builtin`` names the bundle the daemon was started with (the configured or shipped one): the fallback, always
there. A unit without ``current.json`` runs the built-in bundle.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from veriscope.device.errors import FailedPrecondition, PermissionDenied
from veriscope.device.fsutil import write_atomic
from veriscope.tools import bundles

BUILTIN: Final = "builtin"
"""The label of the built-in bundle."""
LABELS: Final = ("a", "b")
"""The labels of the installable slots."""
POINTER: Final = "current.json"

_SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")


def semver_key(version: str) -> tuple[Any, ...]:
    """A sort key that orders semantic versions by precedence (build metadata ignored).

    Raises:
        ValueError: ``version`` is not a semantic version.
    """
    match = _SEMVER.match(version)
    if match is None:
        raise ValueError(f"{version!r} is not a semantic version")
    core = tuple(int(match.group(i)) for i in (1, 2, 3))
    pre = match.group(4)
    if pre is None:
        return (core, 1, ())
    parts = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (core, 0, parts)


@dataclass(frozen=True)
class SlotInfo:
    """What an installable slot holds.

    Attributes:
        name: The bundle's name.
        version: The version installed (the update bundle's, which the unit reports).
        install_time: When it was installed (RFC 3339).
        failed: True when its trial failed; such a slot is never loaded.
    """

    name: str
    version: str
    install_time: str
    failed: bool = False


@dataclass(frozen=True)
class Result:
    """The latest model update and how it ended.

    Attributes:
        label: The slot it went into.
        version: Its version.
        outcome: ``trial``, ``committed``, ``rolled_back`` or ``manual_rollback``.
        message: Why it rolled back; empty otherwise.
        start_time: When it started (RFC 3339).
        end_time: When it ended (RFC 3339), or empty while on trial.
    """

    label: str
    version: str
    outcome: str
    message: str
    start_time: str
    end_time: str = ""


@dataclass(frozen=True)
class Pointer:
    """The content of ``current.json``.

    Attributes:
        active: The slot serving verdicts: ``a``, ``b`` or ``builtin``.
        previous: The slot to roll back to, or None (then the built-in bundle).
        trial: The slot on trial, or None.
        slots: What each installable slot holds, by label.
        result: The latest update, or None.
    """

    active: str = BUILTIN
    previous: str | None = None
    trial: str | None = None
    slots: dict[str, SlotInfo] = field(default_factory=dict)
    result: Result | None = None

    def evolve(self, **changes: Any) -> Pointer:
        """A copy with ``changes`` applied."""
        return replace(self, **changes)


def check_acceptance(
    manifest: bundles.Manifest,
    installed: str | None,
    accepted_hardware: tuple[str, ...],
    *,
    subject: str,
    allow_downgrade: bool,
    is_admin: bool,
) -> None:
    """Refuse a verified bundle this unit must not install over ``installed`` (the version now running).

    ``installed`` None (a version that is not semantic) skips the version checks: anything signed may replace it.
    ``subject`` names what the bundle updates in the messages ("model", "device software", "firmware").

    Raises:
        FailedPrecondition: The bundle is for other hardware, needs a newer installed version, or is not newer
            than ``installed`` without ``allow_downgrade`` (anti-rollback).
        PermissionDenied: A downgrade is allowed but the caller is not an admin.
    """
    if not set(manifest.compatible_hardware) & set(accepted_hardware):
        raise FailedPrecondition(
            f"bundle refused: it is for {', '.join(manifest.compatible_hardware)}, this unit is {accepted_hardware[0]}"
        )
    if installed is None:
        return
    if manifest.min_installed_version is not None and semver_key(installed) < semver_key(
        manifest.min_installed_version
    ):
        raise FailedPrecondition(
            f"bundle refused: it needs {subject} {manifest.min_installed_version} or later, this unit runs {installed}"
        )
    if semver_key(manifest.version) <= semver_key(installed):
        if not allow_downgrade:
            raise FailedPrecondition(
                f"bundle refused: {subject} {manifest.version} is not newer than the running {installed} "
                "(anti-rollback); an admin may pass allow_downgrade"
            )
        if not is_admin:
            raise PermissionDenied(
                f"installing {subject} {manifest.version} over {installed} is a downgrade, which needs the admin role"
            )


def now_rfc3339() -> str:
    """The current time, RFC 3339 UTC."""
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


class SlotStore:
    """Reads and atomically replaces the pointer of one ``DATA_DIR/models`` directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def slot_dir(self, label: str) -> Path:
        """The directory of an installable slot."""
        if label not in LABELS:
            raise ValueError(f"not an installable slot: {label!r}")
        return self.directory / label

    def read(self) -> Pointer:
        """The pointer; the default (built-in active) when there is none or it cannot be read."""
        try:
            raw = json.loads((self.directory / POINTER).read_text())
        except FileNotFoundError:
            return Pointer()
        except (OSError, ValueError):
            return Pointer()
        slots = {k: SlotInfo(**v) for k, v in raw.get("slots", {}).items() if k in LABELS}
        result = Result(**raw["result"]) if raw.get("result") else None
        labels = (*LABELS, BUILTIN)
        active = raw.get("active") if raw.get("active") in labels else BUILTIN
        previous = raw.get("previous") if raw.get("previous") in labels else None
        trial = raw.get("trial") if raw.get("trial") in LABELS else None
        return Pointer(active=active, previous=previous, trial=trial, slots=slots, result=result)

    def write(self, pointer: Pointer) -> None:
        """Replace the pointer atomically: a crash leaves either the old one or the new one."""
        self.directory.mkdir(parents=True, exist_ok=True)
        data = asdict(pointer)
        target = self.directory / POINTER
        write_atomic(target, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
