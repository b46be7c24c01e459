"""The daemon's listener over TLS and mTLS, with plain gRPC clients (the SDK's checks are in tests/test_tls.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from device_daemon import InProcessDaemon
from pki import FakeCA

from veriscope.v1 import device_service_pb2, device_service_pb2_grpc

DEVICE_ID = "VS-TLS00001"
UNIT_NAME = "veriscope-unit"


def _unit(tmp_path: Path, ca: FakeCA, **tls: object) -> InProcessDaemon:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "device_id").write_text(DEVICE_ID + "\n")
    key_path, cert_path = ca.write_unit(tmp_path / "tls", DEVICE_ID)
    return InProcessDaemon(data_dir, tls={"cert_file": str(cert_path), "key_file": str(key_path), **tls})


def _get_device(
    address: str, roots: bytes, name: str = UNIT_NAME, client: tuple[Path, Path] | None = None
) -> device_service_pb2.GetDeviceResponse:
    key_pem, chain_pem = (client[0].read_bytes(), client[1].read_bytes()) if client else (None, None)
    credentials = grpc.ssl_channel_credentials(roots, private_key=key_pem, certificate_chain=chain_pem)
    with grpc.secure_channel(address, credentials, options=[("grpc.ssl_target_name_override", name)]) as channel:
        stub = device_service_pb2_grpc.DeviceServiceStub(channel)
        response: device_service_pb2.GetDeviceResponse = stub.GetDevice(
            device_service_pb2.GetDeviceRequest(), timeout=10
        )
        return response


@pytest.fixture(scope="module")
def ca() -> FakeCA:
    return FakeCA.create()


@pytest.fixture(scope="module")
def tls_unit(tmp_path_factory: pytest.TempPathFactory, ca: FakeCA) -> Iterator[InProcessDaemon]:
    unit = _unit(tmp_path_factory.mktemp("tls"), ca)
    yield unit
    unit.close()


def test_tls_unit_answers_a_client_that_trusts_its_ca(tls_unit: InProcessDaemon, ca: FakeCA) -> None:
    assert tls_unit.daemon.tls
    assert _get_device(tls_unit.address, ca.pem).device.device_id == DEVICE_ID
    # Its device id is a name in the certificate too: a client may insist on this one unit.
    assert _get_device(tls_unit.address, ca.pem, name=DEVICE_ID).device.device_id == DEVICE_ID


def test_tls_unit_refuses_plaintext(tls_unit: InProcessDaemon) -> None:
    with grpc.insecure_channel(tls_unit.address) as channel, pytest.raises(grpc.RpcError) as refused:
        device_service_pb2_grpc.DeviceServiceStub(channel).GetDevice(device_service_pb2.GetDeviceRequest(), timeout=5)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


def test_client_of_another_ca_or_name_does_not_connect(tls_unit: InProcessDaemon, ca: FakeCA) -> None:
    with pytest.raises(grpc.RpcError) as other_ca:
        _get_device(tls_unit.address, FakeCA.create("Other CA").pem)
    assert other_ca.value.code() is grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.RpcError) as other_name:
        _get_device(tls_unit.address, ca.pem, name="VS-SOMEONE-ELSE")
    assert other_name.value.code() is grpc.StatusCode.UNAVAILABLE


def test_mtls_unit_refuses_clients_without_a_certificate_of_its_ca(tmp_path: Path, ca: FakeCA) -> None:
    ca_file = tmp_path / "fleet-ca.crt"
    ca_file.write_bytes(ca.pem)
    unit = _unit(tmp_path, ca, client_ca_file=str(ca_file), require_client_cert=True)
    try:
        assert unit.daemon.transport is not None and unit.daemon.transport.require_client_cert
        with pytest.raises(grpc.RpcError) as without:
            _get_device(unit.address, ca.pem)
        assert without.value.code() is grpc.StatusCode.UNAVAILABLE
        stranger = FakeCA.create("Stranger CA").write_client(tmp_path / "stranger", "laptop")
        with pytest.raises(grpc.RpcError) as foreign:
            _get_device(unit.address, ca.pem, client=stranger)
        assert foreign.value.code() is grpc.StatusCode.UNAVAILABLE
        laptop = ca.write_client(tmp_path / "laptop", "laptop")
        assert _get_device(unit.address, ca.pem, client=laptop).device.device_id == DEVICE_ID
    finally:
        unit.close()
