"""The unit's TLS identity and the listener rules: loopback may be plaintext, the network needs TLS."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pki import FakeCA, cert_pem, key_pem

from veriscope.device import cli
from veriscope.device.config import Config
from veriscope.device.errors import ConfigError, IdentityError
from veriscope.device.identity import (
    FLEET_CA_FILE,
    TLS_CERT_FILE,
    TLS_KEY_FILE,
    TlsIdentity,
    create_tls_key,
    ensure_keys_dir,
    is_local_listen,
    listener_transport,
    load_tls_key,
    public_key_pin,
)

DEVICE_ID = "VS-1A2B3C4D"


@pytest.fixture(scope="module")
def ca() -> FakeCA:
    return FakeCA.create()


def _config(tmp_path: Path, listen: str, **tls: object) -> Config:
    return Config().with_overrides(server={"listen": listen}, device={"data_dir": str(tmp_path)}, tls=tls)


@pytest.mark.parametrize(
    "listen",
    ["127.0.0.1:50051", "127.8.9.10:0", "[::1]:50051", "localhost:50051", "LOCALHOST:1", "unix:/run/vs.sock"],
)
def test_loopback_and_unix_listeners_are_local(listen: str) -> None:
    assert is_local_listen(listen)


@pytest.mark.parametrize(
    "listen", ["0.0.0.0:50051", "[::]:50051", "10.0.0.7:50051", "veriscope.local:50051", "128.0.0.1:1", ":50051"]
)
def test_other_listeners_are_the_network(listen: str) -> None:
    assert not is_local_listen(listen)


def test_plaintext_on_the_network_is_refused_with_how_to_provision(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        listener_transport(_config(tmp_path, "0.0.0.0:50051"), tmp_path, DEVICE_ID)
    message = str(refused.value)
    assert refused.value.key == "server.listen"
    assert "TLS is needed" in message and "0.0.0.0:50051" in message
    assert "veriscope-tool provision" in message and "--tls-cert" in message


@pytest.mark.parametrize("listen", ["127.0.0.1:0", "unix:/tmp/veriscope-test.sock"])
def test_plaintext_on_loopback_or_unix_is_allowed(tmp_path: Path, listen: str) -> None:
    transport = listener_transport(_config(tmp_path, listen), tmp_path, DEVICE_ID)
    assert not transport.tls and transport.server_credentials() is None
    assert transport.describe() == "plaintext"


def test_mtls_without_tls_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        listener_transport(_config(tmp_path, "127.0.0.1:0", require_client_cert=True), tmp_path, DEVICE_ID)
    assert refused.value.key == "tls.require_client_cert" and "need TLS" in str(refused.value)


def test_cert_file_without_key_file_is_refused_by_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="key_file"):
        _config(tmp_path, "0.0.0.0:1", cert_file="unit.crt")


def test_configured_identity_serves_tls_on_the_network(tmp_path: Path, ca: FakeCA) -> None:
    key_path, cert_path = ca.write_unit(tmp_path / "tls", DEVICE_ID)
    config = _config(tmp_path, "0.0.0.0:50051", cert_file=str(cert_path), key_file=str(key_path))
    transport = listener_transport(config, tmp_path, DEVICE_ID)
    assert transport.tls and transport.server_credentials() is not None
    assert (
        transport.identity is not None and transport.identity.certificate.subject.rfc4514_string() == f"CN={DEVICE_ID}"
    )
    assert transport.identity.chain_pem.endswith(ca.pem)
    assert transport.identity.pin == public_key_pin(load_tls_key(key_path))
    assert transport.describe() == "TLS"


def test_relative_tls_paths_are_taken_from_the_data_dir(tmp_path: Path, ca: FakeCA) -> None:
    ca.write_unit(tmp_path / "tls", DEVICE_ID)
    config = _config(tmp_path, "0.0.0.0:50051", cert_file="tls/unit.crt", key_file="tls/unit.key")
    assert listener_transport(config, tmp_path, DEVICE_ID).tls


def test_provisioned_identity_in_the_data_dir_is_used_without_config(tmp_path: Path, ca: FakeCA) -> None:
    keys = ensure_keys_dir(tmp_path)
    key, certificate = ca.issue(DEVICE_ID)
    (keys / TLS_KEY_FILE).write_bytes(key_pem(key))
    (keys / TLS_KEY_FILE).chmod(0o600)
    (keys / TLS_CERT_FILE).write_bytes(cert_pem(certificate) + ca.pem)
    (keys / FLEET_CA_FILE).write_bytes(ca.pem)
    transport = listener_transport(_config(tmp_path, "0.0.0.0:50051", require_client_cert=True), tmp_path, DEVICE_ID)
    assert transport.tls and transport.require_client_cert
    assert transport.client_ca_path == keys / FLEET_CA_FILE and transport.client_ca_pem == ca.pem
    assert transport.describe() == "TLS, client certificates required"


def test_mtls_needs_a_client_ca(tmp_path: Path, ca: FakeCA) -> None:
    key_path, cert_path = ca.write_unit(tmp_path / "tls", DEVICE_ID)
    config = _config(tmp_path, "0.0.0.0:1", cert_file=str(cert_path), key_file=str(key_path), require_client_cert=True)
    with pytest.raises(ConfigError) as refused:
        listener_transport(config, tmp_path, DEVICE_ID)
    assert refused.value.key == "tls.client_ca_file"


def test_client_ca_file_must_hold_a_ca(tmp_path: Path, ca: FakeCA) -> None:
    key_path, cert_path = ca.write_unit(tmp_path / "tls", DEVICE_ID)
    leaf_only = tmp_path / "leaf.crt"
    leaf_only.write_bytes(
        cert_path.read_bytes().split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n"
    )
    config = _config(
        tmp_path, "0.0.0.0:1", cert_file=str(cert_path), key_file=str(key_path), client_ca_file=str(leaf_only)
    )
    with pytest.raises(IdentityError, match="holds no CA certificate"):
        listener_transport(config, tmp_path, DEVICE_ID)


# --- Checks of the key and certificate ---------------------------------------------------------------------------


def test_key_open_to_others_is_refused_naming_the_file_and_fix(tmp_path: Path, ca: FakeCA) -> None:
    key_path, cert_path = ca.write_unit(tmp_path, DEVICE_ID)
    key_path.chmod(0o644)
    with pytest.raises(IdentityError) as refused:
        TlsIdentity.load(key_path, cert_path, DEVICE_ID)
    assert str(key_path) in str(refused.value) and f"chmod 600 {key_path}" in str(refused.value)


def test_certificate_of_another_key_is_refused(tmp_path: Path, ca: FakeCA) -> None:
    key_path, _ = ca.write_unit(tmp_path / "a", DEVICE_ID)
    _, other_cert = ca.write_unit(tmp_path / "b", DEVICE_ID)
    with pytest.raises(IdentityError, match="certifies another key"):
        TlsIdentity.load(key_path, other_cert, DEVICE_ID)


def test_expired_certificate_is_refused_with_its_date(tmp_path: Path, ca: FakeCA) -> None:
    past = datetime.now(UTC) - timedelta(days=10)
    key_path, cert_path = ca.write_unit(tmp_path, DEVICE_ID, not_before=past - timedelta(days=30), not_after=past)
    with pytest.raises(IdentityError) as refused:
        TlsIdentity.load(key_path, cert_path, DEVICE_ID)
    assert f"expired on {past:%Y-%m-%d}" in str(refused.value) and "veriscope-tool provision" in str(refused.value)


def test_certificate_not_yet_valid_points_at_the_clock(tmp_path: Path, ca: FakeCA) -> None:
    future = datetime.now(UTC) + timedelta(days=2)
    key_path, cert_path = ca.write_unit(tmp_path, DEVICE_ID, not_before=future)
    with pytest.raises(IdentityError, match="set the clock"):
        TlsIdentity.load(key_path, cert_path, DEVICE_ID)


def test_certificate_of_another_unit_is_refused(tmp_path: Path, ca: FakeCA) -> None:
    key_path, cert_path = ca.write_unit(tmp_path, "VS-OTHER")
    with pytest.raises(IdentityError) as refused:
        TlsIdentity.load(key_path, cert_path, DEVICE_ID)
    assert "VS-OTHER" in str(refused.value) and DEVICE_ID in str(refused.value)


def test_missing_and_corrupt_files_are_named(tmp_path: Path, ca: FakeCA) -> None:
    key_path, cert_path = ca.write_unit(tmp_path, DEVICE_ID)
    with pytest.raises(IdentityError, match="does not exist"):
        TlsIdentity.load(tmp_path / "none.key", cert_path, DEVICE_ID)
    cert_path.write_text("not a certificate")
    with pytest.raises(IdentityError, match=f"{cert_path} is not a PEM"):
        TlsIdentity.load(key_path, cert_path, DEVICE_ID)
    key_path.write_text("garbage")
    with pytest.raises(IdentityError, match="corrupt"):
        TlsIdentity.load(key_path, cert_path, DEVICE_ID)


def test_new_tls_key_is_private_and_never_replaced_unless_asked(tmp_path: Path) -> None:
    keys = ensure_keys_dir(tmp_path)
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    path = keys / TLS_KEY_FILE
    assert create_tls_key(path) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_bytes()
    assert create_tls_key(path) is False and path.read_bytes() == first
    assert create_tls_key(path, replace=True) is True and path.read_bytes() != first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in keys.iterdir() if p.name.startswith(".")], "no temporary file left behind"


# --- veriscope-device serve ---------------------------------------------------------------------------------------


def test_serve_on_the_network_without_tls_exits_2_saying_tls_is_needed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["serve", "--simulate", "--listen", "0.0.0.0:0", "--data-dir", str(tmp_path), "--no-advertise"])
    err = capsys.readouterr().err
    assert code == 2
    assert "TLS is needed to listen on 0.0.0.0:0" in err and "veriscope-tool provision" in err


def test_serve_with_a_bad_tls_key_exits_1_naming_the_file(
    tmp_path: Path, ca: FakeCA, capsys: pytest.CaptureFixture[str]
) -> None:
    key_path, cert_path = ca.write_unit(tmp_path / "tls", "VS-SOMEONE-ELSE")
    argv = ["serve", "--simulate", "--listen", "0.0.0.0:0", "--data-dir", str(tmp_path / "data"), "--no-advertise"]
    code = cli.main([*argv, "--tls-cert", str(cert_path), "--tls-key", str(key_path)])
    err = capsys.readouterr().err
    assert code == 1 and str(cert_path) in err and "not for this unit" in err
