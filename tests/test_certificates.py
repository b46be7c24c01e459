"""Certificates of authenticity end to end: a scan on the daemon in its own process, fetched and checked by the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from veriscope.device.launch import DaemonProcess

CLI = str(Path(sys.executable).with_name("veriscope"))
ITEM = "tote-classic"


def veriscope(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def scanned(sim_daemon: DaemonProcess, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, Path]:
    """A genuine item scanned on the unit, its certificate saved, and the unit's public key saved: (result, cert, pem)."""
    folder = tmp_path_factory.mktemp("certificates")
    device = ["--device", sim_daemon.address]
    placed = veriscope(*device, "sim", "place", "--item-type", ITEM, "--source", "genuine", "--seed", "4711")
    assert placed.returncode == 0, placed.stderr
    scan = veriscope(*device, "scan", "--item-type", ITEM, "--partner-item-id", "listing-4711", "--json")
    assert scan.returncode == 0, scan.stderr
    result = json.loads(scan.stdout)
    info = veriscope(*device, "info", "--json")
    assert info.returncode == 0, info.stderr
    pem = folder / "unit.pem"
    pem.write_text(json.loads(info.stdout)["signing_public_key"])
    cert = folder / "tote.cert"
    fetched = veriscope(*device, "certificate", result["scan_id"], "--out", str(cert))
    assert fetched.returncode == 0, fetched.stderr
    return result, cert, pem


def test_a_fetched_certificate_verifies_offline(scanned: tuple[dict, Path, Path]) -> None:
    result, cert, pem = scanned
    done = veriscope("verify-certificate", str(cert), "--trust", str(pem))  # no --device: offline
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("VALID certificate of authenticity")
    assert result["verdict"] in done.stdout and ITEM in done.stdout and "listing-4711" in done.stdout
    verified = json.loads(veriscope("verify-certificate", str(cert), "--trust", str(pem), "--json").stdout)
    assert verified["valid"] is True
    statement = verified["certificate"]
    assert statement["scan_id"] == result["scan_id"]
    assert (statement["verdict"], statement["reason"]) == (result["verdict"], result["reason"])
    assert statement["score"] == f"{result['score']:.4f}"
    assert statement["model"] == result["model"]
    assert statement["partner_item_id"] == "listing-4711"
    assert statement["device_id"].startswith("VS-SIM-")
    used = [i["image_id"] for r in result["regions"] for i in r["images"] if i["score"] is not None]
    assert sorted(i["image_id"] for i in statement["images"] if i["used"]) == sorted(used)


def test_one_changed_byte_is_refused_with_the_reason(scanned: tuple[dict, Path, Path], tmp_path: Path) -> None:
    _, cert, pem = scanned
    document = bytearray(cert.read_bytes())
    at = document.index(b'"device_id":"') + len(b'"device_id":"')
    document[at] ^= 0x01  # "VS-SIM-..." becomes "WS-SIM-...": still canonical JSON, but not what was signed
    altered = tmp_path / "altered.cert"
    altered.write_bytes(bytes(document))
    done = veriscope("verify-certificate", str(altered), "--trust", str(pem))
    assert done.returncode == 1
    assert done.stdout == ""
    assert "signature does not match: the certificate was altered or signed by another key" in done.stderr
    failed = json.loads(veriscope("verify-certificate", str(altered), "--trust", str(pem), "--json").stdout)
    assert failed == {**failed, "valid": False, "reason": "signature_mismatch"}


def test_a_key_of_another_unit_is_not_trusted(scanned: tuple[dict, Path, Path], tmp_path: Path) -> None:
    _, cert, _ = scanned
    other = tmp_path / "other-unit.pem"
    other.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    done = veriscope("verify-certificate", str(cert), "--trust", str(other))
    assert done.returncode == 1
    assert "key not trusted" in done.stderr and len(done.stderr.splitlines()) == 1


def test_the_certificate_of_a_scan_in_progress_is_refused(sim_daemon: DaemonProcess, tmp_path: Path) -> None:
    from veriscope.sdk import Client

    with Client(sim_daemon.address) as client:
        scan = client.create_scan(ITEM)
        try:
            done = veriscope("--device", sim_daemon.address, "certificate", scan.scan_id, "--out", str(tmp_path / "x"))
        finally:
            client.cancel_scan(scan.scan_id)
    assert done.returncode == 1
    assert "FAILED_PRECONDITION" in done.stderr and "only COMPLETED scans have a certificate" in done.stderr
    assert not (tmp_path / "x").exists()
