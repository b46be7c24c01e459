"""First-boot provisioning on the unit: the first-boot TLS identity, the unit's certificate requests, and the
checked installation of what the fleet CA issued.

An unprovisioned unit (no ``[tls] cert_file`` and no ``DATA_DIR/keys/tls-p256.crt``)
started with ``veriscope-device serve --first-boot`` serves over TLS with a
self-signed **first-boot certificate** of its own key:

======================== =============================================================
``keys/first-boot.pem``  the first-boot key, ECDSA P-256, mode 0600
``keys/first-boot.crt``  its self-signed certificate (``CN=veriscope-first-boot``);
                         its SHA-256, the *fingerprint*, is printed with the pairing code
======================== =============================================================

Both are made once and kept, so the fingerprint on a unit's label stays true
across restarts. The technician's tool pins the fingerprint (the unit is the
one on the bench) and sends the pairing code (the technician holds the unit).

:class:`Provisioner` does the two steps of ``ProvisioningService``:

1. :meth:`~Provisioner.unit_identity`: the device id and certificate signing
   requests of the TLS key and of the Ed25519 signing key, both made on the unit
   (they never leave it);
2. :meth:`~Provisioner.install`: checks every certificate (it certifies this
   unit's key, is issued by the given fleet CA, for this device id, and is valid
   now), then writes, each file atomically: the signer certificate, the fleet CA
   certificate, ``DATA_DIR/config.toml``, an admin token if asked, and last the
   TLS certificate, whose presence makes the unit provisioned. It then spends the
   pairing code.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from veriscope.device.auth.pairing import PairingCodeStore
from veriscope.device.certificates import SIGNER_CERTIFICATE_FILE, SigningKey
from veriscope.device.config import Config, dump_toml
from veriscope.device.errors import FailedPrecondition, IdentityError, InvalidArgument, VeriscopeError
from veriscope.device.fsutil import write_atomic
from veriscope.device.identity import (
    FLEET_CA_FILE,
    KEY_DIR,
    TLS_CERT_FILE,
    TLS_KEY_FILE,
    UNIT_SERVER_NAME,
    certificate_names,
    certificate_request,
    check_unit_certificate,
    create_tls_key,
    ensure_keys_dir,
    load_tls_key,
    public_key_pin,
    write_certificate_file,
)

FIRST_BOOT_KEY_FILE = "first-boot.pem"
"""The first-boot TLS key in ``DATA_DIR/keys``: ECDSA P-256, mode 0600."""
FIRST_BOOT_CERT_FILE = "first-boot.crt"
"""Its self-signed certificate in ``DATA_DIR/keys``."""
FIRST_BOOT_SERVER_NAME = "veriscope-first-boot"
"""The name in every first-boot certificate; the provisioning tool checks it instead of the address."""
FIRST_BOOT_DAYS = 20 * 365
"""Validity of a first-boot certificate, in days: it lives on the unit's label."""
CONFIG_FILE = "config.toml"
"""The configuration provisioning writes in the data directory."""
DEFAULT_LISTEN = "0.0.0.0:50051"
"""The listener of a provisioned unit when the installer names none."""
ADMIN_TOKEN_NAME = "provisioning"
"""The name of the admin token provisioning creates, unless the installer names it."""
FINGERPRINT_PREFIX = "sha256:"


def certificate_fingerprint(certificate: x509.Certificate) -> str:
    """``"sha256:"`` and the lowercase hex SHA-256 of the certificate's DER: what the provisioning tool pins."""
    return FINGERPRINT_PREFIX + hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def is_provisioned(config: Config, data_dir: Path) -> bool:
    """True when the unit has a TLS identity: ``[tls] cert_file``, or the provisioned ``keys/tls-p256.crt``."""
    return bool(config.tls.cert_file) or (data_dir / KEY_DIR / TLS_CERT_FILE).exists()


@dataclass(frozen=True)
class FirstBootIdentity:
    """The first-boot key and its self-signed certificate.

    Attributes:
        key_path: The key file.
        cert_path: The certificate file.
        certificate: The certificate.
        key_pem: The key, PEM.
    """

    key_path: Path
    cert_path: Path
    certificate: x509.Certificate
    key_pem: bytes

    @property
    def cert_pem(self) -> bytes:
        """The certificate, PEM."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def fingerprint(self) -> str:
        """The certificate's fingerprint, ``"sha256:<hex>"``."""
        return certificate_fingerprint(self.certificate)

    @classmethod
    def load_or_create(cls, data_dir: Path, *, now: datetime | None = None) -> FirstBootIdentity:
        """Load ``keys/first-boot.pem`` and ``first-boot.crt``, making them the first time (and a certificate
        again when it does not certify the key).

        Raises IdentityError naming the file when one cannot be read or written.
        """
        keys = ensure_keys_dir(data_dir)
        key_path, cert_path = keys / FIRST_BOOT_KEY_FILE, keys / FIRST_BOOT_CERT_FILE
        create_tls_key(key_path)
        key = load_tls_key(key_path)
        certificate: x509.Certificate | None = None
        with contextlib.suppress(OSError, ValueError):
            certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if certificate is None or public_key_pin(certificate) != public_key_pin(key):
            certificate = _self_signed(key, now or datetime.now(UTC))
            write_certificate_file(cert_path, certificate.public_bytes(serialization.Encoding.PEM))
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return cls(key_path, cert_path, certificate, key_pem)


def _self_signed(key: Any, now: datetime) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, FIRST_BOOT_SERVER_NAME)])
    start = now - timedelta(minutes=5)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=FIRST_BOOT_DAYS))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(FIRST_BOOT_SERVER_NAME)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )


@dataclass(frozen=True)
class UnitIdentity:
    """What the fleet CA needs to certify the unit (``GetUnitIdentity``)."""

    device_id: str
    """The unit's device id: the name its certificates must carry."""
    tls_csr_pem: str
    """A certificate signing request of the TLS key, PEM."""
    signing_csr_pem: str
    """A certificate signing request of the Ed25519 signing key, PEM."""
    signing_public_key_pem: str
    """The signing public key, PEM SubjectPublicKeyInfo."""
    tls_key_pin: str
    """The TLS key's pin, ``"sha256:<hex>"``."""


@dataclass(frozen=True)
class InstallRequest:
    """What the installer sends (``InstallUnitIdentity``); see the proto for each field."""

    tls_certificate_chain_pem: str
    signing_certificate_pem: str
    fleet_ca_certificate_pem: str
    listen: str = ""
    require_client_cert: bool = False
    create_admin_token: bool = False
    admin_token_name: str = ""


@dataclass(frozen=True)
class InstallResult:
    """What :meth:`Provisioner.install` installed."""

    device_id: str
    tls_key_pin: str
    signing_key_sha256: str
    listen: str
    config_file: Path
    admin_token: str = ""
    """The admin token, shown this once; empty when none was asked for."""
    admin_token_id: str = ""


class Provisioner:
    """The unit side of first-boot provisioning, for one data directory.

    Args:
        data_dir: The unit's data directory.
        device_id: The unit's device id.
        codes: The unit's pairing code, spent when installation succeeds.
        config: The daemon's configuration: a unit with ``[tls] cert_file`` counts as provisioned.
    """

    def __init__(self, data_dir: Path, device_id: str, codes: PairingCodeStore, config: Config | None = None) -> None:
        self.data_dir = data_dir.resolve()
        self.device_id = device_id
        self.config_file = self.data_dir / CONFIG_FILE
        self._codes = codes
        self._config = config or Config()
        self._lock = threading.Lock()
        self._keys = self.data_dir / KEY_DIR

    @property
    def provisioned(self) -> bool:
        """True when the unit has a TLS identity."""
        return is_provisioned(self._config, self.data_dir)

    def prepare(self) -> None:
        """Make the TLS key and the signing key when missing. Raises IdentityError or SigningKeyError."""
        ensure_keys_dir(self.data_dir)
        create_tls_key(self._keys / TLS_KEY_FILE)
        SigningKey.load_or_create(self.data_dir)

    def unit_identity(self) -> UnitIdentity:
        """The device id and certificate requests of the unit's keys (made now when missing).

        Raises FailedPrecondition when the unit is provisioned already.
        """
        self._refuse_if_provisioned()
        self.prepare()
        tls_key = load_tls_key(self._keys / TLS_KEY_FILE)
        signing = SigningKey.load_or_create(self.data_dir)
        pem = serialization.Encoding.PEM
        return UnitIdentity(
            device_id=self.device_id,
            tls_csr_pem=certificate_request(tls_key, self.device_id).public_bytes(pem).decode("ascii"),
            signing_csr_pem=certificate_request(signing.private_key, self.device_id).public_bytes(pem).decode("ascii"),
            signing_public_key_pem=signing.public_key_pem,
            tls_key_pin=public_key_pin(tls_key),
        )

    def install(self, request: InstallRequest, *, now: datetime | None = None) -> InstallResult:
        """Check what the fleet CA issued and install it with the configuration; then spend the pairing code.

        Nothing is written unless every check passes.

        Raises:
            FailedPrecondition: The unit is provisioned already.
            InvalidArgument: A certificate is malformed, certifies another key, is not issued by the given CA,
                names another unit, or is not valid now; or the listener or token name is invalid.
            IdentityError, SigningKeyError, TokenStoreError, PairingCodeError: A file cannot be written.
        """
        when = now or datetime.now(UTC)
        with self._lock:
            self._refuse_if_provisioned()
            self.prepare()
            ca = _fleet_ca(request.fleet_ca_certificate_pem, when)
            tls_key = load_tls_key(self._keys / TLS_KEY_FILE)
            chain = _certificates(request.tls_certificate_chain_pem, "tls_certificate_chain_pem")
            unit = chain[0]
            try:
                check_unit_certificate(unit, tls_key, self.device_id, Path("tls_certificate_chain_pem"), when)
            except IdentityError as exc:
                raise InvalidArgument(str(exc)) from None
            if UNIT_SERVER_NAME not in certificate_names(unit):
                raise InvalidArgument(
                    f"the unit certificate does not carry the name {UNIT_SERVER_NAME!r}, which clients check"
                )
            _check_issued(unit, ca, "the unit certificate")
            signing = SigningKey.load_or_create(self.data_dir)
            signer = _certificates(request.signing_certificate_pem, "signing_certificate_pem")[0]
            _check_signer(signer, signing, self.device_id, when)
            _check_issued(signer, ca, "the signer certificate")
            listen = request.listen or DEFAULT_LISTEN
            config_text = self._config_text(listen, request.require_client_cert)
            name = request.admin_token_name or ADMIN_TOKEN_NAME

            pem = serialization.Encoding.PEM
            ca_pem = ca.public_bytes(pem)
            write_certificate_file(self._keys / SIGNER_CERTIFICATE_FILE, signer.public_bytes(pem))
            write_certificate_file(self._keys / FLEET_CA_FILE, ca_pem)
            _write_private(self.config_file, config_text.encode("utf-8"))
            token, token_id = "", ""
            if request.create_admin_token:
                from veriscope.device.auth.roles import Role
                from veriscope.device.auth.tokens import TokenStore

                issued = TokenStore(self.data_dir).create(Role.ADMIN, name=name)
                token, token_id = issued.token, issued.record.id
            # Written last: its presence is what makes the unit provisioned.
            write_certificate_file(self._keys / TLS_CERT_FILE, unit.public_bytes(pem) + ca_pem)
            self._codes.invalidate()
            return InstallResult(
                device_id=self.device_id,
                tls_key_pin=public_key_pin(tls_key),
                signing_key_sha256=signing.sha256,
                listen=listen,
                config_file=self.config_file,
                admin_token=token,
                admin_token_id=token_id,
            )

    def _refuse_if_provisioned(self) -> None:
        if self.provisioned:
            raise FailedPrecondition(
                f"unit {self.device_id} is provisioned already; provisioning over the network is for new units "
                f"only: re-provision it on the unit with 'veriscope-tool provision --data-dir {self.data_dir} "
                "--ca CA_DIR' (add --rotate for a new TLS key)"
            )

    def _config_text(self, listen: str, require_client_cert: bool) -> str:
        """The new ``config.toml``: the current one's keys, with the listener, data dir and ``[tls]`` set."""
        try:
            existing = tomllib.loads(self.config_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            existing = {}
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            existing = {}  # an unreadable file is replaced whole: provisioning owns it
        document = {k: dict(v) if isinstance(v, dict) else v for k, v in existing.items()}
        document.setdefault("server", {})["listen"] = listen
        document.setdefault("device", {})["data_dir"] = str(self.data_dir)
        tls = document.setdefault("tls", {})
        tls.update(
            cert_file=f"{KEY_DIR}/{TLS_CERT_FILE}",
            key_file=f"{KEY_DIR}/{TLS_KEY_FILE}",
            require_client_cert=require_client_cert,
        )
        try:
            Config().with_overrides(**document)
            text = dump_toml(document)
        except (VeriscopeError, ValueError) as exc:
            raise InvalidArgument(f"the configuration would be invalid: {exc}") from None
        return (
            "# Veriscope unit configuration, written by first-boot provisioning. Start the daemon with:\n"
            f"# veriscope-device serve --config {self.config_file}\n\n" + text
        )


# --- Checks ------------------------------------------------------------------------------------------------------


def _certificates(pem: str, field: str) -> list[x509.Certificate]:
    if not pem.strip():
        raise InvalidArgument(f"{field} is empty: it must hold a PEM certificate")
    try:
        return x509.load_pem_x509_certificates(pem.encode("utf-8"))
    except ValueError as exc:
        raise InvalidArgument(f"{field} is not a PEM X.509 certificate ({exc})") from None


def _fleet_ca(pem: str, now: datetime) -> x509.Certificate:
    ca = _certificates(pem, "fleet_ca_certificate_pem")[0]
    try:
        is_ca = ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise InvalidArgument("fleet_ca_certificate_pem is not a CA certificate (no basicConstraints CA:TRUE)")
    if not ca.not_valid_before_utc <= now <= ca.not_valid_after_utc:
        raise InvalidArgument(
            f"the fleet CA certificate is valid from {ca.not_valid_before_utc:%Y-%m-%d} to "
            f"{ca.not_valid_after_utc:%Y-%m-%d}, not now ({now:%Y-%m-%d} by the unit's clock)"
        )
    return ca


def _check_issued(certificate: x509.Certificate, ca: x509.Certificate, what: str) -> None:
    try:
        if certificate.issuer != ca.subject:
            raise InvalidSignature
        certificate.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        raise InvalidArgument(
            f"{what} ({certificate.subject.rfc4514_string()}, issued by {certificate.issuer.rfc4514_string()}) is "
            f"not issued by the fleet CA given ({ca.subject.rfc4514_string()})"
        ) from None


def _check_signer(certificate: x509.Certificate, signing: SigningKey, device_id: str, now: datetime) -> None:
    public = certificate.public_key()
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    if not isinstance(public, ed25519.Ed25519PublicKey) or public.public_bytes(*raw) != signing.public_key_raw:
        raise InvalidArgument("the signer certificate certifies another key than this unit's signing key")
    names = certificate_names(certificate)
    if device_id not in names:
        raise InvalidArgument(
            f"the signer certificate is issued for {', '.join(names) or 'no name'}, not for this unit {device_id!r}"
        )
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise InvalidArgument("the signer certificate is not valid now (check the clocks of the unit and the CA)")


def _write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically, mode 0600."""
    try:
        write_atomic(path, data, mode=0o600)
    except OSError as exc:
        raise IdentityError(f"cannot write {path}: {exc.strerror}") from None
