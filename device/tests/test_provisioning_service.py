"""ProvisioningService in first-boot mode, in process: the pairing code, the checks of what is installed, and
the files it writes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from pki import FakeCA

from veriscope.device.auth.pairing import PAIRING_CODE_KEY, PairingCodeStore, PairingInterceptor, normalize_code
from veriscope.device.auth.ratelimit import RateLimiter
from veriscope.device.certificates import SigningKey
from veriscope.device.provisioning import FirstBootIdentity, Provisioner
from veriscope.device.services.provisioning import ProvisioningServicer
from veriscope.v1 import device_service_pb2, provisioning_service_pb2, provisioning_service_pb2_grpc

DEVICE_ID = "VS-0A1B2C3D"
pb = provisioning_service_pb2


@dataclass
class FirstBoot:
    stub: provisioning_service_pb2_grpc.ProvisioningServiceStub
    channel: grpc.aio.Channel
    data_dir: Path
    code: str
    provisioned: list[bool]

    def metadata(self, code: str | None = None) -> tuple[tuple[str, str], ...]:
        return ((PAIRING_CODE_KEY, self.code if code is None else code),)


def _provisioner(data_dir: Path) -> tuple[PairingCodeStore, str, Provisioner]:
    data_dir.mkdir(parents=True, exist_ok=True)
    codes = PairingCodeStore(data_dir)
    code = codes.create()
    provisioner = Provisioner(data_dir, DEVICE_ID, codes)
    provisioner.prepare()
    return codes, code, provisioner


async def _serve(data_dir: Path, peer_limiter: RateLimiter | None = None) -> tuple[grpc.aio.Server, FirstBoot]:
    codes, code, provisioner = _provisioner(data_dir)
    provisioned: list[bool] = []
    server = grpc.aio.server(interceptors=[PairingInterceptor(codes, peer_limiter=peer_limiter)])
    provisioning_service_pb2_grpc.add_ProvisioningServiceServicer_to_server(
        ProvisioningServicer(provisioner, on_provisioned=lambda: provisioned.append(True)), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = provisioning_service_pb2_grpc.ProvisioningServiceStub(channel)
    return server, FirstBoot(stub, channel, data_dir, code, provisioned)


@pytest.fixture
async def unit(tmp_path: Path) -> AsyncIterator[FirstBoot]:
    server, first_boot = await _serve(tmp_path / "data")
    yield first_boot
    await first_boot.channel.close()
    await server.stop(0)


def _issue(ca: FakeCA, csr_pem: str, device_id: str, *, names: list[str] | None = None) -> x509.Certificate:
    """A certificate of the CA for the key of ``csr_pem`` (ECDSA or Ed25519)."""
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, device_id)]))
        .issuer_name(ca.certificate.subject)
        .public_key(csr.public_key())  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in (names or [device_id, "veriscope-unit"])]),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def _install_request(
    identity: Any, ca: FakeCA, *, signer_ca: FakeCA | None = None, fleet: FakeCA | None = None, **kw: Any
) -> Any:
    unit = _issue(ca, identity.tls_csr_pem, identity.device_id)
    signer = _issue(signer_ca or ca, identity.signing_csr_pem, identity.device_id)
    return pb.InstallUnitIdentityRequest(
        tls_certificate_chain_pem=_pem(unit),
        signing_certificate_pem=_pem(signer),
        fleet_ca_certificate_pem=(fleet or ca).pem.decode(),
        **kw,
    )


def _nothing_installed(data_dir: Path) -> None:
    for path in ("keys/tls-p256.crt", "keys/signing-ed25519.crt", "keys/fleet-ca.crt", "config.toml"):
        assert not (data_dir / path).exists(), path
    assert not (data_dir / "auth" / "tokens.json").exists()


async def test_a_unit_is_provisioned_once_and_the_code_is_then_spent(unit: FirstBoot) -> None:
    ca = FakeCA.create()
    identity = await unit.stub.GetUnitIdentity(pb.GetUnitIdentityRequest(), metadata=unit.metadata())
    assert identity.device_id == DEVICE_ID
    csr = x509.load_pem_x509_csr(identity.tls_csr_pem.encode())
    assert csr.is_signature_valid
    request = _install_request(identity, ca, listen="0.0.0.0:6000", require_client_cert=True, create_admin_token=True)
    installed = await unit.stub.InstallUnitIdentity(request, metadata=unit.metadata())
    assert installed.device_id == DEVICE_ID and installed.admin_token.startswith("vs_")
    assert installed.tls_key_pin == identity.tls_key_pin
    assert unit.provisioned == [True]

    keys = unit.data_dir / "keys"
    chain = x509.load_pem_x509_certificates((keys / "tls-p256.crt").read_bytes())
    assert [c.subject for c in chain] == [chain[0].subject, ca.certificate.subject]
    assert (keys / "fleet-ca.crt").read_bytes() == ca.pem
    assert SigningKey.load_or_create(unit.data_dir).certificate_pem is not None
    config = (unit.data_dir / "config.toml").read_text()
    assert 'listen = "0.0.0.0:6000"' in config and "require_client_cert = true" in config
    assert (unit.data_dir / "config.toml").stat().st_mode & 0o777 == 0o600
    tokens = json.loads((unit.data_dir / "auth" / "tokens.json").read_text())
    assert [t["role"] for t in tokens["tokens"]] == ["admin"]
    assert installed.admin_token not in json.dumps(tokens)  # only its hash is kept

    # The code is spent: the same code is refused from now on.
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await unit.stub.GetUnitIdentity(pb.GetUnitIdentityRequest(), metadata=unit.metadata())
    assert reused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "no longer valid" in (reused.value.details() or "")


@pytest.mark.parametrize(
    ("case", "problem"),
    [
        ("unit_by_other_ca", "not issued by the fleet CA"),
        ("signer_by_other_ca", "not issued by the fleet CA"),
        ("fleet_ca_not_a_ca", "not a CA certificate"),
        ("other_device_id", "not for this unit"),
        ("other_key", "certifies another key"),
        ("garbage", "not a PEM X.509 certificate"),
        ("bad_listen", "configuration would be invalid"),
    ],
)
async def test_what_the_unit_does_not_accept_is_refused_and_nothing_is_written(
    unit: FirstBoot, case: str, problem: str
) -> None:
    ca, forger = FakeCA.create(), FakeCA.create("Forged CA")
    identity = await unit.stub.GetUnitIdentity(pb.GetUnitIdentityRequest(), metadata=unit.metadata())
    request = _install_request(identity, ca, create_admin_token=True)
    if case == "unit_by_other_ca":
        # A certificate of the right key and name, by a CA whose certificate is not the one sent.
        request.tls_certificate_chain_pem = _pem(_issue(forger, identity.tls_csr_pem, DEVICE_ID))
    elif case == "signer_by_other_ca":
        request.signing_certificate_pem = _pem(_issue(forger, identity.signing_csr_pem, DEVICE_ID))
    elif case == "fleet_ca_not_a_ca":
        request.fleet_ca_certificate_pem = request.tls_certificate_chain_pem
    elif case == "other_device_id":
        request.tls_certificate_chain_pem = _pem(
            _issue(ca, identity.tls_csr_pem, "VS-FFFFFFFF", names=["VS-FFFFFFFF", "veriscope-unit"])
        )
    elif case == "other_key":
        _, other = ca.issue(DEVICE_ID)
        request.tls_certificate_chain_pem = _pem(other)
    elif case == "garbage":
        request.signing_certificate_pem = "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"
    elif case == "bad_listen":
        request.listen = "nowhere"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await unit.stub.InstallUnitIdentity(request, metadata=unit.metadata())
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert problem in (refused.value.details() or "")
    _nothing_installed(unit.data_dir)
    assert unit.provisioned == []
    # The code is not spent by a refused installation.
    await unit.stub.GetUnitIdentity(pb.GetUnitIdentityRequest(), metadata=unit.metadata())


async def test_a_wrong_or_missing_pairing_code_is_unauthenticated(unit: FirstBoot) -> None:
    ca = FakeCA.create()
    identity = await unit.stub.GetUnitIdentity(pb.GetUnitIdentityRequest(), metadata=unit.metadata())
    for metadata in (unit.metadata("ABCD-EFGH-JKMN-PQRS"), ()):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await unit.stub.InstallUnitIdentity(_install_request(identity, ca), metadata=metadata)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    _nothing_installed(unit.data_dir)
    # Case and dashes do not matter: a code read off a label.
    await unit.stub.GetUnitIdentity(
        pb.GetUnitIdentityRequest(), metadata=unit.metadata(normalize_code(unit.code).lower())
    )


async def test_first_boot_serves_nothing_but_provisioning(unit: FirstBoot) -> None:
    get_device = unit.channel.unary_unary(
        "/veriscope.v1.DeviceService/GetDevice",
        request_serializer=device_service_pb2.GetDeviceRequest.SerializeToString,
        response_deserializer=device_service_pb2.GetDeviceResponse.FromString,
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await get_device(device_service_pb2.GetDeviceRequest(), metadata=unit.metadata())
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "first-boot mode" in (refused.value.details() or "")


async def test_a_peer_that_keeps_guessing_is_rate_limited(tmp_path: Path) -> None:
    server, unit = await _serve(tmp_path / "data", peer_limiter=RateLimiter(0.001, 2))
    try:
        codes = []
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await unit.stub.GetUnitIdentity(pb.GetUnitIdentityRequest(), metadata=unit.metadata("WRONG"))
            codes.append(refused.value.code())
        assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 2 + [grpc.StatusCode.RESOURCE_EXHAUSTED]
    finally:
        await unit.channel.close()
        await server.stop(0)


async def test_a_provisioned_unit_refuses_provisioning() -> None:
    servicer = ProvisioningServicer(None)

    class Context:
        async def abort(self, code: grpc.StatusCode, details: str) -> None:
            raise RuntimeError(code, details)

    with pytest.raises(RuntimeError) as refused:
        await servicer.GetUnitIdentity(pb.GetUnitIdentityRequest(), Context())  # type: ignore[arg-type]
    assert refused.value.args[0] == grpc.StatusCode.FAILED_PRECONDITION


def test_the_pairing_code_is_stored_hashed_and_spent_once(tmp_path: Path) -> None:
    store = PairingCodeStore(tmp_path)
    code = store.create()
    assert len(normalize_code(code)) == 16 and code.count("-") == 3
    text = store.path.read_text()
    assert normalize_code(code) not in text and code not in text
    assert store.path.stat().st_mode & 0o777 == 0o600
    assert store.path.parent.stat().st_mode & 0o777 == 0o700
    assert store.ensure() is None  # an unspent code is kept
    store.verify(code)
    store.invalidate()
    state = store.state()
    assert state is not None and state.used is not None
    with pytest.raises(Exception, match="no longer valid"):
        store.verify(code)
    fresh = store.ensure()  # a spent code is replaced (a unit reset to first boot)
    assert fresh is not None and fresh != code


def test_the_pairing_code_command_prints_a_code_and_the_fingerprint(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("veriscope-device")
    done = subprocess.run(
        [str(exe), "pairing-code", "--data-dir", str(tmp_path), "--json"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["fingerprint"] == FirstBootIdentity.load_or_create(tmp_path).fingerprint
    PairingCodeStore(tmp_path).verify(printed["pairing_code"])
    # The first-boot key is private, and its certificate is kept across starts (the label stays true).
    assert (tmp_path / "keys" / "first-boot.pem").stat().st_mode & 0o777 == 0o600
    (tmp_path / "keys" / "tls-p256.crt").write_text("provisioned")
    refused = subprocess.run(
        [str(exe), "pairing-code", "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 1 and "provisioned" in refused.stderr
