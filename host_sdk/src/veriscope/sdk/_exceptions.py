"""The SDK's error tree. Every error an RPC can end in is one of these; no gRPC exception leaves the SDK.

::

    VeriscopeError                  root: .code, .details, .method
    ├── InvalidArgumentError        INVALID_ARGUMENT     the device rejected a request field, file or image
    ├── OutOfRangeError             OUT_OF_RANGE         a value or page token is past the valid range
    ├── NotFoundError               NOT_FOUND            no such scan, image, model or item type
    ├── AlreadyExistsError          ALREADY_EXISTS       the resource exists already
    ├── FailedPreconditionError     FAILED_PRECONDITION  wrong scan state, camera busy, not simulating
    ├── AbortedError                ABORTED              a concurrent change won; retry the whole operation
    ├── ResourceExhaustedError      RESOURCE_EXHAUSTED   a size, rate or storage limit was hit
    ├── UnauthenticatedError        UNAUTHENTICATED      no API token, or one unknown, revoked or expired
    ├── PermissionDeniedError       PERMISSION_DENIED    the token's role may not make this call
    ├── DeviceUnavailableError      UNAVAILABLE          the device is unreachable or a hardware part failed
    ├── DeadlineExceededError       DEADLINE_EXCEEDED    the call took longer than its deadline
    ├── RequestCancelledError       CANCELLED            the call was cancelled before it finished
    ├── UnimplementedError          UNIMPLEMENTED        the device does not serve this RPC (older daemon?)
    ├── InternalError               INTERNAL             the device failed unexpectedly
    ├── DataLossError               DATA_LOSS            data was lost or corrupted in transit or storage
    ├── UnknownError                UNKNOWN              the device gave no usable status
    ├── ProtocolError               PROTOCOL_ERROR       the device answered, but not as veriscope.v1 says
    ├── TlsError                    TLS_ERROR            the unit's TLS identity failed verification, or it refused ours
    └── CertificateError            INVALID_CERTIFICATE  a certificate of authenticity failed offline verification

Arguments the SDK can check itself (an empty item type, a malformed scan id) raise
:class:`ValueError` or :class:`TypeError` before any RPC is made; those are
programming errors, not device errors, so they stay outside this tree.
"""

from __future__ import annotations

import grpc


class VeriscopeError(Exception):
    """Root of every error a Veriscope RPC can end in.

    Attributes:
        code: The gRPC status name, for example ``"NOT_FOUND"`` (``"PROTOCOL_ERROR"`` for
            :class:`ProtocolError`).
        details: The device's message, for example ``'scan "abc" not found'``.
        method: The RPC that failed, for example ``"veriscope.v1.ScanService/GetScan"``;
            empty when the error is not tied to one RPC.
    """

    code: str = "UNKNOWN"

    def __init__(self, details: str, *, method: str = "") -> None:
        super().__init__(details)
        self.details = details
        self.method = method

    def __str__(self) -> str:
        return f"{self.code}: {self.details}" if self.details else self.code

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.details!r}, method={self.method!r})"


class InvalidArgumentError(VeriscopeError):
    """The device rejected a request field, file or image; the details name it."""

    code = "INVALID_ARGUMENT"


class OutOfRangeError(VeriscopeError):
    """A value or page token is past the valid range."""

    code = "OUT_OF_RANGE"


class NotFoundError(VeriscopeError):
    """The named scan, image, model or item type does not exist on the device."""

    code = "NOT_FOUND"


class AlreadyExistsError(VeriscopeError):
    """The resource to create exists already."""

    code = "ALREADY_EXISTS"


class FailedPreconditionError(VeriscopeError):
    """The request is valid but the device is not in a state to run it (scan not in progress, camera busy, ...)."""

    code = "FAILED_PRECONDITION"


class AbortedError(VeriscopeError):
    """A concurrent change won; the whole operation may be retried."""

    code = "ABORTED"


class ResourceExhaustedError(VeriscopeError):
    """A size, rate or storage limit was hit (an image too large, the disk full, too many calls, ...).

    Attributes:
        retry_after_s: For a rate limit, the seconds to wait before the call may succeed; None otherwise.
    """

    code = "RESOURCE_EXHAUSTED"
    retry_after_s: float | None = None


class UnauthenticatedError(VeriscopeError):
    """The unit requires an API token and the call carried none, or one it does not accept.

    ``details`` says which: missing, malformed, unknown to the unit, revoked or expired. Pass a valid token as
    ``Client(token=...)`` (the CLI: ``--token`` or ``$VERISCOPE_TOKEN``); an admin creates one on the unit with
    ``veriscope-tool tokens create``.
    """

    code = "UNAUTHENTICATED"


class PermissionDeniedError(VeriscopeError):
    """The caller's API token is valid, but its role may not make this call.

    ``details`` names the role the call needs, for example "this call needs the technician role; your token
    1a2b3c4d has operator". Use a token of that role (roles: operator < technician < admin).

    Attributes:
        required_role: The role the call needs, for example ``"technician"``; None when the unit did not say.
        role: The role of the token that was used; None when the unit did not say.
    """

    code = "PERMISSION_DENIED"
    required_role: str | None = None
    role: str | None = None


class DeviceUnavailableError(VeriscopeError):
    """The device cannot be reached, or one of its hardware parts failed. Often transient: retrying may help."""

    code = "UNAVAILABLE"


class DeadlineExceededError(VeriscopeError):
    """The call did not finish within its deadline (see the ``timeout_s`` arguments)."""

    code = "DEADLINE_EXCEEDED"


class RequestCancelledError(VeriscopeError):
    """The call was cancelled before it finished."""

    code = "CANCELLED"


class UnimplementedError(VeriscopeError):
    """The device does not serve this RPC, usually because its daemon is older than the SDK."""

    code = "UNIMPLEMENTED"


class InternalError(VeriscopeError):
    """The device failed unexpectedly; its logs say more."""

    code = "INTERNAL"


class DataLossError(VeriscopeError):
    """Data was lost or corrupted in transit or in storage."""

    code = "DATA_LOSS"


class UnknownError(VeriscopeError):
    """The call failed without a usable status."""

    code = "UNKNOWN"


class ProtocolError(VeriscopeError):
    """The device answered, but not as veriscope.v1 says it must (a required field missing, an unknown verdict).

    Usually the device runs a newer API than this SDK: upgrade ``veriscope-sdk``.
    """

    code = "PROTOCOL_ERROR"


class TlsError(VeriscopeError):
    """The unit's TLS identity is not the one the client trusts, or the unit refused the client's certificate.

    Raised before any RPC is sent, when the client checks the unit's certificate
    against the ``ca`` or ``pinned_key`` it was given, in place of gRPC's bare
    UNAVAILABLE. ``details`` says what did not match, for example ``"the unit's
    certificate is not issued by the fleet CA you gave (...)"`` or ``"pinned key
    mismatch: expected sha256 ..., unit presented sha256 ..."``.

    Attributes:
        reason: What kind of failure, for programs: ``"not_issued_by_ca"``, ``"pin_mismatch"``,
            ``"name_mismatch"`` (issued by the CA, but not for the expected name), ``"expired"``,
            ``"not_yet_valid"``, ``"handshake_failed"`` (no TLS from the unit: a plaintext listener?),
            ``"client_certificate_required"`` or ``"client_certificate_refused"`` (mTLS).
    """

    code = "TLS_ERROR"

    def __init__(self, details: str, *, reason: str, method: str = "") -> None:
        super().__init__(details, method=method)
        self.reason = reason

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.details!r}, reason={self.reason!r})"


class CertificateError(VeriscopeError):
    """A certificate of authenticity is not valid; ``details`` says why, in words.

    Raised by :func:`veriscope.sdk.certificates.verify_certificate`, offline, never by an RPC.

    Attributes:
        reason: What kind of failure, for programs: ``"unknown_format"`` (not a Veriscope certificate, or a
            format this SDK does not know), ``"not_canonical"`` (the file's bytes were reformatted or edited),
            ``"malformed"`` (a field is missing or has the wrong type), ``"key_not_trusted"`` (signed by a key
            the trust anchor does not vouch for) or ``"signature_mismatch"`` (altered, or signed by another key).
    """

    code = "INVALID_CERTIFICATE"

    def __init__(self, details: str, *, reason: str = "malformed") -> None:
        super().__init__(details)
        self.reason = reason

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.details!r}, reason={self.reason!r})"


_BY_STATUS: dict[grpc.StatusCode, type[VeriscopeError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRangeError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.ABORTED: AbortedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAVAILABLE: DeviceUnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.CANCELLED: RequestCancelledError,
    grpc.StatusCode.UNIMPLEMENTED: UnimplementedError,
    grpc.StatusCode.INTERNAL: InternalError,
    grpc.StatusCode.DATA_LOSS: DataLossError,
    grpc.StatusCode.UNKNOWN: UnknownError,
}


# Trailing metadata by which the unit details a refusal (device/docs/security.md).
_RETRY_AFTER_KEY = "retry-after-ms"
_REQUIRED_ROLE_KEY = "veriscope-required-role"
_TOKEN_ROLE_KEY = "veriscope-token-role"


def error_class_for(code: grpc.StatusCode) -> type[VeriscopeError]:
    """Return the error class of a gRPC status code (UnknownError for codes without their own leaf)."""
    return _BY_STATUS.get(code, UnknownError)


def from_rpc_error(exc: grpc.RpcError, method: str) -> VeriscopeError:
    """Translate a gRPC error raised by ``method`` into the matching :class:`VeriscopeError` leaf."""
    # Errors raised before a call is on the wire (a closed channel) are plain RpcErrors without code().
    code_fn = getattr(exc, "code", None)
    details_fn = getattr(exc, "details", None)
    code = code_fn() if callable(code_fn) else None
    details = details_fn() if callable(details_fn) else None
    if not isinstance(code, grpc.StatusCode):
        return UnknownError(str(exc) or type(exc).__name__, method=method)
    error = error_class_for(code)(str(details or code.name), method=method)
    if isinstance(error, ResourceExhaustedError | PermissionDeniedError):
        trailing = _trailing_metadata(exc)
        if isinstance(error, ResourceExhaustedError):
            retry_after_ms = trailing.get(_RETRY_AFTER_KEY, "")
            if retry_after_ms.isdigit():
                error.retry_after_s = int(retry_after_ms) / 1000
        else:
            error.required_role = trailing.get(_REQUIRED_ROLE_KEY)
            error.role = trailing.get(_TOKEN_ROLE_KEY)
    return error


def _trailing_metadata(exc: grpc.RpcError) -> dict[str, str]:
    """The error's trailing metadata with text values, as a dict; empty when it has none."""
    trailing_fn = getattr(exc, "trailing_metadata", None)
    try:
        pairs = trailing_fn() if callable(trailing_fn) else None
        return {str(key): value for key, value in pairs or () if isinstance(value, str)}
    except (TypeError, ValueError):
        return {}
