"""The token store: tokens stored hashed, created, listed, revoked and expired, and re-read when the file changes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from veriscope.device.auth.roles import Role
from veriscope.device.auth.tokens import (
    TokenRejected,
    TokenState,
    TokenStore,
    TokenStoreError,
    parse_expires,
    token_id_of,
)
from veriscope.device.errors import InvalidArgument, NotFound

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


class Clock:
    """A settable UTC clock."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


def test_a_created_token_authenticates_and_only_its_hash_is_stored(data_dir: Path) -> None:
    store = TokenStore(data_dir)
    issued = store.create(Role.TECHNICIAN, name="bench-2")
    prefix, token_id, secret = issued.token.split("_", 2)
    assert prefix == "vs" and token_id == issued.record.id and len(token_id) == 8
    assert len(secret) == 43  # 32 bytes, URL-safe base64 without padding
    assert store.authenticate(issued.token) == issued.record
    text = store.path.read_text()
    assert secret not in text and issued.token not in text
    assert json.loads(text)["tokens"][0]["secret_sha256"] == issued.record.secret_sha256
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700


def test_tokens_are_distinct_and_listed_oldest_first(data_dir: Path) -> None:
    clock = Clock()
    store = TokenStore(data_dir, clock=clock)
    first = store.create("operator")
    clock.now += timedelta(seconds=5)
    second = store.create("admin", name="alice")
    assert first.token != second.token
    assert [r.id for r in store.list()] == [first.record.id, second.record.id]
    assert store.list()[1].to_dict(clock.now) == {
        "id": second.record.id,
        "name": "alice",
        "role": "admin",
        "created": "2026-03-01T12:00:05Z",
        "expires": None,
        "revoked": None,
        "state": "active",
    }


@pytest.mark.parametrize(
    "token",
    ["", "Bearer x", "vs_1234567_" + "a" * 43, "vs_12345678_" + "a" * 42, "xx_12345678_" + "a" * 43],
)
def test_malformed_tokens_are_rejected_as_such(data_dir: Path, token: str) -> None:
    with pytest.raises(TokenRejected) as info:
        TokenStore(data_dir).authenticate(token)
    assert info.value.reason == "malformed"


def test_a_wrong_secret_or_an_unknown_id_is_unknown(data_dir: Path) -> None:
    store = TokenStore(data_dir)
    issued = store.create("operator")
    _, token_id, secret = issued.token.split("_", 2)
    wrong = f"vs_{token_id}_{'A' if secret[0] != 'A' else 'B'}{secret[1:]}"
    for token in (wrong, f"vs_{'0' * 8 if token_id != '0' * 8 else '1' * 8}_{secret}"):
        with pytest.raises(TokenRejected) as info:
            store.authenticate(token)
        assert info.value.reason == "unknown"


def test_a_token_expires_at_its_expiry(data_dir: Path) -> None:
    clock = Clock()
    store = TokenStore(data_dir, clock=clock)
    issued = store.create("operator", expires=T0 + timedelta(hours=1))
    clock.now = T0 + timedelta(minutes=59)
    assert store.authenticate(issued.token).id == issued.record.id
    clock.now = T0 + timedelta(hours=1)
    with pytest.raises(TokenRejected) as info:
        store.authenticate(issued.token)
    assert info.value.reason == "expired" and "2026-03-01T13:00:00Z" in str(info.value)
    assert store.list()[0].state(clock.now) is TokenState.EXPIRED


def test_a_revoked_token_is_refused_and_kept_for_the_record(data_dir: Path) -> None:
    clock = Clock()
    store = TokenStore(data_dir, clock=clock)
    issued = store.create("admin")
    kept = store.create("operator")
    clock.now += timedelta(minutes=1)
    revoked = store.revoke(issued.record.id)
    assert revoked.revoked == clock.now
    with pytest.raises(TokenRejected) as info:
        store.authenticate(issued.token)
    assert info.value.reason == "revoked" and info.value.token_id == issued.record.id
    assert store.authenticate(kept.token).id == kept.record.id
    clock.now += timedelta(minutes=1)
    assert store.revoke(issued.token).revoked == revoked.revoked  # again, by the whole token: the first time stays
    states = {r.id: r.state(clock.now) for r in store.list()}
    assert states == {issued.record.id: TokenState.REVOKED, kept.record.id: TokenState.ACTIVE}


def test_revoking_an_unknown_or_malformed_id_fails(data_dir: Path) -> None:
    store = TokenStore(data_dir)
    store.create("operator")
    with pytest.raises(NotFound):
        store.revoke("00000000" if store.list()[0].id != "00000000" else "11111111")
    with pytest.raises(InvalidArgument):
        store.revoke("alice")


def test_a_revocation_by_another_process_applies_without_a_restart(data_dir: Path) -> None:
    daemon_store = TokenStore(data_dir)
    issued = TokenStore(data_dir).create("operator")
    assert daemon_store.authenticate(issued.token).id == issued.record.id  # cached from here
    TokenStore(data_dir).revoke(issued.record.id)  # as 'veriscope-tool tokens revoke' would
    with pytest.raises(TokenRejected, match="revoked"):
        daemon_store.authenticate(issued.token)
    created_later = TokenStore(data_dir).create("technician")
    assert daemon_store.authenticate(created_later.token).role is Role.TECHNICIAN


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "not valid JSON"),
        ('{"version": 9, "tokens": []}', "not a version 1 token file"),
        ('{"version": 1, "tokens": [{"id": "zz"}]}', "malformed"),
    ],
)
def test_an_unusable_file_fails_closed(data_dir: Path, content: str, problem: str) -> None:
    store = TokenStore(data_dir)
    issued = store.create("admin")
    store.path.write_text(content)
    with pytest.raises(TokenRejected) as info:
        store.authenticate(issued.token)
    assert info.value.reason == "unavailable" and problem in str(info.value)
    with pytest.raises(TokenStoreError, match=problem):
        store.list()
    with pytest.raises(TokenStoreError):
        store.create("operator")  # never overwrites a file it cannot read


def test_a_file_writable_by_others_is_refused(data_dir: Path) -> None:
    store = TokenStore(data_dir)
    issued = store.create("admin")
    os.chmod(store.path, 0o622)
    with pytest.raises(TokenRejected, match="writable by group or others"):
        store.authenticate(issued.token)


def test_create_checks_its_arguments(data_dir: Path) -> None:
    store = TokenStore(data_dir, clock=Clock())
    with pytest.raises(InvalidArgument, match="unknown role 'root'; roles are: operator, technician, admin"):
        store.create("root")
    with pytest.raises(InvalidArgument, match="name"):
        store.create("operator", name="x" * 65)
    with pytest.raises(InvalidArgument, match="not in the future"):
        store.create("operator", expires=T0)
    assert not store.path.exists()


def test_a_missing_data_dir_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(TokenStoreError, match="does not exist"):
        TokenStore(tmp_path / "typo").create("admin")
    assert not (tmp_path / "typo").exists()


def test_parse_expires() -> None:
    assert parse_expires("never", T0) is None
    assert parse_expires("90m", T0) == T0 + timedelta(minutes=90)
    assert parse_expires("12h", T0) == T0 + timedelta(hours=12)
    assert parse_expires("30d", T0) == T0 + timedelta(days=30)
    assert parse_expires("2w", T0) == T0 + timedelta(weeks=2)
    assert parse_expires("2026-12-31T23:59:59Z", T0) == datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert parse_expires("2026-04-01T02:00:00+02:00", T0) == datetime(2026, 4, 1, 0, 0, tzinfo=UTC)
    for bad, message in [
        ("0d", "not in the future"),
        ("2020-01-01T00:00:00Z", "not in the future"),
        ("2026-12-31T23:59:59", "no time zone"),
        ("soon", "not a duration"),
        ("30 days", "not a duration"),
    ]:
        with pytest.raises(InvalidArgument, match=message):
            parse_expires(bad, T0)


def test_token_id_of() -> None:
    assert token_id_of("vs_1a2b3c4d_" + "x" * 43) == "1a2b3c4d"
    assert token_id_of("1a2b3c4d") == ""


def test_the_token_module_loads_without_the_imaging_and_inference_stack() -> None:
    code = (
        "import sys, veriscope.device.auth.tokens as t; "
        "print(sorted(m for m in ('numpy', 'PIL', 'tflite_runtime', 'ai_edge_litert', 'veriscope.device.server') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
