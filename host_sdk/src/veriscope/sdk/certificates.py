"""Offline verification of certificates of authenticity, the signed records of completed scans.

No device and no network are needed: only the certificate file and a trust
anchor, the unit's public key (``veriscope info --json`` gives it as
``signing_public_key``) or a fleet CA certificate::

    from pathlib import Path
    from veriscope.sdk.certificates import CertificateError, verify_certificate

    try:
        certificate = verify_certificate(Path("scan.cert").read_bytes(), Path("unit.pem").read_bytes())
    except CertificateError as exc:
        print("not valid:", exc.details)
    else:
        print(certificate.verdict, certificate.item_type, certificate.device_id, certificate.complete_time)

A certificate is UTF-8 JSON in canonical form (keys sorted, no insignificant
whitespace, non-ASCII characters as themselves, one trailing newline) with
exactly two members: ``certificate``, the statement, and ``signature``, the
base64 Ed25519 signature of the statement's canonical bytes. The verifier
re-serialises the document and refuses it unless the bytes are identical, so
no byte of the file can change unnoticed. device/docs/certificates.md
describes every field.

Trust anchors:

- A PEM public key (``-----BEGIN PUBLIC KEY-----``): the statement's signing
  key must be exactly this Ed25519 key.
- A PEM X.509 certificate (``-----BEGIN CERTIFICATE-----``, one or several): a
  fleet CA. The statement must then carry a signer certificate of its signing
  key, issued directly by one of these CA certificates, valid at the issue
  time, whose subject common name is the statement's ``device_id``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, NoReturn

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import NameOID

from veriscope.sdk._exceptions import CertificateError
from veriscope.sdk._models import ImageOrigin, ModelRef, Reason, Verdict

__all__ = [
    "FORMAT",
    "MAX_DOCUMENT_BYTES",
    "Certificate",
    "CertificateError",
    "CertificateImage",
    "canonical_json",
    "verify_certificate",
]

FORMAT = "veriscope.certificate/1"
"""The statement format this module verifies."""
MAX_DOCUMENT_BYTES = 1024 * 1024
"""Largest certificate file accepted (a certificate of 64 images is about 12 KB)."""

SIGNATURE_MISMATCH = "signature does not match: the certificate was altered or signed by another key"

_STATEMENT_FIELDS = frozenset(
    {
        "format",
        "scan_id",
        "device_id",
        "item_type",
        "partner_item_id",
        "verdict",
        "reason",
        "score",
        "threshold",
        "summary",
        "statement",
        "model",
        "images",
        "create_time",
        "complete_time",
        "issue_time",
        "signing_key",
    }
)
_SCORE = re.compile(r"(0\.[0-9]{4}|1\.0000)")
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SCAN_ID = re.compile(r"[A-Za-z0-9._~-]{1,128}")


def canonical_json(value: Any) -> bytes:
    """The canonical UTF-8 JSON bytes of ``value``: keys sorted, no whitespace, non-ASCII kept as is, no NaN.

    This is ``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` encoded as UTF-8.
    A certificate file is ``canonical_json(document) + b"\\n"``, and its signature covers
    ``canonical_json(document["certificate"])``.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


@dataclass(frozen=True, kw_only=True)
class CertificateImage:
    """One image of a certified scan, in capture order.

    Attributes:
        image_id: The image's id within its scan.
        region: The region it shows.
        origin: CAMERA when the unit captured it, UPLOAD when a client sent it (the unit vouches only for
            what it was given).
        sha256: Lowercase hex SHA-256 of the stored encoded image, as ``veriscope`` downloads it.
        accepted: True when it passed the quality gate.
        used: True when the model analysed it for the verdict.
    """

    image_id: str
    region: str
    origin: ImageOrigin
    sha256: str
    accepted: bool
    used: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "image_id": self.image_id,
            "region": self.region,
            "origin": self.origin.name,
            "sha256": self.sha256,
            "accepted": self.accepted,
            "used": self.used,
        }


@dataclass(frozen=True, kw_only=True)
class Certificate:
    """A verified certificate of authenticity: the signed statement of one completed scan.

    Attributes:
        format: ``"veriscope.certificate/1"``.
        scan_id: The scan's id on the unit.
        device_id: The serial number of the unit that scanned the item and signed the certificate.
        item_type: The item type scanned, for example ``"tote-classic"``.
        partner_item_id: The caller's own id for the item, or None when none was given.
        verdict: AUTHENTIC, or UNVERIFIED with a ``reason``.
        reason: Why the item was not verified; None when AUTHENTIC.
        score: The item's calibrated authenticity score 0..1, exactly as signed (four decimals).
        threshold: The threshold the score was compared with, 0..1.
        summary: The verdict's one-sentence summary.
        statement: One sentence for a person: what was scanned, by which unit, when, and whether it was verified.
        model: The model that decided the verdict.
        images: Every image of the scan, in capture order.
        create_time: When the scan was created (UTC).
        complete_time: When the verdict was reached (UTC).
        issue_time: When the certificate was signed (UTC).
        signing_key_sha256: Lowercase hex SHA-256 of the raw 32-byte Ed25519 public key that signed it.
        signing_public_key: That key as PEM.
        signer_certificate: PEM of the fleet-CA certificate of the key carried in the statement, or None.
        trusted_by: What vouched for the key: ``"the trusted public key"`` or ``"certified by CA <subject>"``.
    """

    format: str
    scan_id: str
    device_id: str
    item_type: str
    partner_item_id: str | None
    verdict: Verdict
    reason: Reason | None
    score: Decimal
    threshold: Decimal
    summary: str
    statement: str
    model: ModelRef
    images: tuple[CertificateImage, ...]
    create_time: datetime
    complete_time: datetime
    issue_time: datetime
    signing_key_sha256: str
    signing_public_key: str
    signer_certificate: str | None
    trusted_by: str

    def to_dict(self) -> dict[str, Any]:
        """The JSON form ``veriscope verify-certificate --json`` prints: scores as decimal strings, RFC 3339 times."""
        return {
            "format": self.format,
            "scan_id": self.scan_id,
            "device_id": self.device_id,
            "item_type": self.item_type,
            "partner_item_id": self.partner_item_id,
            "verdict": self.verdict.name,
            "reason": None if self.reason is None else self.reason.name,
            "score": str(self.score),
            "threshold": str(self.threshold),
            "summary": self.summary,
            "statement": self.statement,
            "model": self.model.to_dict(),
            "images": [image.to_dict() for image in self.images],
            "create_time": _rfc3339(self.create_time),
            "complete_time": _rfc3339(self.complete_time),
            "issue_time": _rfc3339(self.issue_time),
            "signing_key_sha256": self.signing_key_sha256,
            "signing_public_key": self.signing_public_key,
            "signer_certificate": self.signer_certificate,
            "trusted_by": self.trusted_by,
        }


def verify_certificate(document: bytes, trust_pem: bytes | str) -> Certificate:
    """Verify a certificate file offline and return its statement.

    Args:
        document: The certificate file's bytes, exactly as ``get_scan_certificate()`` or
            ``veriscope certificate`` wrote them.
        trust_pem: The trust anchor, PEM: the unit's Ed25519 public key (``DeviceInfo.signing_public_key``),
            or one or more X.509 certificates of a fleet CA.

    Returns:
        The verified statement. An UNVERIFIED verdict is a valid certificate too: check ``verdict``.

    Raises:
        CertificateError: The certificate is not valid; ``details`` says why and ``reason`` names the kind:
            unknown format, not canonical, malformed, key not trusted, or signature mismatch.
        TypeError: ``document`` is not bytes, or ``trust_pem`` neither bytes nor str.
        ValueError: ``trust_pem`` is neither a PEM public key nor PEM certificates, or not an Ed25519 key.
    """
    if isinstance(document, bytearray | memoryview):
        document = bytes(document)
    if not isinstance(document, bytes):
        raise TypeError(f"document must be bytes, got {type(document).__name__}")
    anchor = _Anchor.load(trust_pem)
    envelope = _parse(document)
    statement, signature_text = _envelope(envelope)
    _check_canonical(envelope, document)
    if statement.get("format") != FORMAT:
        found = statement.get("format")
        shown = repr(found) if isinstance(found, str) else "missing"
        _fail(f"unknown format: the statement's format is {shown}; this SDK verifies {FORMAT!r}", "unknown_format")
    fields = _Fields(statement, "certificate", _STATEMENT_FIELDS)
    signature = _base64(signature_text, 64, "signature")
    key = fields.object("signing_key", {"algorithm", "public_key", "sha256", "certificate"})
    if key.string("algorithm") != "Ed25519":
        _fail(f"unknown format: signing algorithm {key.data['algorithm'][:40]!r}; expected 'Ed25519'", "unknown_format")
    public_raw = _base64(key.string("public_key"), 32, "certificate.signing_key.public_key")
    signer_pem = key.optional_string("certificate")
    trusted_by = anchor.vouch(public_raw, signer_pem, fields)
    try:
        Ed25519PublicKey.from_public_bytes(public_raw).verify(signature, canonical_json(statement))
    except (InvalidSignature, ValueError):
        _fail(SIGNATURE_MISMATCH, "signature_mismatch")
    # The signature is good, so the unit said all of this; the rest only checks that it is well-formed.
    key_sha256 = key.pattern("sha256", _SHA256, "lowercase hex SHA-256")
    if key_sha256 != hashlib.sha256(public_raw).hexdigest():
        _fail("malformed: certificate.signing_key.sha256 is not the SHA-256 of signing_key.public_key")
    return _certificate(fields, public_raw, key_sha256, signer_pem, trusted_by)


# --- Parsing ------------------------------------------------------------------------------------------------------


def _fail(message: str, reason: str = "malformed") -> NoReturn:
    raise CertificateError(message, reason=reason)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            _fail(f"not canonical: the key {key[:80]!r} appears twice in one object", "not_canonical")
        result[key] = value
    return result


def _no_float(text: str) -> NoReturn:
    _fail(f"malformed: the number {text[:20]} has a fraction or exponent; certificates hold no floats")


def _no_constant(text: str) -> NoReturn:
    _fail(f"malformed: {text} is not JSON")


def _parse(document: bytes) -> Any:
    if not document:
        _fail("unknown format: the file is empty", "unknown_format")
    if len(document) > MAX_DOCUMENT_BYTES:
        _fail(
            f"unknown format: the file is larger than any certificate ({MAX_DOCUMENT_BYTES} bytes at most)",
            "unknown_format",
        )
    try:
        text = document.decode("utf-8")
    except UnicodeDecodeError as exc:
        _fail(
            f"unknown format: byte {exc.start} is not UTF-8 text; this is not a Veriscope certificate", "unknown_format"
        )
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_float=_no_float, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        _fail(
            f"unknown format: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); the file is truncated, "
            "damaged or not a Veriscope certificate",
            "unknown_format",
        )
    except (ValueError, RecursionError):
        _fail(
            "unknown format: not JSON that a certificate can hold (too deeply nested, or too long a number)",
            "unknown_format",
        )


def _envelope(value: Any) -> tuple[dict[str, Any], str]:
    if not isinstance(value, dict) or set(value) != {"certificate", "signature"}:
        _fail(
            "unknown format: a certificate is a JSON object with exactly the members 'certificate' and 'signature'",
            "unknown_format",
        )
    statement, signature = value["certificate"], value["signature"]
    if not isinstance(statement, dict):
        _fail("unknown format: 'certificate' must be a JSON object", "unknown_format")
    if not isinstance(signature, str):
        _fail("malformed: 'signature' must be a base64 string")
    return statement, signature


def _check_canonical(envelope: dict[str, Any], document: bytes) -> None:
    try:
        expected = canonical_json(envelope) + b"\n"
    except (ValueError, UnicodeEncodeError, RecursionError):
        _fail("not canonical: the file holds text that has no canonical UTF-8 form", "not_canonical")
    if expected == document:
        return
    if expected[:-1] == document.rstrip(b"\r\n") and expected != document:
        where = "it must end in exactly one newline (\\n)"
    else:
        offset = next((i for i, (a, b) in enumerate(zip(expected, document, strict=False)) if a != b), None)
        offset = min(len(expected), len(document)) if offset is None else offset
        where = f"byte {offset} differs from the canonical form"
    _fail(
        f"not canonical: {where}; the file was reformatted or edited (a certificate must be kept byte for byte)",
        "not_canonical",
    )


def _base64(text: str, size: int, where: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    # Re-encoding catches the padding bits that decoding ignores, so each text has one meaning.
    if len(raw) != size or base64.b64encode(raw).decode("ascii") != text:
        if where == "signature":
            _fail(f"{SIGNATURE_MISMATCH} ('signature' is not the base64 of a 64-byte signature)", "signature_mismatch")
        _fail(f"malformed: {where} is not the base64 of {size} bytes")
    return raw


class _Fields:
    """The members of one JSON object of the statement, read with type checks whose errors name the field."""

    def __init__(self, data: Any, where: str, names: frozenset[str] | set[str]) -> None:
        if not isinstance(data, dict):
            _fail(f"malformed: {where} must be a JSON object")
        missing = sorted(set(names) - set(data))
        if missing:
            _fail(f"malformed: {where} lacks {', '.join(missing)}")
        unknown = sorted(set(data) - set(names))
        if unknown:
            _fail(f"malformed: {where} has unknown members {', '.join(repr(u) for u in unknown)} (format {FORMAT})")
        self.data: dict[str, Any] = data
        self.where = where

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}"

    def string(self, key: str, *, empty: bool = False) -> str:
        value = self.data[key]
        if not isinstance(value, str) or (not empty and not value):
            _fail(f"malformed: {self._name(key)} must be a {'' if empty else 'non-empty '}string")
        return value

    def optional_string(self, key: str) -> str | None:
        return None if self.data[key] is None else self.string(key)

    def pattern(self, key: str, pattern: re.Pattern[str], what: str) -> str:
        value = self.string(key)
        if not pattern.fullmatch(value):
            _fail(f"malformed: {self._name(key)} must be {what}, got {value[:80]!r}")
        return value

    def boolean(self, key: str) -> bool:
        value = self.data[key]
        if not isinstance(value, bool):
            _fail(f"malformed: {self._name(key)} must be true or false")
        return value

    def object(self, key: str, names: set[str]) -> _Fields:
        return _Fields(self.data[key], self._name(key), names)

    def array(self, key: str) -> list[Any]:
        value = self.data[key]
        if not isinstance(value, list):
            _fail(f"malformed: {self._name(key)} must be a JSON array")
        return value

    def time(self, key: str) -> datetime:
        value = self.pattern(key, _TIME, "an RFC 3339 UTC time like '2026-05-28T12:00:00.500Z'")
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            _fail(f"malformed: {self._name(key)} is not a real time: {value!r}")

    def member(self, key: str, enum: type[Verdict] | type[Reason] | type[ImageOrigin], skip: str = "") -> Any:
        value = self.string(key)
        names = [m.name for m in enum if m.name != skip]
        if value not in names:
            _fail(f"malformed: {self._name(key)} must be one of {', '.join(names)}, got {value[:80]!r}")
        return enum[value]


def _certificate(
    fields: _Fields, public_raw: bytes, key_sha256: str, signer_pem: str | None, trusted_by: str
) -> Certificate:
    verdict: Verdict = fields.member("verdict", Verdict)
    reason: Reason | None = None if fields.data["reason"] is None else fields.member("reason", Reason)
    if (verdict is Verdict.AUTHENTIC) != (reason is None):
        _fail("malformed: certificate.reason must be null exactly when the verdict is AUTHENTIC")
    model = fields.object("model", {"name", "version", "sha256"})
    images = []
    for index, entry in enumerate(fields.array("images")):
        image = _Fields(
            entry, f"certificate.images[{index}]", {"image_id", "region", "origin", "sha256", "accepted", "used"}
        )
        accepted, used = image.boolean("accepted"), image.boolean("used")
        if used and not accepted:
            _fail(f"malformed: certificate.images[{index}] is used but was not accepted")
        images.append(
            CertificateImage(
                image_id=image.string("image_id"),
                region=image.string("region"),
                origin=image.member("origin", ImageOrigin, skip="UNSPECIFIED"),
                sha256=image.pattern("sha256", _SHA256, "lowercase hex SHA-256"),
                accepted=accepted,
                used=used,
            )
        )
    public_pem = (
        Ed25519PublicKey.from_public_bytes(public_raw)
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )
    return Certificate(
        format=FORMAT,
        scan_id=fields.pattern("scan_id", _SCAN_ID, "1..128 of A-Z a-z 0-9 . _ ~ -"),
        device_id=fields.string("device_id"),
        item_type=fields.string("item_type"),
        partner_item_id=fields.optional_string("partner_item_id"),
        verdict=verdict,
        reason=reason,
        score=Decimal(fields.pattern("score", _SCORE, "a decimal string 0.0000..1.0000")),
        threshold=Decimal(fields.pattern("threshold", _SCORE, "a decimal string 0.0000..1.0000")),
        summary=fields.string("summary", empty=True),
        statement=fields.string("statement"),
        model=ModelRef(
            name=model.string("name"),
            version=model.string("version", empty=True),
            sha256=model.string("sha256", empty=True),
        ),
        images=tuple(images),
        create_time=fields.time("create_time"),
        complete_time=fields.time("complete_time"),
        issue_time=fields.time("issue_time"),
        signing_key_sha256=key_sha256,
        signing_public_key=public_pem,
        signer_certificate=signer_pem,
        trusted_by=trusted_by,
    )


def _rfc3339(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- Trust --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Anchor:
    """What the caller trusts: one Ed25519 public key, or fleet CA certificates."""

    public_raw: bytes | None
    authorities: tuple[x509.Certificate, ...]

    @classmethod
    def load(cls, pem: bytes | str) -> _Anchor:
        if isinstance(pem, str):
            pem = pem.encode("utf-8")
        if not isinstance(pem, bytes):
            raise TypeError(f"trust_pem must be PEM bytes or str, got {type(pem).__name__}")
        if b"-----BEGIN CERTIFICATE-----" in pem:
            try:
                return cls(None, tuple(x509.load_pem_x509_certificates(pem)))
            except ValueError as exc:
                raise ValueError(f"the trust anchor holds a CERTIFICATE block that cannot be read: {exc}") from None
        if b"PRIVATE KEY-----" in pem:
            raise ValueError("the trust anchor is a private key; give the unit's public key (veriscope info --json)")
        try:
            key = serialization.load_pem_public_key(pem)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise ValueError(
                "the trust anchor is neither a PEM public key ('-----BEGIN PUBLIC KEY-----') nor PEM X.509 certificates"
            ) from None
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(
                f"the trust anchor is a {type(key).__name__.lstrip('_')}; Veriscope units sign with Ed25519 keys"
            )
        return cls(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw), ())

    def vouch(self, public_raw: bytes, signer_pem: str | None, fields: _Fields) -> str:
        """How the anchor vouches for the statement's key; CertificateError (key_not_trusted) when it does not."""
        if self.public_raw is not None:
            if public_raw != self.public_raw:
                _fail(
                    f"key not trusted: the certificate was signed by key {_short(public_raw)}, not by the trusted "
                    f"key {_short(self.public_raw)} (a certificate of another unit, or the wrong key file)",
                    "key_not_trusted",
                )
            return "the trusted public key"
        if signer_pem is None:
            _fail(
                "key not trusted: the certificate carries no signer certificate for a CA to vouch for; verify it "
                "with the unit's public key instead",
                "key_not_trusted",
            )
        try:
            signer = x509.load_pem_x509_certificate(signer_pem.encode("utf-8"))
        except ValueError:
            _fail("malformed: certificate.signing_key.certificate is not a PEM X.509 certificate")
        issuer = next((ca for ca in self.authorities if _issued_by(signer, ca)), None)
        if issuer is None:
            _fail(
                f"key not trusted: the signer certificate ({signer.subject.rfc4514_string()}) was not issued by the "
                "trusted CA",
                "key_not_trusted",
            )
        signer_key = signer.public_key()
        if (
            not isinstance(signer_key, Ed25519PublicKey)
            or signer_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) != public_raw
        ):
            _fail(
                "key not trusted: the signer certificate certifies another key than the one that signed",
                "key_not_trusted",
            )
        issued = fields.time("issue_time")
        for what, cert in (("signer certificate", signer), ("CA certificate", issuer)):
            if not cert.not_valid_before_utc <= issued <= cert.not_valid_after_utc:
                _fail(
                    f"key not trusted: the {what} was not valid at the issue time {_rfc3339(issued)}", "key_not_trusted"
                )
        names = [a.value for a in signer.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        device_id = fields.string("device_id")
        if names != [device_id]:
            _fail(
                f"key not trusted: the signer certificate is for {', '.join(map(str, names)) or 'no common name'}, "
                f"not for device {device_id!r}",
                "key_not_trusted",
            )
        return f"certified by CA {issuer.subject.rfc4514_string()}"


def _issued_by(certificate: x509.Certificate, ca: x509.Certificate) -> bool:
    """True when ``ca`` is a CA certificate and signed ``certificate``."""
    try:
        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    if not constraints.ca:
        return False
    try:
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _short(public_raw: bytes) -> str:
    """A key's name in messages: the first 16 hex digits of its SHA-256."""
    return f"sha256 {hashlib.sha256(public_raw).hexdigest()[:16]}…"
