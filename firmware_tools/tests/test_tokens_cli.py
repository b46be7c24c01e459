"""``veriscope-tool tokens create|list|revoke``, offline on a unit's data directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from veriscope.device.auth.roles import Role
from veriscope.device.auth.tokens import TokenRejected, TokenStore
from veriscope.tools import _tokens_cli as tokens_cli
from veriscope.tools.cli import main


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = _run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_create_prints_a_working_token_as_json(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    created = _json(
        capsys, "tokens", "create", "--data-dir", str(data_dir), "--role", "technician", "--name", "bench-2"
    )
    assert set(created) == {"token", "id", "name", "role", "created", "expires", "revoked", "state"}
    assert created["role"] == "technician" and created["name"] == "bench-2" and created["expires"] is None
    assert created["token"].startswith(f"vs_{created['id']}_")
    record = TokenStore(data_dir).authenticate(created["token"])
    assert record.id == created["id"] and record.role is Role.TECHNICIAN
    assert created["token"] not in (data_dir / "auth" / "tokens.json").read_text()


def test_create_with_an_expiry(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dated = _json(capsys, "tokens", "create", "--data-dir", str(data_dir), "--role", "operator", "--expires", "30d")
    assert dated["expires"] > dated["created"]
    fixed = "2099-12-31T23:59:59Z"
    dated = _json(capsys, "tokens", "create", "--data-dir", str(data_dir), "--role", "operator", "--expires", fixed)
    assert dated["expires"] == fixed


def test_the_text_output_shows_the_token_once_with_a_warning(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, "tokens", "create", "--data-dir", str(data_dir), "--role", "admin")
    assert code == 0
    token = out.splitlines()[0]
    assert TokenStore(data_dir).authenticate(token).role is Role.ADMIN
    assert "only time the token is shown" in out


def test_list_and_revoke(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ("--data-dir", str(data_dir))
    first = _json(capsys, "tokens", "create", *base, "--role", "admin", "--name", "alice")
    second = _json(capsys, "tokens", "create", *base, "--role", "operator")
    listed = _json(capsys, "tokens", "list", *base)
    assert {t["id"] for t in listed} == {first["id"], second["id"]}
    assert all("token" not in t and "secret_sha256" not in t for t in listed)

    revoked = _json(capsys, "tokens", "revoke", *base, first["id"])
    assert revoked["id"] == first["id"] and revoked["state"] == "revoked" and revoked["revoked"]
    with pytest.raises(TokenRejected, match="revoked"):
        TokenStore(data_dir).authenticate(first["token"])
    states = {t["id"]: t["state"] for t in _json(capsys, "tokens", "list", *base)}
    assert states == {first["id"]: "revoked", second["id"]: "active"}

    code, out, _ = _run(capsys, "tokens", "list", *base)
    assert code == 0 and "alice" in out and "revoked" in out and first["token"] not in out


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (("revoke", "00000000"), 1, "no token with id 00000000"),
        (("revoke", "alice"), 2, "neither a token id"),
        (("create", "--role", "admin", "--expires", "yesterday"), 2, "not a duration"),
        (("create", "--role", "admin", "--name", "x" * 65), 2, "at most 64"),
    ],
)
def test_errors_name_the_problem(
    data_dir: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], status: int, message: str
) -> None:
    code, out, err = _run(capsys, "tokens", argv[0], "--data-dir", str(data_dir), *argv[1:])
    assert (code, out) == (status, "")
    assert err.startswith("veriscope-tool tokens: error: ") and message in err


def test_an_unknown_role_is_a_usage_error(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["tokens", "create", "--data-dir", str(data_dir), "--role", "root"])
    assert info.value.code == 2
    assert "invalid choice: 'root'" in capsys.readouterr().err


def test_a_data_dir_that_does_not_exist_is_not_created(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "tokens", "create", "--data-dir", str(tmp_path / "typo"), "--role", "admin")
    assert code == 1 and "does not exist" in err
    assert not (tmp_path / "typo").exists()


def test_without_the_device_package_it_says_where_to_run(
    data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "veriscope.device.auth", None)
    code, _, err = _run(capsys, "tokens", "list", "--data-dir", str(data_dir))
    assert code == 1 and "needs the veriscope-device package" in err and "veriscope-tools[unit]" in err


def test_the_roles_offered_are_the_daemons() -> None:
    assert tuple(role.value for role in Role) == tokens_cli.ROLES


def test_the_installed_command(data_dir: Path) -> None:
    exe = Path(sys.executable).with_name("veriscope-tool")
    argv = [str(exe), "tokens", "create", "--data-dir", str(data_dir), "--role", "operator", "--json"]
    created = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
    assert TokenStore(data_dir).authenticate(created["token"]).id == created["id"]
