"""Power loss during a model update: the installer is killed at every filesystem step, and the unit restarts
consistent, on the old model or the new one, never a mix.

The harness:

1. A tracer counts every step the installer takes under ``DATA_DIR/models`` and ``DATA_DIR/updates``: every
   file created, every write reaching the OS, every fsync, rename, unlink, mkdir, rmdir and chmod. An audit hook
   sees the namespace operations; ``open``, ``os.fdopen``, ``os.write`` and ``os.fsync`` are wrapped for the
   writes and syncs. At step *k* it sends itself SIGKILL; a write killed this way first writes half its bytes,
   so a torn write is on disk too.
2. One traced run of a whole update (upload in chunks, verify, install into the inactive slot, trial, commit,
   the upload deleted) counts the steps, N.
3. For every k in 1..N, on a fresh copy of a unit whose slots hold two committed versions (so the update
   overwrites the rollback target): the update is run and killed at step k; the unit restarts (the start-up
   loader in a fresh process); the pointer, every slot it names and the upload left behind are checked
   against the bundles' manifests; and, when the old version is still active, the update is pushed again
   (resuming the upload) and must commit.

The runs are forked from a server process that has imported everything once (``python THIS_FILE --serve``),
so each costs tenths of a second. :func:`test_the_daemon_killed_mid_update_restarts_consistent` does the
same through the real daemon and gRPC, for a sample of steps. ``VERISCOPE_POWER_LOSS_FULL=1`` makes the
uploads use small chunks (many more write steps) and runs the daemon at every step.

:func:`test_every_step_of_a_combined_update_killed_restarts_with_every_part_old_or_every_part_new` does the
same for a combined bundle of controller firmware, the model and device software, through the real updaters
(the board is a file that a flash replaces whole, the software slot's venv a stand-in), including the restart
into the new software and its trial; each restart must find every part old or every part new.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import pytest

from veriscope.device.errors import FailedPrecondition
from veriscope.device.scans.manager import ActiveModel, ScanManager
from veriscope.device.updates import ModelUpdater, UploadStore
from veriscope.device.updates.combined import CombinedUpdater
from veriscope.device.updates.firmware import FirmwareUpdater, PreparedFirmware
from veriscope.device.updates.slots import LABELS, Pointer, SlotStore
from veriscope.device.updates.software import BASE as SOFTWARE_BASE
from veriscope.device.updates.software import SoftwareSlots, SoftwareUpdater
from veriscope.tools import bundles

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "models" / "bundles" / "veriscope-demo"
FULL = os.environ.get("VERISCOPE_POWER_LOSS_FULL") == "1"
CHUNK_BYTES = 16 * 1024 if FULL else 128 * 1024
"""Upload chunk size: each chunk is one write and one fsync."""
HARDWARE = ("veriscope-pi",)
V0, OLD, NEW = "0.4.0", "0.5.0", "0.6.0"
"""The versions: V0 and OLD are installed and committed before each run; NEW is the update killed midway."""
TRACED = ("models", "updates", "software", "firmware")
"""The directories under the data dir whose every step is counted (and killed at)."""


# --- the tracer, armed in the process that is killed --------------------------------------------------------------

_trace: dict[str, Any] = {}
_lock = threading.Lock()


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def _resolve(path: Any, dir_fd: int | None = None) -> str:
    if isinstance(path, int):
        return _fd_path(path)
    text = os.fsdecode(path)
    if dir_fd is not None and not os.path.isabs(text):
        text = os.path.join(_fd_path(dir_fd), text)
    return os.path.abspath(text)


def _watched(path: str) -> bool:
    return any(path == root or path.startswith(root + os.sep) for root in _trace.get("roots", ()))


def _step(op: str, path: str, before_kill: Callable[[], object] | None = None) -> None:
    """Count one step under the watched roots; at the armed step, SIGKILL this process."""
    if not _watched(path):
        return
    with _lock:
        _trace["n"] += 1
        n = _trace["n"]
        _trace["write"](f"{n}\t{op}\t{path}\n".encode())
        if n == _trace["kill_at"]:
            if before_kill is not None:
                before_kill()
            os.kill(os.getpid(), signal.SIGKILL)


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "open":
        path, _, flags = args
        if not isinstance(path, int) and flags & (os.O_CREAT | os.O_TRUNC):
            _step("create", _resolve(path))
    elif event == "os.rename":
        src, dst, src_fd, dst_fd = args
        src_path, dst_path = (
            _resolve(src, src_fd if src_fd != -1 else None),
            _resolve(dst, dst_fd if dst_fd != -1 else None),
        )
        _step(f"rename {os.path.basename(src_path)} ->", dst_path if _watched(dst_path) else src_path)
    elif event in ("os.remove", "os.rmdir"):
        path, dir_fd = args
        _step("unlink" if event == "os.remove" else "rmdir", _resolve(path, dir_fd if dir_fd != -1 else None))
    elif event in ("os.mkdir", "os.chmod"):
        path, _, dir_fd = args
        _step(event[3:], _resolve(path, dir_fd if dir_fd != -1 else None))
    elif event in ("os.symlink", "os.link"):
        _step(event[3:], _resolve(args[1]))
    elif event == "os.truncate":
        _step("truncate", _resolve(args[0]))


class _TracedFile(io.FileIO):
    """A raw file whose every write to the OS is a step; killed at its step after writing half."""

    traced_path = ""

    def write(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        _step("write", self.traced_path, lambda: io.FileIO.write(self, view[: len(view) // 2]))
        return io.FileIO.write(self, view)


def _arm(roots: list[str], kill_at: int, trace_path: str) -> None:
    """Trace (and kill at step ``kill_at``, 0 for never) every filesystem step under ``roots`` in this process."""
    trace_fd = os.open(trace_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    real_write, real_fsync, real_fdatasync, real_open = os.write, os.fsync, os.fdatasync, io.open
    _trace.update(n=0, kill_at=kill_at, roots=[os.path.realpath(r) for r in roots])
    _trace["write"] = lambda data: real_write(trace_fd, data)

    def traced_open(file: Any, mode: str = "r", buffering: int = -1, encoding: str | None = None,
                    errors: str | None = None, newline: str | None = None, closefd: bool = True,
                    opener: Any = None) -> IO[Any]:  # fmt: skip
        path = _resolve(file)
        if not set(mode) & set("wax+") or not _watched(path):
            return real_open(file, mode, buffering, encoding, errors, newline, closefd, opener)
        raw = _TracedFile(file, mode.replace("b", "").replace("t", ""), closefd=closefd, opener=opener)
        raw.traced_path = path
        buffer: io.BufferedRandom | io.BufferedWriter = (
            io.BufferedRandom(raw) if "+" in mode else io.BufferedWriter(raw)
        )
        if "b" in mode:
            return cast(IO[Any], buffer)
        return io.TextIOWrapper(buffer, encoding, errors, newline)

    def traced_write(fd: int, data: Any) -> int:
        view = memoryview(data).cast("B")
        _step("write", _fd_path(fd), lambda: real_write(fd, view[: len(view) // 2]))
        return real_write(fd, view)

    def traced_fsync(fd: Any) -> None:
        _step("fsync", _fd_path(fd if isinstance(fd, int) else fd.fileno()))
        real_fsync(fd)

    def traced_fdatasync(fd: Any) -> None:
        _step("fdatasync", _fd_path(fd if isinstance(fd, int) else fd.fileno()))
        real_fdatasync(fd)

    io.open = builtins.open = traced_open  # type: ignore[assignment]
    os.write, os.fsync, os.fdatasync = traced_write, traced_fsync, traced_fdatasync
    sys.addaudithook(_audit)


def arm_from_env() -> None:
    """Arm the tracer from ``POWER_LOSS_ROOTS`` (os.pathsep-separated), ``POWER_LOSS_KILL_AT`` and
    ``POWER_LOSS_TRACE``; used by the ``sitecustomize`` of a traced daemon."""
    roots = os.environ.get("POWER_LOSS_ROOTS")
    if roots:
        _arm(roots.split(os.pathsep), int(os.environ["POWER_LOSS_KILL_AT"]), os.environ["POWER_LOSS_TRACE"])


# --- the installer, as the UpdateService runs it ------------------------------------------------------------------


class _Serving:
    """Stands in for the scan manager: holds the serving model, which a committed trial swaps."""

    def __init__(self, model: ActiveModel) -> None:
        self.model = model

    @property
    def bundle(self) -> Any:
        return self.model.bundle

    def swap_model(self, model: ActiveModel) -> None:
        self.model = model


def _updater(data_dir: Path, pub: Path) -> ModelUpdater:
    return ModelUpdater(
        data_dir / "models", DEMO, trust=bundles.load_trust_key(pub), accepted_hardware=HARDWARE, num_threads=1
    )


async def _push(data_dir: Path, data: bytes, pub: Path) -> dict[str, Any]:
    """Upload (resuming what the unit holds), verify, install, wait for the trial: UpdateService's order."""
    updater = _updater(data_dir, pub)
    updater.attach(cast(ScanManager, _Serving(updater.load_at_start())))
    uploads = UploadStore(data_dir / "updates" / "incoming")
    sha256 = hashlib.sha256(data).hexdigest()
    upload_id = sha256[:32]
    state = await asyncio.to_thread(uploads.start, upload_id, len(data), sha256)
    offset = state.committed_bytes
    while offset < len(data):
        chunk = data[offset : offset + CHUNK_BYTES]
        state = await asyncio.to_thread(uploads.append, upload_id, offset, chunk)
        offset = state.committed_bytes
    path = await asyncio.to_thread(uploads.bundle_path, upload_id)
    try:
        verified = await asyncio.to_thread(updater.verify, path, allow_downgrade=False, is_admin=False)
    except FailedPrecondition:
        await asyncio.to_thread(uploads.delete, upload_id)
        raise
    await updater.install(verified)
    await asyncio.to_thread(uploads.delete, upload_id)
    await updater.wait_for_trial()
    result = updater.pointer().result
    assert result is not None
    return {"outcome": result.outcome, "version": result.version, "message": result.message}


def _restart(data_dir: Path, pub: Path) -> dict[str, Any]:
    """What a starting daemon does with the slots: load the model the pointer names, rolling back a trial."""
    updater = _updater(data_dir, pub)
    model = updater.load_at_start()
    return {"active": updater.pointer().active, "version": model.bundle.version}


def _child(request: dict[str, Any]) -> None:
    data_dir, pub = Path(request["data_dir"]), Path(request["pub"])
    if request.get("trace"):
        roots = [str(data_dir / d) for d in TRACED]
        _arm(roots, request.get("kill_at", 0), request["trace"])
    op = request["op"]
    if op == "push":
        result = asyncio.run(_push(data_dir, Path(request["bundle"]).read_bytes(), pub))
    elif op == "combined-push":
        result = asyncio.run(_combined_push(data_dir, Path(request["bundle"]).read_bytes(), pub))
    elif op == "combined-restart":
        result = asyncio.run(_combined_restart(data_dir, pub))
    else:
        result = _restart(data_dir, pub)
    Path(request["out"]).write_text(json.dumps(result))


def _serve() -> None:
    """Fork one child per request line on stdin; answer how it ended on stdout."""
    from veriscope.device.inference import _runtime

    _runtime.runtime_name()  # the interpreter's module, imported once before forking

    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            os.dup2(2, 1)
            code = 1
            try:
                _child(request)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        killed = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
        print(json.dumps({"signal": killed, "code": code}), flush=True)


# --- a combined update (firmware, model, device software), as the UpdateService and a starting daemon run it -----

FW_OLD, FW_NEW = "1.0.0", "1.1.0"
SW_OLD, SW_NEW = "0.1.0", "0.2.0"
"""The controller firmware and device software versions: the unit runs the old ones, the combined update brings the
new ones (with the model NEW)."""
BOARD_KIND = "atmega328p"


def _firmware_hex(version: str) -> str:
    """An ATmega328P application (a vector table of jumps) whose last byte tells the versions apart, as Intel HEX."""
    from intelhex import IntelHex

    ih = IntelHex()
    for i in range(26):
        ih.puts(4 * i, bytes((0x0C, 0x94, 0x34, 0x00)))  # jmp 0x0068
    ih[0xFF] = int(version.split(".")[1])
    text = io.StringIO()
    ih.write_hex_file(text)
    return text.getvalue()


def _flash_bytes(hex_text: str) -> bytes:
    """What a board flashed with ``hex_text`` holds, up to its last programmed byte."""
    from intelhex import IntelHex

    return IntelHex(io.StringIO(hex_text)).tobinstr().rstrip(b"\xff")


class _Board:
    """The controller board: its flash is a file outside the traced directories (it is no part of the data
    volume), replaced whole by a flash. The flash through the bootloader verifies every page; a board cut off
    mid-flash keeps its bootloader and is recovered by ``veriscope-tool flash-controller``, which this harness
    does not play."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, str]:
        data: dict[str, str] = json.loads(self.path.read_text())
        return data

    def flash(self, version: str, hex_text: str) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps({"version": version, "hex": hex_text}))
        os.replace(tmp, self.path)

    @property
    def port_path(self) -> str:
        return str(self.path)

    @property
    def info(self) -> Any:
        from veriscope.device.controller import ControllerInfo
        from veriscope.device.controller import _protocol as proto

        return ControllerInfo(BOARD_KIND, self.read()["version"], proto.PROTOCOL_VERSION, "")


class _BoardFirmware(FirmwareUpdater):
    """The real firmware updater (verify, fallback kept in ``previous.hex``, records, revert) over :class:`_Board`:
    only the serial exchanges are replaced, reading the board's flash back and flashing it."""

    def __init__(self, directory: Path, board: _Board, trust: Any) -> None:
        super().__init__(directory, None, None, trust=trust, accepted_hardware=HARDWARE)
        self.board = board
        self._board = cast(Any, board)  # what verify asks: the board's port and handshake

    def installed_version(self) -> str | None:
        return self.board.read()["version"]

    def _read_back(self, port: str) -> bytes:
        return _flash_bytes(self.board.read()["hex"])

    def _flash_blocking(self, prepared: PreparedFirmware) -> tuple[str, str]:
        running = self.board.info
        _, fallback = self._keep_fallback(self.board.port_path, running)
        self.board.flash(prepared.version, prepared.hex_data.decode("ascii"))
        self._record_success(prepared, fallback)
        return "committed", ""


def _build_slot(wheelhouse: Path, version: str, dest: Path) -> None:
    """Builds a device software slot without pip: its interpreter stand-in and the wheels it was given."""
    (dest / "bin").mkdir(parents=True)
    (dest / "bin" / "python").write_text(f"python for {version}\n")
    (dest / "wheels.txt").write_text("\n".join(sorted(p.name for p in wheelhouse.iterdir())))


async def _healthy() -> None:
    return None


@dataclass
class _Started:
    """A unit started as the daemon starts: the launcher's start, the slots loaded, the start-up trials run."""

    models: ModelUpdater
    firmware: _BoardFirmware
    software: SoftwareUpdater
    combined: CombinedUpdater


def _software_version(data_dir: Path, slot: str) -> str:
    if slot == SOFTWARE_BASE:
        return SW_OLD
    mark = json.loads((data_dir / "software" / slot / "slot.json").read_text())
    return str(mark["version"])


async def _start(data_dir: Path, pub: Path) -> _Started:
    """What the launcher and a starting daemon do: count the start (or roll back a trial), load the model, settle
    the firmware record, run the software trial (healthy) and settle a combined update left on trial."""
    start = SoftwareSlots(data_dir / "software").on_start()
    trust = bundles.load_trust_key(pub)
    models = _updater(data_dir, pub)
    models.attach(cast(ScanManager, _Serving(models.load_at_start())))
    firmware = _BoardFirmware(data_dir / "firmware", _Board(data_dir / "board" / "flash.json"), trust)
    software = SoftwareUpdater(
        data_dir / "software",
        trust=trust,
        accepted_hardware=HARDWARE,
        builder=_build_slot,
        running_version=_software_version(data_dir, start.slot),
        running_slot=start.slot,
    )
    combined = CombinedUpdater(data_dir / "updates", models, firmware=firmware, software=software)
    await combined.run_at_start(software.run_trial(_healthy))
    return _Started(models, firmware, software, combined)


async def _combined_push(data_dir: Path, data: bytes, pub: Path) -> dict[str, Any]:
    """Start the unit, upload (resuming), verify and install a combined bundle; then, as the daemon exits to run
    the new device software, start the unit again, whose healthy trial commits the update."""
    unit = await _start(data_dir, pub)
    uploads = UploadStore(data_dir / "updates" / "incoming")
    sha256 = hashlib.sha256(data).hexdigest()
    upload_id = sha256[:32]
    state = await asyncio.to_thread(uploads.start, upload_id, len(data), sha256)
    offset = state.committed_bytes
    while offset < len(data):
        state = await asyncio.to_thread(uploads.append, upload_id, offset, data[offset : offset + CHUNK_BYTES])
        offset = state.committed_bytes
    path = await asyncio.to_thread(uploads.bundle_path, upload_id)
    prepared = await asyncio.to_thread(unit.combined.verify, path, allow_downgrade=False, is_admin=False)
    await unit.combined.install(prepared)
    await asyncio.to_thread(uploads.delete, upload_id)
    await unit.combined.wait()
    assert unit.software.restart.is_set(), unit.combined.read_state()
    restarted = await _start(data_dir, pub)
    result = restarted.combined.result()
    assert result is not None
    return {"outcome": result.outcome, "message": result.message}


async def _combined_restart(data_dir: Path, pub: Path) -> dict[str, Any]:
    """Start the unit until it runs (a software trial that rolls back restarts it once more); report what runs."""
    for _ in range(3):
        unit = await _start(data_dir, pub)
        if not unit.software.restart.is_set():
            break
    else:
        raise AssertionError("the unit restarts over and over")
    combined = unit.combined.read_state()
    return {
        "model": unit.models.installed_version(),
        "firmware": unit.firmware.installed_version(),
        "software": unit.software.running_version,
        "combined": combined.result.outcome if combined is not None else None,
        "message": combined.result.message if combined is not None else "",
    }


# --- the test side ------------------------------------------------------------------------------------------------


@dataclass
class Ended:
    """How a forked run ended, and what it reported."""

    signal: int
    code: int
    result: dict[str, Any] | None


class Forker:
    """The fork server process."""

    def __init__(self, workdir: Path, pub: Path) -> None:
        self.workdir = workdir
        self.pub = pub
        self.log = workdir / "forker.log"
        self._n = 0
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log.open("w"),
            text=True,
        )

    def run(self, op: str, data_dir: Path, *, bundle: Path | None = None, kill_at: int = 0,
            trace: Path | None = None) -> Ended:  # fmt: skip
        self._n += 1
        out = self.workdir / f"result-{self._n}.json"
        request = {"op": op, "data_dir": str(data_dir), "pub": str(self.pub), "out": str(out), "kill_at": kill_at}
        if bundle is not None:
            request["bundle"] = str(bundle)
        if trace is not None:
            request["trace"] = str(trace)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        assert answer, f"the fork server died:\n{self.log.read_text()}"
        ended = json.loads(answer)
        result = json.loads(out.read_text()) if out.exists() else None
        return Ended(ended["signal"], ended["code"], result)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@dataclass
class World:
    """Keys, the three bundles, their payloads, and a unit with V0 and OLD committed."""

    pub: Path
    bundles: dict[str, Path]
    payloads: dict[str, dict[str, str]]
    template: Path
    forker: Forker
    workdir: Path


def _source(out: Path, version: str) -> Path:
    """The demo model with per-version files, so that two versions' slots differ file by file."""
    shutil.copytree(DEMO, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["version"] = version
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    with (out / "MODEL_CARD.md").open("a") as f:
        f.write(f"\nRelease {version}.\n")
    (out / f"release-{version}.txt").write_text(f"{version}\n")
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("power-loss")
    key, pub = bundles.generate_keys(root / "keys")
    built: dict[str, Path] = {}
    payloads: dict[str, dict[str, str]] = {}
    for version in (V0, OLD, NEW):
        out = root / f"demo-{version}.vsb"
        manifest = bundles.build_bundle(
            _source(root / f"src-{version}", version), out, kind="model", version=version,
            name="veriscope-demo", signing_key=bundles.load_signing_key(key),
        )  # fmt: skip
        built[version] = out
        payloads[version] = {p.path: p.sha256 for p in manifest.payloads}
    forker = Forker(root, pub)
    template = root / "template"
    for version in (V0, OLD):
        ended = forker.run("push", template, bundle=built[version])
        assert ended.code == 0 and ended.result is not None, forker.log.read_text()
        assert ended.result["outcome"] == "committed", ended.result
    pointer = SlotStore(template / "models").read()
    assert (pointer.active, pointer.previous) == ("b", "a")
    yield World(pub, built, payloads, template, forker, root)
    forker.close()


def _tree(slot: Path) -> dict[str, str]:
    return {
        p.relative_to(slot).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(slot.rglob("*"))
        if p.is_file()
    }


def check_consistent(world: World, data_dir: Path, uploaded: Path | None = None) -> str:
    """Check the model slots and the upload a unit holds (of ``uploaded``, by default the model bundle NEW);
    return the active model version (OLD or NEW)."""
    models = data_dir / "models"
    pointer: Pointer = SlotStore(models).read()
    assert (models / "current.json").is_file(), "the pointer is gone"
    assert pointer.trial is None, "a trial survived the restart"
    assert pointer.active in LABELS, pointer
    info = pointer.slots[pointer.active]
    assert info.version in (OLD, NEW) and not info.failed, pointer
    # Every slot the pointer may load (active, previous, any not failed) holds exactly the version it claims.
    for label in {pointer.active, *(p for p in (pointer.previous,) if p in LABELS)}:
        claimed = pointer.slots.get(label)
        assert claimed is not None, f"slot {label} is named but not described: {pointer}"
        assert _tree(models / label) == world.payloads[claimed.version], (
            f"slot {label} does not hold exactly {claimed.version}: {pointer}"
        )
    for label, claimed in pointer.slots.items():
        if not claimed.failed:
            assert _tree(models / label) == world.payloads[claimed.version], f"slot {label}: {pointer}"
    # What the upload left is a prefix of the bundle, or the whole bundle.
    data = (uploaded or world.bundles[NEW]).read_bytes()
    incoming = data_dir / "updates" / "incoming"
    for part in incoming.glob("*.part"):
        held = part.read_bytes()
        assert data.startswith(held), f"{part.name} is not a prefix of the bundle"
    for done in incoming.glob("*.bundle"):
        assert done.read_bytes() == data, f"{done.name} is not the bundle"
    return info.version


def _data_dir(world: World, name: str) -> Path:
    data_dir = world.workdir / name
    shutil.rmtree(data_dir, ignore_errors=True)
    shutil.copytree(world.template, data_dir)
    return data_dir


def _steps(world: World, data_dir: Path, trace: Path) -> list[str]:
    ended = world.forker.run("push", data_dir, bundle=world.bundles[NEW], trace=trace)
    assert ended.code == 0 and ended.result is not None, world.forker.log.read_text()
    assert ended.result["outcome"] == "committed", ended.result
    return trace.read_text().splitlines()


def _selected(steps: list[str]) -> list[int]:
    """Every step; by default, of the steps inside the slot's hidden work directories (the old copy set aside,
    the extraction in progress: files the pointer never names), every fifth and the last of each run."""
    if FULL:
        return list(range(1, len(steps) + 1))
    hidden = [any(f"{os.sep}models{os.sep}.{label}." in line for label in LABELS) for line in steps]
    chosen: list[int] = []
    run = 0
    for k, inside in enumerate(hidden, start=1):
        run = run + 1 if inside else 0
        last = k == len(steps) or not hidden[k]
        if not inside or run % 5 == 1 or last:
            chosen.append(k)
    return chosen


# A hang guard, not a speed limit: every step is a forked daemon killed and restarted, which a loaded host slows.
@pytest.mark.timeout(900)
def test_every_step_of_an_update_killed_restarts_on_the_old_or_the_new_model(world: World) -> None:
    trace = world.workdir / "count.trace"
    steps = _steps(world, _data_dir(world, "count"), trace)
    ops = {line.split("\t")[1].split()[0] for line in steps}
    assert {"create", "write", "fsync", "rename", "unlink", "rmdir"} <= ops, ops
    ended_on: dict[str, list[int]] = {OLD: [], NEW: []}
    for k in _selected(steps):
        data_dir = _data_dir(world, "case")
        step = steps[k - 1]
        ended = world.forker.run(
            "push", data_dir, bundle=world.bundles[NEW], kill_at=k, trace=world.workdir / "k.trace"
        )
        assert ended.signal == signal.SIGKILL, f"step {step}: not killed ({ended})\n{world.forker.log.read_text()}"
        restarted = world.forker.run("restart", data_dir)
        assert restarted.code == 0 and restarted.result is not None, (
            f"killed at step {step}: the unit does not start\n{world.forker.log.read_text()}"
        )
        version = check_consistent(world, data_dir)
        assert restarted.result["version"] == version, (step, restarted.result)
        ended_on[version].append(k)
        if version == OLD:
            again = world.forker.run("push", data_dir, bundle=world.bundles[NEW])
            assert again.code == 0 and again.result is not None, (
                f"killed at step {step}: the update does not install again\n{world.forker.log.read_text()}"
            )
            assert again.result["outcome"] == "committed", (step, again.result)
            assert check_consistent(world, data_dir) == NEW
            leftovers = [p.name for p in (data_dir / "models").iterdir() if p.name.startswith(".")]
            assert leftovers == [], (step, leftovers)
            assert list((data_dir / "updates" / "incoming").iterdir()) == [], step
    print(f"\n{len(steps)} steps: restarted on {OLD} after {len(ended_on[OLD])}, on {NEW} after {len(ended_on[NEW])}")
    # The last steps (the commit's rename onwards) leave the new model; everything before leaves the old one.
    assert ended_on[OLD] and ended_on[NEW]
    assert max(ended_on[OLD]) < min(ended_on[NEW])


# --- a combined update ------------------------------------------------------------------------------------------


@dataclass
class CombinedWorld:
    """The combined bundle (firmware FW_NEW, model NEW, device software SW_NEW) and a unit that runs FW_OLD, the
    model OLD (V0 before it) and the base install's software SW_OLD."""

    bundle: Path
    template: Path


@pytest.fixture(scope="module")
def combined_world(world: World) -> CombinedWorld:
    root = world.workdir / "combined"
    root.mkdir()
    [key_path] = (world.workdir / "keys").glob("*.key")
    key = bundles.load_signing_key(key_path)
    firmware = root / "fw-src"
    firmware.mkdir()
    (firmware / "firmware.hex").write_text(_firmware_hex(FW_NEW))
    (firmware / "firmware.json").write_text(json.dumps({"firmware_version": FW_NEW, "board": BOARD_KIND}))
    software = root / "sw-src"
    (software / "wheels").mkdir(parents=True)
    (software / "wheels" / f"veriscope_device-{SW_NEW}-py3-none-any.whl").write_bytes(b"wheel " + SW_NEW.encode())
    (software / "software.json").write_text(json.dumps({"version": SW_NEW}))
    parts = [root / "fw.vsb", world.bundles[NEW], root / "sw.vsb"]
    bundles.build_bundle(
        firmware, parts[0], kind="controller-firmware", version=FW_NEW, name="veriscope-controller", signing_key=key
    )
    bundles.build_bundle(
        software, parts[2], kind="device-software", version=SW_NEW, name="veriscope-device", signing_key=key
    )
    bundle = root / "release-1.0.0.vsb"
    bundles.build_combined(parts, bundle, version="1.0.0", signing_key=key)
    template = root / "template"
    shutil.copytree(world.template, template)
    (template / "board").mkdir()
    _Board(template / "board" / "flash.json").flash(FW_OLD, _firmware_hex(FW_OLD))
    return CombinedWorld(bundle, template)


def check_combined(world: World, cw: CombinedWorld, data_dir: Path, started: dict[str, Any]) -> bool:
    """Check that every part of a restarted unit is whole and that all are old or all new; return True for new."""
    model = check_consistent(world, data_dir, cw.bundle)
    # Device software: no trial left, and what runs is the base install or a complete slot of SW_NEW.
    store = SoftwareSlots(data_dir / "software")
    assert store.read_trial() is None, "a device software trial survived the restart"
    current = store.current()
    software = _software_version(data_dir, current)
    assert software == (SW_OLD if current == SOFTWARE_BASE else SW_NEW), (current, software)
    if current != SOFTWARE_BASE:
        wheels = (store.slot_dir(current) / "wheels.txt").read_text()
        assert wheels == f"veriscope_device-{SW_NEW}-py3-none-any.whl", wheels
    result = store.read_state().result
    assert result is None or result.outcome != "trial", result
    # Controller firmware: the board holds exactly the image of the version it reports, and no flash is on trial.
    board = _Board(data_dir / "board" / "flash.json").read()
    firmware = board["version"]
    assert firmware in (FW_OLD, FW_NEW), board
    assert _flash_bytes(board["hex"]) == _flash_bytes(_firmware_hex(firmware)), f"the board's {firmware} is not whole"
    with contextlib.suppress(FileNotFoundError):
        record = json.loads((data_dir / "firmware" / "state.json").read_text())
        assert (record.get("result") or {}).get("outcome") != "trial", record
    # What the restarted unit reports is what its files and its board hold.
    assert (started["model"], started["firmware"], started["software"]) == (model, firmware, software), started
    new = (model == NEW, firmware == FW_NEW, software == SW_NEW)
    assert new in ((False, False, False), (True, True, True)), f"a mix: {started}"
    # The combined update is settled: committed when every part is new, rolled back (or never recorded) otherwise.
    assert started["combined"] == ("committed" if new[0] else None) or (
        not new[0] and started["combined"] == "rolled_back"
    ), started
    return new[0]


def _combined_selected(steps: list[str]) -> list[int]:
    """Every step with FULL. Else every rename, symlink, unlink and rmdir outside the work directories the unit
    never runs from (a model slot being extracted, the combined bundle's parts, a firmware bundle being checked,
    a software slot or its payload being built) and the step before each, so both sides of every change of what
    the unit would run are killed at; of the other steps every sixth; and the last."""
    if FULL:
        return list(range(1, len(steps) + 1))
    hidden_dirs = [f"{os.sep}models{os.sep}.{label}." for label in LABELS]
    hidden_dirs += [f"{os.sep}software{os.sep}.{label}." for label in LABELS]
    hidden_dirs += [f"{os.sep}updates{os.sep}.combined-", f"{os.sep}firmware{os.sep}incoming{os.sep}"]
    hidden_dirs += [f"{os.sep}software{os.sep}.incoming-", f"{os.sep}software{os.sep}..incoming-"]
    chosen: set[int] = set()
    for k, line in enumerate(steps, start=1):
        op = line.split("\t")[1].split()[0]
        if op in ("rename", "symlink", "unlink", "rmdir") and not any(d in line for d in hidden_dirs):
            chosen |= {k - 1, k} - {0}
    others = [k for k in range(1, len(steps) + 1) if k not in chosen]
    return sorted({*chosen, *others[::6], len(steps)})


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_every_step_of_a_combined_update_killed_restarts_with_every_part_old_or_every_part_new(
    world: World, combined_world: CombinedWorld
) -> None:
    cw = combined_world

    def fresh(name: str) -> Path:
        data_dir = world.workdir / name
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.copytree(cw.template, data_dir)
        return data_dir

    trace = world.workdir / "combined-count.trace"
    ended = world.forker.run("combined-push", fresh("combined-count"), bundle=cw.bundle, trace=trace)
    assert ended.code == 0 and ended.result is not None, world.forker.log.read_text()
    assert ended.result["outcome"] == "committed", ended.result
    steps = trace.read_text().splitlines()
    touched = {line.split("\t")[2].split(os.sep)[len(str(world.workdir).split(os.sep)) + 1] for line in steps}
    assert set(TRACED) <= touched, touched
    ended_on: dict[bool, list[int]] = {False: [], True: []}
    selected = _combined_selected(steps)
    fields = [line.split("\t") for line in steps]
    trial_json = f"{os.sep}software{os.sep}trial.json"
    swap = next(k for k, f in enumerate(fields, 1) if f[1].startswith("rename") and f[2].endswith(f"{os.sep}current"))
    # The start on the new software counts itself in trial.json; the commit removes it.
    counted = [k for k, f in enumerate(fields, 1) if f[1].startswith("rename") and f[2].endswith(trial_json)][-1]
    commit = next(k for k, f in enumerate(fields, 1) if f[1] == "unlink" and f[2].endswith(trial_json))
    assert swap < counted < commit, (swap, counted, commit)
    steps_before_swap = [k for k in selected if k < swap]
    for k in selected:
        data_dir = fresh("combined-case")
        step = steps[k - 1]
        ended = world.forker.run(
            "combined-push", data_dir, bundle=cw.bundle, kill_at=k, trace=world.workdir / "k.trace"
        )
        assert ended.signal == signal.SIGKILL, f"step {step}: not killed ({ended})\n{world.forker.log.read_text()}"
        started = world.forker.run("combined-restart", data_dir)
        assert started.code == 0 and started.result is not None, (
            f"killed at step {step}: the unit does not start\n{world.forker.log.read_text()}"
        )
        new = check_combined(world, cw, data_dir, started.result)
        ended_on[new].append(k)
        # Pushed again after every fourth kill that left the old parts (every one with FULL), and the last.
        last_old = k == max(steps_before_swap)
        if not new and (FULL or last_old or len(ended_on[False]) % 4 == 1):
            again = world.forker.run("combined-push", data_dir, bundle=cw.bundle)
            assert again.code == 0 and again.result is not None, (
                f"killed at step {step}: the update does not install again\n{world.forker.log.read_text()}"
            )
            assert again.result["outcome"] == "committed", (step, again.result)
            restarted = world.forker.run("combined-restart", data_dir)
            assert restarted.result is not None and check_combined(world, cw, data_dir, restarted.result), step
            assert list((data_dir / "updates" / "incoming").iterdir()) == [], step
            leftovers = [
                f"{d}/{p.name}"
                for d in ("models", "updates", "software")
                for p in (data_dir / d).iterdir()
                if p.name.startswith((".a.", ".b.", ".combined-", ".incoming-"))
            ]
            assert leftovers == [], (step, leftovers)
    print(f"\n{len(steps)} steps: restarted all old after {len(ended_on[False])}, all new after {len(ended_on[True])}")
    # A kill before the device software is swapped in leaves every part old; after the swap, the next start runs
    # the new software's trial, which commits every part. Once that start is counted on trial, a kill before the
    # commit is a start that never passed its health check: the next one rolls every part back.
    expected_old = [k for k in selected if k <= swap or counted < k <= commit]
    assert ended_on[False] == expected_old, (ended_on, swap, counted, commit)


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    _serve()


# --- the same through the daemon and gRPC -------------------------------------------------------------------------


def _grpc_push(address: str, data: bytes) -> str:
    """Upload (resuming), install and wait for the trial over gRPC; returns the outcome's name."""
    import grpc

    from veriscope.v1 import update_service_pb2 as pb
    from veriscope.v1 import update_service_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = update_service_pb2_grpc.UpdateServiceStub(channel)
        sha256 = hashlib.sha256(data).hexdigest()
        upload_id = sha256[:32]
        try:
            start = stub.GetUpload(pb.GetUploadRequest(name=f"uploads/{upload_id}"), timeout=30).upload.committed_bytes
        except grpc.RpcError:
            start = 0
        header = pb.UploadHeader(upload_id=upload_id, size_bytes=len(data), sha256=sha256)

        def requests() -> Iterator[pb.UploadBundleRequest]:
            yield pb.UploadBundleRequest(header=header)
            for offset in range(start, len(data), CHUNK_BYTES):
                chunk = pb.UploadChunk(offset=offset, data=data[offset : offset + CHUNK_BYTES])
                yield pb.UploadBundleRequest(chunk=chunk)

        stub.UploadBundle(requests(), timeout=60)
        stub.InstallBundle(pb.InstallBundleRequest(upload=f"uploads/{upload_id}"), timeout=60)
        while True:
            results = stub.GetUpdateStatus(pb.GetUpdateStatusRequest(), timeout=30).results
            model = [r for r in results if r.component == pb.COMPONENT_MODEL]
            if model and model[0].outcome != pb.UPDATE_OUTCOME_TRIAL:
                return pb.UpdateOutcome.Name(model[0].outcome)
            time.sleep(0.05)


def _daemon_sample(steps: list[str]) -> list[int]:
    """Every step with FULL; else the first chunk written, the old slot set aside, the new slot renamed into
    place, the commit's replacement of the pointer, and the last step."""
    if FULL:
        return list(range(1, len(steps) + 1))
    fields = [line.split("\t") for line in steps]
    chosen = [next(k for k, f in enumerate(fields, 1) if f[1] == "write" and f[2].endswith(".part"))]
    chosen += [k for k, f in enumerate(fields, 1) if f[1].startswith("rename") and f[2].endswith(f"{os.sep}.a.old")]
    chosen += [k for k, f in enumerate(fields, 1) if f[1].startswith("rename .a.")]
    chosen += [k for k, f in enumerate(fields, 1) if f[1].startswith("rename .current.json.tmp")][-1:]
    return sorted({*chosen, len(steps)})


def test_the_daemon_killed_mid_update_restarts_consistent(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import grpc

    from veriscope.device.launch import spawn_daemon

    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        f"import sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import test_update_power_loss\ntest_update_power_loss.arm_from_env()\n"
    )
    trust = ("--update-trust", str(world.pub))
    data = world.bundles[NEW].read_bytes()

    def traced(data_dir: Path, kill_at: int, trace: Path) -> Any:
        with monkeypatch.context() as env:
            env.setenv("PYTHONPATH", str(shim))
            env.setenv("POWER_LOSS_ROOTS", os.pathsep.join(str(data_dir / d) for d in ("models", "updates")))
            env.setenv("POWER_LOSS_KILL_AT", str(kill_at))
            env.setenv("POWER_LOSS_TRACE", str(trace))
            return spawn_daemon(data_dir, *trust)

    data_dir = _data_dir(world, "daemon-count")
    unit = traced(data_dir, 0, tmp_path / "count.trace")
    try:
        assert _grpc_push(unit.address, data) == "UPDATE_OUTCOME_COMMITTED"
    finally:
        assert unit.stop() == 0
    steps = (tmp_path / "count.trace").read_text().splitlines()
    ended_on = []
    for k in _daemon_sample(steps):
        data_dir = _data_dir(world, "daemon-case")
        unit = traced(data_dir, k, tmp_path / "k.trace")
        with contextlib.suppress(grpc.RpcError):
            _grpc_push(unit.address, data)
        assert unit.process.wait(timeout=60) == -signal.SIGKILL, f"step {steps[k - 1]}: not killed"
        unit = spawn_daemon(data_dir, *trust)
        try:
            version = check_consistent(world, data_dir)
            ended_on.append(version)
            if version == OLD:
                assert _grpc_push(unit.address, data) == "UPDATE_OUTCOME_COMMITTED", steps[k - 1]
                assert check_consistent(world, data_dir) == NEW
        finally:
            assert unit.stop() == 0, "".join(unit.output)
    assert OLD in ended_on and NEW in ended_on
