"""First-boot provisioning over the network, end to end: a new unit, its pairing code and fingerprint, the tool.

``veriscope-device serve --first-boot`` on a fresh data dir; ``veriscope-tool ca init``;
``veriscope-tool provision --device ...``; then the same daemon command serves normally, over TLS.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from veriscope.device.launch import DaemonProcess, spawn_daemon
from veriscope.device.server import EXIT_PROVISIONED
from veriscope.sdk import Client
from veriscope.sdk.certificates import verify_certificate
from veriscope.tools.cli import main as tool
from veriscope.v1 import provisioning_service_pb2, provisioning_service_pb2_grpc


@dataclass
class NewUnit:
    """A unit in first-boot mode, and what its label would say."""

    process: DaemonProcess
    data_dir: Path
    pairing_code: str
    fingerprint: str


def _run_tool(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = tool(list(argv))
    return code, out.getvalue(), err.getvalue()


def _first_boot(data_dir: Path, *extra: str) -> NewUnit:
    process = spawn_daemon(data_dir, "--first-boot", "--no-advertise", *extra)
    text = "".join(process.output)
    code = re.search(r"pairing code ([A-Z0-9-]{19}) ", text)
    fingerprint = re.search(r"fingerprint (sha256:[0-9a-f]{64})", text)
    assert code and fingerprint, text
    return NewUnit(process, data_dir, code.group(1), fingerprint.group(1))


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("ca") / "fleet-ca"
    assert _run_tool("ca", "init", "--out", str(directory))[0] == 0
    return directory


@pytest.fixture
def new_unit(tmp_path: Path) -> Iterator[NewUnit]:
    unit = _first_boot(tmp_path / "data")
    yield unit
    unit.process.stop()


def _nothing_installed(data_dir: Path) -> None:
    for path in ("keys/tls-p256.crt", "keys/signing-ed25519.crt", "keys/fleet-ca.crt", "config.toml"):
        assert not (data_dir / path).exists(), path
    assert not (data_dir / "auth" / "tokens.json").exists()


def test_a_new_unit_is_provisioned_over_the_network_and_then_serves_tls(
    tmp_path: Path, ca_dir: Path, new_unit: NewUnit
) -> None:
    assert "serving only health checks and ProvisioningService" in "".join(new_unit.process.output)
    code, out, err = _run_tool(
        "provision",
        "--device",
        new_unit.process.address,
        "--pairing-code",
        new_unit.pairing_code.lower(),  # read off a label: case and dashes do not matter
        "--fingerprint",
        new_unit.fingerprint.upper().replace("SHA256:", ""),
        "--ca",
        str(ca_dir),
        "--listen",
        "127.0.0.1:50051",
        "--json",
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["changed"] is True and report["admin_token"].startswith("vs_")
    # The unit leaves first-boot mode with the documented exit code, and its pairing code is spent.
    assert new_unit.process.process.wait(timeout=60) == EXIT_PROVISIONED, "".join(new_unit.process.output)
    spent = json.loads((new_unit.data_dir / "auth" / "pairing-code").read_text())
    assert spent["used"] is not None
    keys = new_unit.data_dir / "keys"
    assert (keys / "tls-p256.pem").stat().st_mode & 0o777 == 0o600
    assert keys.stat().st_mode & 0o777 == 0o700

    # The same command line now serves normally, with the configuration provisioning wrote.
    unit = spawn_daemon(new_unit.data_dir, "--first-boot", "--no-advertise", "--auth", "required")
    try:
        assert any("TLS with" in line and report["tls_key_pin"] in line for line in unit.output), unit.output
        ca_file = ca_dir / "fleet-ca.crt"
        with Client(unit.address, ca=ca_file, token=report["admin_token"]) as client:
            assert client.get_device().device_id == report["device_id"]
            client.place_item("tote-classic", "genuine", seed=7)
            result = client.scan("tote-classic")
            document = client.get_scan_certificate(result.scan_id).document
        # The signing key is certified by the fleet CA: its certificates verify against the CA alone.
        certificate = verify_certificate(document, ca_file.read_bytes())
        assert certificate.device_id == report["device_id"]
        assert certificate.trusted_by.startswith("certified by CA CN=Veriscope Fleet CA")

        # A provisioned unit refuses provisioning, even to an admin.
        credentials = grpc.ssl_channel_credentials(root_certificates=ca_file.read_bytes())
        options = [("grpc.ssl_target_name_override", "veriscope-unit")]
        with grpc.secure_channel(unit.address, credentials, options=options) as channel:
            stub = provisioning_service_pb2_grpc.ProvisioningServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.GetUnitIdentity(
                    provisioning_service_pb2.GetUnitIdentityRequest(),
                    metadata=(("authorization", f"Bearer {report['admin_token']}"),),
                    timeout=30,
                )
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION

        # Idempotent: the tool sees a unit of its CA, sends nothing and says so.
        again = _run_tool(
            "provision",
            "--device",
            unit.address,
            "--pairing-code",
            new_unit.pairing_code,
            "--fingerprint",
            new_unit.fingerprint,
            "--ca",
            str(ca_dir),
            "--json",
        )
        assert again[0] == 0, again[2]
        assert json.loads(again[1])["changed"] is False
    finally:
        assert unit.stop() == 0


def test_a_wrong_pairing_code_is_unauthenticated_and_installs_nothing(ca_dir: Path, new_unit: NewUnit) -> None:
    wrong = "AAAA-BBBB-CCCC-DDDD" if new_unit.pairing_code != "AAAA-BBBB-CCCC-DDDD" else "EEEE-FFFF-GGGG-HHHH"
    code, _, err = _run_tool(
        "provision",
        "--device",
        new_unit.process.address,
        "--pairing-code",
        wrong,
        "--fingerprint",
        new_unit.fingerprint,
        "--ca",
        str(ca_dir),
    )
    assert code == 1
    assert "UNAUTHENTICATED" in err and "wrong pairing code" in err
    _nothing_installed(new_unit.data_dir)
    assert new_unit.process.process.poll() is None  # still in first-boot mode


def test_a_wrong_fingerprint_sends_nothing(ca_dir: Path, new_unit: NewUnit) -> None:
    code, _, err = _run_tool(
        "provision",
        "--device",
        new_unit.process.address,
        "--pairing-code",
        new_unit.pairing_code,
        "--fingerprint",
        "sha256:" + "0" * 64,
        "--ca",
        str(ca_dir),
    )
    assert code == 1
    assert "not the first-boot certificate" in err and "Nothing was sent" in err
    _nothing_installed(new_unit.data_dir)
    # The code was not spent or disclosed: it still provisions the unit.
    code, _, err = _run_tool(
        "provision",
        "--device",
        new_unit.process.address,
        "--pairing-code",
        new_unit.pairing_code,
        "--fingerprint",
        new_unit.fingerprint,
        "--ca",
        str(ca_dir),
        "--no-admin-token",
    )
    assert code == 0, err
    assert new_unit.process.process.wait(timeout=60) == EXIT_PROVISIONED
