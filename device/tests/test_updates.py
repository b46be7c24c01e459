"""Over-the-air model updates through UpdateService: resumable uploads, verified installs, trial, rollback.

Each test runs a whole in-process daemon with an update key; bundles are built from the shipped demo model.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import numpy as np
import pytest
from device_daemon import InProcessDaemon

from veriscope.device import codec
from veriscope.device.auth.roles import Role
from veriscope.device.auth.tokens import TokenStore
from veriscope.device.server import default_bundle_dir
from veriscope.device.updates.slots import Pointer, Result, SlotInfo, SlotStore, now_rfc3339
from veriscope.tools import bundles
from veriscope.v1 import model_service_pb2, model_service_pb2_grpc, update_service_pb2, update_service_pb2_grpc
from veriscope.v1 import scan_service_pb2 as scan_pb
from veriscope.v1 import scan_service_pb2_grpc as scan_grpc

ITEM = "tote-classic"
REGIONS = ("canvas", "trim", "lining")
CHUNK = 16 * 1024
BUILTIN = json.loads((default_bundle_dir() / "manifest.json").read_text())["version"]
"""Version of the model bundle the daemon ships with (the slot called "builtin")."""
Metadata = Sequence[tuple[str, str]]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The fleet's update key pair."""
    return bundles.generate_keys(tmp_path_factory.mktemp("keys"))


def build(keys: tuple[Path, Path], out: Path, version: str, source: Path | None = None) -> Path:
    """A signed model bundle of ``source`` (the demo model) at ``version``."""
    bundles.build_bundle(
        source or default_bundle_dir(),
        out,
        kind="model",
        version=version,
        name="veriscope-demo",
        signing_key=bundles.load_signing_key(keys[0]),
    )
    return out


class Unit:
    """A daemon with the update key, and stubs."""

    def __init__(self, data_dir: Path, pub: Path | None, **sections: dict[str, object]) -> None:
        update = {"trust_key": str(pub)} if pub is not None else {}
        self.data_dir = data_dir
        self.daemon = InProcessDaemon(data_dir, camera=(320, 240), update=update, **sections)
        self.updates = update_service_pb2_grpc.UpdateServiceStub(self.daemon.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.daemon.channel)
        self.scans = scan_grpc.ScanServiceStub(self.daemon.channel)

    def upload(self, path: Path, upload_id: str = "u1", md: Metadata = (), start: int = 0, stop: int | None = None):  # type: ignore[no-untyped-def]
        data = path.read_bytes()
        header = update_service_pb2.UploadHeader(
            upload_id=upload_id, size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest()
        )
        end = len(data) if stop is None else stop

        def requests() -> Iterator[update_service_pb2.UploadBundleRequest]:
            yield update_service_pb2.UploadBundleRequest(header=header)
            for offset in range(start, end, CHUNK):
                chunk = update_service_pb2.UploadChunk(offset=offset, data=data[offset : min(offset + CHUNK, end)])
                yield update_service_pb2.UploadBundleRequest(chunk=chunk)

        return self.updates.UploadBundle(requests(), metadata=md, timeout=60).upload

    def install(self, upload_id: str = "u1", *, allow_downgrade: bool = False, md: Metadata = ()):  # type: ignore[no-untyped-def]
        request = update_service_pb2.InstallBundleRequest(
            upload=f"uploads/{upload_id}", allow_downgrade=allow_downgrade
        )
        return self.updates.InstallBundle(request, metadata=md, timeout=60)

    def settled(self, md: Metadata = ()) -> update_service_pb2.GetUpdateStatusResponse:
        """The status once no trial runs."""
        deadline = time.monotonic() + 120
        while True:
            status = self.updates.GetUpdateStatus(update_service_pb2.GetUpdateStatusRequest(), metadata=md)
            if all(r.outcome != update_service_pb2.UPDATE_OUTCOME_TRIAL for r in status.results):
                return status
            assert time.monotonic() < deadline, status
            time.sleep(0.1)

    def model_slots(self) -> dict[str, tuple[str, int]]:
        status = self.updates.GetUpdateStatus(update_service_pb2.GetUpdateStatusRequest())
        return {
            s.label: (s.version, s.state) for s in status.slots if s.component == update_service_pb2.COMPONENT_MODEL
        }

    def active_version(self) -> str:
        models = self.models.ListModels(model_service_pb2.ListModelsRequest()).models
        return next(m.ref.version for m in models if m.active)

    def close(self) -> None:
        self.daemon.close()


@pytest.fixture
def unit(tmp_path: Path, keys: tuple[Path, Path]) -> Iterator[Unit]:
    u = Unit(tmp_path / "data", keys[1])
    yield u
    u.close()


def _models_tree(data_dir: Path) -> list[str]:
    root = data_dir / "models"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_an_upload_resumes_at_the_committed_offset_after_a_cut_stream(
    unit: Unit, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    path = build(keys, tmp_path / "b.vsb", "0.4.0")
    size = path.stat().st_size
    cut = 3 * CHUNK
    partial = unit.upload(path, "resume-me", stop=cut)
    assert (partial.committed_bytes, partial.complete) == (cut, False)
    part = unit.data_dir / "updates" / "incoming" / "resume-me.part"
    assert part.stat().st_size == cut
    got = unit.updates.GetUpload(update_service_pb2.GetUploadRequest(name="uploads/resume-me")).upload
    assert got.committed_bytes == cut
    # A chunk anywhere but at the committed offset is refused, naming the offset to resume from.
    with pytest.raises(grpc.RpcError) as err:
        unit.upload(path, "resume-me", start=cut + CHUNK)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and str(cut) in (err.value.details() or "")
    # The same id with another file is refused rather than mixed.
    other = build(keys, tmp_path / "c.vsb", "0.5.0")
    with pytest.raises(grpc.RpcError) as err:
        unit.upload(other, "resume-me", start=cut)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    done = unit.upload(path, "resume-me", start=cut)
    assert (done.committed_bytes, done.complete) == (size, True)
    unit.install("resume-me")
    assert unit.settled().results[0].outcome == update_service_pb2.UPDATE_OUTCOME_COMMITTED
    assert unit.active_version() == "0.4.0"


def test_without_an_update_key_uploads_are_refused_naming_the_flag(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    u = Unit(tmp_path / "data", None)
    try:
        with pytest.raises(grpc.RpcError) as err:
            u.upload(build(keys, tmp_path / "b.vsb", "0.4.0"))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "--update-trust" in (err.value.details() or "")
    finally:
        u.close()


def test_install_hot_swaps_while_a_scan_is_in_flight(unit: Unit, keys: tuple[Path, Path], tmp_path: Path) -> None:
    # A scan with every image uploaded on the old model, completed after the swap: it completes, on the new one.
    scan = unit.scans.CreateScan(scan_pb.CreateScanRequest(scan=scan_pb.Scan(item_type=ITEM))).scan
    for k, region in enumerate(REGIONS):
        data = codec.encode(np.random.default_rng(k).integers(60, 200, (240, 320, 3), np.uint8))
        header = scan_pb.UploadImageHeader(name=scan.name, region=region, size_bytes=len(data))
        unit.scans.UploadImage(
            iter([scan_pb.UploadImageRequest(header=header), scan_pb.UploadImageRequest(chunk=data)])
        )
    assert unit.active_version() == BUILTIN
    unit.upload(build(keys, tmp_path / "b.vsb", "0.4.0"))
    response = unit.install()
    assert response.slot.label == "a" and response.slot.state == update_service_pb2.SLOT_STATE_TRIAL
    status = unit.settled()
    assert status.results[0].outcome == update_service_pb2.UPDATE_OUTCOME_COMMITTED, status
    slots = unit.model_slots()
    assert slots["a"] == ("0.4.0", update_service_pb2.SLOT_STATE_ACTIVE)
    assert slots["builtin"] == (BUILTIN, update_service_pb2.SLOT_STATE_PREVIOUS)
    done = unit.scans.CompleteScan(scan_pb.CompleteScanRequest(name=scan.name), timeout=120).scan
    assert done.state == scan_pb.SCAN_STATE_COMPLETED
    assert done.result.model.version == "0.4.0"
    pointer = json.loads((unit.data_dir / "models" / "current.json").read_text())
    assert (pointer["active"], pointer["previous"], pointer["trial"]) == ("a", "builtin", None)
    # The upload is gone once installed.
    assert not list((unit.data_dir / "updates" / "incoming").iterdir())


def _tampered(path: Path) -> None:
    """Flip one bit inside the model file's bytes of a bundle."""
    with tarfile.open(path) as tar:
        offset = tar.getmember("payload/model.tflite").offset_data
    data = bytearray(path.read_bytes())
    data[offset + 100] ^= 0x01
    path.write_bytes(bytes(data))


def test_tampered_and_wrong_key_bundles_are_refused_and_nothing_changes(
    unit: Unit, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    before = _models_tree(unit.data_dir)
    tampered = build(keys, tmp_path / "t.vsb", "0.4.0")
    _tampered(tampered)
    stranger = bundles.generate_keys(tmp_path / "other")
    wrong_key = build(stranger, tmp_path / "w.vsb", "0.4.0")
    for n, path in enumerate((tampered, wrong_key)):
        unit.upload(path, f"bad-{n}")
        with pytest.raises(grpc.RpcError) as err:
            unit.install(f"bad-{n}")
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "refused" in (err.value.details() or "")
    assert _models_tree(unit.data_dir) == before
    assert unit.active_version() == BUILTIN


def test_path_traversal_inside_a_signed_bundle_is_refused(unit: Unit, keys: tuple[Path, Path], tmp_path: Path) -> None:
    evil = b"owned\n"
    manifest = {
        "format": 1,
        "kind": "model",
        "name": "veriscope-demo",
        "version": "9.0.0",
        "compatible_hardware": ["veriscope-pi"],
        "min_installed_version": None,
        "created": "2026-01-01T00:00:00Z",
        "payloads": [{"path": "../../evil", "sha256": hashlib.sha256(evil).hexdigest(), "size": len(evil)}],
        "key_id": bundles.key_id(bundles.load_trust_key(keys[1])),
    }
    raw = json.dumps(manifest).encode()
    signature = bundles.load_signing_key(keys[0]).sign(raw)
    path = tmp_path / "evil.vsb"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("manifest.json", raw), ("manifest.sig", signature), ("payload/../../evil", evil)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    unit.upload(path, "evil")
    with pytest.raises(grpc.RpcError) as err:
        unit.install("evil")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert not any(p.name == "evil" for p in tmp_path.rglob("*"))
    assert _models_tree(unit.data_dir) == []


def test_anti_rollback_refuses_an_older_version_and_an_admin_may_downgrade(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    store = TokenStore(data_dir)
    tech = (("authorization", f"Bearer {store.create(Role.TECHNICIAN, name='tech').token}"),)
    admin = (("authorization", f"Bearer {store.create(Role.ADMIN, name='admin').token}"),)
    u = Unit(data_dir, keys[1], auth={"mode": "required"})
    try:
        old = build(keys, tmp_path / "old.vsb", "0.1.0")
        u.upload(old, "old", md=tech)
        with pytest.raises(grpc.RpcError) as err:
            u.install("old", md=tech)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "anti-rollback" in (err.value.details() or "")
        u.upload(old, "old2", md=tech)
        with pytest.raises(grpc.RpcError) as err:
            u.install("old2", allow_downgrade=True, md=tech)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # Refused for the role, the upload stays for an admin.
        u.install("old2", allow_downgrade=True, md=admin)
        assert u.settled(md=admin).results[0].outcome == update_service_pb2.UPDATE_OUTCOME_COMMITTED
        slots = u.updates.GetUpdateStatus(update_service_pb2.GetUpdateStatusRequest(), metadata=admin).slots
        assert any(
            s.label == "a" and s.version == "0.1.0" and s.state == update_service_pb2.SLOT_STATE_ACTIVE for s in slots
        )
    finally:
        u.close()


def test_a_model_that_fails_to_load_rolls_back_automatically(
    unit: Unit, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    source = tmp_path / "broken"
    shutil.copytree(default_bundle_dir(), source)
    junk = np.random.default_rng(0).bytes(4096)
    (source / "model.tflite").write_bytes(junk)
    manifest = json.loads((source / "manifest.json").read_text())
    manifest["model"]["sha256"] = hashlib.sha256(junk).hexdigest()
    manifest["model"]["size_bytes"] = len(junk)
    (source / "manifest.json").write_text(json.dumps(manifest))
    unit.upload(build(keys, tmp_path / "broken.vsb", "0.4.0", source=source))
    unit.install()
    result = unit.settled().results[0]
    assert result.outcome == update_service_pb2.UPDATE_OUTCOME_ROLLED_BACK and result.message
    slots = unit.model_slots()
    assert slots["a"] == ("0.4.0", update_service_pb2.SLOT_STATE_FAILED)
    assert slots["builtin"] == (BUILTIN, update_service_pb2.SLOT_STATE_ACTIVE)
    assert unit.active_version() == BUILTIN


def test_rollback_returns_to_the_previous_model(unit: Unit, keys: tuple[Path, Path], tmp_path: Path) -> None:
    unit.upload(build(keys, tmp_path / "b.vsb", "0.4.0"))
    unit.install()
    unit.settled()
    assert unit.active_version() == "0.4.0"
    slot = unit.updates.RollbackUpdate(
        update_service_pb2.RollbackUpdateRequest(component=update_service_pb2.COMPONENT_MODEL)
    ).slot
    assert (slot.label, slot.state) == ("builtin", update_service_pb2.SLOT_STATE_ACTIVE)
    assert unit.active_version() == BUILTIN
    with pytest.raises(grpc.RpcError) as err:
        unit.updates.RollbackUpdate(
            update_service_pb2.RollbackUpdateRequest(component=update_service_pb2.COMPONENT_MODEL)
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_a_restart_during_the_trial_rolls_back(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    # The state a unit leaves when it stops mid-trial: the slot extracted and the pointer naming it on trial.
    data_dir = tmp_path / "data"
    verified = bundles.read_bundle(build(keys, tmp_path / "b.vsb", "0.4.0"), bundles.load_trust_key(keys[1]))
    slots = SlotStore(data_dir / "models")
    bundles.extract_verified(verified, slots.slot_dir("a"))
    started = now_rfc3339()
    slots.write(
        Pointer(
            trial="a",
            slots={"a": SlotInfo("veriscope-demo", "0.4.0", started)},
            result=Result("a", "0.4.0", "trial", "", started),
        )
    )
    u = Unit(data_dir, keys[1])
    try:
        status = u.updates.GetUpdateStatus(update_service_pb2.GetUpdateStatusRequest())
        assert status.results[0].outcome == update_service_pb2.UPDATE_OUTCOME_ROLLED_BACK
        assert "restarted" in status.results[0].message
        assert u.model_slots()["a"] == ("0.4.0", update_service_pb2.SLOT_STATE_FAILED)
        assert u.active_version() == BUILTIN
    finally:
        u.close()
