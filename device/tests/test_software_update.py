"""Over-the-air device software updates: A/B venv slots, the ``current`` swap, the trial, commit and rollback.

Slots are built by a fake venv builder (no pip); one slow test at the end builds a real venv, offline, from a
wheel of the repository's device package (about 10 s).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from device_daemon import InProcessDaemon

from veriscope.device.errors import FailedPrecondition, ModelError
from veriscope.device.updates import software
from veriscope.device.updates.software import BASE, ENV_SLOT, SoftwareSlots, SoftwareUpdater, Start, launch
from veriscope.tools import bundles
from veriscope.v1 import update_service_pb2, update_service_pb2_grpc

HARDWARE = ("veriscope-sim", "veriscope-pi")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The fleet's update key pair."""
    return bundles.generate_keys(tmp_path_factory.mktemp("keys"))


def software_bundle(keys: tuple[Path, Path], out: Path, version: str, *, json_version: str | None = None) -> Path:
    """A signed device-software bundle with a (fake) wheelhouse."""
    source = out.parent / f"src-{version}"
    (source / "wheels").mkdir(parents=True, exist_ok=True)
    (source / "wheels" / f"veriscope_device-{version}-py3-none-any.whl").write_bytes(b"wheel " + version.encode())
    (source / "wheels" / "veriscope_api-0.1.0-py3-none-any.whl").write_bytes(b"api")
    (source / "software.json").write_text(json.dumps({"version": json_version or version}))
    bundles.build_bundle(
        source,
        out,
        kind="device-software",
        version=version,
        name="veriscope-device",
        compatible_hardware=["veriscope-pi"],
        signing_key=bundles.load_signing_key(keys[0]),
    )
    return out


class FakeBuilder:
    """Builds a slot as a directory with ``bin/python`` and the wheels it was given; records every call."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, Path]] = []
        self.fail = fail

    def __call__(self, wheelhouse: Path, version: str, dest: Path) -> None:
        self.calls.append((version, dest))
        if self.fail:
            raise FailedPrecondition("building the software slot failed: no matching distribution")
        (dest / "bin").mkdir(parents=True)
        (dest / "bin" / "python").write_text(f"python for {version}\n")
        (dest / "wheels.txt").write_text("\n".join(sorted(p.name for p in wheelhouse.iterdir())))


def updater(directory: Path, keys: tuple[Path, Path], builder: FakeBuilder, **kwargs: object) -> SoftwareUpdater:
    return SoftwareUpdater(
        directory,
        trust=bundles.load_trust_key(keys[1]),
        accepted_hardware=HARDWARE,
        builder=builder,
        **kwargs,  # type: ignore[arg-type]
    )


def install(up: SoftwareUpdater, path: Path) -> software.Result:
    return up.install(up.verify(path, allow_downgrade=False, is_admin=False))


def slot_version(store: SoftwareSlots, label: str) -> str:
    return str(json.loads((store.slot_dir(label) / software.SLOT_MARK).read_text())["version"])


def tree_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f.relative_to(path).as_posix().encode() + f.read_bytes())
    return digest.hexdigest()


async def healthy() -> None:
    return None


async def failing_self_test() -> None:
    raise ModelError("self-test: the model gave non-finite or out-of-range outputs for canvas")


def committed_unit(tmp_path: Path, keys: tuple[Path, Path], builder: FakeBuilder) -> tuple[Path, SoftwareSlots]:
    """A unit that runs software 0.2.0 from slot ``a``, committed."""
    directory = tmp_path / "software"
    up = updater(directory, keys, builder)
    install(up, software_bundle(keys, tmp_path / "sw-0.2.0.vsb", "0.2.0"))
    store = up.slots_store
    assert store.on_start() == Start("a", trial=True)
    store.commit()
    return directory, store


# --- install -------------------------------------------------------------------------------------------------------


def test_install_builds_only_the_inactive_slot_and_swaps_current(keys: tuple[Path, Path], tmp_path: Path) -> None:
    builder = FakeBuilder()
    directory, store = committed_unit(tmp_path, keys, builder)
    running = tree_digest(store.slot_dir("a"))
    up = updater(directory, keys, builder, running_version="0.2.0", running_slot="a")

    result = install(up, software_bundle(keys, tmp_path / "sw-0.3.0.vsb", "0.3.0"))

    assert (result.label, result.version, result.outcome) == ("b", "0.3.0", "trial")
    # The venv was built in a hidden directory beside the slot, then renamed; the running slot is untouched.
    version, built_in = builder.calls[-1]
    assert version == "0.3.0"
    assert built_in == directory / ".b.new"
    assert tree_digest(store.slot_dir("a")) == running
    assert "veriscope_device-0.3.0-py3-none-any.whl" in (store.slot_dir("b") / "wheels.txt").read_text()
    assert os.readlink(directory / "current") == "b"
    assert store.read_trial() == software.Trial("b", "a", "0.3.0", result.start_time, 0)
    assert [p.name for p in directory.iterdir() if p.name.startswith(".")] == []
    views = {v.label: (v.state, v.version) for v in up.slots()}
    assert views == {"b": ("trial", "0.3.0"), "a": ("previous", "0.2.0"), BASE: ("standby", "0.1.0")}


async def test_install_through_the_event_loop_asks_for_a_restart(keys: tuple[Path, Path], tmp_path: Path) -> None:
    up = updater(tmp_path / "software", keys, FakeBuilder())
    verified = up.verify(software_bundle(keys, tmp_path / "sw.vsb", "0.2.0"), allow_downgrade=False, is_admin=False)
    assert not up.restart.is_set()
    await up.install_async(verified)
    assert up.restart.is_set()


def test_a_failed_build_leaves_the_running_software_alone(keys: tuple[Path, Path], tmp_path: Path) -> None:
    directory, store = committed_unit(tmp_path, keys, FakeBuilder())
    up = updater(directory, keys, FakeBuilder(fail=True), running_version="0.2.0")
    with pytest.raises(FailedPrecondition, match="no matching distribution"):
        install(up, software_bundle(keys, tmp_path / "sw-0.3.0.vsb", "0.3.0"))
    assert store.current() == "a"
    assert store.read_trial() is None
    assert not store.slot_dir("b").exists()


@pytest.mark.parametrize(
    ("version", "running", "match"),
    [
        ("0.1.0", "0.1.0", "not newer than the running 0.1.0"),
        ("0.0.9", "0.1.0", "not newer"),
    ],
)
def test_anti_rollback(keys: tuple[Path, Path], tmp_path: Path, version: str, running: str, match: str) -> None:
    up = updater(tmp_path / "software", keys, FakeBuilder(), running_version=running)
    path = software_bundle(keys, tmp_path / "sw.vsb", version)
    with pytest.raises(FailedPrecondition, match=match):
        up.verify(path, allow_downgrade=False, is_admin=False)
    assert up.verify(path, allow_downgrade=True, is_admin=True).manifest.version == version


def test_build_refuses_a_source_that_is_not_a_wheelhouse(keys: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(bundles.BundleError, match=r"software\.json says version '0\.2\.1'"):
        software_bundle(keys, tmp_path / "bad.vsb", "0.2.0", json_version="0.2.1")
    source = tmp_path / "src-extra"
    (source / "wheels").mkdir(parents=True)
    (source / "wheels" / "veriscope_device-0.2.0-py3-none-any.whl").write_bytes(b"w")
    (source / "software.json").write_text('{"version": "0.2.0"}')
    (source / "install.sh").write_text("#!/bin/sh\n")
    with pytest.raises(bundles.BundleError, match=r"unexpected: install\.sh"):
        bundles.build_bundle(
            source, tmp_path / "x.vsb", kind="device-software", version="0.2.0",
            signing_key=bundles.load_signing_key(keys[0]),
        )  # fmt: skip
    (source / "install.sh").unlink()
    (source / "wheels" / "veriscope_device-0.2.0-py3-none-any.whl").rename(source / "wheels" / "numpy-2.0-x.whl")
    with pytest.raises(bundles.BundleError, match="veriscope_device wheel"):
        bundles.build_bundle(
            source, tmp_path / "x.vsb", kind="device-software", version="0.2.0",
            signing_key=bundles.load_signing_key(keys[0]),
        )  # fmt: skip


# --- trial, commit, rollback ---------------------------------------------------------------------------------------


def test_a_healthy_start_commits_the_trial(keys: tuple[Path, Path], tmp_path: Path) -> None:
    directory, store = committed_unit(tmp_path, keys, FakeBuilder())
    install(
        updater(directory, keys, FakeBuilder(), running_version="0.2.0"),
        software_bundle(keys, tmp_path / "s.vsb", "0.3.0"),
    )

    assert store.on_start() == Start("b", trial=True)
    assert store.read_trial().starts == 1  # type: ignore[union-attr]
    up = updater(directory, keys, FakeBuilder(), running_version="0.3.0", running_slot="b")
    result = asyncio.run(up.run_trial(healthy))

    assert result is not None and (result.label, result.version, result.outcome) == ("b", "0.3.0", "committed")
    assert store.read_trial() is None
    assert store.current() == "b"
    assert store.read_state().previous == "a"
    assert not up.restart.is_set()
    assert {v.label: v.state for v in up.slots()} == {"b": "active", "a": "previous", BASE: "standby"}
    # Committed: later starts are ordinary ones.
    assert store.on_start() == Start("b")


def test_a_failed_self_test_rolls_back_and_restarts(keys: tuple[Path, Path], tmp_path: Path) -> None:
    directory, store = committed_unit(tmp_path, keys, FakeBuilder())
    install(
        updater(directory, keys, FakeBuilder(), running_version="0.2.0"),
        software_bundle(keys, tmp_path / "s.vsb", "0.3.0"),
    )
    store.on_start()
    up = updater(directory, keys, FakeBuilder(), running_version="0.3.0", running_slot="b")

    result = asyncio.run(up.run_trial(failing_self_test))

    assert result is not None and result.outcome == "rolled_back"
    assert "health check failed: self-test" in result.message
    assert up.restart.is_set()
    assert store.current() == "a"
    assert store.read_trial() is None
    assert store.read_state().slots["b"].failed
    assert {v.label: v.state for v in up.slots()} == {"a": "active", "b": "failed", BASE: "previous"}


def test_a_health_check_that_does_not_end_in_time_rolls_back(keys: tuple[Path, Path], tmp_path: Path) -> None:
    directory, store = committed_unit(tmp_path, keys, FakeBuilder())
    install(
        updater(directory, keys, FakeBuilder(), running_version="0.2.0"),
        software_bundle(keys, tmp_path / "s.vsb", "0.3.0"),
    )
    store.on_start()
    up = updater(directory, keys, FakeBuilder(), running_slot="b", trial_timeout_s=0.01)

    async def hangs() -> None:
        await asyncio.Event().wait()

    result = asyncio.run(up.run_trial(hangs))
    assert result is not None and result.outcome == "rolled_back"
    assert "within 0.01 s" in result.message
    assert store.current() == "a"


def test_a_crash_loop_on_trial_rolls_back_at_the_second_start(keys: tuple[Path, Path], tmp_path: Path) -> None:
    directory, store = committed_unit(tmp_path, keys, FakeBuilder())
    install(
        updater(directory, keys, FakeBuilder(), running_version="0.2.0"),
        software_bundle(keys, tmp_path / "s.vsb", "0.3.0"),
    )

    assert store.on_start() == Start("b", trial=True)  # the new daemon crashes before its health check ends
    assert store.on_start() == Start("a", rolled_back=True)

    assert store.current() == "a"
    assert store.read_trial() is None
    result = store.read_state().result
    assert result is not None and result.outcome == "rolled_back" and "2 times" in result.message
    assert store.on_start() == Start("a")


def test_rollback_from_the_first_install_returns_to_the_base_install(keys: tuple[Path, Path], tmp_path: Path) -> None:
    directory = tmp_path / "software"
    install(updater(directory, keys, FakeBuilder()), software_bundle(keys, tmp_path / "s.vsb", "0.2.0"))
    store = SoftwareSlots(directory)
    store.on_start()
    assert store.on_start() == Start(BASE, rolled_back=True)
    assert not os.path.lexists(directory / "current")


def test_a_daemon_not_started_on_the_trial_slot_never_commits_it(keys: tuple[Path, Path], tmp_path: Path) -> None:
    directory = tmp_path / "software"
    install(updater(directory, keys, FakeBuilder()), software_bundle(keys, tmp_path / "s.vsb", "0.2.0"))
    up = updater(directory, keys, FakeBuilder(), running_slot=None)
    assert asyncio.run(up.run_trial(healthy)) is None
    assert up.slots_store.read_trial() is not None


def test_launcher_counts_the_start_and_execs_the_slot(keys: tuple[Path, Path], tmp_path: Path) -> None:
    data_dir = tmp_path
    install(updater(data_dir / "software", keys, FakeBuilder()), software_bundle(keys, tmp_path / "s.vsb", "0.2.0"))
    calls: list[tuple[str, list[str], dict[str, str]]] = []

    def exec_(path: str, argv: list[str], env: dict[str, str]) -> None:
        calls.append((path, argv, env))

    launch(data_dir, ["serve", "--data-dir", str(data_dir)], exec_=exec_)
    launch(data_dir, ["serve", "--data-dir", str(data_dir)], exec_=exec_)

    (first, argv, env), (second, _, env2) = calls
    assert first == str(data_dir / "software" / "a" / "bin" / "python")
    assert argv[1:] == ["-m", "veriscope.device.cli", "serve", "--data-dir", str(data_dir)]
    assert env[ENV_SLOT] == "a"
    # The first start never committed: the second rolls back and runs the base install.
    assert second == sys.executable and env2[ENV_SLOT] == BASE


def test_the_shipped_unit_starts_through_the_launcher_and_restarts_on_exit_76() -> None:
    unit = Path(__file__).resolve().parents[1] / "packaging" / "systemd" / "veriscope-device.service"
    service = dict(
        line.partition("=")[::2] for line in unit.read_text().splitlines() if "=" in line and line[:1] != "#"
    )
    assert software.EXIT_RESTART == 76
    assert "76" in service["RestartForceExitStatus"].split() and "76" in service["SuccessExitStatus"].split()
    launcher = "/opt/veriscope/venv/bin/python -m veriscope.device.updates.software launch /var/lib/veriscope -- "
    assert service["ExecStart"].startswith(launcher + "serve ")


# --- power loss ----------------------------------------------------------------------------------------------------


class Stop(BaseException):
    """Power lost at a filesystem step."""


def test_power_loss_at_every_step_leaves_a_complete_slot_current(keys: tuple[Path, Path], tmp_path: Path) -> None:
    """Stop an install, its start and its commit at each filesystem step in turn; the restart must run the old or
    the new software, complete, and a new install must then succeed."""
    old_bundle = software_bundle(keys, tmp_path / "old.vsb", "0.2.0")
    new_bundle = software_bundle(keys, tmp_path / "new.vsb", "0.3.0")

    def run(directory: Path, stop_at: int | None) -> list[str]:
        steps: list[str] = []

        def step(name: str) -> None:
            steps.append(name)
            if stop_at is not None and len(steps) == stop_at:
                raise Stop(name)

        up = updater(directory, keys, FakeBuilder(), running_version="0.2.0", step=step)
        install(up, new_bundle)
        assert up.slots_store.on_start().trial
        up.slots_store.commit()
        return steps

    def fresh(n: int) -> Path:
        directory = tmp_path / f"unit-{n}" / "software"
        up = updater(directory, keys, FakeBuilder())
        install(up, old_bundle)
        up.slots_store.on_start()
        up.slots_store.commit()
        return directory

    all_steps = run(fresh(0), None)
    assert {"venv", "mark", "rename", "state", "trial", "swap", "clear-trial"} <= set(all_steps)
    outcomes = set()
    for n in range(1, len(all_steps) + 1):
        directory = fresh(n)
        with pytest.raises(Stop):
            run(directory, n)
        store = SoftwareSlots(directory)
        # The restart: the launcher settles what the stop left, then the trial (if any) runs and commits.
        start = store.on_start()
        assert start.slot in ("a", "b"), (n, all_steps[n - 1])
        assert store.is_complete(start.slot)
        assert slot_version(store, start.slot) in ("0.2.0", "0.3.0")
        if start.trial:
            store.commit()
        version = slot_version(store, store.current())
        result = store.read_state().result
        assert result is not None and result.outcome != "trial"
        if version == "0.3.0":
            assert (result.version, result.outcome) == ("0.3.0", "committed"), (n, result)
        else:  # stopped before the new slot was complete (the old result stands) or before it committed
            assert (result.version, result.outcome) in {("0.2.0", "committed"), ("0.3.0", "rolled_back")}, (n, result)
        outcomes.add(version)
        # A later install still works and never touches the running slot.
        running = store.current()
        later = updater(directory, keys, FakeBuilder(), running_version=version)
        digest = tree_digest(store.slot_dir(running))
        install(later, software_bundle(keys, tmp_path / f"later-{n}.vsb", "0.4.0"))
        assert store.current() != running and tree_digest(store.slot_dir(running)) == digest
    assert outcomes == {"0.2.0", "0.3.0"}


# --- through the daemon --------------------------------------------------------------------------------------------


def test_install_bundle_rpc_installs_software_and_status_lists_its_slots(
    keys: tuple[Path, Path], tmp_path: Path
) -> None:
    unit = InProcessDaemon(tmp_path / "data", camera=(320, 240), update={"trust_key": str(keys[1])})
    try:
        daemon_software = unit.daemon.software
        assert daemon_software is not None
        builder = FakeBuilder()
        daemon_software.builder = builder
        stub = update_service_pb2_grpc.UpdateServiceStub(unit.channel)
        data = software_bundle(keys, tmp_path / "sw.vsb", "0.2.0").read_bytes()
        header = update_service_pb2.UploadHeader(
            upload_id="sw", size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest()
        )
        stub.UploadBundle(
            iter(
                [
                    update_service_pb2.UploadBundleRequest(header=header),
                    update_service_pb2.UploadBundleRequest(chunk=update_service_pb2.UploadChunk(offset=0, data=data)),
                ]
            ),
            timeout=30,
        )
        response = stub.InstallBundle(update_service_pb2.InstallBundleRequest(upload="uploads/sw"), timeout=30)
        assert response.result.component == update_service_pb2.COMPONENT_DEVICE_SOFTWARE
        assert response.result.outcome == update_service_pb2.UPDATE_OUTCOME_TRIAL
        assert (response.slot.label, response.slot.version) == ("a", "0.2.0")
        assert daemon_software.restart.is_set()  # serve() exits with EXIT_RESTART
        status = stub.GetUpdateStatus(update_service_pb2.GetUpdateStatusRequest(), timeout=30)
        slots = {
            s.label: (s.version, s.state)
            for s in status.slots
            if s.component == update_service_pb2.COMPONENT_DEVICE_SOFTWARE
        }
        assert slots == {
            "a": ("0.2.0", update_service_pb2.SLOT_STATE_TRIAL),
            BASE: ("0.1.0", update_service_pb2.SLOT_STATE_PREVIOUS),
        }
        # A second software install waits for the trial.
        with pytest.raises(grpc.RpcError) as err:
            stub.InstallBundle(update_service_pb2.InstallBundleRequest(upload="uploads/sw"), timeout=30)
        assert err.value.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND)
    finally:
        unit.close()


def test_the_daemons_health_check_runs_the_model_self_test(keys: tuple[Path, Path], tmp_path: Path) -> None:
    from veriscope.device.server import software_health_check

    unit = InProcessDaemon(tmp_path / "data", camera=(320, 240))
    try:
        unit.run(software_health_check(unit.daemon))  # the demo model passes
        broken = unit.daemon.context.manager.model.analyzer

        def fails(*args: object, **kwargs: object) -> object:
            raise RuntimeError("interpreter crashed")

        original = broken.analyze_image
        broken.analyze_image = fails  # type: ignore[method-assign]
        try:
            with pytest.raises(ModelError, match="self-test"):
                unit.run(software_health_check(unit.daemon))
        finally:
            broken.analyze_image = original  # type: ignore[method-assign]
    finally:
        unit.close()


@pytest.mark.parametrize("healthy_model", [True, False])
def test_serve_commits_a_healthy_trial_and_exits_76_after_a_failed_one(
    keys: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, healthy_model: bool
) -> None:
    from veriscope.device import server
    from veriscope.device.config import Config

    data_dir = tmp_path / "data"
    install(updater(data_dir / "software", keys, FakeBuilder()), software_bundle(keys, tmp_path / "s.vsb", "0.2.0"))
    store = SoftwareSlots(data_dir / "software")
    assert store.on_start() == Start("a", trial=True)  # what the launcher does
    monkeypatch.setenv(ENV_SLOT, "a")
    if not healthy_model:

        def broken(analyzer: object) -> None:
            raise ModelError("self-test: the model failed on a rendered frame of canvas: bad interpreter")

        monkeypatch.setattr(server, "self_test", broken)
    config = Config().with_overrides(
        server={"listen": "127.0.0.1:0"},
        device={"data_dir": str(data_dir)},
        camera={"width": 320, "height": 240},
        simulate=True,  # type: ignore[arg-type]
    )

    async def body() -> int:
        ready = asyncio.Event()
        serving = asyncio.ensure_future(server.serve(config, ready=ready))
        await ready.wait()
        # The trial ends by removing the marker (commit or rollback); a rollback also ends serve().
        while store.read_trial() is not None and not serving.done():
            await asyncio.wait([serving], timeout=0.05)
        if healthy_model:
            assert not serving.done()
            os.kill(os.getpid(), signal.SIGTERM)  # serve() handles it: drain and return 0
        return await asyncio.wait_for(serving, 60)

    code = asyncio.run(body())
    result = store.read_state().result
    assert result is not None
    if healthy_model:
        assert (code, result.outcome, store.current()) == (0, "committed", "a")
    else:
        assert (code, result.outcome, store.current()) == (software.EXIT_RESTART, "rolled_back", BASE)
        assert "bad interpreter" in result.message


# --- a real venv ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_build_venv_installs_the_wheel_offline(tmp_path: Path) -> None:
    pytest.importorskip("setuptools", reason="building the wheel offline needs setuptools")
    # Built from a copy: an in-tree build would leave build/ and egg-info in the repository.
    project = tmp_path / "device"
    shutil.copytree(
        Path(__file__).resolve().parents[1],
        project,
        ignore=shutil.ignore_patterns("tests", "bench", "firmware", "docs", "build", "*.egg-info", "__pycache__"),
    )
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
         str(project)],
        check=True,
    )  # fmt: skip
    version = next(wheels.glob("veriscope_device-*.whl")).name.split("-")[1]
    dest = tmp_path / ".a.new"
    software.build_venv(wheels, version, dest)
    renamed = tmp_path / "a"
    dest.rename(renamed)
    python = str(renamed / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run(
        [python, "-c", "import importlib.metadata as m; d = m.distribution('veriscope-device'); "
         "print(d.version, d.locate_file(''))"],
        check=True, capture_output=True, text=True, env=env,
    ).stdout.split()  # fmt: skip
    # The slot's own distribution comes first on its path, and the venv still works after the rename.
    assert where[0] == version and where[1].startswith(str(renamed)), where
    assert list(renamed.glob("lib/python*/site-packages/veriscope/device/cli.py"))
    # How the launcher starts a slot; the dependencies come from the base install.
    usage = subprocess.run(
        [python, "-m", "veriscope.device.cli", "--help"], check=True, capture_output=True, text=True, env=env
    ).stdout
    assert "serve" in usage
