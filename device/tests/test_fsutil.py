"""write_atomic: the new content with the asked mode, or on failure the old file untouched and no temporary left."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from veriscope.device.fsutil import write_atomic


def test_replaces_the_content_with_the_mode_asked_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_bytes(b"old")
    old_umask = os.umask(0o077)
    try:
        write_atomic(path, b"new" * 100_000, mode=0o640)
    finally:
        os.umask(old_umask)
    assert path.read_bytes() == b"new" * 100_000
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokens.json"]


def test_a_failed_rename_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b"old")

    def no_rename(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError, match="No space"):
        write_atomic(path, b"new", mode=0o600)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]
