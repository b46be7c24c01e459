"""The daemon's malloc tuning: applied on glibc, and never over an operator's own MALLOC_* settings."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from veriscope.device import allocator

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="mallopt tuning is glibc-only"
)


def _tune_in_child(env: dict[str, str]) -> str:
    """Run tune() in a fresh interpreter (mallopt changes the whole process) and return what it applied."""
    code = textwrap.dedent(
        """
        from veriscope.device import allocator
        print(sorted(allocator.tune().items()))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return result.stdout.strip()


def test_tune_applies_every_setting_on_glibc() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    applied = _tune_in_child(env)
    assert applied == str(
        sorted(
            {
                "MALLOC_ARENA_MAX": allocator.ARENAS,
                "MALLOC_MMAP_THRESHOLD_": allocator.MMAP_THRESHOLD_BYTES,
                "MALLOC_TRIM_THRESHOLD_": allocator.TRIM_THRESHOLD_BYTES,
            }.items()
        )
    )


def test_operator_environment_wins() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["MALLOC_ARENA_MAX"] = "4"
    applied = _tune_in_child(env)
    assert "MALLOC_ARENA_MAX" not in applied
    assert "MALLOC_MMAP_THRESHOLD_" in applied
