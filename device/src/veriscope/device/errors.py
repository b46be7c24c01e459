"""The daemon's error tree. Each leaf maps to one gRPC status code.

::

    VeriscopeError
    ├── InvalidArgument        INVALID_ARGUMENT     bad request field, file or frame
    ├── NotFound               NOT_FOUND            no such scan, image, model or item type
    ├── FailedPrecondition     FAILED_PRECONDITION  wrong scan state, camera busy, not simulating
    ├── ResourceExhausted      RESOURCE_EXHAUSTED   oversize request, too many requests, disk full
    ├── Unauthenticated        UNAUTHENTICATED      no API token, or one that is unknown, revoked or expired
    ├── PermissionDenied       PERMISSION_DENIED    the token's role may not make this call
    ├── ConfigError            (start-up only)      invalid configuration; names the bad key
    ├── SigningKeyError        (start-up only)      the certificate signing key is unreadable, corrupt or not private
    ├── IdentityError          (start-up only)      the TLS key, certificate or client CA cannot be used
    ├── HardwareError          UNAVAILABLE          a hardware part failed
    │   ├── CameraError
    │   └── ControllerError
    └── ModelError             INTERNAL / UNAVAILABLE  model bundle invalid or runtime missing

Serial, TFLite and OS errors are caught where they arise and re-raised as one
of these, so the gRPC layer only has to translate this tree.
"""

from __future__ import annotations

import grpc


class VeriscopeError(Exception):
    """Root of every error the daemon raises on purpose."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidArgument(VeriscopeError):
    """A request field, file or frame is invalid. The message names it."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(VeriscopeError):
    """The named resource does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(VeriscopeError):
    """The request is valid but the system is not in a state to run it."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(VeriscopeError):
    """A size, rate or storage limit was hit."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unauthenticated(VeriscopeError):
    """The call carries no API token, or one the unit does not accept. The message says which and what to do."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(VeriscopeError):
    """The caller's role may not make this call. The message names the role it needs."""

    code = grpc.StatusCode.PERMISSION_DENIED


class ConfigError(VeriscopeError):
    """The configuration is invalid. ``key`` names the offending key, dotted."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config key {key!r}: {message}")
        self.key = key


class SigningKeyError(VeriscopeError):
    """The key that signs certificates cannot be used. The message names the file and how to fix it."""


class IdentityError(VeriscopeError):
    """The unit's TLS identity (key, certificate, client CA) cannot be used. The message names the file and the fix."""


class HardwareError(VeriscopeError):
    """A hardware part failed or is missing."""

    code = grpc.StatusCode.UNAVAILABLE


class CameraError(HardwareError):
    """The camera failed to configure or capture."""


class ControllerError(HardwareError):
    """The controller board failed, timed out, or spoke a protocol we do not support."""


class ModelError(VeriscopeError):
    """The model bundle is invalid or the TFLite runtime is missing."""

    code = grpc.StatusCode.UNAVAILABLE
