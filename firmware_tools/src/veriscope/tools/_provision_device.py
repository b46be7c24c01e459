"""Provisioning a unit over the network, in its first-boot mode: ``veriscope-tool provision --device ADDR``.

The unit (``veriscope-device serve --first-boot``) serves ``ProvisioningService``
over TLS with a self-signed first-boot certificate. Both sides authenticate:

- the **fingerprint** (the SHA-256 of that certificate, printed with the pairing
  code) proves the unit: before anything is sent, one TLS handshake fetches the
  unit's certificate and compares it; on a mismatch nothing, not even the pairing
  code, leaves this machine. The gRPC channel then trusts exactly that
  certificate, so no other can take its place between the two connections;
- the **pairing code** (``veriscope-pairing-code`` metadata) proves the technician.

Then: ``GetUnitIdentity`` gives the device id and certificate signing requests of
the unit's TLS and signing keys (made on the unit, never sent); the fleet CA
issues both certificates here; ``InstallUnitIdentity`` sends them with the CA
certificate and the listener, and the unit checks everything, installs it,
creates an admin token (returned once), spends the pairing code and restarts in
normal mode.

A unit that presents a certificate issued by this fleet CA is provisioned
already: the run changes nothing and says so (idempotent).
"""

from __future__ import annotations

import hashlib
import socket
import ssl
from dataclasses import dataclass
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from veriscope.tools.ca import CaError, FleetCA
from veriscope.v1 import provisioning_service_pb2 as pb
from veriscope.v1 import provisioning_service_pb2_grpc as pb_grpc

PAIRING_CODE_KEY = "veriscope-pairing-code"
"""The call metadata that carries the pairing code (as the unit's ``veriscope.device.auth.pairing`` reads it)."""
FINGERPRINT_PREFIX = "sha256:"
DEFAULT_TIMEOUT_S = 30.0
"""Deadline of each call, in seconds."""


class DeviceProvisionError(Exception):
    """Provisioning over the network failed or was refused; the message says what and how to fix it.

    Attributes:
        sent: False when nothing was sent to the unit (for example, the fingerprint did not match).
    """

    def __init__(self, message: str, *, sent: bool = True) -> None:
        super().__init__(message)
        self.sent = sent


@dataclass(frozen=True)
class DeviceReport:
    """The outcome of provisioning a unit over the network.

    Attributes:
        address: The unit's HOST:PORT.
        device_id: The unit's device id.
        changed: False when the unit was provisioned by this CA already (nothing was sent).
        ca_name: The fleet CA's subject.
        fingerprint: The fingerprint of the certificate the unit presented.
        tls_key_pin: The pin of the unit's TLS key, ``"sha256:<hex>"``.
        signing_key_sha256: SHA-256 of the raw signing public key; empty when unchanged.
        listen: The listener the unit now serves TLS on; empty when unchanged.
        config_file: The configuration the unit wrote; empty when unchanged.
        admin_token: The admin token, shown once; empty when none was created.
        admin_token_id: Its id; empty when none was created.
    """

    address: str
    device_id: str
    changed: bool
    ca_name: str
    fingerprint: str
    tls_key_pin: str = ""
    signing_key_sha256: str = ""
    listen: str = ""
    config_file: str = ""
    admin_token: str = ""
    admin_token_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The report for ``--json``."""
        return {
            "device": self.address,
            "device_id": self.device_id,
            "changed": self.changed,
            "ca": self.ca_name,
            "fingerprint": self.fingerprint,
            "tls_key_pin": self.tls_key_pin,
            "signing_key_sha256": self.signing_key_sha256,
            "listen": self.listen,
            "config_file": self.config_file,
            "admin_token": self.admin_token or None,
            "admin_token_id": self.admin_token_id or None,
        }


def normalize_fingerprint(text: str) -> str:
    """``text`` as ``"sha256:<64 lowercase hex>"``; the prefix, case and colons between bytes are optional.

    Raises ValueError for anything else.
    """
    value = text.strip()
    if value.lower().startswith(FINGERPRINT_PREFIX):
        value = value[len(FINGERPRINT_PREFIX) :]
    digits = value.replace(":", "").lower()
    if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
        raise ValueError(f"the fingerprint must be 'sha256:' and 64 hex digits, as the unit prints it; got {text!r}")
    return FINGERPRINT_PREFIX + digits


def certificate_fingerprint(certificate: x509.Certificate) -> str:
    """``"sha256:"`` and the hex SHA-256 of the certificate's DER."""
    return FINGERPRINT_PREFIX + hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def fetch_certificate(address: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> x509.Certificate:
    """The certificate the unit at ``address`` (HOST:PORT) presents, fetched without checking it.

    Raises DeviceProvisionError when the unit cannot be reached or does not speak TLS.
    """
    host, port = _split(address)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # Not verified here: the caller compares the certificate with the fingerprint, which is the whole check.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection((host, port), timeout=timeout_s) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except ssl.SSLError as exc:
        raise DeviceProvisionError(
            f"TLS handshake with the unit at {address} failed ({exc.reason or exc}): is it running "
            "'veriscope-device serve --first-boot'?",
            sent=False,
        ) from None
    except OSError as exc:
        raise DeviceProvisionError(f"cannot reach the unit at {address}: {exc.strerror or exc}", sent=False) from None
    if not der:
        raise DeviceProvisionError(f"the unit at {address} presented no certificate", sent=False)
    return x509.load_der_x509_certificate(der)


def provision_device(
    address: str,
    pairing_code: str,
    fingerprint: str,
    ca: FleetCA,
    *,
    listen: str | None = None,
    require_client_cert: bool = False,
    admin_token: bool = True,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> DeviceReport:
    """Provision the unit in first-boot mode at ``address`` with the fleet CA ``ca`` (see the module docstring).

    Args:
        address: The unit's HOST:PORT.
        pairing_code: The unit's one-time pairing code.
        fingerprint: The SHA-256 of the unit's first-boot certificate, as it printed it.
        ca: The fleet CA that issues the unit's certificates.
        listen: The listener the provisioned unit serves on; None means the unit's default, ``0.0.0.0:50051``.
        require_client_cert: True makes the unit require client certificates of the fleet CA (mTLS).
        admin_token: True asks the unit for an admin API token, returned once.
        timeout_s: Deadline of each call, in seconds.

    Raises:
        ValueError: The fingerprint is malformed.
        DeviceProvisionError: The unit is not the one the fingerprint names (nothing is sent), cannot be reached,
            or refused (wrong pairing code, a certificate it does not accept, provisioned already).
    """
    expected = normalize_fingerprint(fingerprint)
    presented = fetch_certificate(address, timeout_s)
    actual = certificate_fingerprint(presented)
    if actual != expected:
        if ca.issued(presented):
            names = _names(presented)
            return DeviceReport(address, names[0] if names else "", False, ca.name, actual, _key_pin(presented))
        raise DeviceProvisionError(
            f"the unit at {address} presented the certificate {actual} ({presented.subject.rfc4514_string()}), not "
            f"the first-boot certificate {expected}: it may not be the unit you mean, or someone is in between. "
            "Nothing was sent. Check the fingerprint on the unit's label or in its first-boot log",
            sent=False,
        )
    names = _names(presented)
    credentials = grpc.ssl_channel_credentials(root_certificates=presented.public_bytes(serialization.Encoding.PEM))
    options = [("grpc.ssl_target_name_override", names[0])] if names else []
    metadata = ((PAIRING_CODE_KEY, pairing_code.strip()),)
    with grpc.secure_channel(address, credentials, options=options) as channel:
        stub = pb_grpc.ProvisioningServiceStub(channel)
        identity = _call(stub.GetUnitIdentity, pb.GetUnitIdentityRequest(), metadata, timeout_s, address)
        device_id = identity.device_id
        try:
            tls_csr = x509.load_pem_x509_csr(identity.tls_csr_pem.encode("ascii"))
            signing_csr = x509.load_pem_x509_csr(identity.signing_csr_pem.encode("ascii"))
        except ValueError as exc:
            raise DeviceProvisionError(f"the unit sent a malformed certificate signing request ({exc})") from None
        try:
            unit_cert = ca.issue_unit_certificate(tls_csr, device_id)
            signer_cert = ca.issue_signer_certificate(signing_csr, device_id)
        except CaError as exc:
            raise DeviceProvisionError(f"the fleet CA refused the unit's request: {exc}") from None
        pem = serialization.Encoding.PEM
        request = pb.InstallUnitIdentityRequest(
            tls_certificate_chain_pem=(unit_cert.public_bytes(pem) + ca.certificate_pem).decode("ascii"),
            signing_certificate_pem=signer_cert.public_bytes(pem).decode("ascii"),
            fleet_ca_certificate_pem=ca.certificate_pem.decode("ascii"),
            listen=listen or "",
            require_client_cert=require_client_cert,
            create_admin_token=admin_token,
        )
        installed = _call(stub.InstallUnitIdentity, request, metadata, timeout_s, address)
    return DeviceReport(
        address=address,
        device_id=installed.device_id,
        changed=True,
        ca_name=ca.name,
        fingerprint=actual,
        tls_key_pin=installed.tls_key_pin,
        signing_key_sha256=installed.signing_key_sha256,
        listen=installed.listen,
        config_file=installed.config_file,
        admin_token=installed.admin_token,
        admin_token_id=installed.admin_token_id,
    )


def _call(method: Any, request: Any, metadata: Any, timeout_s: float, address: str) -> Any:
    try:
        return method(request, metadata=metadata, timeout=timeout_s)
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
        details = exc.details() if hasattr(exc, "details") else str(exc)
        raise DeviceProvisionError(f"the unit at {address} refused: {code.name}: {details}") from None


def _split(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise DeviceProvisionError(f"--device must be HOST:PORT, got {address!r}", sent=False)
    return host.removeprefix("[").removesuffix("]"), int(port)


def _names(certificate: x509.Certificate) -> list[str]:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = [str(name) for name in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        dns = []
    common = [str(a.value) for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return common + [name for name in dns if name not in common]


def _key_pin(certificate: x509.Certificate) -> str:
    der = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return FINGERPRINT_PREFIX + hashlib.sha256(der).hexdigest()
