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
from veriscope.device.updates.slots import LABELS, Pointer, SlotStore
from veriscope.tools import bundles

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "models" / "bundles" / "veriscope-demo"
FULL = os.environ.get("VERISCOPE_POWER_LOSS_FULL") == "1"
CHUNK_BYTES = 16 * 1024 if FULL else 128 * 1024
"""Upload chunk size: each chunk is one write and one fsync."""
HARDWARE = ("veriscope-pi",)
V0, OLD, NEW = "0.3.0", "0.4.0", "0.5.0"
"""The versions: V0 and OLD are installed and committed before each run; NEW is the update killed midway."""


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
        _arm([str(data_dir / "models"), str(data_dir / "updates")], request.get("kill_at", 0), request["trace"])
    if request["op"] == "push":
        result = asyncio.run(_push(data_dir, Path(request["bundle"]).read_bytes(), pub))
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


def check_consistent(world: World, data_dir: Path) -> str:
    """Check the slots and the upload a unit holds; return the active version (OLD or NEW)."""
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
    data = world.bundles[NEW].read_bytes()
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
