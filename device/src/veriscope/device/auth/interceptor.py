"""The server interceptor that enforces access on every call, before any request body is read.

Checks, in this order, from the method name and the call's metadata alone:

1. Health checks (``grpc.health.v1.Health``) pass, untouched.
2. With auth off, every call passes; privileged ones are still audited.
3. Authentication: the ``authorization: Bearer <token>`` metadata must carry an
   active token, else UNAUTHENTICATED. A peer address that keeps calling without
   a valid token gets RESOURCE_EXHAUSTED instead.
4. Authorisation: the method's role (:data:`~veriscope.device.auth.roles.METHOD_ROLES`)
   must be allowed by the token's, else PERMISSION_DENIED. A method missing from
   the table is refused the same way (fail closed).
5. Rate limit: each token has a bucket; an empty one gets RESOURCE_EXHAUSTED with
   ``retry-after-ms`` trailing metadata.
6. The handler runs. Calls that need technician or admin, and every refusal of
   steps 3 and 4, are written to the audit log.

A refused call is answered by a handler of the same kind (unary or streaming)
that ends the call at once: the request is never deserialised and a request
stream is never read, and the service's handler is never invoked.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

from veriscope.device.auth.audit import AUDIT_FILE, AuditLog
from veriscope.device.auth.ratelimit import RateLimiter
from veriscope.device.auth.roles import METHOD_ROLES, OPEN_SERVICES, Role, service_of
from veriscope.device.auth.tokens import TokenRecord, TokenRejected, TokenState, TokenStore, TokenStoreError
from veriscope.device.config import AuthConfig
from veriscope.device.identity import is_local_listen

_log = logging.getLogger("veriscope.device.auth")

RETRY_AFTER_KEY = "retry-after-ms"
"""Trailing metadata of a rate-limited call: milliseconds to wait before retrying."""
REQUIRED_ROLE_KEY = "veriscope-required-role"
"""Trailing metadata of a PERMISSION_DENIED call: the role the method needs."""
TOKEN_ROLE_KEY = "veriscope-token-role"
"""Trailing metadata of a PERMISSION_DENIED call: the role the caller's token has."""

_HOW_TO_SEND = (
    "send 'authorization: Bearer <token>' metadata (veriscope --token or $VERISCOPE_TOKEN; Client(token=...)); "
    "an admin creates tokens on the unit with 'veriscope-tool tokens create'"
)


class AuthMode(StrEnum):
    """Whether calls need a token; ``auto`` is resolved by :func:`resolve_mode` when the daemon starts."""

    AUTO = "auto"
    REQUIRED = "required"
    OFF = "off"


def resolve_mode(mode: str, listen: str) -> AuthMode:
    """REQUIRED or OFF: ``auto`` is REQUIRED unless ``listen`` is a loopback address or a unix socket.

    Loopback is decided as for TLS (:func:`~veriscope.device.identity.is_local_listen`): whatever may be served
    in plaintext may also be served without tokens in ``auto``, and nothing else.
    """
    chosen = AuthMode(mode)
    if chosen is not AuthMode.AUTO:
        return chosen
    return AuthMode.OFF if is_local_listen(listen) else AuthMode.REQUIRED


@dataclass(frozen=True)
class _Refusal:
    code: grpc.StatusCode
    details: str
    trailing: tuple[tuple[str, str], ...] = ()
    audit: bool = True
    audit_details: str = ""
    """What the audit log records as details, when not ``details`` itself."""


Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Behavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Any]

if TYPE_CHECKING:
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor


class AccessInterceptor(_Interceptor):
    """Enforces tokens, roles and rate limits on every call, and audits privileged ones.

    Args:
        mode: REQUIRED or OFF (resolve ``auto`` with :func:`resolve_mode` first).
        tokens: The unit's tokens; needed when ``mode`` is REQUIRED.
        audit: Where privileged and refused calls are recorded; None records nothing.
        token_limiter: Rate limit per token id.
        peer_limiter: Rate limit per peer address of calls without a valid token.
        method_roles: Full method name -> least role; methods missing from it are refused.
        open_services: Services whose methods need no token.
    """

    def __init__(
        self,
        mode: AuthMode,
        *,
        tokens: TokenStore | None,
        audit: AuditLog | None = None,
        token_limiter: RateLimiter | None = None,
        peer_limiter: RateLimiter | None = None,
        method_roles: Mapping[str, Role] = METHOD_ROLES,
        open_services: frozenset[str] = OPEN_SERVICES,
    ) -> None:
        if mode is AuthMode.AUTO:
            raise ValueError("resolve the auth mode 'auto' with resolve_mode() first")
        if mode is AuthMode.REQUIRED and tokens is None:
            raise ValueError("auth mode 'required' needs a TokenStore")
        self.mode = mode
        self._tokens = tokens
        self._audit = audit
        self._token_limiter = token_limiter or RateLimiter(0, 1)
        self._peer_limiter = peer_limiter or RateLimiter(0, 1)
        self._roles = method_roles
        self._open = open_services

    def caller_role(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> Role | None:
        """The role of the token a call carries, for services that allow more to higher roles.

        ADMIN when tokens are off (every caller may do everything); None without a valid token.
        """
        if self.mode is AuthMode.OFF:
            return Role.ADMIN
        token, _ = _bearer_token(metadata)
        if token is None or self._tokens is None:
            return None
        try:
            return self._tokens.authenticate(token).role
        except TokenRejected:
            return None

    async def intercept_service(  # type: ignore[override]  # None is how a server says "no such method"
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        """Check the call and return its handler, a refusing handler, or an auditing wrapper of its handler."""
        method: str = handler_call_details.method
        if service_of(method) in self._open:
            return await continuation(handler_call_details)
        required = self._roles.get(method)
        if self.mode is AuthMode.OFF:
            handler = await continuation(handler_call_details)
            if handler is None or required is None or required is Role.OPERATOR:
                return handler
            return self._audited(handler, method, required, None)

        token, problem = _bearer_token(handler_call_details.invocation_metadata)
        record: TokenRecord | None = None
        claimed_id = ""
        if token is not None:
            assert self._tokens is not None
            try:
                record = self._tokens.authenticate(token)
            except TokenRejected as exc:
                problem, claimed_id = str(exc), exc.token_id
        # Finding the handler is a table lookup; nothing of the call is read or run.
        handler = await continuation(handler_call_details)
        if record is None:
            refusal = _Refusal(grpc.StatusCode.UNAUTHENTICATED, f"{problem}; {_HOW_TO_SEND}", audit_details=problem)
            return self._refusing(handler, method, required, None, refusal, claimed_id=claimed_id, limit_peer=True)
        if required is None:
            refusal = _Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{method} has no role in this unit's access table, so no token may call it",
            )
            return self._refusing(handler, method, required, record, refusal)
        if not record.role.allows(required):
            refusal = _Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                f"this call ({method.lstrip('/')}) needs the {required} role; your token {record.id} has "
                f"{record.role}: ask an admin for a {required} token",
                ((REQUIRED_ROLE_KEY, str(required)), (TOKEN_ROLE_KEY, str(record.role))),
            )
            return self._refusing(handler, method, required, record, refusal)
        wait_s = self._token_limiter.acquire(record.id)
        if wait_s > 0:
            limiter = self._token_limiter
            refusal = _Refusal(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"rate limit: token {record.id} may make {limiter.burst} calls at once and {limiter.rate_per_s:g} "
                f"per second after that; retry in {wait_s:.2f} s",
                ((RETRY_AFTER_KEY, str(math.ceil(wait_s * 1000))),),
                audit=False,  # a flood would flood the log
            )
            return self._refusing(handler, method, required, record, refusal)
        if handler is None or required is Role.OPERATOR:
            return handler
        return self._audited(handler, method, required, record)

    # --- Refusing ---

    def _refusing(
        self,
        handler: Handler | None,
        method: str,
        required: Role | None,
        record: TokenRecord | None,
        refusal: _Refusal,
        *,
        claimed_id: str = "",
        limit_peer: bool = False,
    ) -> Handler:
        """A handler of ``handler``'s kind that ends the call with ``refusal`` without reading the request."""

        async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            final = refusal
            if limit_peer:
                wait_s = self._peer_limiter.acquire(_peer_host(context.peer()))
                if wait_s > 0:
                    final = _Refusal(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"too many calls without a valid API token from this address; retry in {wait_s:.2f} s",
                        ((RETRY_AFTER_KEY, str(math.ceil(wait_s * 1000))),),
                        audit=False,
                    )
            if final.audit:
                self._write_audit(
                    method,
                    required,
                    record,
                    context.peer(),
                    datetime.now(UTC),
                    0.0,
                    final.code,
                    final.audit_details or final.details,
                    claimed_id=claimed_id,
                )
            await context.abort(final.code, final.details, trailing_metadata=final.trailing)

        request_streaming = bool(handler and handler.request_streaming)
        response_streaming = bool(handler and handler.response_streaming)
        # No request deserializer: a refused request's bytes are never parsed.
        if request_streaming and response_streaming:
            return grpc.stream_stream_rpc_method_handler(refuse)
        if request_streaming:
            return grpc.stream_unary_rpc_method_handler(refuse)
        if response_streaming:
            return grpc.unary_stream_rpc_method_handler(refuse)
        return grpc.unary_unary_rpc_method_handler(refuse)

    # --- Auditing ---

    def _audited(self, handler: Handler, method: str, required: Role, record: TokenRecord | None) -> Handler:
        """``handler`` with its behavior wrapped to write one audit line when the call ends."""
        if self._audit is None:
            return handler
        behavior: Any
        if handler.request_streaming and handler.response_streaming:
            behavior, make = handler.stream_stream, grpc.stream_stream_rpc_method_handler
        elif handler.request_streaming:
            behavior, make = handler.stream_unary, grpc.stream_unary_rpc_method_handler
        elif handler.response_streaming:
            behavior, make = handler.unary_stream, grpc.unary_stream_rpc_method_handler
        else:
            behavior, make = handler.unary_unary, grpc.unary_unary_rpc_method_handler

        def finish(
            context: grpc.aio.ServicerContext[Any, Any], started: datetime, t0: float, exc: BaseException | None
        ) -> None:
            code, details = _outcome(context, exc)
            self._write_audit(method, required, record, context.peer(), started, time.monotonic() - t0, code, details)

        wrapped: Behavior
        if inspect.isasyncgenfunction(behavior):

            async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                started, t0, error = datetime.now(UTC), time.monotonic(), None
                try:
                    async for item in behavior(request, context):
                        yield item
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    finish(context, started, t0, error)

            wrapped = stream
        else:

            async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                started, t0 = datetime.now(UTC), time.monotonic()
                try:
                    result = behavior(request, context)
                    if inspect.isawaitable(result):
                        result = await result
                except BaseException as exc:
                    finish(context, started, t0, exc)
                    raise
                finish(context, started, t0, None)
                return result

            wrapped = call
        return make(wrapped, handler.request_deserializer, handler.response_serializer)

    def _write_audit(
        self,
        method: str,
        required: Role | None,
        record: TokenRecord | None,
        peer: str,
        started: datetime,
        duration_s: float,
        code: grpc.StatusCode,
        details: str,
        *,
        claimed_id: str = "",
    ) -> None:
        if self._audit is None:
            return
        entry: dict[str, Any] = {
            "time": started.strftime("%Y-%m-%dT%H:%M:%S.") + f"{started.microsecond // 1000:03d}Z",
            "method": method,
            "required_role": None if required is None else str(required),
            "token_id": record.id if record is not None else (claimed_id or None),
            "token_name": record.name if record is not None else None,
            "role": str(record.role) if record is not None else None,
            "peer": peer,
            "outcome": code.name,
            "duration_ms": round(duration_s * 1000),
        }
        if code is not grpc.StatusCode.OK:
            entry["details"] = details
        self._audit.write(entry)


def _outcome(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException | None) -> tuple[grpc.StatusCode, str]:
    """The status a call ended with, from its context (set by abort) or the exception that ended it."""
    code = context.code()
    details = context.details() or ""
    if isinstance(code, grpc.StatusCode):
        return code, details if isinstance(details, str) else details.decode("utf-8", "replace")
    if exc is None or isinstance(exc, GeneratorExit):
        return grpc.StatusCode.OK, ""
    if isinstance(exc, grpc.aio.AbortError):
        return grpc.StatusCode.UNKNOWN, ""
    if isinstance(exc, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED, "the call was cancelled"
    return grpc.StatusCode.UNKNOWN, f"{type(exc).__name__}: {exc}"


def _bearer_token(metadata: Sequence[tuple[str, str | bytes]] | None) -> tuple[str | None, str]:
    """The token of the call's ``authorization`` metadata, or None and what is wrong with it."""
    values = [value for key, value in (metadata or ()) if key == "authorization"]
    if not values:
        return None, "this unit needs an API token on every call but health checks, and this call has none"
    if len(values) > 1:
        return None, "the call carries more than one authorization header"
    value = values[0]
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None, "the authorization header is not 'Bearer <token>'"
    return token.strip(), ""


def _peer_host(peer: str) -> str:
    """The address of ``ipv4:10.0.0.5:51324`` or ``ipv6:[::1]:51324`` without the port; ``unix:`` peers share one."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return rest.rpartition(":")[0].strip("[]") or rest
    return kind


def build_interceptor(config: AuthConfig, listen: str, data_dir: Path) -> AccessInterceptor:
    """The interceptor a daemon with this configuration uses; ``auto`` is resolved against ``listen``."""
    mode = resolve_mode(config.mode, listen)
    tokens = TokenStore(data_dir) if mode is AuthMode.REQUIRED else None
    audit = AuditLog(data_dir / AUDIT_FILE, max_bytes=config.audit_max_mb * 1024 * 1024, backups=config.audit_backups)
    if tokens is not None:
        try:
            active = [t for t in tokens.list() if t.state(datetime.now(UTC)) is TokenState.ACTIVE]
        except TokenStoreError as exc:  # the interceptor fails closed on it; say so at start
            _log.error("API tokens: %s; every call will be refused until it is fixed", exc)
        else:
            if not active:
                _log.warning(
                    "auth is required but %s holds no active token: create one on the unit with "
                    "'veriscope-tool tokens create --data-dir %s --role admin'",
                    tokens.path,
                    data_dir,
                )
    _log.info("auth %s (configured %r, listening on %s)", mode, config.mode, listen)
    return AccessInterceptor(
        mode,
        tokens=tokens,
        audit=audit,
        token_limiter=RateLimiter(config.rate_per_s, config.burst),
        peer_limiter=RateLimiter(config.failed_rate_per_s, config.failed_burst),
    )
