"""How a client reaches a unit: plaintext on loopback, or TLS checked against a fleet CA or a pinned key.

A unit on the network serves TLS only, with a certificate its fleet CA issued
for its device id and for the DNS name ``veriscope-unit``. Units are addressed by
IP on a LAN, so the address cannot be checked against the certificate; the
client checks a name instead (``grpc.ssl_target_name_override``):
``veriscope-unit`` by default, which any unit of the fleet carries, or the
unit's device id (``tls_server_name``) to accept one unit only.

gRPC reports every failed check as UNAVAILABLE "failed to connect", with no word
on why, and does not show the unit's certificate to the caller. So before its
first call a client makes one TLS handshake of its own with :mod:`ssl` (the
*pre-flight*), without verification, to fetch the unit's certificate; it checks
the certificate itself and raises :class:`~veriscope.sdk.TlsError` saying what
does not match. Only then does it open the gRPC channel, which verifies the unit
again on every connection:

- with ``ca``, the channel trusts the fleet CA and checks the name;
- with ``pinned_key``, the channel trusts exactly the certificate the pre-flight
  fetched and found to hold the pinned key, so no other certificate is accepted
  later, even one from the same CA.

After the handshake the pre-flight sends the HTTP/2 preface and reads the
unit's first frame: a unit that requires client certificates (mTLS) closes the
connection at that point when it gets none, or one it does not trust, and the
client says so.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from veriscope.sdk._exceptions import DeviceUnavailableError, TlsError

DEFAULT_SERVER_NAME = "veriscope-unit"
"""The DNS name every unit certificate carries; the name a client checks unless told another."""
PIN_PREFIX = "sha256:"
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000")
"""The client connection preface and an empty SETTINGS frame: the unit answers with its own SETTINGS."""
_ANSWER_TIMEOUT_S = 5.0

PathOrPem = str | os.PathLike[str] | bytes


@dataclass(frozen=True)
class TlsSettings:
    """What a client trusts and presents. Built by :func:`tls_settings` from the clients' arguments.

    Attributes:
        authorities: The fleet CA certificates given as ``ca``; empty when only a pin is given.
        ca_pem: Their PEM, for the channel.
        ca_source: Where they came from, for messages: the file name, or ``"the ca PEM"``.
        pin: The pinned key, ``"sha256:<hex>"``, or None.
        client_cert_pem: The client certificate chain for mTLS, PEM, or None.
        client_key_pem: Its private key, PEM, or None.
        client_cert_path: The client certificate's file, or None.
        client_key_path: The client key's file, or None.
        server_name: The name to check in the unit's certificate; None means :data:`DEFAULT_SERVER_NAME`
            (or, with only a pin, a name the certificate carries).
    """

    authorities: tuple[x509.Certificate, ...] = ()
    ca_pem: bytes | None = None
    ca_source: str = ""
    pin: str | None = None
    client_cert_pem: bytes | None = None
    client_key_pem: bytes | None = None
    client_cert_path: str | None = None
    client_key_path: str | None = None
    server_name: str | None = None


@dataclass(frozen=True)
class Verified:
    """A unit's certificate that passed the pre-flight checks, and how the channel is to trust it.

    Attributes:
        certificate: The unit's certificate.
        root_pem: What the channel trusts: the fleet CA, or (with a pin) exactly this certificate.
        server_name: The name the channel checks (``grpc.ssl_target_name_override``).
    """

    certificate: x509.Certificate
    root_pem: bytes
    server_name: str

    def credentials(self, settings: TlsSettings) -> grpc.ChannelCredentials:
        """The gRPC channel credentials: these roots, and the client certificate if any."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_pem,
            private_key=settings.client_key_pem,
            certificate_chain=settings.client_cert_pem,
        )

    def options(self) -> list[tuple[str, str]]:
        """The channel options that make gRPC check :attr:`server_name` instead of the address."""
        return [("grpc.ssl_target_name_override", self.server_name)]


# --- Arguments ---------------------------------------------------------------------------------------------------


def normalize_pin(value: object) -> str:
    """``value`` as ``"sha256:<64 lowercase hex>"``; accepts the hex with or without ``sha256:``, in any case,
    with or without colons between bytes. Raises TypeError or ValueError otherwise."""
    if not isinstance(value, str):
        raise TypeError(f"pinned_key must be a str like 'sha256:<64 hex digits>', got {type(value).__name__}")
    text = value.strip()
    if text.lower().startswith(PIN_PREFIX):
        text = text[len(PIN_PREFIX) :]
    digits = text.replace(":", "").lower()
    if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
        raise ValueError(
            f"pinned_key must be 'sha256:' and 64 hex digits (the SHA-256 of the unit's key), got {value!r}"
        )
    return PIN_PREFIX + digits


def certificate_pin(certificate: x509.Certificate) -> str:
    """The pin of the key in ``certificate``: ``"sha256:"`` and the hex SHA-256 of its DER SubjectPublicKeyInfo."""
    der = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return PIN_PREFIX + hashlib.sha256(der).hexdigest()


def tls_settings(
    *,
    ca: PathOrPem | None,
    pinned_key: str | None,
    client_cert: str | os.PathLike[str] | None,
    client_key: str | os.PathLike[str] | None,
    tls_server_name: str | None,
) -> TlsSettings | None:
    """Check the clients' TLS arguments and read their files; None when no TLS argument was given.

    Raises:
        TypeError: An argument has the wrong type.
        ValueError: A file holds no certificate or key, the client key does not belong to the client
            certificate, a client certificate or a server name is given without ``ca`` or ``pinned_key``,
            or the pin is malformed.
        OSError: A file cannot be read (FileNotFoundError, PermissionError).
    """
    if ca is None and pinned_key is None:
        if client_cert is not None or client_key is not None:
            raise ValueError("client_cert and client_key need ca= or pinned_key=, to check the unit first")
        if tls_server_name is not None:
            raise ValueError("tls_server_name needs ca= or pinned_key=")
        return None
    authorities: tuple[x509.Certificate, ...] = ()
    ca_pem = None
    ca_source = ""
    if ca is not None:
        ca_pem, ca_source = _read_pem(ca, "ca")
        try:
            authorities = tuple(x509.load_pem_x509_certificates(ca_pem))
        except ValueError:
            raise ValueError(f"ca {ca_source} holds no PEM certificate (-----BEGIN CERTIFICATE-----)") from None
    pin = normalize_pin(pinned_key) if pinned_key is not None else None
    if (client_cert is None) != (client_key is None):
        raise ValueError("client_cert and client_key go together: give both or neither")
    cert_pem = key_pem = None
    cert_path = key_path = None
    if client_cert is not None and client_key is not None:
        cert_path, key_path = _path(client_cert, "client_cert"), _path(client_key, "client_key")
        with open(cert_path, "rb") as cert_file, open(key_path, "rb") as key_file:
            cert_pem, key_pem = cert_file.read(), key_file.read()
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert_path, key_path)
        except ssl.SSLError as exc:
            raise ValueError(
                f"client_key {key_path} and client_cert {cert_path} cannot be used together ({exc.reason or exc})"
            ) from None
    if tls_server_name is not None and (not isinstance(tls_server_name, str) or not tls_server_name.strip()):
        raise ValueError(f"tls_server_name must be a non-empty str, got {tls_server_name!r}")
    return TlsSettings(authorities, ca_pem, ca_source, pin, cert_pem, key_pem, cert_path, key_path, tls_server_name)


def _read_pem(value: PathOrPem, argument: str) -> tuple[bytes, str]:
    if isinstance(value, bytes):
        return value, f"the {argument} PEM"
    if isinstance(value, str) and value.lstrip().startswith("-----BEGIN"):
        return value.encode("ascii"), f"the {argument} PEM"
    path = _path(value, argument)
    with open(path, "rb") as file:
        return file.read(), path


def _path(value: object, argument: str) -> str:
    if not isinstance(value, str | os.PathLike):
        raise TypeError(f"{argument} must be a file name (str or os.PathLike), got {type(value).__name__}")
    return os.fspath(value)


def split_target(target: str) -> tuple[str, int]:
    """The host and port of a ``host:port`` target (also ``[v6]:port``, ``dns:///host:port``, ``ipv4:host:port``).

    Raises ValueError for a target TLS cannot be checked on: a unix socket, or one without a port.
    """
    address = target
    for prefix in ("dns:///", "dns:", "ipv4:", "ipv6:"):
        if address.startswith(prefix):
            address = address[len(prefix) :]
            break
    if address.startswith(("unix:", "unix-abstract:")):
        raise ValueError(
            f"target {target!r} is a unix socket, which is served in plaintext: leave out ca and pinned_key"
        )
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"target {target!r} must be host:port to use TLS")
    return host.removeprefix("[").removesuffix("]"), int(port)


# --- Checking the unit -------------------------------------------------------------------------------------------


def verify_unit(der: bytes | None, settings: TlsSettings, target: str, *, now: datetime | None = None) -> Verified:
    """Check the unit's certificate ``der`` (from the pre-flight handshake) against ``settings``.

    Raises TlsError saying what does not match: the pin, the issuing CA, the
    validity period, or the name.
    """
    if not der:
        raise TlsError(f"the unit at {target} presented no certificate", reason="handshake_failed")
    try:
        certificate = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise TlsError(
            f"the unit at {target} presented a certificate that cannot be read ({exc})", reason="handshake_failed"
        ) from None
    presented = f"{certificate.subject.rfc4514_string() or 'no subject'}, issued by {_issuer(certificate)}"
    pin = certificate_pin(certificate)
    if settings.pin is not None and pin != settings.pin:
        raise TlsError(
            f"pinned key mismatch: expected sha256 {settings.pin.removeprefix(PIN_PREFIX)}, unit presented sha256 "
            f"{pin.removeprefix(PIN_PREFIX)} (the unit at {target} holds another TLS key: {presented})",
            reason="pin_mismatch",
        )
    if settings.authorities and not any(_issued_by(certificate, ca) for ca in settings.authorities):
        trusted = "; ".join(f"{ca.subject.rfc4514_string()} (key id {_key_id(ca)})" for ca in settings.authorities)
        raise TlsError(
            f"the unit's certificate is not issued by the fleet CA you gave ({settings.ca_source}: {trusted}); "
            f"the unit at {target} presented {presented}",
            reason="not_issued_by_ca",
        )
    when = now or datetime.now(UTC)
    if when < certificate.not_valid_before_utc:
        raise TlsError(
            f"the unit's certificate ({presented}) is not valid before {certificate.not_valid_before_utc:%Y-%m-%d %H:%M} "
            "UTC: check this computer's clock",
            reason="not_yet_valid",
        )
    if when > certificate.not_valid_after_utc:
        raise TlsError(
            f"the unit's certificate ({presented}) expired on {certificate.not_valid_after_utc:%Y-%m-%d}: renew it with "
            "'veriscope-tool provision' on the unit",
            reason="expired",
        )
    names = _names(certificate)
    if settings.server_name is not None:
        server_name = settings.server_name
    elif settings.authorities or DEFAULT_SERVER_NAME in names:
        server_name = DEFAULT_SERVER_NAME
    else:
        server_name = names[0] if names else DEFAULT_SERVER_NAME
    if server_name not in names:
        raise TlsError(
            f"the unit's certificate is issued for {', '.join(names) or 'no name'}, not for {server_name!r}; "
            f"the unit at {target} presented {presented}",
            reason="name_mismatch",
        )
    # With a pin the channel trusts this very certificate, so it accepts no other later, not even the CA's.
    pinned = certificate.public_bytes(serialization.Encoding.PEM) if settings.pin is not None else None
    return Verified(certificate, pinned or settings.ca_pem or b"", server_name)


def check_answer(answer: bytes | None, settings: TlsSettings, target: str) -> None:
    """Check the unit's answer to the HTTP/2 preface: an empty answer means it closed the connection, which a
    unit that requires client certificates does to a client without a good one. Raises TlsError then."""
    if answer == b"":
        raise _client_certificate_error(settings, target)


def _client_certificate_error(settings: TlsSettings, target: str) -> TlsError:
    if settings.client_cert_pem is None:
        return TlsError(
            f"the unit at {target} requires a client certificate (mTLS) and closed the connection: give client_cert= "
            "and client_key= (veriscope --client-cert FILE --client-key FILE), issued by the unit's fleet CA "
            "('veriscope-tool ca client-cert')",
            reason="client_certificate_required",
        )
    return TlsError(
        f"the unit at {target} refused the client certificate {settings.client_cert_path}: it accepts only "
        "unexpired certificates issued by its fleet CA",
        reason="client_certificate_refused",
    )


def _issued_by(certificate: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def _key_id(ca: x509.Certificate) -> str:
    """The CA's key identifier in hex, as the certificates it issues name it (authority key identifier)."""
    try:
        return ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.key_identifier.hex()
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(ca.public_key()).digest.hex()


def _issuer(certificate: x509.Certificate) -> str:
    """The issuer's name, and its key identifier when the certificate names it: two CAs may share a name."""
    name = certificate.issuer.rfc4514_string()
    try:
        key_id = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        key_id = None
    return f"{name} (key id {key_id.hex()})" if key_id else name


def _names(certificate: x509.Certificate) -> list[str]:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = [str(name) for name in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        dns = []
    common = [str(a.value) for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return dns + [name for name in common if name not in dns]


def _handshake_error(exc: ssl.SSLError, settings: TlsSettings, target: str) -> TlsError:
    reason = str(exc.reason or "")
    if "CERTIFICATE_REQUIRED" in reason or "BAD_CERTIFICATE" in reason or "UNKNOWN_CA" in reason:
        return _client_certificate_error(settings, target)
    return TlsError(
        f"TLS handshake with the unit at {target} failed ({exc.reason or exc}): is it a plaintext listener? A unit "
        "serves plaintext on loopback only; connect to it there without ca or pinned_key",
        reason="handshake_failed",
    )


def _context(settings: TlsSettings) -> ssl.SSLContext:
    # No verification here on purpose: the certificate is fetched to be checked by verify_unit, which says why
    # it fails, and the gRPC channel then verifies it again.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"])
    if settings.client_cert_path is not None and settings.client_key_path is not None:
        context.load_cert_chain(settings.client_cert_path, settings.client_key_path)
    return context


# --- Pre-flight: one blocking and one asyncio driver -------------------------------------------------------------


def preflight(target: str, settings: TlsSettings, timeout_s: float, method: str = "") -> Verified:
    """Fetch and check the unit's certificate with a blocking TLS handshake; see the module docstring.

    Raises:
        TlsError: The unit is not the one ``settings`` trusts, or it refused the client certificate.
        DeviceUnavailableError: The unit cannot be reached.
    """
    host, port = split_target(target)
    context = _context(settings)
    try:
        with (
            socket.create_connection((host, port), timeout=timeout_s) as raw,
            context.wrap_socket(raw, server_hostname=settings.server_name or DEFAULT_SERVER_NAME) as tls,
        ):
            verified = verify_unit(tls.getpeercert(binary_form=True), settings, target)
            answer = _answer(tls)
    except TlsError as exc:
        exc.method = method
        raise
    except ssl.SSLError as exc:
        error = _handshake_error(exc, settings, target)
        error.method = method
        raise error from None
    except OSError as exc:
        raise DeviceUnavailableError(
            f"cannot reach the unit at {target}: {exc.strerror or exc}", method=method
        ) from None
    try:
        check_answer(answer, settings, target)
    except TlsError as exc:
        exc.method = method
        raise
    return verified


def _answer(tls: ssl.SSLSocket) -> bytes | None:
    """The unit's first bytes after the preface: b"" when it closed the connection, None when it said nothing."""
    try:
        tls.settimeout(_ANSWER_TIMEOUT_S)
        tls.sendall(_HTTP2_PREFACE)
        return tls.recv(9)
    except TimeoutError:
        return None
    except (ssl.SSLError, ConnectionError):
        return b""


async def preflight_async(target: str, settings: TlsSettings, timeout_s: float, method: str = "") -> Verified:
    """The asyncio twin of :func:`preflight`."""
    host, port = split_target(target)
    context = _context(settings)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                host, port, ssl=context, server_hostname=settings.server_name or DEFAULT_SERVER_NAME
            ),
            timeout_s,
        )
    except ssl.SSLError as exc:
        error = _handshake_error(exc, settings, target)
        error.method = method
        raise error from None
    except (OSError, TimeoutError) as exc:
        detail = "no answer within the deadline" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
        raise DeviceUnavailableError(f"cannot reach the unit at {target}: {detail}", method=method) from None
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if isinstance(ssl_object, ssl.SSLObject) else None
        verified = verify_unit(der, settings, target)
        answer: bytes | None
        try:
            writer.write(_HTTP2_PREFACE)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(9), _ANSWER_TIMEOUT_S)
        except TimeoutError:
            answer = None
        except (ssl.SSLError, ConnectionError):
            answer = b""
        check_answer(answer, settings, target)
    except TlsError as exc:
        exc.method = method
        raise
    finally:
        # Aborted, not closed: a graceful TLS shutdown would wait for the unit's close_notify, which may never come.
        writer.transport.abort()
    return verified
