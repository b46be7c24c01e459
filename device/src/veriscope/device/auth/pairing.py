"""The one-time pairing code of an unprovisioned unit, and the interceptor of first-boot mode.

A pairing code reads ``XXXX-XXXX-XXXX-XXXX``: 16 characters of a 30-letter
alphabet without look-alikes (no 0/O, 1/I/L, U), about 78 bits. It is created
on the unit, shown once (the daemon's first start in first-boot mode, or
``veriscope-device pairing-code`` for the factory label) and stored only as a
salted scrypt hash in ``DATA_DIR/auth/pairing-code`` (directory 0700, file
0600). A technician proves they hold the unit by sending it as
``veriscope-pairing-code`` metadata. The code is spent when provisioning
succeeds: the file then records when, and no call is accepted with it again.

In first-boot mode :class:`PairingInterceptor` replaces the token interceptor:
health checks pass, the methods of :data:`~veriscope.device.auth.roles.FIRST_BOOT_METHODS`
need the pairing code (else UNAUTHENTICATED, and RESOURCE_EXHAUSTED for a peer
that keeps guessing), and every other method is UNIMPLEMENTED: nothing else is
served until the unit is provisioned.

Like :mod:`~veriscope.device.auth.tokens`, this module loads neither numpy,
Pillow nor the model runtime.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import math
import os
import secrets
import stat
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

from veriscope.device.auth.ratelimit import RateLimiter
from veriscope.device.auth.roles import FIRST_BOOT_METHODS, OPEN_SERVICES, service_of
from veriscope.device.auth.tokens import AUTH_DIR, format_time, utc_now
from veriscope.device.errors import Unauthenticated, VeriscopeError
from veriscope.device.fsutil import write_atomic

PAIRING_CODE_FILE = "pairing-code"
"""The pairing code's hash, in ``DATA_DIR/auth``."""
PAIRING_CODE_KEY = "veriscope-pairing-code"
"""The call metadata that carries the pairing code."""
ALPHABET = "ABCDEFGHJKMNPQRSTVWXYZ23456789"
"""The letters of a pairing code: no 0/O, 1/I/L or U, so a code read off a label is typed right."""
CODE_CHARS = 16
"""Characters of a pairing code, shown in groups of four."""
FILE_VERSION = 1
"""Version of the pairing code file's format."""
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
"""scrypt cost: about 50 ms on a Raspberry Pi 4 per check, which only matters to someone guessing."""


class PairingCodeError(VeriscopeError):
    """The pairing code file cannot be read or written; the message names the file."""


def normalize_code(code: str) -> str:
    """``code`` in upper case without separators: what is hashed. ``abcd-efgh ...`` and ``ABCDEFGH...`` match."""
    return "".join(c for c in code.upper() if c not in "- \t")


def format_code(code: str) -> str:
    """``code`` in groups of four: ``ABCD-EFGH-JKMN-PQRS``."""
    plain = normalize_code(code)
    return "-".join(plain[i : i + 4] for i in range(0, len(plain), 4))


def _hash(code: str, salt: bytes) -> str:
    return hashlib.scrypt(normalize_code(code).encode("ascii", "replace"), salt=salt, dklen=32, **_SCRYPT).hex()


@dataclass(frozen=True)
class PairingState:
    """What the pairing code file says, without the code.

    Attributes:
        created: When the code was created, UTC.
        used: When provisioning spent it, UTC; None while it may be used.
    """

    created: datetime
    used: datetime | None


class PairingCodeStore:
    """The unit's pairing code in ``DATA_DIR/auth/pairing-code``.

    Args:
        data_dir: The unit's data directory.
    """

    def __init__(self, data_dir: Path) -> None:
        self._dir = Path(data_dir) / AUTH_DIR
        self._path = self._dir / PAIRING_CODE_FILE
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        """The pairing code file."""
        return self._path

    def state(self) -> PairingState | None:
        """The code's state, or None when the unit has none. Raises PairingCodeError when the file is unusable."""
        entry = self._read()
        if entry is None:
            return None
        return PairingState(_time(entry["created"]), _time(entry["used"]) if entry.get("used") else None)

    def create(self) -> str:
        """Make a new code, replacing any other, and return it: the only time it exists in clear text.

        Raises PairingCodeError when the file cannot be written.
        """
        code = "".join(secrets.choice(ALPHABET) for _ in range(CODE_CHARS))
        salt = secrets.token_bytes(16)
        entry = {
            "version": FILE_VERSION,
            "scrypt_sha256": _hash(code, salt),
            "salt": base64.b64encode(salt).decode("ascii"),
            "created": format_time(utc_now()),
            "used": None,
        }
        with self._lock:
            self._write(entry)
        return format_code(code)

    def ensure(self) -> str | None:
        """A new code when the unit has none, or only a spent one; None when an unspent code exists."""
        state = self.state()
        if state is not None and state.used is None:
            return None
        return self.create()

    def verify(self, code: str) -> None:
        """Accept ``code`` or raise :class:`~veriscope.device.errors.Unauthenticated` saying why not.

        The comparison is in constant time. Raises PairingCodeError when the file is unusable.
        """
        entry = self._read()
        if entry is None:
            raise Unauthenticated("this unit has no pairing code: make one on it with 'veriscope-device pairing-code'")
        if entry.get("used"):
            raise Unauthenticated(
                f"the pairing code was used at {entry['used']} and is no longer valid: the unit is provisioned"
            )
        salt = base64.b64decode(entry["salt"])
        if not hmac.compare_digest(_hash(code, salt), entry["scrypt_sha256"]):
            raise Unauthenticated("wrong pairing code: give the code on the unit's label or in its first-boot log")

    def invalidate(self) -> None:
        """Spend the code: no call is accepted with it again. Raises PairingCodeError when the file is unusable."""
        with self._lock:
            entry = self._read()
            if entry is None or entry.get("used"):
                return
            entry["used"] = format_time(utc_now())
            self._write(entry)

    def _read(self) -> dict[str, Any] | None:
        try:
            fd = os.open(self._path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PairingCodeError(f"cannot read {self._path}: {exc.strerror}") from None
        with open(fd, encoding="utf-8") as file:
            if os.fstat(file.fileno()).st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise PairingCodeError(f"{self._path} is writable by group or others: chmod 600 {self._path}")
            try:
                entry = json.load(file)
            except (ValueError, UnicodeDecodeError) as exc:
                raise PairingCodeError(f"{self._path} is not valid JSON ({exc}); make a new code") from None
        if not isinstance(entry, dict) or entry.get("version") != FILE_VERSION or "scrypt_sha256" not in entry:
            raise PairingCodeError(f"{self._path} is not a version {FILE_VERSION} pairing code file; make a new code")
        return entry

    def _write(self, entry: dict[str, Any]) -> None:
        try:
            self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_atomic(self._path, (json.dumps(entry, indent=2) + "\n").encode("utf-8"), mode=0o600)
        except OSError as exc:
            raise PairingCodeError(f"cannot write {self._path}: {exc.strerror}") from None


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


# --- The first-boot interceptor ------------------------------------------------------------------------------------

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"

if TYPE_CHECKING:
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor


class PairingInterceptor(_Interceptor):
    """Access in first-boot mode: health is open, provisioning needs the pairing code, nothing else is served.

    Args:
        codes: The unit's pairing code.
        peer_limiter: Rate limit per peer address of calls with a wrong or missing code.
    """

    def __init__(self, codes: PairingCodeStore, *, peer_limiter: RateLimiter | None = None) -> None:
        self._codes = codes
        self._peer_limiter = peer_limiter or RateLimiter(0, 1)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        """The call's handler when it may run, else a handler that refuses it without reading the request."""
        method: str = handler_call_details.method
        if service_of(method) in OPEN_SERVICES:
            return await continuation(handler_call_details)
        if method not in FIRST_BOOT_METHODS:
            return _refusing(
                grpc.StatusCode.UNIMPLEMENTED,
                f"{method.lstrip('/')} is not served in first-boot mode: the unit serves only health checks and "
                "ProvisioningService until it is provisioned ('veriscope-tool provision --device ...')",
            )
        code, problem = _pairing_code(handler_call_details.invocation_metadata)
        if code is not None:
            try:
                # scrypt is slow on purpose; it runs off the event loop.
                await asyncio.to_thread(self._codes.verify, code)
                return await continuation(handler_call_details)
            except VeriscopeError as exc:
                problem = str(exc)
        return self._refusing_guess(problem)

    def _refusing_guess(self, problem: str) -> Handler:
        async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            wait_s = self._peer_limiter.acquire(_peer_host(context.peer()))
            if wait_s > 0:
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"too many calls without the right pairing code from this address; retry in {wait_s:.2f} s",
                    trailing_metadata=(("retry-after-ms", str(math.ceil(wait_s * 1000))),),
                )
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, problem)

        return grpc.unary_unary_rpc_method_handler(refuse)


def _refusing(code: grpc.StatusCode, details: str) -> Handler:
    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(code, details)

    return grpc.unary_unary_rpc_method_handler(refuse)


def _pairing_code(metadata: Sequence[tuple[str, str | bytes]] | None) -> tuple[str | None, str]:
    values = [value for key, value in (metadata or ()) if key == PAIRING_CODE_KEY]
    if len(values) != 1:
        return None, (
            f"this unit is in first-boot mode: send its pairing code as '{PAIRING_CODE_KEY}' metadata "
            "(veriscope-tool provision --pairing-code CODE)"
        )
    value = values[0]
    return (value.decode("ascii", "replace") if isinstance(value, bytes) else value), ""


def _peer_host(peer: str) -> str:
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return rest.rpartition(":")[0].strip("[]") or rest
    return kind
