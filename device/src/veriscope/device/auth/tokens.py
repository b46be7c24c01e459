"""API tokens: issued once, stored hashed in ``DATA_DIR/auth/tokens.json``, checked on every call.

A token reads ``vs_<id>_<secret>``: ``id`` is 8 hex digits that name the token
in listings and in the audit log, ``secret`` is 32 random bytes in URL-safe
base64. The unit keeps only the SHA-256 of the secret, so a copy of
tokens.json does not give anyone a token. The whole token is shown once, when
it is created.

The file is written atomically (a temporary file renamed over it) with mode
0600, under an exclusive lock so that two ``veriscope-tool tokens`` commands
cannot lose each other's change. The daemon re-reads it whenever it changes, so
a token revoked on a running unit is refused from its next call. A file that
cannot be read, does not parse, or is writable by group or others makes every
token fail (the daemon fails closed) until it is fixed.

This module loads neither numpy, Pillow nor the model runtime (the standard
library, and grpc through the error tree): ``veriscope-tool`` imports it on the
unit without the imaging and inference stack.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from veriscope.device.auth.roles import Role
from veriscope.device.errors import InvalidArgument, NotFound, Unauthenticated, VeriscopeError
from veriscope.device.fsutil import write_atomic

AUTH_DIR = "auth"
"""Directory under the data directory that holds the token file."""
TOKENS_FILE = "tokens.json"
"""The token file, in :data:`AUTH_DIR`."""
FILE_VERSION = 1
"""Version of the token file's format; a file of another version is refused."""
TOKEN_PREFIX = "vs"
ID_HEX_DIGITS = 8
SECRET_BYTES = 32
MAX_NAME_CHARS = 64

_TOKEN = re.compile(rf"{TOKEN_PREFIX}_([0-9a-f]{{{ID_HEX_DIGITS}}})_([A-Za-z0-9_-]{{43}})")
_ID = re.compile(rf"[0-9a-f]{{{ID_HEX_DIGITS}}}")
_DURATION = re.compile(r"(\d{1,6})([mhdw])")
_DURATION_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


def utc_now() -> datetime:
    """The current time in UTC, to the second (the precision the token file keeps)."""
    return datetime.now(UTC).replace(microsecond=0)


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC to the second, for example ``"2025-03-01T12:00:00Z"``."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_expires(text: str, now: datetime | None = None) -> datetime | None:
    """Parse an expiry: ``"never"``, a duration from now (``"90m"``, ``"12h"``, ``"30d"``, ``"2w"``) or an RFC 3339 time.

    Raises InvalidArgument when the text is none of these, or names a time that is not in the future.
    """
    now = utc_now() if now is None else now
    text = text.strip()
    if text.lower() == "never":
        return None
    match = _DURATION.fullmatch(text)
    if match:
        amount = int(match.group(1))
        if amount == 0:
            raise InvalidArgument(f"expiry {text!r} is not in the future")
        return now + amount * _DURATION_UNITS[match.group(2)]
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidArgument(
            f"expiry {text!r} is not a duration (90m, 12h, 30d, 2w), an RFC 3339 time (2025-12-31T23:59:59Z) or 'never'"
        ) from None
    if when.tzinfo is None:
        raise InvalidArgument(f"expiry {text!r} has no time zone: add Z for UTC, or an offset such as +01:00")
    if when <= now:
        raise InvalidArgument(f"expiry {text!r} is not in the future")
    return when.astimezone(UTC).replace(microsecond=0)


def _hash_secret(secret: str) -> str:
    # A plain SHA-256 is enough: the secret is 256 random bits, so there is nothing for a slow KDF (bcrypt,
    # scrypt) to protect against guessing, and each call stays a microsecond check.
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


class TokenState(StrEnum):
    """Whether a token is accepted now."""

    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True)
class TokenRecord:
    """One token as the unit stores it: everything but the secret, of which only the hash is kept."""

    id: str
    """8 hex digits, unique on the unit; the ``<id>`` in ``vs_<id>_<secret>``."""
    role: Role
    """What the token may do."""
    name: str
    """A label for people, for example who or what holds the token; may be empty."""
    secret_sha256: str
    """SHA-256 of the secret, in hex."""
    created: datetime
    """When the token was created, UTC."""
    expires: datetime | None
    """When the token stops being accepted, UTC; None for never."""
    revoked: datetime | None
    """When the token was revoked, UTC; None while it is not."""

    def state(self, now: datetime) -> TokenState:
        """Revoked, expired or active, at ``now``."""
        if self.revoked is not None:
            return TokenState.REVOKED
        if self.expires is not None and now >= self.expires:
            return TokenState.EXPIRED
        return TokenState.ACTIVE

    def to_dict(self, now: datetime) -> dict[str, Any]:
        """The record for people and scripts: id, name, role, created, expires, revoked, state (no hash)."""
        return {
            "id": self.id,
            "name": self.name,
            "role": str(self.role),
            "created": format_time(self.created),
            "expires": None if self.expires is None else format_time(self.expires),
            "revoked": None if self.revoked is None else format_time(self.revoked),
            "state": str(self.state(now)),
        }

    def _to_file(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "role": str(self.role),
            "secret_sha256": self.secret_sha256,
            "created": format_time(self.created),
            "expires": None if self.expires is None else format_time(self.expires),
            "revoked": None if self.revoked is None else format_time(self.revoked),
        }


@dataclass(frozen=True)
class IssuedToken:
    """A newly created token: the only time its full text exists anywhere."""

    token: str
    """The token to give to its holder, ``vs_<id>_<secret>``."""
    record: TokenRecord
    """What the unit stores about it."""


class TokenStoreError(VeriscopeError):
    """The token file cannot be read, parsed or written; the message names the file and the problem."""


class TokenRejected(Unauthenticated):
    """A presented token is not accepted.

    Attributes:
        reason: ``"malformed"`` (not ``vs_<id>_<secret>``), ``"unknown"`` (no such token, or a wrong secret),
            ``"revoked"``, ``"expired"`` or ``"unavailable"`` (the token file is unusable).
        token_id: The id the token claims, when it has one; empty otherwise.
    """

    def __init__(self, message: str, *, reason: str, token_id: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.token_id = token_id


def token_id_of(token: str) -> str:
    """The id part of ``vs_<id>_<secret>``; empty when ``token`` does not have that form."""
    match = _TOKEN.fullmatch(token)
    return match.group(1) if match else ""


class TokenStore:
    """The unit's tokens, in ``DATA_DIR/auth/tokens.json``.

    The daemon calls :meth:`authenticate` on every call; ``veriscope-tool tokens``
    calls :meth:`create`, :meth:`list` and :meth:`revoke`, possibly while the
    daemon runs. Reads are cached and redone when the file changes.

    Args:
        data_dir: The unit's data directory (``--data-dir``); it must exist.
        clock: Returns the current UTC time; tests pass their own.
    """

    def __init__(self, data_dir: Path, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._data_dir = Path(data_dir)
        self._dir = self._data_dir / AUTH_DIR
        self._path = self._dir / TOKENS_FILE
        self._clock = clock
        self._lock = threading.Lock()
        self._cache_key: tuple[int, ...] | None = None
        self._cache: dict[str, TokenRecord] | TokenStoreError = {}

    @property
    def path(self) -> Path:
        """The token file."""
        return self._path

    # --- Reading ---

    def list(self) -> builtins.list[TokenRecord]:
        """Every token ever created on the unit (revoked and expired ones too), oldest first.

        Raises TokenStoreError when the file is unusable.
        """
        records = self._current()
        if isinstance(records, TokenStoreError):
            raise TokenStoreError(str(records))
        return sorted(records.values(), key=lambda r: (r.created, r.id))

    def authenticate(self, token: str) -> TokenRecord:
        """The record of an active token; raises :class:`TokenRejected` saying why a token is not accepted."""
        match = _TOKEN.fullmatch(token)
        if not match:
            raise TokenRejected(
                f"the API token is not a Veriscope token (expected {TOKEN_PREFIX}_<id>_<secret>)", reason="malformed"
            )
        token_id, secret = match.groups()
        records = self._current()
        if isinstance(records, TokenStoreError):
            raise TokenRejected(
                f"the unit cannot check tokens: {records}; no token is accepted until it is fixed",
                reason="unavailable",
                token_id=token_id,
            )
        record = records.get(token_id)
        # The id only finds the record; the secret decides, compared in constant time.
        if record is None or not hmac.compare_digest(_hash_secret(secret), record.secret_sha256):
            raise TokenRejected(f"API token {token_id} is not known to this unit", reason="unknown", token_id=token_id)
        state = record.state(self._clock())
        if state is TokenState.REVOKED:
            assert record.revoked is not None
            raise TokenRejected(
                f"API token {token_id} was revoked at {format_time(record.revoked)}; ask an admin for a new one",
                reason="revoked",
                token_id=token_id,
            )
        if state is TokenState.EXPIRED:
            assert record.expires is not None
            raise TokenRejected(
                f"API token {token_id} expired at {format_time(record.expires)}; ask an admin for a new one",
                reason="expired",
                token_id=token_id,
            )
        return record

    def _current(self) -> dict[str, TokenRecord] | TokenStoreError:
        """The file's tokens, re-read when the file changed since the last call (or the error it gives)."""
        try:
            st = os.stat(self._path)
            key: tuple[int, ...] | None = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        except FileNotFoundError:
            key = None
        except OSError as exc:
            return TokenStoreError(f"cannot read {self._path}: {exc.strerror}")
        with self._lock:
            if key != self._cache_key or key is None:
                try:
                    self._cache = self._read() if key is not None else {}
                except TokenStoreError as exc:
                    self._cache = exc
                self._cache_key = key
            return self._cache

    def _read(self) -> dict[str, TokenRecord]:
        path = self._path
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise TokenStoreError(f"cannot read {path}: {exc.strerror}") from None
        with open(fd, encoding="utf-8") as file:
            if os.fstat(file.fileno()).st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise TokenStoreError(f"{path} is writable by group or others, so anyone could add a token: chmod 600")
            try:
                data = json.load(file)
            except (ValueError, UnicodeDecodeError) as exc:
                raise TokenStoreError(f"{path} is not valid JSON: {exc}") from None
        if (
            not isinstance(data, dict)
            or data.get("version") != FILE_VERSION
            or not isinstance(data.get("tokens"), list)
        ):
            raise TokenStoreError(f"{path} is not a version {FILE_VERSION} token file")
        records: dict[str, TokenRecord] = {}
        for index, entry in enumerate(data["tokens"]):
            try:
                record = _record_from_file(entry)
            except (KeyError, TypeError, ValueError) as exc:
                raise TokenStoreError(f"{path}: token #{index} is malformed ({exc})") from None
            if record.id in records:
                raise TokenStoreError(f"{path}: token id {record.id} appears twice")
            records[record.id] = record
        return records

    # --- Changing ---

    def create(self, role: Role | str, *, name: str = "", expires: datetime | None = None) -> IssuedToken:
        """Create a token and return it with its full text, which is not stored and cannot be shown again.

        Args:
            role: ``operator``, ``technician`` or ``admin``.
            name: A label of at most 64 printable characters, for example who holds the token.
            expires: When it stops being accepted (aware datetime); None for never.

        Raises:
            InvalidArgument: An unknown role, a bad name or an expiry in the past.
            TokenStoreError: The token file is unusable or cannot be written.
        """
        try:
            role = Role(role)
        except ValueError:
            raise InvalidArgument(f"unknown role {role!r}; roles are: {', '.join(r.value for r in Role)}") from None
        if len(name) > MAX_NAME_CHARS or not all(c.isprintable() for c in name):
            raise InvalidArgument(f"name must be at most {MAX_NAME_CHARS} printable characters")
        now = self._clock()
        if expires is not None:
            if expires.tzinfo is None:
                raise InvalidArgument("expires must be an aware datetime")
            expires = expires.astimezone(UTC).replace(microsecond=0)
            if expires <= now:
                raise InvalidArgument(f"expiry {format_time(expires)} is not in the future")
        with self._locked() as records:
            token_id = secrets.token_hex(ID_HEX_DIGITS // 2)
            while token_id in records:
                token_id = secrets.token_hex(ID_HEX_DIGITS // 2)
            secret = base64.urlsafe_b64encode(secrets.token_bytes(SECRET_BYTES)).rstrip(b"=").decode("ascii")
            record = TokenRecord(
                id=token_id,
                role=role,
                name=name,
                secret_sha256=_hash_secret(secret),
                created=now,
                expires=expires,
                revoked=None,
            )
            records[token_id] = record
        return IssuedToken(f"{TOKEN_PREFIX}_{token_id}_{secret}", record)

    def revoke(self, token: str) -> TokenRecord:
        """Revoke a token, given its id or its full text; revoking it again keeps the first revocation time.

        The daemon refuses the token from its next call. The record stays in the file, for the audit trail.

        Raises:
            NotFound: No token has this id.
            TokenStoreError: The token file is unusable or cannot be written.
        """
        token_id = token_id_of(token) or token
        if not _ID.fullmatch(token_id):
            raise InvalidArgument(f"{token!r} is neither a token id (8 hex digits) nor a token")
        with self._locked() as records:
            record = records.get(token_id)
            if record is None:
                raise NotFound(f"no token with id {token_id} on this unit")
            if record.revoked is None:
                record = replace(record, revoked=self._clock())
                records[token_id] = record
        return record

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, TokenRecord]]:
        """Read the file under an exclusive lock, let the caller change the records, and write them back."""
        if not self._data_dir.is_dir():
            raise TokenStoreError(
                f"data directory {self._data_dir} does not exist: give the unit's --data-dir "
                "(create the directory first when provisioning a new unit)"
            )
        try:
            self._dir.mkdir(mode=0o700, exist_ok=True)
            lock_fd = os.open(self._dir / "tokens.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise TokenStoreError(f"cannot open {self._dir}: {exc.strerror}") from None
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            records = self._read()
            before = dict(records)
            yield records
            if records != before:
                self._write(records)
        finally:
            os.close(lock_fd)

    def _write(self, records: dict[str, TokenRecord]) -> None:
        data = {"version": FILE_VERSION, "tokens": [r._to_file() for r in records.values()]}
        text = json.dumps(data, indent=2) + "\n"
        try:
            write_atomic(self._path, text.encode("utf-8"), mode=0o600)
        except OSError as exc:
            raise TokenStoreError(f"cannot write {self._path}: {exc.strerror}") from None


def _time_or_none(value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"expected a time or null, got {value!r}")
    when = datetime.fromisoformat(value)
    if when.tzinfo is None:
        raise ValueError(f"time {value!r} has no time zone")
    return when.astimezone(UTC)


def _record_from_file(entry: Any) -> TokenRecord:
    if not isinstance(entry, dict):
        raise TypeError("not an object")
    token_id, name, digest = entry["id"], entry["name"], entry["secret_sha256"]
    if not isinstance(token_id, str) or not _ID.fullmatch(token_id):
        raise ValueError(f"bad id {token_id!r}")
    if not isinstance(name, str):
        raise TypeError("name is not a string")
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ValueError("secret_sha256 is not 64 hex digits")
    created = _time_or_none(entry["created"])
    if created is None:
        raise ValueError("created is null")
    return TokenRecord(
        id=token_id,
        role=Role(entry["role"]),
        name=name,
        secret_sha256=digest,
        created=created,
        expires=_time_or_none(entry["expires"]),
        revoked=_time_or_none(entry["revoked"]),
    )
