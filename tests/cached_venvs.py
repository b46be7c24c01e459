"""Venvs cached under ``build/``, built once per set of requirements and reused.

Two kinds of venv live here: the Raspberry Pi OS runtime (numpy < 2 and
tflite-runtime from ``requirements-pi.lock``), which
tests/test_tflite_runtime_fallback.py and bench/runtimes.py both run the
project in, and any other venv of pinned requirements that a benchmark needs
beside ``.venv`` (bench/runtimes.py's ONNX converter and runtime).

A venv is ``build/<name>-<key>``, where the key digests its requirements and
the interpreter's version, so changing either builds a new one. A ``.installed``
marker is written last, so a venv half-built by an interrupted run is rebuilt;
a file lock keeps two processes from building the same venv at once.

Failures come in two kinds: :class:`VenvUnavailable` when this machine cannot
build the venv (no wheels for this platform, no suitable interpreter, the
package index unreachable), and :class:`VenvBuildError` when pip fails for any
other reason, which means the requirements themselves are broken.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
"""The repository's top folder."""
BUILD = ROOT / "build"
"""Where the venvs are cached."""
PI_LOCK = ROOT / "requirements-pi.lock"
"""The Raspberry Pi OS runtime, hash-checked: numpy < 2, tflite-runtime 2.14.0 and the daemon's dependencies."""
SOURCES = [ROOT / p for p in ("protos/python/src", "device/src", "firmware_tools/src", "host_sdk/src")]
"""The project's packages, put on ``PYTHONPATH`` by :func:`pi_env` so they run from source."""
# tflite-runtime 2.14.0 publishes wheels for CPython 3.9 to 3.11 on these machines (bookworm has 3.11).
PI_PYTHONS = ((3, 11), (3, 10), (3, 9))
PI_MACHINES = ("x86_64", "aarch64")
# Signs in pip's output that the package index could not be reached, as opposed to broken requirements.
NETWORK_FAILURES = (
    "NewConnectionError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "Could not fetch URL",
    "Connection refused",
)
INSTALL_TIMEOUT_S = 1800
"""Longest a venv's ``pip install`` may take; TensorFlow alone is several hundred MB."""


class VenvUnavailable(Exception):
    """This machine cannot build the venv: no wheels for it, no suitable interpreter, or no package index.

    ``str(exc)`` is the reason, fit to show as why something was not measured or was skipped.
    """


class VenvBuildError(Exception):
    """pip failed to install the venv's requirements for a reason other than the network.

    ``str(exc)`` holds the command and the tail of pip's output.
    """


def lock_pins(lock: Path) -> dict[str, set[str]]:
    """Package name (normalised) -> pinned versions of a ``uv pip compile`` lock; several when markers split them."""
    pins: dict[str, set[str]] = {}
    for match in re.finditer(r"^([A-Za-z0-9_.-]+)==([^ ;\\]+)", lock.read_text(), re.MULTILINE):
        pins.setdefault(normal_name(match[1]), set()).add(match[2])
    return pins


def normal_name(name: str) -> str:
    """A distribution name in its normalised form (PEP 503): lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def python_version(exe: str) -> tuple[int, int] | None:
    """``(major, minor)`` of the interpreter ``exe``, or None if it does not run."""
    try:
        done = subprocess.run(
            [exe, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    major, minor = done.stdout.split()
    return int(major), int(minor)


def cached_venv(name: str, python: str, requirements: Sequence[str], key_material: bytes = b"") -> Path:
    """The interpreter of the venv ``build/<name>-<key>``, built with ``python`` on first use.

    ``requirements`` are the arguments after ``pip install`` (requirement
    specifiers, ``-r FILE``, options). The key digests the interpreter's version
    and ``key_material`` if given (the bytes of the lock the requirements name),
    else the requirements themselves. Only
    binary wheels are installed. The first call downloads and may take minutes;
    later ones return at once.

    Raises:
        VenvUnavailable: ``python`` does not run, or the package index cannot be reached.
        VenvBuildError: the venv could not be created, or pip failed otherwise.
    """
    version = python_version(python)
    if version is None:
        raise VenvUnavailable(f"{python} does not run")
    digest = hashlib.sha256(key_material or "\0".join(requirements).encode())
    digest.update(f"{version}".encode())
    venv = BUILD / f"{name}-{digest.hexdigest()[:16]}"
    venv_python = venv / "bin" / "python"
    done_marker = venv / ".installed"
    BUILD.mkdir(parents=True, exist_ok=True)
    with (BUILD / f".{venv.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done_marker.is_file():
            return venv_python
        shutil.rmtree(venv, ignore_errors=True)  # a half-built venv from an interrupted run
        made = subprocess.run([python, "-m", "venv", str(venv)], capture_output=True, text=True, timeout=300)
        if made.returncode != 0:
            raise VenvBuildError(f"could not create {venv}:\n{made.stdout}{made.stderr}")
        install = [str(venv_python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--quiet"]
        install += ["--only-binary=:all:", *requirements]
        done = subprocess.run(install, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        if done.returncode != 0:
            output = done.stdout + done.stderr
            shutil.rmtree(venv, ignore_errors=True)
            if any(sign in output for sign in NETWORK_FAILURES):
                raise VenvUnavailable(f"pip could not reach the package index to build {name}:\n{output[-2000:]}")
            raise VenvBuildError(f"pip install {' '.join(requirements)} failed:\n{output[-4000:]}")
        done_marker.touch()
    return venv_python


def pi_interpreter() -> tuple[str, tuple[int, int]]:
    """A Python that tflite-runtime 2.14.0 has wheels for: this one, else python3.11/3.10/3.9 on PATH.

    Raises:
        VenvUnavailable: this machine's architecture has no wheels, or no such Python is found.
    """
    if platform.machine() not in PI_MACHINES:
        raise VenvUnavailable(
            f"tflite-runtime 2.14.0 has no wheels for {platform.machine()} (only {', '.join(PI_MACHINES)})"
        )
    if sys.version_info[:2] in PI_PYTHONS:
        return sys.executable, (sys.version_info[0], sys.version_info[1])
    for major, minor in PI_PYTHONS:
        exe = shutil.which(f"python{major}.{minor}")
        if exe is not None and python_version(exe) == (major, minor):
            return exe, (major, minor)
    raise VenvUnavailable(
        "tflite-runtime 2.14.0 has wheels only for CPython 3.9-3.11 (Raspberry Pi OS bookworm has 3.11); "
        f"this is {platform.python_version()} and no python3.11/3.10/3.9 is on PATH"
    )


def pi_venv() -> Path:
    """The interpreter of the cached Raspberry Pi OS venv, built from ``requirements-pi.lock`` on first use.

    Raises:
        VenvUnavailable: see :func:`pi_interpreter` and :func:`cached_venv`.
        VenvBuildError: the lock does not install.
    """
    python, _ = pi_interpreter()
    return cached_venv("pi-venv", python, ["--require-hashes", "-r", str(PI_LOCK)], key_material=PI_LOCK.read_bytes())


def pi_env() -> dict[str, str]:
    """The environment for the Pi venv: the project's packages from source, no user site, no ``VERISCOPE_*``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERISCOPE_")}
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in SOURCES)
    env["PYTHONNOUSERSITE"] = "1"
    return env
