import contextlib
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from veriscope.device.errors import InvalidArgument
from veriscope.device.scans.filter import parse_filter
from veriscope.device.scans.records import ScanState


def test_empty_filter_matches_everything() -> None:
    flt = parse_filter("  ")
    assert flt.item_type is None and flt.state is None and flt.create_after is None


def test_conditions_combine() -> None:
    flt = parse_filter(
        'verdict = AUTHENTIC AND item_type = "tote-classic" AND state = SCAN_STATE_COMPLETED '
        'AND create_time >= "2026-01-01T00:00:00Z" AND create_time < "2027-01-01T00:00:00+01:00" '
        "AND partner_item_id = listing-42"
    )
    assert flt.verdict == "AUTHENTIC"
    assert flt.item_type == "tote-classic"
    assert flt.state is ScanState.COMPLETED
    assert flt.create_after == datetime(2026, 1, 1, tzinfo=UTC) and flt.create_after_inclusive
    assert flt.create_before is not None and not flt.create_before_inclusive
    assert flt.partner_item_id == "listing-42"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour = red", "unknown field 'colour'"),
        ("verdict = FAKE", "unknown verdict"),
        ("state < COMPLETED", "supports"),
        ("create_time > yesterday", "RFC 3339"),
        ('create_time > "2026-01-01T00:00:00"', "time zone"),
        ("item_type =", "incomplete"),
        ("item_type = a OR item_type = b", "expected AND"),
        ("item_type = a $", "cannot parse"),
    ],
)
def test_bad_filters_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_filter(text)


@given(st.text(max_size=80))
def test_any_text_parses_or_fails_cleanly(text: str) -> None:
    with contextlib.suppress(InvalidArgument):
        parse_filter(text)
