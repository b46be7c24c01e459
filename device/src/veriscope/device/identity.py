"""The unit's TLS identity, and how its gRPC listener is secured.

The identity lives in ``DATA_DIR/keys`` (mode 0700), beside the certificate
signing key (:mod:`veriscope.device.certificates`):

==================== ==================================================================
``tls-p256.pem``     the TLS key: ECDSA P-256, unencrypted PKCS #8 PEM, mode 0600. It is
                     created on the unit and never copied off it.
``tls-p256.crt``     the unit's X.509 certificate for that key, issued by the fleet CA
                     (``CN`` and a DNS name = the device id, plus the DNS name
                     ``veriscope-unit``), followed by the fleet CA's certificate.
``fleet-ca.crt``     the fleet CA's certificate: with mTLS on, clients must present a
                     certificate it issued.
==================== ==================================================================

``veriscope-tool provision`` creates the key and installs the certificates.

The listener's rules:

- TLS is used whenever it is configured: by ``[tls] cert_file`` and ``key_file``
  (``--tls-cert``/``--tls-key``), else by the provisioned files above.
- Without TLS the daemon serves plaintext only on loopback (``127.0.0.0/8``,
  ``::1``, ``localhost``) or a ``unix:`` socket; any other listener refuses to
  start, saying how to provision the unit.
- mTLS is optional: ``[tls] require_client_cert`` (or ``--client-ca``) makes the
  handshake refuse clients without a certificate issued by ``client_ca_file``
  (by default the provisioned ``fleet-ca.crt``).

At start the key and certificate are checked: the key is private (no permission
bit for group or others), the certificate certifies that key, is valid now and is
issued for this device id. Every refusal raises :class:`IdentityError` naming the
file and the fix; a certificate that expires within 30 days only logs a warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeAlias

import grpc
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from veriscope.device.config import Config
from veriscope.device.errors import ConfigError, IdentityError

_log = logging.getLogger("veriscope.device.identity")

KEY_DIR = "keys"
"""Directory under the data directory that holds the unit's keys and certificates."""
TLS_KEY_FILE = "tls-p256.pem"
"""The TLS key: an unencrypted PKCS #8 PEM ECDSA P-256 private key, mode 0600."""
TLS_CERT_FILE = "tls-p256.crt"
"""The unit's certificate for the TLS key, then the fleet CA's certificate, PEM."""
FLEET_CA_FILE = "fleet-ca.crt"
"""The fleet CA's certificate, PEM: the default client CA when mTLS is on."""
UNIT_SERVER_NAME = "veriscope-unit"
"""A DNS name the fleet CA puts in every unit certificate. Units are addressed by IP, so clients check this name
(or the device id) instead of the address."""
RENEW_BEFORE = timedelta(days=30)
"""A certificate that expires sooner than this is due for renewal: the daemon warns, provisioning re-issues it."""

TlsPrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


def keys_dir(data_dir: Path) -> Path:
    """``data_dir/keys``, where the unit's keys and certificates live."""
    return data_dir / KEY_DIR


def is_local_listen(listen: str) -> bool:
    """True when ``listen`` (``server.listen``) can be reached from this machine only.

    That is a ``unix:`` socket, or HOST:PORT with a loopback HOST: an address in
    127.0.0.0/8, ``::1`` (``[::1]:PORT``) or ``localhost``. Other host names are
    not resolved: a name may point anywhere, so it counts as the network.
    """
    if listen.startswith(("unix:", "unix-abstract:")):
        return True
    host = listen.rpartition(":")[0].strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def public_key_pin(key: TlsPrivateKey | x509.Certificate) -> str:
    """The pin of a TLS key, as clients give it: ``"sha256:"`` and the lowercase hex SHA-256 of its DER
    SubjectPublicKeyInfo."""
    public = key.public_key()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def certificate_names(certificate: x509.Certificate) -> list[str]:
    """The names a certificate is issued for: its DNS subject alternative names, then its common names."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = [str(name) for name in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        dns = []
    common = [str(a.value) for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return dns + [name for name in common if name not in dns]


def certificate_request(
    key: TlsPrivateKey | ed25519.Ed25519PrivateKey, device_id: str
) -> x509.CertificateSigningRequest:
    """A certificate signing request of ``key`` for this unit: subject ``CN=<device_id>``, signed by the key.

    The fleet CA checks the request's signature (proof that the unit holds the key)
    and then sets every name and extension of the certificate itself.
    """
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)])
    )
    return builder.sign(key, algorithm)


# --- Key and certificate files -----------------------------------------------------------------------------------


def ensure_keys_dir(data_dir: Path) -> Path:
    """Create ``data_dir/keys`` (mode 0700) if needed and return it.

    Raises IdentityError when it cannot be created or is writable by group or others.
    """
    directory = keys_dir(data_dir)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = directory.stat()
    except OSError as exc:
        raise IdentityError(f"cannot create the key directory {directory}: {exc.strerror}") from None
    if info.st_mode & 0o022:
        raise IdentityError(
            f"the key directory {directory} is writable by other users (mode {stat.S_IMODE(info.st_mode):04o}); "
            f"run 'chmod 700 {directory}'"
        )
    return directory


def create_tls_key(path: Path, *, replace: bool = False) -> bool:
    """Create a new ECDSA P-256 key at ``path``, mode 0600; return False when one exists and ``replace`` is False.

    The key is written to a temporary file, fsynced, then linked (or, with
    ``replace``, renamed) into place, so a crash never leaves a partial key and
    two processes never both create one. Raises IdentityError when it cannot be written.
    """
    if not replace and path.exists():
        return False
    data = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        _write_new(tmp, data, 0o600)
        if replace:
            os.replace(tmp, path)
        else:
            try:
                # A hard link, unlike a rename, fails when another process created the key meanwhile.
                os.link(tmp, path)
            except FileExistsError:
                return False
        _fsync_dir(path.parent)
    except OSError as exc:
        raise IdentityError(f"cannot create the TLS key {path}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    _log.warning("created a new TLS key %s", path)
    return True


def write_certificate_file(path: Path, pem: bytes) -> None:
    """Replace ``path`` with ``pem`` atomically (mode 0644: certificates are public).

    Raises IdentityError when it cannot be written.
    """
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        _write_new(tmp, pem, 0o644)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        raise IdentityError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_tls_key(path: Path) -> TlsPrivateKey:
    """Load the TLS private key at ``path``: an unencrypted PEM EC or RSA key that only its owner can read.

    Raises IdentityError naming the file and the fix when it is missing, open to
    group or others, unreadable, corrupt, encrypted or of another algorithm.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        raise IdentityError(
            f"the TLS key {path} does not exist; provision the unit ('veriscope-tool provision') or fix [tls] key_file"
        ) from None
    except OSError as exc:
        raise IdentityError(f"cannot read the TLS key {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise IdentityError(f"the TLS key {path} is not a regular file")
    if info.st_mode & 0o077:
        raise IdentityError(
            f"the TLS key {path} is open to other users (mode {stat.S_IMODE(info.st_mode):04o}); it must be private "
            f"to the daemon's user: run 'chmod 600 {path}'"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IdentityError(
            f"cannot read the TLS key {path}: {exc.strerror}; run the daemon as the file's owner"
        ) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise IdentityError(
            f"the TLS key {path} is corrupt or not an unencrypted PEM private key ({exc}); re-provision the unit "
            "with 'veriscope-tool provision --rotate'"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise IdentityError(
            f"the TLS key {path} is a {type(key).__name__.removeprefix('_')}; TLS needs an ECDSA (P-256) or RSA key"
        )
    return key


def load_certificates(path: Path, what: str) -> list[x509.Certificate]:
    """Every certificate of the PEM file ``path``, in order; ``what`` names the file in errors.

    Raises IdentityError when the file is missing, unreadable or holds no PEM certificate.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise IdentityError(f"the {what} {path} does not exist") from None
    except OSError as exc:
        raise IdentityError(f"cannot read the {what} {path}: {exc.strerror}") from None
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise IdentityError(f"the {what} {path} is not a PEM X.509 certificate ({exc})") from None
    return certificates


def check_unit_certificate(
    certificate: x509.Certificate, key: TlsPrivateKey, device_id: str, path: Path, now: datetime
) -> None:
    """Check that ``certificate`` (read from ``path``) certifies ``key``, is valid at ``now`` and names ``device_id``.

    Raises IdentityError saying which check failed and how to fix it.
    """
    fix = "re-provision the unit with 'veriscope-tool provision --data-dir DATA_DIR --ca CA_DIR'"
    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if certificate.public_key().public_bytes(*der) != key.public_key().public_bytes(*der):
        raise IdentityError(f"the TLS certificate {path} certifies another key than the TLS key; {fix}")
    if now < certificate.not_valid_before_utc:
        raise IdentityError(
            f"the TLS certificate {path} is not valid before {certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC "
            f"(the unit's clock says {now:%Y-%m-%d %H:%M} UTC): set the clock, or {fix}"
        )
    if now > certificate.not_valid_after_utc:
        raise IdentityError(
            f"the TLS certificate {path} expired on {certificate.not_valid_after_utc:%Y-%m-%d} UTC; renew it: {fix}"
        )
    names = certificate_names(certificate)
    if device_id not in names:
        raise IdentityError(
            f"the TLS certificate {path} is issued for {', '.join(names) or 'no name'}, not for this unit "
            f"{device_id!r}; {fix}"
        )


@dataclass(frozen=True)
class TlsIdentity:
    """The unit's TLS key and certificate chain, checked and ready to serve.

    Attributes:
        key_path: The key file.
        cert_path: The certificate file.
        certificate: The unit's certificate (the first of the file).
        key_pem: The key, PEM.
        chain_pem: The certificate file's PEM: the unit's certificate, then any CA certificates.
    """

    key_path: Path
    cert_path: Path
    certificate: x509.Certificate
    key_pem: bytes
    chain_pem: bytes

    @property
    def pin(self) -> str:
        """The key's pin, ``"sha256:<hex>"``: what ``veriscope --pin`` and ``Client(pinned_key=...)`` take."""
        return public_key_pin(self.certificate)

    @classmethod
    def load(cls, key_path: Path, cert_path: Path, device_id: str, *, now: datetime | None = None) -> TlsIdentity:
        """Load and check the key at ``key_path`` and the certificate chain at ``cert_path``.

        Raises IdentityError naming the file and the fix when a file is missing,
        unreadable or not private, or the certificate does not certify the key, is
        not valid now, or is issued for another device id.
        """
        when = now or datetime.now(UTC)
        key = load_tls_key(key_path)
        chain = load_certificates(cert_path, "TLS certificate")
        check_unit_certificate(chain[0], key, device_id, cert_path, when)
        if chain[0].not_valid_after_utc - when < RENEW_BEFORE:
            _log.warning(
                "the TLS certificate %s expires on %s UTC: renew it with 'veriscope-tool provision'",
                cert_path,
                f"{chain[0].not_valid_after_utc:%Y-%m-%d}",
            )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        chain_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
        return cls(key_path, cert_path, chain[0], key_pem, chain_pem)


# --- The listener ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transport:
    """How the gRPC listener is secured: plaintext (local listeners only) or TLS, with or without mTLS.

    Attributes:
        listen: ``server.listen``.
        identity: The TLS identity, or None for plaintext.
        client_ca_pem: PEM of the CA certificates that client certificates are checked against, or None.
        client_ca_path: The file ``client_ca_pem`` was read from, or None.
        require_client_cert: True refuses clients without a certificate issued by the client CA (mTLS).
    """

    listen: str
    identity: TlsIdentity | None = None
    client_ca_pem: bytes | None = None
    client_ca_path: Path | None = None
    require_client_cert: bool = False

    @property
    def tls(self) -> bool:
        """True when the listener serves TLS."""
        return self.identity is not None

    def server_credentials(self) -> grpc.ServerCredentials | None:
        """The listener's ``grpc.ssl_server_credentials``, or None for plaintext."""
        if self.identity is None:
            return None
        return grpc.ssl_server_credentials(
            [(self.identity.key_pem, self.identity.chain_pem)],
            root_certificates=self.client_ca_pem,
            require_client_auth=self.require_client_cert,
        )

    def describe(self) -> str:
        """A few words for the start-up line: ``"plaintext"``, ``"TLS"`` or ``"TLS, client certificates required"``."""
        if self.identity is None:
            return "plaintext"
        return "TLS, client certificates required" if self.require_client_cert else "TLS"


def refusal_message(listen: str, data_dir: Path) -> str:
    """Why a listener on the network without TLS does not start, and how to give it TLS."""
    return (
        f"TLS is needed to listen on {listen}, which is reachable from the network, and TLS is not configured "
        "(plaintext is served only on loopback: 127.0.0.1, ::1, localhost, or a unix: socket). Provision the "
        "unit's TLS identity: "
        f"'veriscope-tool ca init --out CA_DIR' once per fleet, then 'veriscope-tool provision --data-dir {data_dir} "
        f"--ca CA_DIR' (it writes {data_dir / KEY_DIR / TLS_CERT_FILE}, which the daemon then uses); or give a "
        "certificate and key with --tls-cert FILE --tls-key FILE ([tls] cert_file, key_file); or start a new unit "
        "with --first-boot and provision it over the network ('veriscope-tool provision --device ADDR'). See "
        "device/docs/security.md"
    )


def listener_transport(config: Config, data_dir: Path, device_id: str, *, now: datetime | None = None) -> Transport:
    """The transport of the listener ``config.server.listen``, from ``[tls]`` and the provisioned files.

    Relative paths in ``[tls]`` are taken from ``data_dir``. Raises ConfigError
    (``server.listen``) when a listener on the network has no TLS identity, or
    (``tls.*``) when mTLS is asked for without TLS or a client CA; raises
    IdentityError when a configured key, certificate or client CA cannot be used.
    """
    tls = config.tls
    listen = config.server.listen
    provisioned = keys_dir(data_dir)
    if tls.cert_file:
        key_path, cert_path = _path(tls.key_file, data_dir), _path(tls.cert_file, data_dir)
    elif (provisioned / TLS_CERT_FILE).exists():
        key_path, cert_path = provisioned / TLS_KEY_FILE, provisioned / TLS_CERT_FILE
    else:
        if tls.require_client_cert or tls.client_ca_file:
            key = "tls.require_client_cert" if tls.require_client_cert else "tls.client_ca_file"
            raise ConfigError(
                key,
                "client certificates need TLS, and TLS is not configured: provision the unit or set "
                "[tls] cert_file and key_file",
            )
        if not is_local_listen(listen):
            raise ConfigError("server.listen", refusal_message(listen, data_dir))
        return Transport(listen)
    identity = TlsIdentity.load(key_path, cert_path, device_id, now=now)
    client_ca_path: Path | None = None
    if tls.client_ca_file:
        client_ca_path = _path(tls.client_ca_file, data_dir)
    elif tls.require_client_cert:
        client_ca_path = provisioned / FLEET_CA_FILE
        if not client_ca_path.exists():
            raise ConfigError(
                "tls.client_ca_file",
                f"require_client_cert needs the CA that issues client certificates: set client_ca_file, or "
                f"provision the unit (which installs {client_ca_path})",
            )
    client_ca_pem = None
    if client_ca_path is not None:
        authorities = load_certificates(client_ca_path, "client CA certificate")
        if not any(_is_ca(c) for c in authorities):
            raise IdentityError(
                f"the client CA certificate {client_ca_path} holds no CA certificate (basicConstraints CA:TRUE)"
            )
        client_ca_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in authorities)
    return Transport(listen, identity, client_ca_pem, client_ca_path, tls.require_client_cert)


def _path(value: str, data_dir: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else data_dir / path


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False
