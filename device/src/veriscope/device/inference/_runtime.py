"""Chooses the TFLite interpreter: LiteRT (``ai-edge-litert``) first, then the older ``tflite-runtime``.

``tflite-runtime`` is the fallback for Raspberry Pi OS, whose system numpy is
older than 2. When neither imports, :func:`make_interpreter` raises
:class:`ModelError` with the install command.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from veriscope.device.errors import ModelError

INSTALL_HINT = (
    "no TFLite runtime is installed: run `pip install ai-edge-litert` "
    "(or, on Raspberry Pi OS with numpy < 2, `pip install tflite-runtime`)"
)


def _interpreter_class() -> tuple[type[Any], str]:
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, "tflite-runtime"
    except ImportError:
        raise ModelError(INSTALL_HINT) from None


def runtime_name() -> str:
    """The name of the runtime :func:`make_interpreter` uses. Raises :class:`ModelError` when none is installed."""
    return _interpreter_class()[1]


def default_threads() -> int:
    """Threads per interpreter: the tiles of one frame are too few to gain from more than two cores."""
    return max(1, min(2, os.cpu_count() or 1))


def make_interpreter(model_path: Path, *, num_threads: int | None = None) -> Any:
    """Load a ``.tflite`` file into a new interpreter with its tensors allocated.

    Raises :class:`ModelError` when no runtime is installed or the file is not a
    model the runtime can run.
    """
    interpreter_class, name = _interpreter_class()
    threads = default_threads() if num_threads is None else num_threads
    try:
        interpreter = interpreter_class(model_path=str(model_path), num_threads=threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"{name} cannot load {model_path}: {exc}") from exc
    return interpreter
