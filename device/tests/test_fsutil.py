"""write_atomic: the new content with the asked mode, or on failure the old file untouched and no temporary left."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
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


def test_a_crash_leftover_is_overwritten_by_the_next_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "current.json"
    real_replace = os.replace

    def power_cut(src: object, dst: object) -> None:
        raise KeyboardInterrupt  # stands in for the process dying before the rename

    monkeypatch.setattr(os, "replace", power_cut)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, b"first")
    monkeypatch.setattr(os, "replace", real_replace)
    write_atomic(path, b"second")
    assert path.read_bytes() == b"second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current.json"]


def test_unique_temporaries_let_threads_write_one_file_at_once(tmp_path: Path) -> None:
    path = tmp_path / "image.png"
    payloads = [bytes([k]) * 200_000 for k in range(8)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda data: write_atomic(path, data, unique=True), payloads))
    assert path.read_bytes() in payloads  # whole: one writer's bytes, never a mix
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.png"]
