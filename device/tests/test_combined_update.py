"""Combined updates through UpdateService: parts verified together, installed firmware, model, software, and undone
when a later part fails, across the restart into new device software too.

Each test runs the in-process daemon with an update key; device software slots are built by a fake venv builder,
the restart into new software is played by calling what a starting daemon calls (the launcher's ``on_start``,
the trial, :meth:`CombinedUpdater.run_at_start`). The firmware part is flashed by a fake firmware updater (a
subclass of the real one) that records what it was asked to do.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from intelhex import IntelHex
from test_software_update import FakeBuilder, failing_self_test, healthy, software_bundle
from test_updates import BUILTIN, Unit, build

from veriscope.device.server import Daemon
from veriscope.device.updates.combined import CombinedState, PartState
from veriscope.device.updates.firmware import FirmwareUpdater, PreparedFirmware
from veriscope.device.updates.slots import Result, now_rfc3339
from veriscope.device.updates.software import BASE, Start
from veriscope.tools import bundles
from veriscope.v1 import update_service_pb2 as pb

HARDWARE = ("veriscope-sim", "veriscope-pi")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return bundles.generate_keys(tmp_path_factory.mktemp("keys"))


class FakeFirmware(FirmwareUpdater):
    """A board at ``version`` that any firmware part flashes; records flashes and reverts."""

    def __init__(self, directory: Path, keys: tuple[Path, Path], version: str = "1.0.0") -> None:
        super().__init__(directory, None, None, trust=bundles.load_trust_key(keys[1]), accepted_hardware=HARDWARE)
        self.version = version
        self.calls: list[str] = []
        self._result: Result | None = None

    def installed_version(self) -> str | None:
        return self.version

    def verify(self, path: Path, *, allow_downgrade: bool, is_admin: bool) -> PreparedFirmware:
        assert self.trust is not None
        manifest = bundles.read_bundle(path, self.trust).manifest
        assert manifest.kind == "controller-firmware"
        return PreparedFirmware(manifest, b"", None, manifest.version, "")  # type: ignore[arg-type]

    async def install(self, prepared: PreparedFirmware) -> Result:
        self.calls.append(f"flash {prepared.version}")
        self._before, self.version = self.version, prepared.version
        now = now_rfc3339()
        self._result = Result("board", prepared.version, "committed", "", now, now)
        return self._result

    def result(self) -> Result | None:
        return self._result

    async def revert(self, reason: str) -> Result:
        self.calls.append(f"revert to {self._before}")
        undone, self.version = self.version, self._before
        assert self._result is not None
        self._result = Result("board", undone, "rolled_back", reason, self._result.start_time, now_rfc3339())
        return self._result


def firmware_bundle(keys: tuple[Path, Path], out: Path, version: str) -> Path:
    source = out.parent / f"fw-{version}"
    source.mkdir()
    ih = IntelHex()
    for i in range(26):
        ih.puts(4 * i, bytes((0x0C, 0x94, 0x34, 0x00)))  # an ATmega328P vector table of jumps
    ih[0xFF] = 0
    ih.write_hex_file(str(source / "firmware.hex"))
    (source / "firmware.json").write_text(json.dumps({"firmware_version": version, "board": "atmega328p"}))
    bundles.build_bundle(
        source,
        out,
        kind="controller-firmware",
        version=version,
        name="veriscope-controller",
        signing_key=bundles.load_signing_key(keys[0]),
    )
    return out


def broken_model(tmp_path: Path) -> Path:
    """The demo model with a model file that does not load."""
    import hashlib
    import shutil

    from test_updates import default_bundle_dir

    source = tmp_path / "broken"
    shutil.copytree(default_bundle_dir(), source)
    junk = bytes(range(256)) * 16
    (source / "model.tflite").write_bytes(junk)
    manifest = json.loads((source / "manifest.json").read_text())
    manifest["model"]["sha256"] = hashlib.sha256(junk).hexdigest()
    manifest["model"]["size_bytes"] = len(junk)
    (source / "manifest.json").write_text(json.dumps(manifest))
    return source


def combine(keys: tuple[Path, Path], out: Path, *parts: Path, version: str = "1.0.0") -> Path:
    bundles.build_combined(parts, out, version=version, signing_key=bundles.load_signing_key(keys[0]))
    return out


@pytest.fixture
def unit(tmp_path: Path, keys: tuple[Path, Path]) -> Iterator[Unit]:
    u = Unit(tmp_path / "data", keys[1])
    yield u
    u.close()


def daemon_of(unit: Unit) -> Daemon:
    return unit.daemon.daemon


def wait_for(unit: Unit, predicate: object, what: str) -> CombinedState:
    combined = daemon_of(unit).combined
    assert combined is not None
    deadline = time.monotonic() + 120
    while True:
        state = combined.read_state()
        if state is not None and predicate(state):  # type: ignore[operator]
            return state
        assert time.monotonic() < deadline, f"{what}: {state}"
        time.sleep(0.05)


def outcomes(state: CombinedState) -> dict[str, tuple[str, str]]:
    return {p.kind: (p.version, p.outcome) for p in state.parts}


def restart(unit: Unit, slot: str, version: str) -> Start:
    """Play a restart: the launcher's start, then this daemon as if started on ``slot`` running ``version``."""
    software = daemon_of(unit).software
    assert software is not None
    start = software.slots_store.on_start()
    software.restart.clear()
    software.running_slot, software.running_version = slot, version
    return start


def settle_after_start(unit: Unit, check: object) -> None:
    """What a starting daemon runs once serving: the software trial, then the combined update's settling."""
    d = daemon_of(unit)
    assert d.software is not None and d.combined is not None
    unit.daemon.run(d.combined.run_at_start(d.software.run_trial(check)))  # type: ignore[arg-type]


def combined_result(unit: Unit) -> pb.UpdateResult:
    status = unit.updates.GetUpdateStatus(pb.GetUpdateStatusRequest())
    return next(r for r in status.results if r.component == pb.COMPONENT_COMBINED)


def software_slots(unit: Unit) -> dict[str, tuple[str, int]]:
    status = unit.updates.GetUpdateStatus(pb.GetUpdateStatusRequest())
    return {s.label: (s.version, s.state) for s in status.slots if s.component == pb.COMPONENT_DEVICE_SOFTWARE}


def test_model_and_software_install_as_one_and_commit_after_the_restart(
    unit: Unit, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    builder = FakeBuilder()
    assert daemon_of(unit).software is not None
    daemon_of(unit).software.builder = builder  # type: ignore[union-attr]
    bundle = combine(
        keys,
        tmp_path / "release-1.0.0.vsb",
        build(keys, tmp_path / "m.vsb", "0.4.0"),
        software_bundle(keys, tmp_path / "sw.vsb", "0.2.0"),
    )
    unit.upload(bundle)
    response = unit.install()
    assert (response.result.component, response.result.outcome) == (pb.COMPONENT_COMBINED, pb.UPDATE_OUTCOME_TRIAL)
    state = wait_for(unit, lambda s: s.part("device-software").outcome == "trial", "software swapped in")
    # The model committed first (it serves already), then the software slot was built and swapped in.
    assert outcomes(state) == {"model": ("0.4.0", "committed"), "device-software": ("0.2.0", "trial")}
    assert unit.active_version() == "0.4.0"
    assert [version for version, _ in builder.calls] == ["0.2.0"]
    assert daemon_of(unit).software.restart.is_set()  # type: ignore[union-attr]
    assert combined_result(unit).outcome == pb.UPDATE_OUTCOME_TRIAL

    assert restart(unit, "a", "0.2.0") == Start("a", trial=True)
    settle_after_start(unit, healthy)

    result = combined_result(unit)
    assert (result.version, result.label, result.outcome) == ("1.0.0", "veriscope", pb.UPDATE_OUTCOME_COMMITTED)
    assert "model veriscope-demo 0.4.0 committed" in result.message
    assert "device-software veriscope-device 0.2.0 committed" in result.message
    assert software_slots(unit)["a"] == ("0.2.0", pb.SLOT_STATE_ACTIVE)
    assert unit.active_version() == "0.4.0"
    assert [p.name for p in (unit.data_dir / "updates").iterdir() if p.name.startswith(".combined-")] == []


def test_a_software_trial_that_fails_undoes_the_model_at_the_next_start(
    unit: Unit, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    daemon_of(unit).software.builder = FakeBuilder()  # type: ignore[union-attr]
    bundle = combine(
        keys,
        tmp_path / "release-1.0.0.vsb",
        build(keys, tmp_path / "m.vsb", "0.4.0"),
        software_bundle(keys, tmp_path / "sw.vsb", "0.2.0"),
    )
    unit.upload(bundle)
    unit.install()
    wait_for(unit, lambda s: s.part("device-software").outcome == "trial", "software swapped in")
    # The new software fails its health check: it rolls back and restarts; the update is left to the next start.
    restart(unit, "a", "0.2.0")
    settle_after_start(unit, failing_self_test)
    assert combined_result(unit).outcome == pb.UPDATE_OUTCOME_TRIAL
    assert restart(unit, BASE, "0.1.0") == Start(BASE)
    settle_after_start(unit, healthy)

    result = combined_result(unit)
    assert result.outcome == pb.UPDATE_OUTCOME_ROLLED_BACK
    assert "device-software part 0.2.0 rolled back" in result.message and "self-test" in result.message
    # Every part is back on its old version: the model that ran before, the base software.
    assert unit.active_version() == BUILTIN
    model = next(r for r in unit.settled().results if r.component == pb.COMPONENT_MODEL)
    assert (model.version, model.outcome) == ("0.4.0", pb.UPDATE_OUTCOME_ROLLED_BACK)
    assert software_slots(unit)[BASE][1] == pb.SLOT_STATE_ACTIVE
    assert software_slots(unit)["a"] == ("0.2.0", pb.SLOT_STATE_FAILED)
    state = daemon_of(unit).combined.read_state()  # type: ignore[union-attr]
    assert state is not None
    assert outcomes(state) == {"model": ("0.4.0", "rolled_back"), "device-software": ("0.2.0", "rolled_back")}


def test_a_model_that_fails_its_trial_undoes_the_firmware_and_stops_before_the_software(
    unit: Unit, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    builder = FakeBuilder()
    d = daemon_of(unit)
    assert d.combined is not None and d.software is not None
    d.software.builder = builder
    firmware = FakeFirmware(tmp_path / "firmware", keys)
    d.combined.firmware = firmware
    bundle = combine(
        keys,
        tmp_path / "release-1.0.0.vsb",
        firmware_bundle(keys, tmp_path / "fw.vsb", "1.1.0"),
        build(keys, tmp_path / "m.vsb", "0.4.0", source=broken_model(tmp_path)),
        software_bundle(keys, tmp_path / "sw.vsb", "0.2.0"),
    )
    unit.upload(bundle)
    unit.install()
    state = wait_for(unit, lambda s: s.result.outcome != "trial", "the update ended")

    assert state.result.outcome == "rolled_back"
    assert outcomes(state) == {
        "controller-firmware": ("1.1.0", "rolled_back"),
        "model": ("0.4.0", "rolled_back"),
        "device-software": ("0.2.0", "rolled_back"),
    }
    assert "the model part 0.4.0 rolled back" in state.result.message
    assert firmware.calls == ["flash 1.1.0", "revert to 1.0.0"]
    assert firmware.version == "1.0.0"
    assert builder.calls == []
    assert unit.active_version() == BUILTIN
    assert combined_result(unit).outcome == pb.UPDATE_OUTCOME_ROLLED_BACK


def test_a_software_part_that_does_not_build_undoes_the_model(
    unit: Unit, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    daemon_of(unit).software.builder = FakeBuilder(fail=True)  # type: ignore[union-attr]
    bundle = combine(
        keys,
        tmp_path / "release-1.0.0.vsb",
        build(keys, tmp_path / "m.vsb", "0.4.0"),
        software_bundle(keys, tmp_path / "sw.vsb", "0.2.0"),
    )
    unit.upload(bundle)
    unit.install()
    state = wait_for(unit, lambda s: s.result.outcome != "trial", "the update ended")
    assert state.result.outcome == "rolled_back"
    assert outcomes(state) == {"model": ("0.4.0", "rolled_back"), "device-software": ("0.2.0", "failed")}
    assert "no matching distribution" in state.result.message
    assert unit.active_version() == BUILTIN
    assert daemon_of(unit).software.slots_store.current() == BASE  # type: ignore[union-attr]


def test_a_part_the_unit_refuses_refuses_the_whole_bundle_before_anything_is_installed(
    unit: Unit, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    builder = FakeBuilder()
    daemon_of(unit).software.builder = builder  # type: ignore[union-attr]
    bundle = combine(
        keys,
        tmp_path / "release-1.0.0.vsb",
        firmware_bundle(keys, tmp_path / "fw.vsb", "1.1.0"),
        build(keys, tmp_path / "m.vsb", "0.4.0"),
        software_bundle(keys, tmp_path / "sw.vsb", "0.2.0"),
    )
    unit.upload(bundle)
    # The simulated unit has no board to flash: the firmware part is refused, and with it the bundle.
    with pytest.raises(grpc.RpcError) as err:
        unit.install()
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    said = err.value.details() or ""
    assert "controller-firmware part" in said and "simulated" in said
    assert unit.active_version() == BUILTIN
    assert builder.calls == []
    assert not (unit.data_dir / "updates" / "combined.json").exists()
    assert [p.name for p in (unit.data_dir / "updates").iterdir() if p.name.startswith(".combined-")] == []


def test_a_part_at_the_installed_version_is_skipped(unit: Unit, keys: tuple[Path, Path], tmp_path: Path) -> None:
    unit.upload(build(keys, tmp_path / "m.vsb", "0.4.0"), "m")
    unit.install("m")
    unit.settled()
    daemon_of(unit).software.builder = FakeBuilder(fail=True)  # type: ignore[union-attr]
    only_model = combine(keys, tmp_path / "release-1.0.0.vsb", tmp_path / "m.vsb")
    unit.upload(only_model, "c")
    with pytest.raises(grpc.RpcError) as err:
        unit.install("c")
    assert "every part is installed already" in (err.value.details() or "")


def test_a_unit_restarted_midway_undoes_the_parts_it_committed(
    unit: Unit, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    # The state a unit leaves when it stops after the model part committed, before its software part started.
    unit.upload(build(keys, tmp_path / "m.vsb", "0.4.0"))
    unit.install()
    unit.settled()
    d = daemon_of(unit)
    assert d.combined is not None
    started = now_rfc3339()
    d.combined._write(
        CombinedState(
            Result("veriscope", "1.0.0", "trial", "", started),
            (
                PartState("model", "veriscope-demo", "0.4.0", "committed"),
                PartState("device-software", "veriscope-device", "0.2.0", "pending"),
            ),
        )
    )
    with pytest.raises(grpc.RpcError) as err:
        unit.upload(build(keys, tmp_path / "m4.vsb", "0.4.0"), "m4")
        unit.install("m4")
    assert "combined update is running" in (err.value.details() or "")
    settle_after_start(unit, healthy)
    result = combined_result(unit)
    assert result.outcome == pb.UPDATE_OUTCOME_ROLLED_BACK
    assert "restarted before the combined update completed" in result.message
    assert unit.active_version() == BUILTIN
