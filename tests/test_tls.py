"""TLS end to end: ``ca init`` and ``provision`` a data dir, serve it, and check the unit from the SDK and the CLI."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import redirect_stdout
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from veriscope.device.identity import certificate_request
from veriscope.device.launch import DaemonProcess, spawn_daemon
from veriscope.sdk import AsyncClient, Client, DeviceUnavailableError, TlsError
from veriscope.sdk._cli import main as veriscope
from veriscope.sdk._transport import normalize_pin, split_target, tls_settings, verify_unit
from veriscope.sdk.certificates import verify_certificate
from veriscope.tools.ca import FleetCA
from veriscope.tools.cli import main as tool


@dataclass
class Unit:
    """A provisioned unit serving TLS on loopback, and what a client needs to trust it."""

    process: DaemonProcess
    device_id: str
    pin: str
    ca_file: Path
    ca_dir: Path

    @property
    def address(self) -> str:
        return self.process.address


def _provision(tmp: Path, *extra: str, key_type: str = "p256") -> Unit:
    ca_dir = tmp / "ca"
    data = tmp / "data"
    output = io.StringIO()
    with redirect_stdout(output):
        assert tool(["ca", "init", "--out", str(ca_dir), "--key-type", key_type]) == 0
        output.truncate(0)
        output.seek(0)
        assert tool(["provision", "--data-dir", str(data), "--ca", str(ca_dir), "--json", *extra]) == 0
    report = json.loads(output.getvalue())
    # The provisioned config.toml, on a free loopback port (spawn_daemon's --listen overrides the file's).
    process = spawn_daemon(data, "--config", report["config_file"], "--no-advertise")
    assert any("TLS" in line and report["tls_key_pin"] in line for line in process.output), process.output
    return Unit(process, report["device_id"], report["tls_key_pin"], ca_dir / "fleet-ca.crt", ca_dir)


def _stop(unit: Unit) -> None:
    code = unit.process.stop()
    assert code == 0, "".join(unit.process.output)


@pytest.fixture(scope="module")
def unit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Unit]:
    provisioned = _provision(tmp_path_factory.mktemp("tls"))
    yield provisioned
    _stop(provisioned)


# --- The SDK -----------------------------------------------------------------------------------------------------


def test_client_with_the_fleet_ca_talks_to_the_unit(unit: Unit) -> None:
    with Client(unit.address, ca=unit.ca_file) as client:
        assert client.get_device().device_id == unit.device_id
    # The unit's device id is in its certificate: a client may accept this one unit only.
    with Client(unit.address, ca=str(unit.ca_file), tls_server_name=unit.device_id) as client:
        assert client.get_status().state is not None


def test_client_with_the_pinned_key_talks_to_the_unit(unit: Unit) -> None:
    with Client(unit.address, pinned_key=unit.pin) as client:
        assert client.get_device().device_id == unit.device_id
    bare_hex = unit.pin.removeprefix("sha256:").upper()
    with Client(unit.address, pinned_key=bare_hex, ca=unit.ca_file.read_bytes()) as client:
        assert client.get_device().device_id == unit.device_id


async def test_async_client_checks_the_unit_too(unit: Unit) -> None:
    async with AsyncClient(unit.address, ca=unit.ca_file) as client:
        assert (await client.get_device()).device_id == unit.device_id
    async with AsyncClient(unit.address, pinned_key="sha256:" + "0" * 64) as client:
        with pytest.raises(TlsError) as mismatch:
            await client.get_device()
    assert mismatch.value.reason == "pin_mismatch"


def test_wrong_ca_is_reported_as_such(unit: Unit, tmp_path: Path) -> None:
    assert tool(["ca", "init", "--out", str(tmp_path / "other")]) == 0
    with Client(unit.address, ca=tmp_path / "other" / "fleet-ca.crt") as client, pytest.raises(TlsError) as wrong:
        client.get_device()
    assert wrong.value.reason == "not_issued_by_ca"
    assert wrong.value.details.startswith("the unit's certificate is not issued by the fleet CA you gave")
    assert unit.device_id in wrong.value.details
    assert wrong.value.method == "veriscope.v1.DeviceService/GetDevice"


def test_wrong_pin_is_reported_with_both_keys(unit: Unit) -> None:
    expected = "ab" * 32
    with Client(unit.address, pinned_key=f"sha256:{expected}") as client, pytest.raises(TlsError) as wrong:
        client.get_device()
    presented = unit.pin.removeprefix("sha256:")
    assert wrong.value.reason == "pin_mismatch"
    assert wrong.value.details.startswith(
        f"pinned key mismatch: expected sha256 {expected}, unit presented sha256 {presented}"
    )


def test_name_the_unit_does_not_carry_is_reported(unit: Unit) -> None:
    client = Client(unit.address, ca=unit.ca_file, tls_server_name="VS-SOMEONE-ELSE")
    with client, pytest.raises(TlsError) as wrong:
        client.get_device()
    assert wrong.value.reason == "name_mismatch" and "VS-SOMEONE-ELSE" in wrong.value.details


def test_plaintext_client_cannot_reach_a_tls_unit(unit: Unit) -> None:
    with Client(unit.address) as client, pytest.raises(DeviceUnavailableError):
        client.get_device(timeout_s=5)


def test_bad_tls_arguments_are_refused_before_any_call(unit: Unit, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="64 hex digits"):
        Client(unit.address, pinned_key="sha256:1234")
    with pytest.raises(FileNotFoundError):
        Client(unit.address, ca=tmp_path / "missing.crt")
    (tmp_path / "empty.crt").write_text("")
    with pytest.raises(ValueError, match="holds no PEM certificate"):
        Client(unit.address, ca=tmp_path / "empty.crt")
    with pytest.raises(ValueError, match="unix socket"):
        Client("unix:/tmp/veriscope.sock", ca=unit.ca_file)
    with pytest.raises(ValueError, match="need ca= or pinned_key="):
        Client(unit.address, client_cert="a.crt", client_key="a.key")


@pytest.mark.slow
def test_certificates_of_authenticity_verify_against_the_fleet_ca(unit: Unit) -> None:
    # provision installed a fleet-CA certificate of the signing key, which the unit embeds in every certificate.
    with Client(unit.address, ca=unit.ca_file) as client:
        client.place_item("tote-classic", "genuine", seed=7)
        result = client.scan("tote-classic")
        document = client.get_scan_certificate(result.scan_id).document
    certificate = verify_certificate(document, unit.ca_file.read_bytes())
    assert certificate.device_id == unit.device_id
    assert certificate.trusted_by.startswith("certified by CA CN=Veriscope Fleet CA")


# --- The CLI -----------------------------------------------------------------------------------------------------


def test_cli_verifies_with_ca_pin_or_environment(
    unit: Unit, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert veriscope(["--device", unit.address, "--ca", str(unit.ca_file), "info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["device_id"] == unit.device_id
    assert veriscope(["--device", unit.address, "--pin", unit.pin, "status"]) == 0
    capsys.readouterr()
    monkeypatch.setenv("VERISCOPE_CA", str(unit.ca_file))
    assert veriscope(["--device", unit.address, "info"]) == 0
    assert unit.device_id in capsys.readouterr().out


def test_cli_wrong_pin_exits_1_with_the_mismatch(unit: Unit, capsys: pytest.CaptureFixture[str]) -> None:
    code = veriscope(["--device", unit.address, "--pin", "sha256:" + "cd" * 32, "info"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("veriscope: error: TLS_ERROR: pinned key mismatch: expected sha256 " + "cd" * 32)


def test_cli_without_tls_options_hints_at_them(unit: Unit, capsys: pytest.CaptureFixture[str]) -> None:
    assert veriscope(["--device", unit.address, "--timeout", "5", "info"]) == 3
    assert "needs --ca FILE or --pin SHA256" in capsys.readouterr().err


# --- mTLS, with an Ed25519 fleet CA ------------------------------------------------------------------------------


def test_mtls_unit_accepts_only_clients_with_a_fleet_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mtls = _provision(tmp_path, "--require-client-cert", key_type="ed25519")
    try:
        with Client(mtls.address, ca=mtls.ca_file) as client, pytest.raises(TlsError) as without:
            client.get_device()
        assert without.value.reason == "client_certificate_required"
        assert "requires a client certificate" in without.value.details

        assert tool(["ca", "client-cert", "--ca", str(mtls.ca_dir), "--name", "laptop", "--out", str(tmp_path)]) == 0
        cert, key = tmp_path / "laptop.crt", tmp_path / "laptop.key"
        with Client(mtls.address, ca=mtls.ca_file, client_cert=cert, client_key=key) as client:
            assert client.get_device().device_id == mtls.device_id

        assert tool(["ca", "init", "--out", str(tmp_path / "stranger")]) == 0
        stranger = [
            "ca",
            "client-cert",
            "--ca",
            str(tmp_path / "stranger"),
            "--name",
            "x",
            "--out",
            str(tmp_path / "s"),
        ]
        assert tool(stranger) == 0
        with (
            Client(
                mtls.address, ca=mtls.ca_file, client_cert=tmp_path / "s" / "x.crt", client_key=tmp_path / "s" / "x.key"
            ) as client,
            pytest.raises(TlsError) as refused,
        ):
            client.get_device()
        assert refused.value.reason == "client_certificate_refused"

        capsys.readouterr()
        argv = ["--device", mtls.address, "--ca", str(mtls.ca_file), "--client-cert", str(cert), "--client-key"]
        assert veriscope([*argv, str(key), "info", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["device_id"] == mtls.device_id
    finally:
        _stop(mtls)


# --- The checks, offline ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "host", "port"),
    [
        ("10.0.0.7:50051", "10.0.0.7", 50051),
        ("[::1]:6000", "::1", 6000),
        ("dns:///veriscope.local:1", "veriscope.local", 1),
        ("ipv4:127.0.0.1:2", "127.0.0.1", 2),
    ],
)
def test_targets_that_tls_can_check(target: str, host: str, port: int) -> None:
    assert split_target(target) == (host, port)


@pytest.mark.parametrize("target", ["unix:/run/vs.sock", "10.0.0.7", "host:port"])
def test_targets_that_tls_cannot_check(target: str) -> None:
    with pytest.raises(ValueError):
        split_target(target)


def test_pins_are_normalised() -> None:
    digits = "0123456789abcdef" * 4
    colons = ":".join(digits[i : i + 2] for i in range(0, 64, 2)).upper()
    assert normalize_pin(f"sha256:{digits}") == normalize_pin(digits.upper()) == normalize_pin(colons)
    assert normalize_pin(digits) == f"sha256:{digits}"


def test_expired_and_future_certificates_are_named(tmp_path: Path) -> None:
    ca = FleetCA.create(tmp_path / "ca")
    key = ec.generate_private_key(ec.SECP256R1())
    unit_cert = ca.issue_unit_certificate(certificate_request(key, "VS-00000001"), "VS-00000001")
    der = unit_cert.public_bytes(serialization.Encoding.DER)
    settings = tls_settings(
        ca=ca.certificate_pem, pinned_key=None, client_cert=None, client_key=None, tls_server_name=None
    )
    assert settings is not None
    assert verify_unit(der, settings, "unit").server_name == "veriscope-unit"
    later = datetime.now(UTC) + timedelta(days=6 * 365)
    with pytest.raises(TlsError) as expired:
        verify_unit(der, settings, "unit", now=later)
    assert expired.value.reason == "expired" and "provision" in expired.value.details
    with pytest.raises(TlsError) as early:
        verify_unit(der, settings, "unit", now=datetime.now(UTC) - timedelta(days=1))
    assert early.value.reason == "not_yet_valid" and "clock" in early.value.details


# --- The daemon --------------------------------------------------------------------------------------------------


def test_serve_on_the_network_without_tls_refuses_to_start(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("veriscope-device")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERISCOPE_")}
    argv = [str(exe), "serve", "--simulate", "--listen", "0.0.0.0:50999", "--data-dir", str(tmp_path), "--no-advertise"]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "TLS is needed to listen on 0.0.0.0:50999" in done.stderr
    assert "veriscope-tool provision" in done.stderr and "serving on" not in done.stdout


def test_plaintext_on_a_unix_socket_is_allowed(tmp_path: Path) -> None:
    socket_path = tmp_path / "vs.sock"
    unit = spawn_daemon(tmp_path / "data", "--listen", f"unix:{socket_path}", "--no-advertise")
    try:
        assert unit.address == f"unix:{socket_path}"
        with Client(unit.address) as client:
            assert client.get_device().device_id.startswith("VS-SIM-")
    finally:
        assert unit.stop() == 0
