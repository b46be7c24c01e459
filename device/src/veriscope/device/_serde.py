"""JSON round-trip of the daemon's frozen dataclasses (records, reports) for storage.

Handles nested dataclasses, enums, datetimes, tuples, lists, dicts and
optionals, driven by the type hints, so records need no hand-written codecs.
"""

from __future__ import annotations

import enum
import types
import typing
from dataclasses import fields, is_dataclass
from datetime import datetime
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

T = TypeVar("T")


def to_jsonable(obj: Any) -> Any:
    """Turn a dataclass tree into JSON-compatible values."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    return obj


def from_jsonable(cls: type[T], data: Any) -> T:
    """Rebuild an instance of ``cls`` from :func:`to_jsonable` output."""
    return typing.cast(T, _load(cls, data))


def _load(hint: Any, data: Any) -> Any:
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in get_args(hint) if a is not type(None)]
        return None if data is None else _load(options[0], data)
    if origin in (tuple, list):
        loaded = [_load(get_args(hint)[0], v) for v in data]
        return tuple(loaded) if origin is tuple else loaded
    if origin in (dict, typing.Mapping) or hint is typing.Mapping:
        args = get_args(hint)
        return {k: (_load(args[1], v) if args else v) for k, v in data.items()}
    if isinstance(hint, type) and is_dataclass(hint):
        hints = get_type_hints(hint)
        kwargs = {f.name: _load(hints[f.name], data[f.name]) for f in fields(hint) if f.name in data}
        return hint(**kwargs)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(data)
    if hint is datetime:
        return datetime.fromisoformat(data)
    if hint is float and isinstance(data, int):
        return float(data)
    return data
