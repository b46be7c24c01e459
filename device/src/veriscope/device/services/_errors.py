"""Translation of the daemon's errors into gRPC statuses, applied to every servicer method."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc

from veriscope.device.errors import InvalidArgument, VeriscopeError

_log = logging.getLogger("veriscope.device.rpc")
F = TypeVar("F", bound=Callable[..., Any])
ServicerContext = grpc.aio.ServicerContext[Any, Any]
"""The servicer context type, for annotations."""


def _status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, VeriscopeError):
        return exc.code, str(exc)
    _log.exception("unexpected error in RPC", exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"


def rpc(fn: F) -> F:
    """Wrap a servicer method so VeriscopeError (and any bug) becomes a gRPC status with a message."""
    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        async def stream_wrapper(self: Any, request: Any, context: ServicerContext) -> AsyncIterator[Any]:
            try:
                async for item in fn(self, request, context):
                    yield item
            except (grpc.aio.AbortError, GeneratorExit):
                raise
            except Exception as exc:
                code, message = _status(exc)
                await context.abort(code, message)

        return stream_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    async def unary_wrapper(self: Any, request: Any, context: ServicerContext) -> Any:
        try:
            return await fn(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            code, message = _status(exc)
            await context.abort(code, message)

    return unary_wrapper  # type: ignore[return-value]


def scan_id_from_name(name: str, field: str = "name", *, child: str = "") -> str:
    """The scan id in "scans/{scan_id}", or in "scans/{scan_id}/{child}" when ``child`` is given.

    Raises InvalidArgument naming ``field`` for any other name.
    """
    parts = name.split("/")
    scan_id = parts[1] if len(parts) > 1 else ""
    if parts != ["scans", scan_id, *([child] if child else [])] or not scan_id.isalnum():
        pattern = "scans/{scan_id}" + (f"/{child}" if child else "")
        raise InvalidArgument(f"{field} must be {pattern!r}, got {name!r}")
    return scan_id
