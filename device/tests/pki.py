"""A throwaway fleet CA for the TLS tests: CA, unit and client certificates made with ``cryptography``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

UNIT_NAME = "veriscope-unit"


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The key as unencrypted PKCS #8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def cert_pem(certificate: x509.Certificate) -> bytes:
    """The certificate as PEM."""
    return certificate.public_bytes(serialization.Encoding.PEM)


@dataclass
class FakeCA:
    """A self-signed ECDSA P-256 CA that issues unit and client certificates."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def create(cls, name: str = "Test Fleet CA") -> FakeCA:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.now(UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, certificate)

    @property
    def pem(self) -> bytes:
        """The CA certificate, PEM."""
        return cert_pem(self.certificate)

    def issue(
        self,
        common_name: str,
        *,
        names: list[str] | None = None,
        client: bool = False,
        key: ec.EllipticCurvePrivateKey | None = None,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """A new key (or ``key``) and a certificate for it: a unit certificate (serverAuth, DNS names ``names``,
        default the common name and ``veriscope-unit``) or, with ``client``, a client certificate."""
        key = key or ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - timedelta(days=1))
            .not_valid_after(not_after or now + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        if not client:
            dns = names if names is not None else [common_name, UNIT_NAME]
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns]), critical=False)
        return key, builder.sign(self.key, hashes.SHA256())

    def write_unit(self, directory: Path, device_id: str, **kw: object) -> tuple[Path, Path]:
        """Write a unit key (mode 0600) and its certificate chain (unit, then CA) to ``directory``."""
        key, certificate = self.issue(device_id, **kw)  # type: ignore[arg-type]
        return write_pair(directory, "unit", key, cert_pem(certificate) + self.pem)

    def write_client(self, directory: Path, name: str) -> tuple[Path, Path]:
        """Write a client key (mode 0600) and its certificate to ``directory``."""
        key, certificate = self.issue(name, client=True)
        return write_pair(directory, name, key, cert_pem(certificate))


def write_pair(directory: Path, stem: str, key: ec.EllipticCurvePrivateKey, chain: bytes) -> tuple[Path, Path]:
    """``directory/<stem>.key`` (0600) and ``<stem>.crt``; returns (key path, certificate path)."""
    directory.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = directory / f"{stem}.key", directory / f"{stem}.crt"
    key_path.write_bytes(key_pem(key))
    key_path.chmod(0o600)
    cert_path.write_bytes(chain)
    return key_path, cert_path
