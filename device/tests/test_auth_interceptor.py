"""The access interceptor, against a server that serves every method of every served proto with a recording handler.

Every method the daemon can serve is enumerated from the generated descriptors
(veriscope.v1, health, reflection), so a new RPC without a role fails here.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import pkgutil
import stat
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

import veriscope.v1
from veriscope.device.auth.audit import AuditLog
from veriscope.device.auth.interceptor import RETRY_AFTER_KEY, AccessInterceptor, AuthMode, resolve_mode
from veriscope.device.auth.ratelimit import RateLimiter
from veriscope.device.auth.roles import METHOD_ROLES, Role, is_open
from veriscope.device.auth.tokens import TokenStore
from veriscope.device.identity import is_local_listen

Kind = tuple[bool, bool]  # (client streaming, server streaming)


def _proto_files() -> list[Any]:
    files = [health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR]
    for info in pkgutil.iter_modules(veriscope.v1.__path__):
        if info.name.endswith("_pb2"):
            files.append(importlib.import_module(f"veriscope.v1.{info.name}").DESCRIPTOR)
    return files


ALL_METHODS: dict[str, Kind] = {
    f"/{service.full_name}/{method.name}": (method.client_streaming, method.server_streaming)
    for file in _proto_files()
    for service in file.services_by_name.values()
    for method in service.methods
}


def test_every_method_of_every_service_has_a_role_or_is_open() -> None:
    missing = sorted(m for m in ALL_METHODS if m not in METHOD_ROLES and not is_open(m))
    assert not missing, f"add these RPCs to veriscope.device.auth.roles.METHOD_ROLES: {missing}"


def test_the_role_table_names_only_real_methods() -> None:
    stale = sorted(set(METHOD_ROLES) - set(ALL_METHODS))
    assert not stale, f"METHOD_ROLES names methods no proto defines: {stale}"


def test_the_privileged_methods_are_exactly_these() -> None:
    # Reviewed on purpose: a change to who may calibrate, label or update shows up here.
    privileged = {m: r for m, r in METHOD_ROLES.items() if r is not Role.OPERATOR}
    assert privileged == {
        "/veriscope.v1.CalibrationService/Calibrate": Role.TECHNICIAN,
        "/veriscope.v1.ScanService/LabelScan": Role.TECHNICIAN,
        "/veriscope.v1.DeviceService/RunSelfTest": Role.TECHNICIAN,
        "/veriscope.v1.DeviceService/ReadLogs": Role.TECHNICIAN,
        "/veriscope.v1.UpdateService/UploadBundle": Role.TECHNICIAN,
        "/veriscope.v1.UpdateService/GetUpload": Role.TECHNICIAN,
        "/veriscope.v1.UpdateService/InstallBundle": Role.TECHNICIAN,
        "/veriscope.v1.UpdateService/RollbackUpdate": Role.TECHNICIAN,
        # Served for real in first-boot mode only, where the pairing code stands in for a token.
        "/veriscope.v1.ProvisioningService/GetUnitIdentity": Role.ADMIN,
        "/veriscope.v1.ProvisioningService/InstallUnitIdentity": Role.ADMIN,
    }


def test_health_is_the_only_open_service() -> None:
    assert {m for m in ALL_METHODS if is_open(m)} == {
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/List",
        "/grpc.health.v1.Health/Watch",
    }


def test_roles_are_ordered() -> None:
    assert [r.value for r in Role] == ["operator", "technician", "admin"]
    assert Role.ADMIN.allows(Role.TECHNICIAN) and Role.TECHNICIAN.allows(Role.OPERATOR)
    assert not Role.OPERATOR.allows(Role.TECHNICIAN) and not Role.TECHNICIAN.allows(Role.ADMIN)


# --- A server whose handlers record that they ran -------------------------------------------------------------


@dataclass
class Recorder:
    invoked: list[str] = field(default_factory=list)


def _handler(method: str, kind: Kind, rec: Recorder) -> grpc.RpcMethodHandler[Any, Any]:
    client_streaming, server_streaming = kind

    if client_streaming and server_streaming:

        async def bidi(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
            rec.invoked.append(method)
            async for _ in requests:
                pass
            yield b"ok"

        return grpc.stream_stream_rpc_method_handler(bidi)
    if client_streaming:

        async def upload(requests: AsyncIterator[bytes], context: Any) -> bytes:
            rec.invoked.append(method)
            async for _ in requests:
                pass
            return b"ok"

        return grpc.stream_unary_rpc_method_handler(upload)
    if server_streaming:

        async def download(request: bytes, context: Any) -> AsyncIterator[bytes]:
            rec.invoked.append(method)
            yield b"ok"

        return grpc.unary_stream_rpc_method_handler(download)

    async def unary(request: bytes, context: Any) -> bytes:
        rec.invoked.append(method)
        if request == b"not-found":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        return b"ok"

    return grpc.unary_unary_rpc_method_handler(unary)


@dataclass
class Harness:
    channel: grpc.aio.Channel
    recorder: Recorder
    tokens: dict[str, str]
    store: TokenStore

    async def call(self, method: str, token: str | None, *, kind: Kind | None = None, body: bytes = b"") -> Any:
        """The call's status code (OK when it reached a handler), and its error for anything else."""
        kind = ALL_METHODS.get(method, (False, False)) if kind is None else kind
        metadata = () if token is None else (("authorization", f"Bearer {token}"),)
        try:
            if kind == (True, True):
                _ = [r async for r in self.channel.stream_stream(method)(iter([body]), metadata=metadata)]
            elif kind[0]:
                await self.channel.stream_unary(method)(iter([body]), metadata=metadata)
            elif kind[1]:
                _ = [r async for r in self.channel.unary_stream(method)(body, metadata=metadata)]
            else:
                await self.channel.unary_unary(method)(body, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            return exc
        return grpc.StatusCode.OK


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, tzinfo=UTC)
        self.mono = 1000.0

    def __call__(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return self.mono


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def _serve(
    tmp_path: Path,
    clock: Clock,
    *,
    mode: AuthMode = AuthMode.REQUIRED,
    methods: Mapping[str, Kind] = ALL_METHODS,
    method_roles: Mapping[str, Role] = METHOD_ROLES,
    token_limiter: RateLimiter | None = None,
    peer_limiter: RateLimiter | None = None,
) -> tuple[grpc.aio.Server, Harness]:
    data_dir = tmp_path / "data"
    data_dir.mkdir(exist_ok=True)
    store = TokenStore(data_dir, clock=clock)
    tokens = {role.value: store.create(role, name=f"{role.value}-1").token for role in Role}
    rec = Recorder()
    by_service: dict[str, dict[str, grpc.RpcMethodHandler[Any, Any]]] = defaultdict(dict)
    for method, kind in methods.items():
        service, name = method.lstrip("/").split("/")
        by_service[service][name] = _handler(method, kind, rec)
    interceptor = AccessInterceptor(
        mode,
        tokens=store,
        audit=AuditLog(data_dir / "audit.log"),
        token_limiter=token_limiter,
        peer_limiter=peer_limiter,
        method_roles=method_roles,
    )
    server = grpc.aio.server(interceptors=[interceptor])
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(service, handlers) for service, handlers in by_service.items()]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    return server, Harness(channel, rec, tokens, store)


@pytest.fixture
async def harness(tmp_path: Path, clock: Clock) -> AsyncIterator[Harness]:
    server, h = await _serve(tmp_path, clock)
    yield h
    await h.channel.close()
    await server.stop(0)


def _audit_lines(h: Harness) -> list[dict[str, Any]]:
    path = h.store.path.parent.parent / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# --- Every RPC against every role ------------------------------------------------------------------------------


_RANK = {Role.OPERATOR: 0, Role.TECHNICIAN: 1, Role.ADMIN: 2}


def _expected(method: str, role: Role | None) -> grpc.StatusCode:
    if is_open(method):
        return grpc.StatusCode.OK
    if role is None:
        return grpc.StatusCode.UNAUTHENTICATED
    required = METHOD_ROLES.get(method)
    if required is None or _RANK[role] < _RANK[required]:
        return grpc.StatusCode.PERMISSION_DENIED
    return grpc.StatusCode.OK


@pytest.mark.parametrize("method", sorted(ALL_METHODS))
async def test_every_rpc_needs_its_role(harness: Harness, method: str) -> None:
    for role in (None, *Role):
        token = None if role is None else harness.tokens[role.value]
        harness.recorder.invoked.clear()
        outcome = await harness.call(method, token)
        code = outcome if isinstance(outcome, grpc.StatusCode) else outcome.code()
        assert code == _expected(method, role), f"{method} as {role}: {outcome}"
        # A refused call never reaches the service's handler.
        assert harness.recorder.invoked == ([method] if code == grpc.StatusCode.OK else [])


async def test_unauthenticated_and_permission_denied_say_what_to_do(harness: Harness) -> None:
    missing = await harness.call("/veriscope.v1.DeviceService/GetDevice", None)
    assert missing.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "authorization: Bearer" in missing.details() and "veriscope-tool tokens create" in missing.details()
    denied = await harness.call("/veriscope.v1.CalibrationService/Calibrate", harness.tokens["operator"])
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "needs the technician role; your token" in denied.details() and "has operator" in denied.details()
    trailing = dict(denied.trailing_metadata())
    assert trailing["veriscope-required-role"] == "technician" and trailing["veriscope-token-role"] == "operator"


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        ("Basic dXNlcjpwYXNz", "not 'Bearer <token>'"),
        ("Bearer ", "not 'Bearer <token>'"),
        ("Bearer not-a-token", "not a Veriscope token"),
        ("Bearer vs_00000000_" + "A" * 43, "not known to this unit"),
    ],
)
async def test_bad_authorization_is_unauthenticated(harness: Harness, header: str, problem: str) -> None:
    call = harness.channel.unary_unary("/veriscope.v1.DeviceService/GetDevice")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(b"", metadata=(("authorization", header),))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert problem in (info.value.details() or "")


async def test_expired_and_revoked_tokens_are_unauthenticated(harness: Harness, clock: Clock) -> None:
    method = "/veriscope.v1.DeviceService/GetStatus"
    expiring = harness.store.create(Role.ADMIN, expires=clock.now + timedelta(hours=1)).token
    assert await harness.call(method, expiring) == grpc.StatusCode.OK
    clock.now += timedelta(hours=2)
    expired = await harness.call(method, expiring)
    assert expired.code() == grpc.StatusCode.UNAUTHENTICATED and "expired at" in expired.details()

    operator = harness.tokens["operator"]
    assert await harness.call(method, operator) == grpc.StatusCode.OK
    TokenStore(harness.store.path.parent.parent).revoke(operator)  # another process, the daemon still running
    revoked = await harness.call(method, operator)
    assert revoked.code() == grpc.StatusCode.UNAUTHENTICATED and "was revoked at" in revoked.details()


async def test_an_unknown_method_is_refused_even_to_admins(harness: Harness) -> None:
    for method in ("/veriscope.v1.DeviceService/Reboot", "/other.Service/Anything"):
        denied = await harness.call(method, harness.tokens["admin"])
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED, method
        assert "no role in this unit's access table" in denied.details()


# --- Refused before the request is read ------------------------------------------------------------------------


async def test_a_refused_upload_is_answered_without_reading_its_stream(tmp_path: Path, clock: Clock) -> None:
    method = "/test.v1.UploadService/Upload"
    server, h = await _serve(tmp_path, clock, methods={method: (True, False)}, method_roles={method: Role.TECHNICIAN})
    never = asyncio.Event()
    sent: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        sent.append(1)
        yield b"header"
        await never.wait()  # the stream stays open: a server that reads it to the end would never answer
        yield b"chunk"

    try:
        for token, code in ((None, grpc.StatusCode.UNAUTHENTICATED), (h.tokens["operator"], "denied")):
            metadata = () if token is None else (("authorization", f"Bearer {token}"),)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await h.channel.stream_unary(method)(body(), metadata=metadata, timeout=30)
            expected = grpc.StatusCode.PERMISSION_DENIED if code == "denied" else code
            assert info.value.code() == expected
        assert h.recorder.invoked == []
    finally:
        never.set()
        await h.channel.close()
        await server.stop(0)


async def test_a_refused_request_is_never_deserialised(tmp_path: Path, clock: Clock) -> None:
    parsed: list[bytes] = []

    def deserializer(data: bytes) -> bytes:
        parsed.append(data)
        return data

    async def handler(request: bytes, context: Any) -> bytes:
        return b"ok"

    method = "/test.v1.Service/Call"
    store = TokenStore(tmp_path, clock=clock)
    operator = store.create(Role.OPERATOR).token
    server = grpc.aio.server(
        interceptors=[AccessInterceptor(AuthMode.REQUIRED, tokens=store, method_roles={method: Role.ADMIN})]
    )
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "test.v1.Service", {"Call": grpc.unary_unary_rpc_method_handler(handler, deserializer)}
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await channel.unary_unary(method)(b"body", metadata=(("authorization", f"Bearer {operator}"),))
    await server.stop(0)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert parsed == []


# --- Rate limits -----------------------------------------------------------------------------------------------


async def test_a_burst_over_the_limit_is_resource_exhausted_with_a_retry_hint(tmp_path: Path, clock: Clock) -> None:
    server, h = await _serve(tmp_path, clock, token_limiter=RateLimiter(2.0, 3, clock=clock.monotonic))
    method = "/veriscope.v1.ScanService/ListScans"
    try:
        operator, technician = h.tokens["operator"], h.tokens["technician"]
        assert [await h.call(method, operator) for _ in range(3)] == [grpc.StatusCode.OK] * 3
        limited = await h.call(method, operator)
        assert limited.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "retry in 0.50 s" in limited.details()
        assert dict(limited.trailing_metadata())[RETRY_AFTER_KEY] == "500"
        assert await h.call(method, technician) == grpc.StatusCode.OK  # each token has its own bucket
        clock.mono += 0.5
        assert await h.call(method, operator) == grpc.StatusCode.OK
        assert (await h.call(method, operator)).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        await h.channel.close()
        await server.stop(0)


async def test_a_peer_without_a_valid_token_is_rate_limited(tmp_path: Path, clock: Clock) -> None:
    server, h = await _serve(tmp_path, clock, peer_limiter=RateLimiter(1.0, 2, clock=clock.monotonic))
    method = "/veriscope.v1.DeviceService/GetDevice"
    try:
        bad = "vs_00000000_" + "A" * 43
        codes = [(await h.call(method, token)).code() for token in (bad, None, bad)]
        assert codes == [
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        ]
        assert await h.call(method, h.tokens["operator"]) == grpc.StatusCode.OK  # valid tokens are not held back
        clock.mono += 1.0
        assert (await h.call(method, bad)).code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await h.channel.close()
        await server.stop(0)


def test_rate_limiter_buckets() -> None:
    now = [0.0]
    limiter = RateLimiter(10.0, 2, clock=lambda: now[0], max_keys=2)
    assert [limiter.acquire("a") for _ in range(2)] == [0.0, 0.0]
    assert limiter.acquire("a") == pytest.approx(0.1)
    now[0] += 0.05
    assert limiter.acquire("a") == pytest.approx(0.05)  # a refused call is not counted
    now[0] += 0.05
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("b") == 0.0 and limiter.acquire("c") == 0.0  # more keys than kept: oldest forgotten
    assert RateLimiter(0, 1).acquire("x") == 0.0  # off


# --- Audit -----------------------------------------------------------------------------------------------------


async def test_privileged_and_refused_calls_are_audited(harness: Harness) -> None:
    technician = harness.tokens["technician"]
    assert await harness.call("/veriscope.v1.ScanService/ListScans", technician) == grpc.StatusCode.OK
    assert await harness.call("/veriscope.v1.CalibrationService/Calibrate", technician) == grpc.StatusCode.OK
    found = await harness.call("/veriscope.v1.ScanService/LabelScan", technician, body=b"not-found")
    assert found.code() == grpc.StatusCode.NOT_FOUND
    await harness.call("/veriscope.v1.CalibrationService/Calibrate", harness.tokens["operator"])
    await harness.call("/veriscope.v1.DeviceService/GetDevice", None)

    lines = _audit_lines(harness)
    assert [(line["method"].rsplit("/", 1)[1], line["outcome"]) for line in lines] == [
        ("Calibrate", "OK"),  # ListScans is not privileged: not audited
        ("LabelScan", "NOT_FOUND"),
        ("Calibrate", "PERMISSION_DENIED"),
        ("GetDevice", "UNAUTHENTICATED"),
    ]
    ok = lines[0]
    tech_id = technician.split("_")[1]
    assert ok["token_id"] == tech_id and ok["token_name"] == "technician-1" and ok["role"] == "technician"
    assert ok["required_role"] == "technician" and ok["peer"].startswith("ipv4:127.0.0.1:")
    assert datetime.fromisoformat(ok["time"]).tzinfo is not None and isinstance(ok["duration_ms"], int)
    assert "details" not in ok
    assert lines[1]["details"] == "no such thing"
    assert lines[2]["role"] == "operator" and lines[3]["token_id"] is None
    assert stat.S_IMODE((harness.store.path.parent.parent / "audit.log").stat().st_mode) == 0o600


async def test_with_auth_off_every_call_passes_and_privileged_ones_are_audited(tmp_path: Path, clock: Clock) -> None:
    server, h = await _serve(tmp_path, clock, mode=AuthMode.OFF)
    try:
        assert await h.call("/veriscope.v1.CalibrationService/Calibrate", None) == grpc.StatusCode.OK
        assert await h.call("/veriscope.v1.DeviceService/GetDevice", None) == grpc.StatusCode.OK
        lines = _audit_lines(h)
        assert [(line["method"], line["role"], line["outcome"]) for line in lines] == [
            ("/veriscope.v1.CalibrationService/Calibrate", None, "OK")
        ]
    finally:
        await h.channel.close()
        await server.stop(0)


def test_the_audit_log_rotates_at_its_size(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log", max_bytes=1024, backups=2)
    for n in range(100):
        log.write({"n": n, "method": "/veriscope.v1.CalibrationService/Calibrate"})
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["audit.log", "audit.log.1", "audit.log.2"]
    kept: list[int] = []
    for name in ("audit.log.2", "audit.log.1", "audit.log"):
        text = (tmp_path / name).read_text()
        assert len(text.encode()) <= 1024
        kept += [json.loads(line)["n"] for line in text.splitlines()]
    assert kept == list(range(100 - len(kept), 100))  # the newest lines, in order, none lost between files


# --- Modes -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("listen", "local"),
    [
        ("127.0.0.1:50051", True),
        ("127.0.0.2:0", True),
        ("localhost:50051", True),
        ("[::1]:50051", True),
        ("unix:/run/veriscope.sock", True),
        ("0.0.0.0:50051", False),
        ("[::]:50051", False),
        ("10.0.0.7:50051", False),
        ("veriscope.local:50051", False),
    ],
)
def test_auto_requires_tokens_off_loopback(listen: str, local: bool) -> None:
    assert is_local_listen(listen) is local
    assert resolve_mode("auto", listen) is (AuthMode.OFF if local else AuthMode.REQUIRED)
    assert resolve_mode("required", listen) is AuthMode.REQUIRED
    assert resolve_mode("off", listen) is AuthMode.OFF


def test_required_mode_needs_a_token_store() -> None:
    with pytest.raises(ValueError, match="TokenStore"):
        AccessInterceptor(AuthMode.REQUIRED, tokens=None)
    with pytest.raises(ValueError, match="auto"):
        AccessInterceptor(AuthMode.AUTO, tokens=None)
