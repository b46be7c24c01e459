"""Certificates of authenticity: the unit's Ed25519 signing key, and the signed record of each completed scan.

A certificate is one UTF-8 JSON document in canonical form (keys sorted, no
insignificant whitespace, non-ASCII characters as themselves, one trailing
newline)::

    {"certificate":{...the statement...},"signature":"<base64 Ed25519 signature>"}

The signature covers the canonical bytes of the statement, and a verifier
re-serialises the whole document and refuses it unless the bytes are
identical, so no byte of the file can change unnoticed. The statement holds no
floats (scores are decimal strings), so every language serialises it alike.
device/docs/certificates.md describes every field.

The key lives in ``DATA_DIR/keys/signing-ed25519.pem`` (PKCS #8 PEM, mode
0600, in a 0700 directory). It is created on the first start and loaded on
every later one; a key file that is corrupt, unreadable or open to group or
others stops the daemon with a message that names the file and the fix. An
optional ``signing-ed25519.crt`` beside it (an X.509 certificate of this key,
issued by a fleet CA) is embedded in every statement, so verifiers can trust
the CA instead of each unit's key.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import math
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from veriscope.device.errors import SigningKeyError
from veriscope.device.scans.records import ScanRecord, ScanState

_log = logging.getLogger("veriscope.device.certificates")

FORMAT = "veriscope.certificate/1"
"""The ``format`` of the statements this module signs."""
KEY_DIR = "keys"
"""Directory under the data directory that holds the signing key."""
KEY_FILE = "signing-ed25519.pem"
"""The signing key: an unencrypted PKCS #8 PEM Ed25519 private key, mode 0600."""
SIGNER_CERTIFICATE_FILE = "signing-ed25519.crt"
"""Optional: an X.509 certificate of the signing key issued by a fleet CA, PEM."""
ALGORITHM = "Ed25519"
SCORE_DECIMALS = 4
"""Digits after the point of the scores in a statement ("0.9731")."""


def canonical(value: Any) -> bytes:
    """The canonical UTF-8 JSON bytes of ``value``: keys sorted, no whitespace, non-ASCII kept as is, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def rfc3339(when: datetime) -> str:
    """``when`` in UTC as RFC 3339 with milliseconds: ``"2026-05-28T12:00:00.500Z"``."""
    utc = when.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def decimal(value: float) -> str:
    """A score 0..1 as a fixed decimal string, ``"0.9731"``; out-of-range values are clamped, NaN is 0."""
    clamped = min(max(value, 0.0), 1.0) if math.isfinite(value) else 0.0
    return f"{clamped:.{SCORE_DECIMALS}f}"


@dataclass(frozen=True)
class SigningKey:
    """The unit's Ed25519 key that signs certificates, and the optional fleet-CA certificate of it."""

    private_key: Ed25519PrivateKey
    path: Path
    """The key file."""
    certificate_pem: str | None = None
    """PEM of an X.509 certificate of this key issued by a fleet CA, or None."""

    @property
    def public_key_raw(self) -> bytes:
        """The 32-byte raw public key."""
        return self.private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def public_key_pem(self) -> str:
        """The public key as PEM SubjectPublicKeyInfo, as served in ``Device.signing_public_key``."""
        return (
            self.private_key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode("ascii")
        )

    @property
    def sha256(self) -> str:
        """Lowercase hex SHA-256 of the raw public key: the key's short, stable identity."""
        return hashlib.sha256(self.public_key_raw).hexdigest()

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``data``."""
        return self.private_key.sign(data)

    @classmethod
    def load_or_create(cls, data_dir: Path) -> SigningKey:
        """Load the key under ``data_dir/keys``, creating it (and the directory) on the first start.

        Raises SigningKeyError, naming the file and the fix, when the directory or
        the file is open to other users, or the file cannot be read, is not an
        unencrypted Ed25519 PEM private key, or has a signer certificate of
        another key beside it.
        """
        directory = data_dir / KEY_DIR
        path = directory / KEY_FILE
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise SigningKeyError(f"cannot create the key directory {directory}: {exc.strerror}") from None
        _check_private(directory, "key directory", 0o022, "700")
        if not path.exists():
            _create(path)
        key = _load(path)
        cert_path = directory / SIGNER_CERTIFICATE_FILE
        certificate = _load_signer_certificate(cert_path, key) if cert_path.exists() else None
        signing = cls(key, path, certificate)
        _log.info("signing certificates with Ed25519 key %s (sha256 %s)", path, signing.sha256)
        return signing


def _check_private(path: Path, what: str, forbidden: int, mode: str) -> os.stat_result:
    try:
        info = path.stat()
    except OSError as exc:
        raise SigningKeyError(f"cannot read the {what} {path}: {exc.strerror}") from None
    if info.st_mode & forbidden:
        raise SigningKeyError(
            f"the {what} {path} is open to other users (mode {stat.S_IMODE(info.st_mode):04o}); "
            f"it must be private to the daemon's user: run 'chmod {mode} {path}'"
        )
    return info


def _create(path: Path) -> None:
    """Write a new key to ``path`` atomically, mode 0600: never a partial file, never over an existing one."""
    data = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            # A hard link, unlike a rename, fails when another process created the key meanwhile.
            os.link(tmp, path)
        except FileExistsError:
            return
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise SigningKeyError(f"cannot create the signing key {path}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    _log.warning("created a new certificate signing key %s", path)


def _load(path: Path) -> Ed25519PrivateKey:
    info = _check_private(path, "signing key", 0o077, "600")
    if not stat.S_ISREG(info.st_mode):
        raise SigningKeyError(f"the signing key {path} is not a regular file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(
            f"cannot read the signing key {path}: {exc.strerror}; run the daemon as the file's owner"
        ) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SigningKeyError(
            f"the signing key {path} is corrupt or not an unencrypted PEM private key ({exc}); restore it from a "
            "backup, or move it away so that the daemon creates a new key (certificates signed before then verify "
            "only with the old public key)"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(
            f"the signing key {path} is a {type(key).__name__.removeprefix('_')}, not an Ed25519 key; move it away "
            "so that the daemon creates an Ed25519 key"
        )
    return key


def _load_signer_certificate(path: Path, key: Ed25519PrivateKey) -> str:
    try:
        pem = path.read_bytes()
        certificate = x509.load_pem_x509_certificate(pem)
    except OSError as exc:
        raise SigningKeyError(f"cannot read the signer certificate {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise SigningKeyError(f"the signer certificate {path} is not a PEM X.509 certificate ({exc})") from None
    public = certificate.public_key()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if (
        not isinstance(public, Ed25519PublicKey)
        or public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) != raw
    ):
        raise SigningKeyError(
            f"the signer certificate {path} certifies another key than {path.with_name(KEY_FILE)}; "
            "install the certificate issued for this unit's key, or remove it"
        )
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


# --- Statements ---------------------------------------------------------------------------------------------------


def statement_text(scan: ScanRecord, device_id: str) -> str:
    """One sentence a person can read: what was scanned, by which unit, when, and whether it was verified."""
    outcome = scan.outcome
    assert outcome is not None
    item = f"The {scan.item_type} item" + (f" (partner item id {scan.partner_item_id})" if scan.partner_item_id else "")
    scanned = f"{item} scanned by Veriscope unit {device_id} at {rfc3339(outcome.complete_time)}"
    if outcome.verdict == "AUTHENTIC":
        return f"{scanned} was verified as authentic."
    reason = (outcome.reason or "unverified").lower().replace("_", " ")
    return f"{scanned} could NOT be verified: {reason}."


def statement(scan: ScanRecord, device_id: str, key: SigningKey, issue_time: datetime) -> dict[str, Any]:
    """The statement a certificate signs, for a COMPLETED scan. Every value is a string, a bool, a list or an object."""
    outcome = scan.outcome
    if scan.state is not ScanState.COMPLETED or outcome is None:
        raise ValueError(f"scan {scan.scan_id!r} is {scan.state.name}; only COMPLETED scans have a certificate")
    used = {i.image_id for r in outcome.regions for i in r.images if i.score is not None}
    return {
        "format": FORMAT,
        "scan_id": scan.scan_id,
        "device_id": device_id,
        "item_type": scan.item_type,
        "partner_item_id": scan.partner_item_id or None,
        "verdict": outcome.verdict,
        "reason": outcome.reason,
        "score": decimal(outcome.score),
        "threshold": decimal(outcome.threshold),
        "summary": outcome.summary,
        "statement": statement_text(scan, device_id),
        "model": {"name": outcome.model_name, "version": outcome.model_version, "sha256": outcome.model_sha256},
        "images": [
            {
                "image_id": image.image_id,
                "region": image.region,
                "origin": image.origin.name,
                "sha256": image.sha256,
                "accepted": image.quality.ok,
                "used": image.image_id in used,
            }
            for image in scan.images
        ],
        "create_time": rfc3339(scan.create_time),
        "complete_time": rfc3339(outcome.complete_time),
        "issue_time": rfc3339(issue_time),
        "signing_key": {
            "algorithm": ALGORITHM,
            "public_key": base64.b64encode(key.public_key_raw).decode("ascii"),
            "sha256": key.sha256,
            "certificate": key.certificate_pem,
        },
    }


def issue(scan: ScanRecord, device_id: str, key: SigningKey, issue_time: datetime) -> str:
    """The signed certificate document of a COMPLETED scan, as text (its UTF-8 bytes are the file)."""
    signed = statement(scan, device_id, key, issue_time)
    signature = base64.b64encode(key.sign(canonical(signed))).decode("ascii")
    return (canonical({"certificate": signed, "signature": signature}) + b"\n").decode("utf-8")


def signing_key_sha256(document: str) -> str:
    """The ``signing_key.sha256`` of a stored certificate document (the key that signed it)."""
    return str(json.loads(document)["certificate"]["signing_key"]["sha256"])
