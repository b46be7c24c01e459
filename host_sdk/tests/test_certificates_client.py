"""get_scan_certificate() on both clients, and the ``certificate`` and ``verify-certificate`` commands."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sdk_fakes import ITEM_TYPE, FakeUnit
from test_certificates_verify import GOLDEN, PEM, SPKI, TRUST

from veriscope.sdk import AsyncClient, Client, FailedPreconditionError, NotFoundError, ProtocolError, ScanCertificate
from veriscope.sdk import _convert as convert
from veriscope.sdk._cli import main
from veriscope.v1 import scan_service_pb2


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def completed(unit: FakeUnit, address: str) -> str:
    """The id of a completed scan whose certificate is the golden document."""
    unit.certificate_document = GOLDEN
    unit.signing_public_key = TRUST.decode()
    with Client(address) as client:
        return client.scan(ITEM_TYPE).scan_id


# --- Clients -----------------------------------------------------------------------------------------------------


def test_client_returns_the_document_byte_for_byte(address: str, completed: str, tmp_path: Path) -> None:
    with Client(address) as client:
        certificate = client.get_scan_certificate(f"scans/{completed}")
        assert client.get_device().signing_public_key == TRUST.decode()
    assert isinstance(certificate, ScanCertificate)
    assert certificate.scan_id == completed and certificate.document == GOLDEN
    assert certificate.signing_key_sha256 == "cd" * 32
    assert certificate.save(tmp_path / "c.cert").read_bytes() == GOLDEN
    assert certificate.to_dict() == {"scan_id": completed, "size_bytes": len(GOLDEN), "signing_key_sha256": "cd" * 32}


def test_client_errors(address: str, unit: FakeUnit) -> None:
    with Client(address) as client:
        scan = client.create_scan(ITEM_TYPE)
        with pytest.raises(FailedPreconditionError) as caught:
            client.get_scan_certificate(scan.scan_id)
        assert caught.value.method == "veriscope.v1.ScanService/GetScanCertificate"
        with pytest.raises(NotFoundError):
            client.get_scan_certificate("nosuchscan")
        calls = len(unit.calls)
        with pytest.raises(ValueError, match="scan_id must be"):
            client.get_scan_certificate("scans/a/certificate")
        assert len(unit.calls) == calls  # refused before any call


async def test_async_client_returns_the_document_byte_for_byte(address: str, completed: str) -> None:
    async with AsyncClient(address) as client:
        certificate = await client.get_scan_certificate(completed)
        assert certificate.document == GOLDEN and certificate.scan_id == completed
        scan = await client.create_scan(ITEM_TYPE)
        with pytest.raises(FailedPreconditionError):
            await client.get_scan_certificate(scan.scan_id)
        with pytest.raises(NotFoundError):
            await client.get_scan_certificate("nosuchscan")


@pytest.mark.parametrize(
    ("name", "document", "message"),
    [
        ("scans/abc/explanation", b"x", "expected 'scans/{id}/certificate'"),
        ("certificate", b"x", "expected 'scans/{id}/certificate'"),
        ("scans/abc/certificate", b"", "empty certificate"),
    ],
)
def test_a_certificate_answer_off_the_contract_is_a_protocol_error(name: str, document: bytes, message: str) -> None:
    answer = scan_service_pb2.GetScanCertificateResponse(
        certificate=scan_service_pb2.ScanCertificate(name=name, document=document)
    )
    with pytest.raises(ProtocolError, match=message):
        convert.scan_certificate_from_pb(answer)


# --- veriscope certificate ---------------------------------------------------------------------------------------


def test_certificate_command_writes_the_document(
    capsys: pytest.CaptureFixture[str], address: str, completed: str, tmp_path: Path
) -> None:
    out = tmp_path / "tote.cert"
    code, text, err = run(capsys, "--device", address, "certificate", completed, "--out", str(out))
    assert code == 0, err
    assert out.read_bytes() == GOLDEN
    assert f"certificate of scan {completed} saved to {out}" in text and "veriscope verify-certificate" in text
    code, text, err = run(capsys, "--device", address, "certificate", completed, "--out", str(out), "--json")
    assert code == 0, err
    assert json.loads(text) == {
        "scan_id": completed,
        "size_bytes": len(GOLDEN),
        "signing_key_sha256": "cd" * 32,
        "path": str(out),
    }


def test_certificate_command_refuses_an_unwritable_file_before_asking(
    capsys: pytest.CaptureFixture[str], address: str, unit: FakeUnit, completed: str, tmp_path: Path
) -> None:
    asked = unit.count("GetScanCertificate")  # scan() in the fixture fetched the certificate once
    code, _, err = run(capsys, "--device", address, "certificate", completed, "--out", str(tmp_path / "no" / "x"))
    assert code == 2 and "does not exist" in err
    assert unit.count("GetScanCertificate") == asked


def test_certificate_command_of_a_scan_in_progress_exits_1(
    capsys: pytest.CaptureFixture[str], address: str, tmp_path: Path
) -> None:
    with Client(address) as client:
        scan = client.create_scan(ITEM_TYPE)
    code, _, err = run(capsys, "--device", address, "certificate", scan.scan_id, "--out", str(tmp_path / "c"))
    assert code == 1 and err.startswith("veriscope: error: FAILED_PRECONDITION: ")
    assert not (tmp_path / "c").exists()


def test_info_json_includes_the_signing_public_key(
    capsys: pytest.CaptureFixture[str], address: str, completed: str
) -> None:
    code, text, err = run(capsys, "--device", address, "info", "--json")
    assert code == 0, err
    assert json.loads(text)["signing_public_key"] == TRUST.decode()
    code, text, _ = run(capsys, "--device", address, "info")
    assert "Signing key   Ed25519" in text


# --- veriscope verify-certificate --------------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    cert, pem = tmp_path / "tote.cert", tmp_path / "unit.pem"
    cert.write_bytes(GOLDEN)
    pem.write_bytes(TRUST)
    return cert, pem


def test_verify_certificate_needs_no_device(
    capsys: pytest.CaptureFixture[str], files: tuple[Path, Path], unused_address: str
) -> None:
    cert, pem = files
    code, text, err = run(capsys, "--device", unused_address, "verify-certificate", str(cert), "--trust", str(pem))
    assert (code, err) == (0, "")
    lines = text.splitlines()
    assert lines[0] == "VALID certificate of authenticity"
    assert "Verdict     UNVERIFIED (counterfeit indicators)" in lines
    assert "Item        tote-classic, partner item id listing-4711 · Zürich" in lines
    assert "Device      VS-SIM-0A1B2C3D" in lines
    assert "Time        2026-05-28 12:03:07 UTC" in lines
    assert "Images      5 (4 accepted, 4 used for the verdict, 2 uploaded)" in lines
    assert lines[-1].endswith("could NOT be verified: counterfeit indicators.")


def test_verify_certificate_json(capsys: pytest.CaptureFixture[str], files: tuple[Path, Path]) -> None:
    cert, pem = files
    code, text, _ = run(capsys, "verify-certificate", str(cert), "--trust", str(pem), "--json")
    assert code == 0
    data = json.loads(text)
    assert data["valid"] is True and data["file"] == str(cert)
    statement = data["certificate"]
    assert statement["verdict"] == "UNVERIFIED" and statement["reason"] == "COUNTERFEIT_INDICATORS"
    assert statement["score"] == "0.1235" and statement["trusted_by"] == "the trusted public key"
    assert statement["images"][0] == {
        "image_id": "001",
        "region": "canvas",
        "origin": "CAMERA",
        "sha256": "01" * 32,
        "accepted": False,
        "used": False,
    }
    # --json is accepted before the command too.
    assert json.loads(run(capsys, "--json", "verify-certificate", str(cert), "--trust", str(pem))[1])["valid"]


@pytest.mark.parametrize(
    ("change", "reason", "message"),
    [
        (lambda d: d.replace(b"VS-SIM-0A1B2C3D", b"VS-SIM-0A1B2C3E", 1), "signature_mismatch", "signature does not"),
        (lambda d: d[:-1] + b" \n", "not_canonical", "not canonical"),
        (lambda d: d[:200], "unknown_format", "truncated"),
        (lambda d: b"hello", "unknown_format", "unknown format"),
    ],
)
def test_verify_certificate_refusals_exit_1_with_the_reason(
    capsys: pytest.CaptureFixture[str], files: tuple[Path, Path], change: object, reason: str, message: str
) -> None:
    cert, pem = files
    assert callable(change)
    cert.write_bytes(change(GOLDEN))
    code, text, err = run(capsys, "verify-certificate", str(cert), "--trust", str(pem))
    assert code == 1 and text == ""
    assert len(err.splitlines()) == 1 and err.startswith(
        f"veriscope: error: {str(cert)!r} is NOT a valid certificate: "
    )
    assert message in err
    code, text, err = run(capsys, "verify-certificate", str(cert), "--trust", str(pem), "--json")
    assert code == 1 and message in err
    assert json.loads(text) == {**json.loads(text), "valid": False, "reason": reason, "file": str(cert)}


def test_verify_certificate_with_another_units_key_exits_1(
    capsys: pytest.CaptureFixture[str], files: tuple[Path, Path]
) -> None:
    cert, pem = files
    pem.write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(PEM, SPKI))
    code, _, err = run(capsys, "verify-certificate", str(cert), "--trust", str(pem))
    assert code == 1 and "key not trusted" in err


@pytest.mark.parametrize(
    ("which", "content", "message"),
    [
        ("cert", None, "FILE '.*tote.cert' does not exist"),
        ("pem", None, "--trust '.*unit.pem' does not exist"),
        ("pem", b"not a key", "is neither a PEM public key .* nor PEM X.509 certificates"),
    ],
)
def test_verify_certificate_unreadable_inputs_exit_1(
    capsys: pytest.CaptureFixture[str], files: tuple[Path, Path], which: str, content: bytes | None, message: str
) -> None:
    cert, pem = files
    target = cert if which == "cert" else pem
    if content is None:
        target.unlink()
    else:
        target.write_bytes(content)
    code, text, err = run(capsys, "verify-certificate", str(cert), "--trust", str(pem))
    assert code == 1 and text == ""
    assert len(err.splitlines()) == 1
    assert "cannot be verified" in err and re.search(message, err), err


def test_verify_certificate_help_teaches(capsys: pytest.CaptureFixture[str]) -> None:
    code, text, _ = run(capsys, "verify-certificate", "--help")
    assert code == 0
    for phrase in ("offline", "signing_public_key", "fleet CA", "exits 1", "signature does not match", "--json"):
        assert phrase in text, phrase
