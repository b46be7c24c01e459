"""The fleet CA: one self-signed X.509 CA that vouches for every unit it provisioned.

``veriscope-tool ca init --out DIR`` creates it; the directory then holds

================ ==============================================================
``fleet-ca.key`` the CA's private key (ECDSA P-256 or Ed25519, PKCS #8 PEM, mode 0600)
``fleet-ca.crt`` its self-signed certificate (``CA:TRUE``, 20 years): give it to clients
                 (``veriscope --ca``) and to certificate verifiers (``--trust``)
================ ==============================================================

The CA issues three kinds of certificate, each for a key it never sees (the
holder sends a signing request, or the public key only):

- a **unit certificate** for a unit's TLS key: ``CN`` = the device id, DNS names
  = the device id and ``veriscope-unit``, extended key usage serverAuth, 5 years;
- a **signer certificate** for a unit's Ed25519 certificate signing key:
  ``CN`` = the device id, key usage digitalSignature, 5 years;
- a **client certificate** for mTLS: ``CN`` = the client's name, extended key
  usage clientAuth, 2 years.

Keep the directory offline when not provisioning: whoever holds ``fleet-ca.key``
can make units and clients that the fleet trusts.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, TypeAlias

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_KEY_FILE = "fleet-ca.key"
"""The CA's private key in the CA directory."""
CA_CERT_FILE = "fleet-ca.crt"
"""The CA's certificate in the CA directory."""
UNIT_SERVER_NAME = "veriscope-unit"
"""The DNS name every unit certificate carries besides the device id; clients check it (the same as
``veriscope.device.identity.UNIT_SERVER_NAME``)."""
DEFAULT_CA_NAME = "Veriscope Fleet CA"
CA_DAYS = 20 * 365 + 5
"""Validity of the CA certificate, in days (20 years)."""
UNIT_DAYS = 5 * 365 + 1
"""Validity of unit and signer certificates, in days (5 years)."""
CLIENT_DAYS = 2 * 365
"""Validity of client certificates, in days (2 years)."""
_BACKDATE = timedelta(minutes=5)
"""Certificates start slightly in the past, so a unit whose clock lags a little accepts them at once."""

KeyType: TypeAlias = Literal["p256", "ed25519"]
CaPrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
CertifiedKey: TypeAlias = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


class CaError(Exception):
    """The CA directory or a request cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class FleetCA:
    """A loaded fleet CA: its key and certificate, and the directory they live in."""

    directory: Path
    key: CaPrivateKey
    certificate: x509.Certificate

    @property
    def certificate_pem(self) -> bytes:
        """The CA certificate, PEM."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def name(self) -> str:
        """The CA's subject, ``"CN=Veriscope Fleet CA"``."""
        return self.certificate.subject.rfc4514_string()

    # --- Creating and loading ---

    @classmethod
    def create(
        cls,
        directory: Path,
        *,
        name: str = DEFAULT_CA_NAME,
        key_type: KeyType = "p256",
        days: int = CA_DAYS,
        now: datetime | None = None,
    ) -> FleetCA:
        """Create a CA in ``directory`` (made mode 0700 if missing): a new key and a self-signed certificate.

        Raises CaError, touching nothing, when the directory already holds a CA key
        or certificate, and when a file cannot be written.
        """
        if not name.strip():
            raise CaError("the CA name must not be empty")
        if days < 1:
            raise CaError(f"the CA must be valid for at least 1 day, got {days}")
        key_path, cert_path = directory / CA_KEY_FILE, directory / CA_CERT_FILE
        for path in (key_path, cert_path):
            if path.exists():
                raise CaError(
                    f"{path} exists already: refusing to overwrite a fleet CA; choose another --out directory"
                )
        key: CaPrivateKey = (
            ed25519.Ed25519PrivateKey.generate() if key_type == "ed25519" else ec.generate_private_key(ec.SECP256R1())
        )
        start = (now or datetime.now(UTC)) - _BACKDATE
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name.strip())])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(key_cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        )
        certificate = builder.sign(key, _hash(key))
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise CaError(f"cannot create the CA directory {directory}: {exc.strerror}") from None
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _write_exclusive(key_path, key_pem, 0o600)
        try:
            _write_exclusive(cert_path, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
        except CaError:
            key_path.unlink()
            raise
        return cls(directory, key, certificate)

    @classmethod
    def load(cls, directory: Path) -> FleetCA:
        """Load the CA of ``directory``.

        Raises CaError naming the file when a file is missing or unreadable, the key
        is open to other users or of another algorithm, the certificate is not a CA
        certificate, or the two do not belong together.
        """
        key_path, cert_path = directory / CA_KEY_FILE, directory / CA_CERT_FILE
        if not key_path.exists() and not cert_path.exists():
            raise CaError(f"{directory} holds no fleet CA (no {CA_KEY_FILE}); create one with 'veriscope-tool ca init'")
        try:
            info = key_path.stat()
            if info.st_mode & 0o077:
                raise CaError(
                    f"the CA key {key_path} is open to other users (mode {stat.S_IMODE(info.st_mode):04o}); "
                    f"run 'chmod 600 {key_path}'"
                )
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except OSError as exc:
            raise CaError(f"cannot read {exc.filename}: {exc.strerror}") from None
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise CaError(f"the fleet CA in {directory} is corrupt ({exc})") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
            raise CaError(f"the CA key {key_path} is a {type(key).__name__.removeprefix('_')}, not ECDSA or Ed25519")
        der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if certificate.public_key().public_bytes(*der) != key.public_key().public_bytes(*der):
            raise CaError(f"the CA certificate {cert_path} does not belong to the key {key_path}")
        if not _is_ca(certificate):
            raise CaError(f"{cert_path} is not a CA certificate (no basicConstraints CA:TRUE)")
        return cls(directory, key, certificate)

    # --- Issuing ---

    def issued(self, certificate: x509.Certificate) -> bool:
        """True when this CA signed ``certificate``."""
        if certificate.issuer != self.certificate.subject:
            return False
        try:
            certificate.verify_directly_issued_by(self.certificate)
        except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
            return False
        return True

    def issue_unit_certificate(
        self,
        request: x509.CertificateSigningRequest,
        device_id: str,
        *,
        days: int = UNIT_DAYS,
        now: datetime | None = None,
    ) -> x509.Certificate:
        """A unit certificate for the TLS key of ``request``: ``CN`` = ``device_id``, serverAuth.

        Raises CaError when the request's signature is invalid or its key is not an EC key.
        """
        public = _requested_key(request, "TLS key")
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise CaError("a unit's TLS key must be an ECDSA key")
        names = [device_id, UNIT_SERVER_NAME] if device_id != UNIT_SERVER_NAME else [UNIT_SERVER_NAME]
        builder = (
            self._builder(public, device_id, days, now)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .add_extension(_key_usage(), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        )
        return builder.sign(self.key, _hash(self.key))

    def issue_signer_certificate(
        self,
        request: x509.CertificateSigningRequest,
        device_id: str,
        *,
        days: int = UNIT_DAYS,
        now: datetime | None = None,
    ) -> x509.Certificate:
        """A signer certificate for the Ed25519 signing key of ``request``: ``CN`` = ``device_id``.

        Raises CaError when the request's signature is invalid or its key is not Ed25519.
        """
        public = _requested_key(request, "signing key")
        if not isinstance(public, ed25519.Ed25519PublicKey):
            raise CaError("a unit's certificate signing key must be an Ed25519 key")
        builder = self._builder(public, device_id, days, now).add_extension(
            _key_usage(content_commitment=True), critical=True
        )
        return builder.sign(self.key, _hash(self.key))

    def issue_client_certificate(
        self, public: CertifiedKey, name: str, *, days: int = CLIENT_DAYS, now: datetime | None = None
    ) -> x509.Certificate:
        """A client certificate for mTLS: ``CN`` = ``name``, clientAuth."""
        if not name.strip():
            raise CaError("the client's name must not be empty")
        builder = (
            self._builder(public, name.strip(), days, now)
            .add_extension(_key_usage(), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        )
        return builder.sign(self.key, _hash(self.key))

    def _builder(
        self, public: CertifiedKey, common_name: str, days: int, now: datetime | None
    ) -> x509.CertificateBuilder:
        start = (now or datetime.now(UTC)) - _BACKDATE
        end = min(start + timedelta(days=days), self.certificate.not_valid_after_utc)
        if end <= start:
            raise CaError(f"the fleet CA certificate expired on {self.certificate.not_valid_after_utc:%Y-%m-%d}")
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )


def create_client_identity(ca: FleetCA, name: str, out: Path, *, days: int = CLIENT_DAYS) -> tuple[Path, Path]:
    """Make a client key (ECDSA P-256) and its certificate for mTLS, as ``out/<name>.key`` (0600) and ``.crt``.

    Returns the two paths. Raises CaError, writing nothing, when either file exists.
    """
    stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in name.strip()) or "client"
    key_path, cert_path = out / f"{stem}.key", out / f"{stem}.crt"
    for path in (key_path, cert_path):
        if path.exists():
            raise CaError(f"{path} exists already: refusing to overwrite it")
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = ca.issue_client_certificate(key.public_key(), name, days=days)
    try:
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise CaError(f"cannot create {out}: {exc.strerror}") from None
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_exclusive(key_path, key_pem, 0o600)
    _write_exclusive(cert_path, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    return key_path, cert_path


def _requested_key(request: x509.CertificateSigningRequest, what: str) -> CertifiedKey:
    if not request.is_signature_valid:
        raise CaError(f"the request for the unit's {what} is not signed by that key")
    public = request.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise CaError(f"the unit's {what} is a {type(public).__name__.removeprefix('_')}")
    return public


def _key_usage(*, key_cert_sign: bool = False, content_commitment: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not key_cert_sign,
        content_commitment=content_commitment,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=key_cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _hash(key: CaPrivateKey) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _write_exclusive(path: Path, data: bytes, mode: int) -> None:
    """Write a new file ``path`` with ``mode``; CaError when it exists or cannot be written."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise CaError(f"{path} exists already: refusing to overwrite it") from None
    except OSError as exc:
        raise CaError(f"cannot write {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            path.unlink()
        raise CaError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
