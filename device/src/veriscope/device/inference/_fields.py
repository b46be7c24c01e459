"""Typed reads from parsed JSON that raise :class:`ModelError` naming the dotted path of a bad field."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from veriscope.device.errors import ModelError


class Fields:
    """A JSON object being read, with the dotted path it sits at (for error messages)."""

    def __init__(self, value: object, path: str, *, source: str) -> None:
        if not isinstance(value, Mapping):
            raise ModelError(f"{source}: {path or 'manifest'} must be an object, got {type(value).__name__}")
        self.data: Mapping[str, Any] = value
        self.path = path
        self.source = source

    def where(self, key: str) -> str:
        """The dotted path of ``key`` in this object."""
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str, message: str) -> ModelError:
        """An error naming the field ``key``."""
        return ModelError(f"{self.source}: field {self.where(key)!r} {message}")

    def has(self, key: str) -> bool:
        """True when ``key`` is present."""
        return key in self.data

    def raw(self, key: str) -> Any:
        """The value of a required field, unchecked."""
        if key not in self.data:
            raise ModelError(f"{self.source}: field {self.where(key)!r} is missing")
        return self.data[key]

    def obj(self, key: str) -> Fields:
        """A required nested object."""
        return Fields(self.raw(key), self.where(key), source=self.source)

    def text(self, key: str, *, allow_empty: bool = False) -> str:
        """A required string."""
        value = self.raw(key)
        if not isinstance(value, str) or (not allow_empty and not value.strip()):
            raise self.fail(key, f"must be a non-empty string, got {value!r:.80}")
        return value

    def integer(self, key: str, *, lo: int | None = None, hi: int | None = None) -> int:
        """A required integer in ``lo..hi``."""
        value = self.raw(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be an integer, got {value!r:.80}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise self.fail(key, f"must be in {lo}..{hi}, got {value}")
        return value

    def number(self, key: str, *, lo: float | None = None, hi: float | None = None) -> float:
        """A required finite number in ``lo..hi``."""
        return as_float(self.raw(key), self.where(key), self.source, lo=lo, hi=hi)

    def items(self, key: str, *, min_len: int = 0, max_len: int | None = None) -> list[Any]:
        """A required list of ``min_len..max_len`` items."""
        value = self.raw(key)
        if not isinstance(value, list):
            raise self.fail(key, f"must be a list, got {type(value).__name__}")
        if len(value) < min_len or (max_len is not None and len(value) > max_len):
            raise self.fail(
                key, f"must have {min_len}..{max_len if max_len is not None else 'any'} items, got {len(value)}"
            )
        return value

    def texts(self, key: str, *, min_len: int = 1, unique: bool = True) -> list[str]:
        """A required list of non-empty strings, unique unless told otherwise."""
        items = self.items(key, min_len=min_len)
        if not all(isinstance(item, str) and item.strip() for item in items):
            raise self.fail(key, "must hold non-empty strings only")
        if unique and len(set(items)) != len(items):
            raise self.fail(key, "must not repeat an entry")
        return items

    def numbers(self, key: str, *, length: int) -> list[float]:
        """A required list of exactly ``length`` finite numbers."""
        items = self.items(key, min_len=length, max_len=length)
        return [as_float(item, f"{self.where(key)}[{i}]", self.source) for i, item in enumerate(items)]

    def number_map(self, key: str) -> dict[str, float]:
        """An optional object of finite numbers; empty when absent."""
        if key not in self.data:
            return {}
        obj = self.obj(key)
        return {name: obj.number(name) for name in obj.data}


def as_float(value: object, where: str, source: str, *, lo: float | None = None, hi: float | None = None) -> float:
    """``value`` as a finite float in ``lo..hi``, or :class:`ModelError` naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ModelError(f"{source}: field {where!r} must be a number, got {value!r:.80}")
    try:
        result = float(value)
    except OverflowError:
        raise ModelError(f"{source}: field {where!r} is out of range") from None
    if not math.isfinite(result):
        raise ModelError(f"{source}: field {where!r} must be finite, got {value!r}")
    if (lo is not None and result < lo) or (hi is not None and result > hi):
        raise ModelError(f"{source}: field {where!r} must be in {lo}..{hi}, got {result}")
    return result
