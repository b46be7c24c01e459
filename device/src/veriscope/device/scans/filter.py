"""Parser of the ListScans ``filter`` string: conditions joined by AND.

Grammar (a small subset of AIP-160)::

    filter    := condition ( "AND" condition )*
    condition := field op value
    field     := item_type | partner_item_id | state | verdict | label | create_time
    op        := "=" | "!=" | "<" | "<=" | ">" | ">="
    value     := bare-word | "double-quoted string"

``state``, ``verdict`` and ``label`` take enum names with or without their
prefix (``COMPLETED`` or ``SCAN_STATE_COMPLETED``); ``label = UNSPECIFIED``
selects unlabelled scans and ``label != UNSPECIFIED`` labelled ones.
``create_time`` takes an RFC 3339 time and the ordering operators.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime

from veriscope.device.errors import InvalidArgument
from veriscope.device.scans.records import ScanLabel, ScanState
from veriscope.device.scans.store import ScanFilter

_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<op>!=|<=|>=|=|<|>)|(?P<word>[A-Za-z0-9_:.+\-]+))')
_VERDICTS = {"AUTHENTIC", "UNVERIFIED"}


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise InvalidArgument(f"filter: cannot parse at {text[pos:]!r}")
        if m.group("str") is not None:
            out.append(m.group("str"))
        else:
            out.append(m.group("op") or m.group("word"))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


def _unquote(value: str) -> str:
    if value.startswith('"'):
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def parse_filter(text: str) -> ScanFilter:
    """Parse a filter string; InvalidArgument names the part that is wrong."""
    flt = ScanFilter()
    tokens = _tokens(text)
    if not tokens:
        return flt
    i = 0
    while True:
        if i + 3 > len(tokens):
            raise InvalidArgument(f"filter: incomplete condition {' '.join(tokens[i:])!r}; expected FIELD OP VALUE")
        field, op, raw = tokens[i], tokens[i + 1], tokens[i + 2]
        value = _unquote(raw)
        flt = _apply(flt, field, op, value)
        i += 3
        if i == len(tokens):
            return flt
        if tokens[i].upper() != "AND":
            raise InvalidArgument(f"filter: expected AND between conditions, got {tokens[i]!r}")
        i += 1


def _apply(flt: ScanFilter, field: str, op: str, value: str) -> ScanFilter:
    if field in ("item_type", "partner_item_id"):
        if op != "=":
            raise InvalidArgument(f"filter: {field} supports only '=', got {op!r}")
        if field == "item_type":
            return replace(flt, item_type=value)
        return replace(flt, partner_item_id=value)
    if field == "state":
        name = value.upper().removeprefix("SCAN_STATE_")
        try:
            state = ScanState[name]
        except KeyError:
            raise InvalidArgument(
                f"filter: unknown state {value!r}; use one of {', '.join(s.name for s in ScanState)}"
            ) from None
        if op == "=":
            return replace(flt, state=state)
        if op == "!=":
            return replace(flt, not_state=state)
        raise InvalidArgument(f"filter: state supports '=' and '!=', got {op!r}")
    if field == "verdict":
        name = value.upper().removeprefix("VERDICT_")
        if name not in _VERDICTS:
            raise InvalidArgument(f"filter: unknown verdict {value!r}; use AUTHENTIC or UNVERIFIED")
        if op == "=":
            return replace(flt, verdict=name)
        if op == "!=":
            return replace(flt, not_verdict=name)
        raise InvalidArgument(f"filter: verdict supports '=' and '!=', got {op!r}")
    if field == "label":
        return _apply_label(flt, op, value)
    if field == "create_time":
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidArgument(f"filter: create_time needs an RFC 3339 time, got {value!r}") from None
        if when.tzinfo is None:
            raise InvalidArgument(f"filter: create_time {value!r} needs a time zone, e.g. 'Z'")
        if op in (">", ">="):
            return replace(flt, create_after=when, create_after_inclusive=op == ">=")
        if op in ("<", "<="):
            return replace(flt, create_before=when, create_before_inclusive=op == "<=")
        raise InvalidArgument(f"filter: create_time supports <, <=, >, >=, got {op!r}")
    raise InvalidArgument(
        f"filter: unknown field {field!r}; use item_type, partner_item_id, state, verdict, label or create_time"
    )


def _apply_label(flt: ScanFilter, op: str, value: str) -> ScanFilter:
    if op not in ("=", "!="):
        raise InvalidArgument(f"filter: label supports '=' and '!=', got {op!r}")
    name = value.upper().removeprefix("SCAN_LABEL_")
    if name == "UNSPECIFIED":
        return replace(flt, labelled=op == "!=")
    try:
        label = ScanLabel[name]
    except KeyError:
        raise InvalidArgument(f"filter: unknown label {value!r}; use GENUINE, COUNTERFEIT or UNSPECIFIED") from None
    return replace(flt, label=label) if op == "=" else replace(flt, not_label=label)
