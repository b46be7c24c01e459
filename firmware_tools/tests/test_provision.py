"""``veriscope-tool ca init`` and ``veriscope-tool provision``: the fleet CA and a unit's identity on its data dir."""

from __future__ import annotations

import hashlib
import json
import stat
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID

from veriscope.device.auth.tokens import TokenStore
from veriscope.device.certificates import SigningKey
from veriscope.device.config import load_config
from veriscope.device.identity import TlsIdentity, listener_transport
from veriscope.tools.ca import FleetCA
from veriscope.tools.cli import main
from veriscope.tools.provision import Action, provision_data_dir


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _tool(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _provision_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    code, out, err = _tool(capsys, "provision", *argv, "--json")
    assert code == 0, err
    report: dict[str, Any] = json.loads(out)
    return report


def _snapshot(directory: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``directory``: its SHA-256 and mode."""
    return {
        str(p.relative_to(directory)): (hashlib.sha256(p.read_bytes()).hexdigest(), _mode(p))
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("fleet") / "ca"
    assert main(["ca", "init", "--out", str(directory)]) == 0
    return directory


# --- ca init -----------------------------------------------------------------------------------------------------


def test_ca_init_makes_a_private_key_and_a_self_signed_ca_certificate(ca_dir: Path) -> None:
    assert _mode(ca_dir) == 0o700
    assert _mode(ca_dir / "fleet-ca.key") == 0o600
    ca = FleetCA.load(ca_dir)
    assert isinstance(ca.key, ec.EllipticCurvePrivateKey) and isinstance(ca.key.curve, ec.SECP256R1)
    certificate = ca.certificate
    assert certificate.subject == certificate.issuer and ca.name == "CN=Veriscope Fleet CA"
    assert certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    certificate.verify_directly_issued_by(certificate)
    years = (certificate.not_valid_after_utc - certificate.not_valid_before_utc).days / 365
    assert 19.9 < years < 20.1


def test_ca_init_refuses_to_overwrite(ca_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _snapshot(ca_dir)
    code, _, err = _tool(capsys, "ca", "init", "--out", str(ca_dir), "--name", "Another")
    assert code == 1 and "refusing to overwrite" in err
    assert _snapshot(ca_dir) == before


def test_ca_init_ed25519_with_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _tool(capsys, "ca", "init", "--out", str(tmp_path / "ca"), "--key-type", "ed25519", "--json")
    assert code == 0
    assert json.loads(out)["name"] == "CN=Veriscope Fleet CA"
    assert isinstance(FleetCA.load(tmp_path / "ca").key, ed25519.Ed25519PrivateKey)


def test_ca_client_cert_is_for_client_auth(ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _tool(
        capsys, "ca", "client-cert", "--ca", str(ca_dir), "--name", "laptop-7", "--out", str(tmp_path)
    )
    assert code == 0, err
    assert f"--client-cert {tmp_path / 'laptop-7.crt'}" in out
    assert _mode(tmp_path / "laptop-7.key") == 0o600
    certificate = x509.load_pem_x509_certificate((tmp_path / "laptop-7.crt").read_bytes())
    usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert FleetCA.load(ca_dir).issued(certificate)


# --- provision ---------------------------------------------------------------------------------------------------


def test_provision_gives_a_unit_its_whole_identity(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    report = _provision_json(capsys, "--data-dir", str(data), "--ca", str(ca_dir), "--device-id", "VS-0000ABCD")
    assert report["changed"] is True and report["device_id"] == "VS-0000ABCD"
    actions = {step["item"]: step["action"] for step in report["steps"]}
    assert actions == {
        "device id": "created",
        "signing key": "created",
        "signer certificate": "issued",
        "TLS key": "created",
        "TLS certificate": "issued",
        "fleet CA certificate": "created",
        "configuration": "created",
        "admin token": "created",
    }
    keys = data / "keys"
    assert _mode(keys) == 0o700
    for key in ("tls-p256.pem", "signing-ed25519.pem"):
        assert _mode(keys / key) == 0o600, key
    ca = FleetCA.load(ca_dir)

    # The TLS certificate: issued by the CA for the device id and veriscope-unit, serverAuth, 5 years, CA after it.
    identity = TlsIdentity.load(keys / "tls-p256.pem", keys / "tls-p256.crt", "VS-0000ABCD")
    unit = identity.certificate
    assert ca.issued(unit) and identity.chain_pem.endswith(ca.certificate_pem)
    names = unit.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert names == ["VS-0000ABCD", "veriscope-unit"]
    assert list(unit.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    assert 4.9 < (unit.not_valid_after_utc - unit.not_valid_before_utc).days / 365 < 5.1
    assert report["tls_key_pin"] == identity.pin

    # The signing key's certificate, which the daemon embeds in certificates of authenticity.
    signing = SigningKey.load_or_create(data)
    assert signing.certificate_pem is not None and report["signing_key_sha256"] == signing.sha256
    assert ca.issued(x509.load_pem_x509_certificate(signing.certificate_pem.encode()))

    # The configuration: the daemon loads it and would serve TLS on the network with that identity.
    config = load_config(Path(report["config_file"]), environ={})
    assert config.server.listen == "0.0.0.0:50051" and Path(config.device.data_dir) == data.resolve()
    transport = listener_transport(config, data, "VS-0000ABCD")
    assert transport.tls and not transport.require_client_cert

    # The admin token works once, and only its hash is on the unit.
    token = report["admin_token"]
    assert TokenStore(data).authenticate(token).role == "admin"
    assert token not in (data / "auth" / "tokens.json").read_text()


def test_provision_twice_changes_nothing_and_says_so(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    first = _provision_json(capsys, "--data-dir", str(data), "--ca", str(ca_dir))
    before = _snapshot(data)
    code, out, err = _tool(capsys, "provision", "--data-dir", str(data), "--ca", str(ca_dir))
    assert code == 0, err
    assert "nothing changed" in out and first["device_id"] in out
    assert "admin token, shown" not in out
    assert _snapshot(data) == before
    again = _provision_json(capsys, "--data-dir", str(data), "--ca", str(ca_dir))
    assert again["changed"] is False and again["admin_token"] is None
    assert {step["action"] for step in again["steps"]} == {"unchanged"}
    assert again["tls_key_pin"] == first["tls_key_pin"]
    assert _snapshot(data) == before


def test_rotate_replaces_only_the_tls_key_and_its_certificate(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    first = _provision_json(capsys, "--data-dir", str(data), "--ca", str(ca_dir))
    rotated = _provision_json(capsys, "--data-dir", str(data), "--ca", str(ca_dir), "--rotate")
    actions = {step["item"]: step["action"] for step in rotated["steps"]}
    assert actions["TLS key"] == "rotated" and actions["TLS certificate"] == "issued"
    assert actions["signing key"] == "unchanged" and actions["signer certificate"] == "unchanged"
    assert rotated["tls_key_pin"] != first["tls_key_pin"]
    assert rotated["signing_key_sha256"] == first["signing_key_sha256"]
    assert _mode(data / "keys" / "tls-p256.pem") == 0o600
    TlsIdentity.load(data / "keys" / "tls-p256.pem", data / "keys" / "tls-p256.crt", rotated["device_id"])


def test_another_ca_reissues_the_certificates_but_keeps_the_keys(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    first = _provision_json(capsys, "--data-dir", str(data), "--ca", str(ca_dir))
    other = FleetCA.create(tmp_path / "other-ca", name="Other Fleet CA")
    moved = _provision_json(capsys, "--data-dir", str(data), "--ca", str(other.directory))
    actions = {step["item"]: (step["action"], step["detail"]) for step in moved["steps"]}
    assert actions["TLS certificate"][0] == "issued" and "not by this CA" in actions["TLS certificate"][1]
    assert actions["signer certificate"][0] == "issued"
    assert actions["fleet CA certificate"][0] == "updated"
    assert actions["TLS key"][0] == "unchanged" and moved["tls_key_pin"] == first["tls_key_pin"]
    assert other.issued(x509.load_pem_x509_certificate((data / "keys" / "tls-p256.crt").read_bytes()))


def test_a_unit_keeps_its_device_id(ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    _provision_json(capsys, "--data-dir", str(data), "--ca", str(ca_dir), "--device-id", "VS-11111111")
    code, _, err = _tool(capsys, "provision", "--data-dir", str(data), "--ca", str(ca_dir), "--device-id", "VS-2")
    assert code == 1 and "'VS-11111111' already" in err and "does not change" in err
    code, _, err = _tool(
        capsys, "provision", "--data-dir", str(tmp_path / "x"), "--ca", str(ca_dir), "--device-id", "a b"
    )
    assert code == 1 and "cannot name a certificate" in err


def test_existing_configuration_keeps_its_other_keys(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    config_file = tmp_path / "device.toml"
    config_file.write_text('[server]\nlisten = "0.0.0.0:6000"\nmax_concurrent_rpcs = 8\n\n[scan]\nmax_open_scans = 5\n')
    argv = ["--data-dir", str(data), "--ca", str(ca_dir), "--config", str(config_file)]
    report = _provision_json(capsys, *argv, "--require-client-cert", "--no-admin-token")
    assert report["config_file"] == str(config_file.resolve()) and report["admin_token"] is None
    raw = tomllib.loads(config_file.read_text())
    assert raw["server"] == {"listen": "0.0.0.0:6000", "max_concurrent_rpcs": 8}
    assert raw["scan"] == {"max_open_scans": 5}
    assert raw["tls"] == {
        "cert_file": "keys/tls-p256.crt",
        "key_file": "keys/tls-p256.pem",
        "require_client_cert": True,
    }
    assert not (data / "auth").exists()
    # The mTLS setting stays as it is unless asked; --listen changes the listener.
    again = _provision_json(capsys, *argv, "--no-admin-token")
    assert again["changed"] is False
    changed = _provision_json(capsys, *argv, "--no-admin-token", "--listen", "0.0.0.0:7000")
    assert [s["item"] for s in changed["steps"] if s["action"] != "unchanged"] == ["configuration"]
    config = load_config(config_file, environ={})
    assert config.server.listen == "0.0.0.0:7000" and config.tls.require_client_cert


def test_certificates_due_for_renewal_are_reissued(ca_dir: Path, tmp_path: Path) -> None:
    ca = FleetCA.load(ca_dir)
    data = tmp_path / "data"
    provision_data_dir(data, ca, admin_token=False)
    soon = datetime.now(UTC) + timedelta(days=5 * 365 - 10)
    report = provision_data_dir(data, ca, admin_token=False, now=soon)
    renewed = {step.item: step for step in report.steps if step.action is Action.ISSUED}
    assert set(renewed) == {"signer certificate", "TLS certificate"}
    assert "renewed" in renewed["TLS certificate"].detail


def test_provision_refuses_a_ca_key_open_to_others(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "ca"
    copy.mkdir()
    for name in ("fleet-ca.key", "fleet-ca.crt"):
        (copy / name).write_bytes((ca_dir / name).read_bytes())
    (copy / "fleet-ca.key").chmod(0o644)
    code, _, err = _tool(capsys, "provision", "--data-dir", str(tmp_path / "data"), "--ca", str(copy))
    assert code == 1 and "chmod 600" in err
    assert not (tmp_path / "data").exists()


def test_a_signer_certificate_of_another_key_is_replaced(ca_dir: Path, tmp_path: Path) -> None:
    ca = FleetCA.load(ca_dir)
    unit, stranger = tmp_path / "unit", tmp_path / "stranger"
    provision_data_dir(unit, ca, admin_token=False)
    provision_data_dir(stranger, ca, admin_token=False)
    signer = unit / "keys" / "signing-ed25519.crt"
    signer.write_bytes((stranger / "keys" / "signing-ed25519.crt").read_bytes())
    report = provision_data_dir(unit, ca, admin_token=False)
    step = next(s for s in report.steps if s.item == "signer certificate")
    assert step.action is Action.ISSUED and "another key" in step.detail
    assert SigningKey.load_or_create(unit).certificate_pem is not None
