"""Certificates of authenticity on the unit: the signing key on disk, the signed statement, and GetScanCertificate."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import numpy as np
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID
from device_daemon import InProcessDaemon

from veriscope.device import certificates, cli, codec
from veriscope.device.certificates import SigningKey
from veriscope.device.errors import SigningKeyError
from veriscope.device.pipeline.quality import QualityIssue, QualityReport
from veriscope.device.scans.records import (
    ImageMeta,
    ImageOrigin,
    ImageOutcome,
    ImageRecord,
    RegionOutcome,
    ScanOutcome,
    ScanRecord,
    ScanState,
)
from veriscope.device.specimen import imaging
from veriscope.device.specimen.surface import VirtualItem
from veriscope.device.types import Lighting
from veriscope.v1 import device_service_pb2, device_service_pb2_grpc, scan_service_pb2_grpc
from veriscope.v1 import scan_service_pb2 as pb

ITEM = "tote-classic"
T0 = datetime(2026, 5, 28, 12, 0, 0, 123456, tzinfo=UTC)
T1 = datetime(2026, 5, 28, 12, 3, 7, 654321, tzinfo=UTC)


def verify(document: bytes, public_key_pem: bytes) -> dict:
    """The verifier of device/docs/certificates.md: plain Python and cryptography, no Veriscope package."""
    envelope = json.loads(document)
    canonical = json.dumps(envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    if canonical != document:
        raise ValueError("not canonical")
    statement = envelope["certificate"]
    signed = json.dumps(statement, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    key = serialization.load_pem_public_key(public_key_pem)
    assert isinstance(key, Ed25519PublicKey)
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if base64.b64decode(statement["signing_key"]["public_key"]) != raw:
        raise ValueError("key not trusted")
    key.verify(base64.b64decode(envelope["signature"]), signed)  # raises InvalidSignature
    return statement  # type: ignore[no-any-return]


# --- The key on disk ---------------------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_first_start_creates_a_private_key_and_later_starts_load_it(tmp_path: Path) -> None:
    key = SigningKey.load_or_create(tmp_path)
    path = tmp_path / "keys" / "signing-ed25519.pem"
    assert key.path == path and path.is_file()
    assert _mode(path) == 0o600 and _mode(path.parent) == 0o700
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    stored = path.read_bytes()
    again = SigningKey.load_or_create(tmp_path)
    assert again.public_key_raw == key.public_key_raw and path.read_bytes() == stored
    assert len(key.public_key_raw) == 32 and key.sha256 == hashlib.sha256(key.public_key_raw).hexdigest()
    loaded = serialization.load_pem_public_key(key.public_key_pem.encode())
    assert isinstance(loaded, Ed25519PublicKey)
    loaded.verify(key.sign(b"data"), b"data")
    assert SigningKey.load_or_create(tmp_path / "other").public_key_raw != key.public_key_raw


def test_a_key_is_created_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        SigningKey.load_or_create(tmp_path)
    finally:
        os.umask(old)
    assert _mode(tmp_path / "keys" / "signing-ed25519.pem") == 0o600


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o606])
def test_a_key_open_to_other_users_stops_the_start(tmp_path: Path, mode: int) -> None:
    SigningKey.load_or_create(tmp_path)
    path = tmp_path / "keys" / "signing-ed25519.pem"
    path.chmod(mode)
    with pytest.raises(SigningKeyError) as info:
        SigningKey.load_or_create(tmp_path)
    message = str(info.value)
    assert str(path) in message and f"run 'chmod 600 {path}'" in message
    assert f"mode {mode:04o}" in message and "open to other users" in message


def test_a_key_directory_others_can_write_stops_the_start(tmp_path: Path) -> None:
    SigningKey.load_or_create(tmp_path)
    (tmp_path / "keys").chmod(0o777)
    with pytest.raises(SigningKeyError, match=r"key directory .*keys is open to other users.*chmod 700"):
        SigningKey.load_or_create(tmp_path)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"garbage",
        b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI\n-----END PRIVATE KEY-----\n",
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        ),
    ],
    ids=["empty", "garbage", "truncated", "ec-key", "encrypted"],
)
def test_a_corrupt_or_foreign_key_stops_the_start(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "keys" / "signing-ed25519.pem"
    path.parent.mkdir(mode=0o700)
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(SigningKeyError) as info:
        SigningKey.load_or_create(tmp_path)
    message = str(info.value)
    assert str(path) in message and "move it away" in message
    assert path.read_bytes() == content  # never overwritten


def test_a_key_path_that_is_not_a_file_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "keys" / "signing-ed25519.pem").mkdir(mode=0o700, parents=True)
    with pytest.raises(SigningKeyError, match="is not a regular file"):
        SigningKey.load_or_create(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_key_stops_the_start(tmp_path: Path) -> None:
    SigningKey.load_or_create(tmp_path)
    (tmp_path / "keys" / "signing-ed25519.pem").chmod(0o000)
    with pytest.raises(SigningKeyError, match="cannot read the signing key"):
        SigningKey.load_or_create(tmp_path)


def test_the_daemon_refuses_to_start_with_a_group_readable_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    SigningKey.load_or_create(tmp_path)
    path = tmp_path / "keys" / "signing-ed25519.pem"
    path.chmod(0o640)
    code = cli.main(["serve", "--simulate", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path)])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("veriscope-device: error: the signing key ") and f"chmod 600 {path}" in err


def _ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleet CA")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(T0 - timedelta(days=1))
        .not_valid_after(T0 + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def _issue_for(public_key: Ed25519PublicKey, ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate]) -> bytes:
    ca_key, ca_cert = ca
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "VS-SIM-0A1B2C3D")]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(2)
        .not_valid_before(T0 - timedelta(days=1))
        .not_valid_after(T0 + timedelta(days=365))
        .sign(ca_key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def test_a_signer_certificate_beside_the_key_goes_into_every_statement(tmp_path: Path) -> None:
    key = SigningKey.load_or_create(tmp_path)
    assert key.certificate_pem is None
    ca = _ca()
    pem = _issue_for(key.private_key.public_key(), ca)
    (tmp_path / "keys" / "signing-ed25519.crt").write_bytes(pem)
    key = SigningKey.load_or_create(tmp_path)
    assert key.certificate_pem == pem.decode()
    statement = json.loads(certificates.issue(_scan(), "VS-SIM-0A1B2C3D", key, T1))["certificate"]
    assert statement["signing_key"]["certificate"] == pem.decode()
    # A certificate of another key is refused rather than published.
    (tmp_path / "keys" / "signing-ed25519.crt").write_bytes(_issue_for(Ed25519PrivateKey.generate().public_key(), ca))
    with pytest.raises(SigningKeyError, match="certifies another key"):
        SigningKey.load_or_create(tmp_path)
    (tmp_path / "keys" / "signing-ed25519.crt").write_bytes(b"not a certificate")
    with pytest.raises(SigningKeyError, match=r"is not a PEM X\.509 certificate"):
        SigningKey.load_or_create(tmp_path)


# --- The statement -----------------------------------------------------------------------------------------------

BLURRY = QualityReport(issues=(QualityIssue("out_of_focus", "refocus", 1.0, 2.0),))


def _image(n: int, region: str, origin: ImageOrigin, ok: bool = True) -> ImageRecord:
    return ImageRecord(
        f"{n:03d}", region, origin, f"{n:02x}" * 32, 1000, codec.ImageFormat.PNG, QualityReport() if ok else BLURRY,
        ImageMeta(640, 480, T0),
    )  # fmt: skip


def _scan(verdict: str = "AUTHENTIC", reason: str | None = None, partner: str = "listing-4711 · Zürich") -> ScanRecord:
    images = (
        _image(1, "canvas", ImageOrigin.CAMERA, ok=False),
        _image(2, "canvas", ImageOrigin.CAMERA),
        _image(3, "canvas", ImageOrigin.CAMERA),
        _image(4, "trim", ImageOrigin.UPLOAD),
    )
    canvas = (ImageOutcome("001", False), ImageOutcome("002", True, 0.97, 0.9), ImageOutcome("003", True, 0.96, 0.9))
    outcome = ScanOutcome(
        verdict=verdict,
        reason=reason,
        score=0.97314,
        threshold=0.5693,
        summary="All regions match genuine references.",
        model_name="veriscope-demo",
        model_version="0.2.0",
        model_sha256="ab" * 32,
        complete_time=T1,
        regions=(
            RegionOutcome("canvas", "coated-canvas", 0.97, 0.9, (), canvas),
            RegionOutcome("trim", "grained-leather", None, None, (), (ImageOutcome("004", True),)),
        ),
    )
    return ScanRecord(
        "0f1e2d3c4b5a69788796a5b4c3d2e1f0", ITEM, partner, ScanState.COMPLETED, T0, T1, images, outcome
    )  # fmt: skip


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    return SigningKey.load_or_create(tmp_path_factory.mktemp("key"))


def test_an_authentic_certificate_names_everything_and_is_signed(key: SigningKey) -> None:
    document = certificates.issue(_scan(), "VS-SIM-0A1B2C3D", key, T1 + timedelta(seconds=1)).encode()
    assert document.endswith(b"}\n") and document.count(b"\n") == 1
    assert "listing-4711 · Zürich".encode() in document  # non-ASCII kept as UTF-8, not escaped
    statement = verify(document, key.public_key_pem.encode())
    assert statement == {
        "format": "veriscope.certificate/1",
        "scan_id": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        "device_id": "VS-SIM-0A1B2C3D",
        "item_type": ITEM,
        "partner_item_id": "listing-4711 · Zürich",
        "verdict": "AUTHENTIC",
        "reason": None,
        "score": "0.9731",
        "threshold": "0.5693",
        "summary": "All regions match genuine references.",
        "statement": "The tote-classic item (partner item id listing-4711 · Zürich) scanned by Veriscope unit "
        "VS-SIM-0A1B2C3D at 2026-05-28T12:03:07.654Z was verified as authentic.",
        "model": {"name": "veriscope-demo", "version": "0.2.0", "sha256": "ab" * 32},
        "images": [
            {"image_id": "001", "region": "canvas", "origin": "CAMERA", "sha256": "01" * 32, "accepted": False, "used": False},
            {"image_id": "002", "region": "canvas", "origin": "CAMERA", "sha256": "02" * 32, "accepted": True, "used": True},
            {"image_id": "003", "region": "canvas", "origin": "CAMERA", "sha256": "03" * 32, "accepted": True, "used": True},
            {"image_id": "004", "region": "trim", "origin": "UPLOAD", "sha256": "04" * 32, "accepted": True, "used": False},
        ],
        "create_time": "2026-05-28T12:00:00.123Z",
        "complete_time": "2026-05-28T12:03:07.654Z",
        "issue_time": "2026-05-28T12:03:08.654Z",
        "signing_key": {
            "algorithm": "Ed25519",
            "public_key": base64.b64encode(key.public_key_raw).decode(),
            "sha256": key.sha256,
            "certificate": None,
        },
    }  # fmt: skip
    assert certificates.signing_key_sha256(document.decode()) == key.sha256


def test_an_unverified_certificate_says_so(key: SigningKey) -> None:
    document = certificates.issue(_scan("UNVERIFIED", "COUNTERFEIT_INDICATORS", partner=""), "VS-1", key, T1)
    statement = verify(document.encode(), key.public_key_pem.encode())
    assert (statement["verdict"], statement["reason"]) == ("UNVERIFIED", "COUNTERFEIT_INDICATORS")
    assert statement["partner_item_id"] is None
    assert statement["statement"] == (
        "The tote-classic item scanned by Veriscope unit VS-1 at 2026-05-28T12:03:07.654Z "
        "could NOT be verified: counterfeit indicators."
    )


def test_every_byte_is_covered_by_the_signature(key: SigningKey) -> None:
    document = certificates.issue(_scan(), "VS-SIM-0A1B2C3D", key, T1).encode()
    pem = key.public_key_pem.encode()
    for position in range(len(document)):
        altered = bytearray(document)
        altered[position] ^= 0x01
        with pytest.raises((ValueError, InvalidSignature, KeyError, TypeError)):
            verify(bytes(altered), pem)


def test_only_completed_scans_are_certified(key: SigningKey) -> None:
    with pytest.raises(ValueError, match="only COMPLETED scans"):
        certificates.issue(_scan().evolve(state=ScanState.CANCELLED), "VS-1", key, T1)


@pytest.mark.parametrize(
    ("score", "text"),
    [(0.97314, "0.9731"), (0.99996, "1.0000"), (1.2, "1.0000"), (-0.1, "0.0000"), (float("nan"), "0.0000")],
)
def test_scores_are_fixed_decimal_strings(score: float, text: str) -> None:
    assert certificates.decimal(score) == text


# --- GetScanCertificate over gRPC, across a restart --------------------------------------------------------------


def _frame(item: VirtualItem, region: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    optics = imaging.Optics(sensor_width_px=640, sensor_height_px=480)
    pose = imaging.good_pose(rng)
    pixels = imaging.render(
        item.surface(region),
        pose,
        duties={Lighting.WHITE_RING: 60},
        exposure_us=8000,
        analogue_gain=1.0,
        focus_steps=imaging.in_focus_steps(pose, optics),
        rng=rng,
        optics=optics,
    )
    return codec.encode(pixels, codec.ImageFormat.PNG)


def _analyzed(stub: scan_service_pb2_grpc.ScanServiceStub) -> pb.Scan:
    """A scan of a genuine item from two uploaded frames of each region, completed."""
    item = VirtualItem(ITEM, "genuine", 5)
    scan = stub.CreateScan(pb.CreateScanRequest(scan=pb.Scan(item_type=ITEM, partner_item_id="listing-1"))).scan
    for region in ("canvas", "trim", "lining"):
        for k in range(2):
            data = _frame(item, region, k)
            header = pb.UploadImageHeader(name=scan.name, region=region, size_bytes=len(data))
            stub.UploadImage(iter([pb.UploadImageRequest(header=header), pb.UploadImageRequest(chunk=data)]))
    return stub.CompleteScan(pb.CompleteScanRequest(name=scan.name)).scan


def _certificate(stub: scan_service_pb2_grpc.ScanServiceStub, name: str) -> pb.ScanCertificate:
    return stub.GetScanCertificate(pb.GetScanCertificateRequest(name=name)).certificate


def _error(stub: scan_service_pb2_grpc.ScanServiceStub, name: str) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        _certificate(stub, name)
    return info.value.code(), info.value.details()


def _public_key(unit: InProcessDaemon) -> str:
    stub = device_service_pb2_grpc.DeviceServiceStub(unit.channel)
    return stub.GetDevice(device_service_pb2.GetDeviceRequest()).device.signing_public_key


def test_get_scan_certificate_serves_the_stored_document_across_restarts(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    unit = InProcessDaemon(data_dir)
    try:
        stub = scan_service_pb2_grpc.ScanServiceStub(unit.channel)
        pem = _public_key(unit)
        key = SigningKey.load_or_create(data_dir)
        assert pem == key.public_key_pem and pem.startswith("-----BEGIN PUBLIC KEY-----")
        analyzed = _analyzed(stub)
        empty = stub.CreateScan(pb.CreateScanRequest(scan=pb.Scan(item_type=ITEM))).scan
        empty = stub.CompleteScan(pb.CompleteScanRequest(name=empty.name)).scan
        first = {s.name: _certificate(stub, f"{s.name}/certificate") for s in (analyzed, empty)}
        for scan in (analyzed, empty):
            certificate = first[scan.name]
            assert certificate.name == f"{scan.name}/certificate"
            assert certificate.signing_key_sha256 == key.sha256
            statement = verify(certificate.document, pem.encode())
            assert statement["scan_id"] == scan.name.removeprefix("scans/")
            assert statement["verdict"] == pb.Verdict.Name(scan.result.verdict).removeprefix("VERDICT_")
            assert statement["score"] == certificates.decimal(scan.result.score)
            assert statement["model"] == {
                "name": scan.result.model.name,
                "version": scan.result.model.version,
                "sha256": scan.result.model.sha256,
            }
            assert [(i["image_id"], i["sha256"]) for i in statement["images"]] == [
                (i.image_id, i.sha256) for i in scan.images
            ]
        assert json.loads(first[analyzed.name].document)["certificate"]["partner_item_id"] == "listing-1"
        assert len(json.loads(first[analyzed.name].document)["certificate"]["images"]) == 6
        empty_statement = json.loads(first[empty.name].document)["certificate"]
        assert (empty_statement["verdict"], empty_statement["reason"]) == ("UNVERIFIED", "INSUFFICIENT_COVERAGE")
        assert "could NOT be verified: insufficient coverage." in empty_statement["statement"]

        in_progress = stub.CreateScan(pb.CreateScanRequest(scan=pb.Scan(item_type=ITEM))).scan
        code, details = _error(stub, f"{in_progress.name}/certificate")
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "IN_PROGRESS" in details
        stub.CancelScan(pb.CancelScanRequest(name=in_progress.name))
        code, details = _error(stub, f"{in_progress.name}/certificate")
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "CANCELLED" in details
        assert _error(stub, "scans/0123abcd/certificate")[0] == grpc.StatusCode.NOT_FOUND
        for bad in (analyzed.name, f"{analyzed.name}/explanation", "scans//certificate", "certificate"):
            code, details = _error(stub, bad)
            assert code == grpc.StatusCode.INVALID_ARGUMENT and repr(bad) in details
    finally:
        unit.close()

    key_file = (data_dir / "keys" / "signing-ed25519.pem").read_bytes()
    unit = InProcessDaemon(data_dir)
    try:
        stub = scan_service_pb2_grpc.ScanServiceStub(unit.channel)
        assert _public_key(unit) == pem
        for name, certificate in first.items():
            assert _certificate(stub, f"{name}/certificate") == certificate
    finally:
        unit.close()
    assert (data_dir / "keys" / "signing-ed25519.pem").read_bytes() == key_file
