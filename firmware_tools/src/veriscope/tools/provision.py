"""Provisioning a unit's data directory: its identity, certificates, configuration and first admin token.

``veriscope-tool provision --data-dir DIR --ca CA_DIR`` runs on the unit, as the
daemon's user, and brings ``DIR`` to this state, one step at a time:

1. **device id**: ``DIR/device_id`` (kept when it exists; ``--device-id`` or a new
   ``VS-XXXXXXXX`` otherwise);
2. **signing key**: ``keys/signing-ed25519.pem``, the unit's Ed25519 certificate
   signing key (created when missing, never replaced);
3. **signer certificate**: ``keys/signing-ed25519.crt``, issued by the fleet CA;
4. **TLS key**: ``keys/tls-p256.pem``, ECDSA P-256, mode 0600 (created when
   missing, replaced only with ``--rotate``);
5. **TLS certificate**: ``keys/tls-p256.crt``, the unit certificate issued by the
   fleet CA, then the CA certificate;
6. **fleet CA certificate**: ``keys/fleet-ca.crt``, for mTLS;
7. **configuration**: ``DIR/config.toml`` (or ``--config``): ``[server] listen``,
   ``[device] data_dir`` and ``[tls]``; other keys of an existing file are kept;
8. **admin token**: one admin API token, when the unit has no active one; its
   text is printed once and never stored.

The keys are created in place and never leave the unit; the CA signs requests
that the unit's keys signed. A certificate is re-issued only when it is missing,
certifies another key, is issued by another CA or for another name, or expires
within 30 days. So a second run with the same arguments changes nothing, and
says so.

A new unit can instead be provisioned over the network, in its first-boot mode:
``veriscope-tool provision --device ADDR`` (:mod:`veriscope.tools._provision_device`).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from veriscope.device.certificates import KEY_FILE as SIGNING_KEY_FILE
from veriscope.device.certificates import SIGNER_CERTIFICATE_FILE, SigningKey
from veriscope.device.config import Config
from veriscope.device.config import dump_toml as _dump_toml
from veriscope.device.errors import VeriscopeError
from veriscope.device.identity import (
    FLEET_CA_FILE,
    KEY_DIR,
    RENEW_BEFORE,
    TLS_CERT_FILE,
    TLS_KEY_FILE,
    UNIT_SERVER_NAME,
    certificate_names,
    certificate_request,
    create_tls_key,
    ensure_keys_dir,
    load_tls_key,
    public_key_pin,
    write_certificate_file,
)
from veriscope.tools.ca import CaError, FleetCA

CONFIG_FILE = "config.toml"
"""The configuration provisioning writes, in the data directory unless ``--config`` names another file."""
DEFAULT_LISTEN = "0.0.0.0:50051"
"""The listener of a provisioned unit when neither ``--listen`` nor the configuration names one."""
DEVICE_ID_FILE = "device_id"
ADMIN_TOKEN_NAME = "provisioning"
_DEVICE_ID = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


class ProvisionError(Exception):
    """Provisioning cannot go on; the message names the file or argument and the fix."""


class Action(StrEnum):
    """What one provisioning step did."""

    UNCHANGED = "unchanged"
    CREATED = "created"
    ISSUED = "issued"
    ROTATED = "rotated"
    UPDATED = "updated"


@dataclass(frozen=True)
class Step:
    """One step of provisioning and its outcome.

    Attributes:
        item: What the step is about, for example ``"TLS certificate"``.
        path: The file it wrote or checked.
        action: What it did.
        detail: A few words on why, or on the result.
    """

    item: str
    path: Path
    action: Action
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        """The step for ``--json``."""
        return {"item": self.item, "path": str(self.path), "action": str(self.action), "detail": self.detail}


@dataclass
class Report:
    """The outcome of provisioning one data directory.

    Attributes:
        device_id: The unit's device id.
        data_dir: The data directory.
        config_file: The configuration file written or checked.
        tls_key_pin: The pin of the TLS key, ``"sha256:<hex>"`` (``veriscope --pin``).
        signing_key_sha256: SHA-256 of the raw signing public key, as certificates of authenticity name it.
        steps: Every step, in order.
        admin_token: The admin token created by this run, or None; shown once, never stored.
    """

    device_id: str
    data_dir: Path
    config_file: Path
    tls_key_pin: str = ""
    signing_key_sha256: str = ""
    steps: list[Step] = field(default_factory=list)
    admin_token: str | None = None

    @property
    def changed(self) -> bool:
        """True when any step changed something."""
        return any(step.action is not Action.UNCHANGED for step in self.steps)

    def to_dict(self) -> dict[str, Any]:
        """The report for ``--json``."""
        return {
            "device_id": self.device_id,
            "data_dir": str(self.data_dir),
            "config_file": str(self.config_file),
            "changed": self.changed,
            "tls_key_pin": self.tls_key_pin,
            "signing_key_sha256": self.signing_key_sha256,
            "admin_token": self.admin_token,
            "steps": [step.to_dict() for step in self.steps],
        }


def provision_data_dir(
    data_dir: Path,
    ca: FleetCA,
    *,
    device_id: str | None = None,
    listen: str | None = None,
    config_file: Path | None = None,
    require_client_cert: bool | None = None,
    rotate: bool = False,
    admin_token: bool = True,
    now: datetime | None = None,
) -> Report:
    """Provision the unit whose data directory is ``data_dir`` with the fleet CA ``ca`` (see the module docstring).

    Args:
        data_dir: The unit's data directory (``device.data_dir``); created when missing.
        ca: The fleet CA that issues the unit's certificates.
        device_id: The unit's id when it has none yet; must match the id it has otherwise.
        listen: ``server.listen`` to configure; None keeps the configured one (``0.0.0.0:50051`` when none).
        config_file: The configuration to write; None means ``data_dir/config.toml``.
        require_client_cert: True turns mTLS on, False off; None keeps the configured setting.
        rotate: True replaces the TLS key with a new one (and re-issues its certificate).
        admin_token: True creates an admin API token when the unit has no active one.
        now: The current time (for tests).

    Raises:
        ProvisionError: An argument contradicts the unit's state, or a file cannot be read or written; the
            message names it.
    """
    when = now or datetime.now(UTC)
    data_dir = data_dir.expanduser().resolve()
    config_path = (config_file or data_dir / CONFIG_FILE).expanduser().resolve()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ProvisionError(f"cannot create the data directory {data_dir}: {exc.strerror}") from None
    existing = _read_config(config_path)
    unit_id, id_step = _device_id(data_dir, existing, device_id)
    report = Report(unit_id, data_dir, config_path, steps=[id_step])
    try:
        keys = ensure_keys_dir(data_dir)
        report.steps += _signing_identity(data_dir, keys, ca, unit_id, when, report)
        report.steps += _tls_identity(keys, ca, unit_id, when, rotate, report)
        fleet_ca = keys / FLEET_CA_FILE
        report.steps.append(_install(fleet_ca, ca.certificate_pem, "fleet CA certificate", ca.name))
    except (VeriscopeError, CaError) as exc:
        raise ProvisionError(str(exc)) from None
    report.steps.append(_configure(config_path, existing, data_dir, listen, require_client_cert))
    if admin_token:
        report.steps.append(_admin_token(data_dir, report))
    return report


# --- Steps -------------------------------------------------------------------------------------------------------


def _device_id(data_dir: Path, config: Mapping[str, Any], wanted: str | None) -> tuple[str, Step]:
    path = data_dir / DEVICE_ID_FILE
    configured = str(config.get("device", {}).get("id", "") or "")
    current = configured
    if not current and path.is_file():
        try:
            current = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ProvisionError(f"cannot read {path}: {exc.strerror}") from None
    if current:
        if wanted and wanted != current:
            raise ProvisionError(
                f"the unit is {current!r} already (from {'[device] id' if configured else path}); a unit's id does not "
                f"change: leave out --device-id, or give --device-id {current}"
            )
        _check_device_id(current, "[device] id" if configured else str(path))
        return current, Step("device id", path, Action.UNCHANGED, current)
    new = wanted or "VS-" + secrets.token_hex(4).upper()
    _check_device_id(new, "--device-id")
    try:
        path.write_text(new + "\n", encoding="utf-8")
    except OSError as exc:
        raise ProvisionError(f"cannot write {path}: {exc.strerror}") from None
    return new, Step("device id", path, Action.CREATED, new)


def _check_device_id(device_id: str, source: str) -> None:
    if not _DEVICE_ID.fullmatch(device_id):
        raise ProvisionError(
            f"the device id {device_id!r} (from {source}) cannot name a certificate: it must be 1..63 letters, digits "
            "and inner hyphens, like VS-1A2B3C4D"
        )


def _signing_identity(
    data_dir: Path, keys: Path, ca: FleetCA, device_id: str, now: datetime, report: Report
) -> list[Step]:
    key_path = keys / SIGNING_KEY_FILE
    cert_path = keys / SIGNER_CERTIFICATE_FILE
    existed = key_path.exists()
    stale = cert_path.exists() and not (existed and _certifies(cert_path, key_path))
    if stale:
        # A signer certificate of a key that is gone or another: the daemon would refuse to start with it.
        cert_path.unlink()
    signing = SigningKey.load_or_create(data_dir)
    report.signing_key_sha256 = signing.sha256
    steps = [
        Step(
            "signing key",
            key_path,
            Action.UNCHANGED if existed else Action.CREATED,
            f"Ed25519, sha256 {signing.sha256[:16]}...",
        )
    ]
    current = _read_certificate(cert_path)
    reason = _reissue_reason(current, ca, device_id, signing.private_key.public_key(), now, tls=False)
    if stale:
        reason = "the old one certified another key"
    if reason is None:
        steps.append(Step("signer certificate", cert_path, Action.UNCHANGED, _validity(current)))
        return steps
    certificate = ca.issue_signer_certificate(certificate_request(signing.private_key, device_id), device_id, now=now)
    write_certificate_file(cert_path, certificate.public_bytes(serialization.Encoding.PEM))
    steps.append(Step("signer certificate", cert_path, Action.ISSUED, f"{reason}; {_validity(certificate)}"))
    return steps


def _tls_identity(keys: Path, ca: FleetCA, device_id: str, now: datetime, rotate: bool, report: Report) -> list[Step]:
    key_path = keys / TLS_KEY_FILE
    cert_path = keys / TLS_CERT_FILE
    if rotate and key_path.exists():
        create_tls_key(key_path, replace=True)
        key_action = Action.ROTATED
    else:
        key_action = Action.CREATED if create_tls_key(key_path) else Action.UNCHANGED
    key = load_tls_key(key_path)
    report.tls_key_pin = public_key_pin(key)
    steps = [Step("TLS key", key_path, key_action, f"ECDSA P-256, pin {report.tls_key_pin}")]
    chain = _read_certificates(cert_path)
    current = chain[0] if chain else None
    reason = _reissue_reason(current, ca, device_id, key.public_key(), now, tls=True)
    if reason is None and chain[1:] != [ca.certificate]:
        reason = "the CA certificate after it was missing or another"
    if reason is None:
        steps.append(Step("TLS certificate", cert_path, Action.UNCHANGED, _validity(current)))
        return steps
    certificate = ca.issue_unit_certificate(certificate_request(key, device_id), device_id, now=now)
    write_certificate_file(cert_path, certificate.public_bytes(serialization.Encoding.PEM) + ca.certificate_pem)
    steps.append(Step("TLS certificate", cert_path, Action.ISSUED, f"{reason}; {_validity(certificate)}"))
    return steps


def _reissue_reason(
    certificate: x509.Certificate | None,
    ca: FleetCA,
    device_id: str,
    public_key: Any,
    now: datetime,
    *,
    tls: bool,
) -> str | None:
    """Why ``certificate`` must be issued anew, or None when it is good."""
    if certificate is None:
        return "new"
    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if certificate.public_key().public_bytes(*der) != public_key.public_bytes(*der):
        return "the old one certified another key"
    if not ca.issued(certificate):
        return f"the old one was issued by {certificate.issuer.rfc4514_string()}, not by this CA"
    names = certificate_names(certificate)
    if device_id not in names or (tls and UNIT_SERVER_NAME not in names):
        return f"the old one was issued for {', '.join(names) or 'no name'}"
    if certificate.not_valid_after_utc - now < RENEW_BEFORE:
        return f"renewed: the old one expires on {certificate.not_valid_after_utc:%Y-%m-%d}"
    return None


def _certifies(cert_path: Path, key_path: Path) -> bool:
    """False when the certificate at ``cert_path`` is of another key than the one at ``key_path``; True when it
    is of that key, or when either cannot be read (the signing key's own checks then say what is wrong)."""
    try:
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm):
        return True
    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(certificate.public_key().public_bytes(*der) == key.public_key().public_bytes(*der))


def _install(path: Path, pem: bytes, item: str, detail: str) -> Step:
    try:
        current = path.read_bytes() if path.exists() else None
    except OSError as exc:
        raise ProvisionError(f"cannot read {path}: {exc.strerror}") from None
    if current == pem:
        return Step(item, path, Action.UNCHANGED, detail)
    write_certificate_file(path, pem)
    return Step(item, path, Action.CREATED if current is None else Action.UPDATED, detail)


def _configure(
    path: Path, existing: dict[str, Any], data_dir: Path, listen: str | None, require_client_cert: bool | None
) -> Step:
    wanted = {section: dict(values) if isinstance(values, dict) else values for section, values in existing.items()}
    server = wanted.setdefault("server", {})
    server["listen"] = listen or server.get("listen") or DEFAULT_LISTEN
    wanted.setdefault("device", {})["data_dir"] = str(data_dir)
    tls = wanted.setdefault("tls", {})
    tls["cert_file"] = f"{KEY_DIR}/{TLS_CERT_FILE}"
    tls["key_file"] = f"{KEY_DIR}/{TLS_KEY_FILE}"
    if require_client_cert is not None:
        tls["require_client_cert"] = require_client_cert
    tls.setdefault("require_client_cert", False)
    mtls = ", client certificates required" if tls["require_client_cert"] else ""
    detail = f"listen {server['listen']}, TLS{mtls}"
    if wanted == existing:
        return Step("configuration", path, Action.UNCHANGED, detail)
    _check_config(wanted, path)
    text = (
        "# Veriscope unit configuration; 'veriscope-tool provision' keeps [server] listen, [device] data_dir and\n"
        "# [tls] up to date and keeps every other key. Start the daemon with: veriscope-device serve --config "
        f"{path}\n\n" + dump_toml(wanted)
    )
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise ProvisionError(f"cannot write the configuration {path}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return Step("configuration", path, Action.CREATED if not existing else Action.UPDATED, detail)


def _check_config(raw: dict[str, Any], path: Path) -> None:
    """Refuse to write a configuration the daemon would refuse."""
    try:
        Config().with_overrides(**raw)
    except VeriscopeError as exc:
        raise ProvisionError(f"the configuration {path} would be invalid: {exc}") from None


def _admin_token(data_dir: Path, report: Report) -> Step:
    from veriscope.device.auth.roles import Role
    from veriscope.device.auth.tokens import TokenState, TokenStore, utc_now

    store = TokenStore(data_dir)
    try:
        now = utc_now()
        active = [t for t in store.list() if t.role is Role.ADMIN and t.state(now) is TokenState.ACTIVE]
        if active:
            ids = ", ".join(t.id for t in active)
            return Step("admin token", store.path, Action.UNCHANGED, f"the unit has one ({ids}); not shown again")
        issued = store.create(Role.ADMIN, name=ADMIN_TOKEN_NAME)
    except VeriscopeError as exc:
        raise ProvisionError(str(exc)) from None
    report.admin_token = issued.token
    return Step("admin token", store.path, Action.CREATED, f"id {issued.record.id}, printed once below")


# --- Files -------------------------------------------------------------------------------------------------------


def _read_config(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ProvisionError(f"cannot read the configuration {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProvisionError(f"the configuration {path} is not valid TOML ({exc}); fix or move it away") from None


def _read_certificates(path: Path) -> list[x509.Certificate]:
    """The certificates of ``path``; none when it is missing or unreadable (it is then issued anew)."""
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError):
        return []


def _read_certificate(path: Path) -> x509.Certificate | None:
    chain = _read_certificates(path)
    return chain[0] if chain else None


def _validity(certificate: x509.Certificate | None) -> str:
    if certificate is None:
        return ""
    return f"{certificate.issuer.rfc4514_string()}, valid until {certificate.not_valid_after_utc:%Y-%m-%d}"


def dump_toml(document: Mapping[str, Any]) -> str:
    """``document`` as TOML: top-level keys, then one table per section (:func:`veriscope.device.config.dump_toml`).

    Raises ProvisionError for a value the configuration never holds.
    """
    try:
        return _dump_toml(document)
    except ValueError as exc:
        raise ProvisionError(str(exc)) from None
