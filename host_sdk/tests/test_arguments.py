"""Property tests of everything that arrives from outside: CLI arguments, scan ids, images to upload."""

from __future__ import annotations

import argparse
import hashlib
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sdk_fakes import JPEG_MAGIC, PNG_MAGIC

from veriscope.sdk import ImageFormat
from veriscope.sdk._base import UPLOAD_CHUNK_BYTES, check_image, check_scan_id, upload_requests
from veriscope.sdk._cli import main, parse_image_arg, parse_scan_id_arg

SCAN_ID = re.compile(r"[A-Za-z0-9._~-]{1,128}")
REGIONS = st.from_regex(r"[a-z][a-z0-9_-]{0,15}", fullmatch=True)


@pytest.fixture(scope="module")
def image_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("images") / "canvas.png"
    path.write_bytes(PNG_MAGIC + b"body")
    return path


@given(st.text())
def test_scan_ids_are_accepted_exactly_when_well_formed(value: str) -> None:
    try:
        scan_id = check_scan_id(value)
    except ValueError as exc:
        assert "scan_id must be" in str(exc)
        assert not SCAN_ID.fullmatch(value.removeprefix("scans/"))
    else:
        assert SCAN_ID.fullmatch(scan_id) and value in (scan_id, f"scans/{scan_id}")


@given(st.from_regex(SCAN_ID, fullmatch=True))
def test_valid_scan_ids_round_trip_with_and_without_the_prefix(scan_id: str) -> None:
    assert check_scan_id(scan_id) == scan_id
    assert parse_scan_id_arg(f"scans/{scan_id}") == scan_id


@given(st.text())
def test_image_arguments_either_parse_or_raise_a_usage_error(value: str) -> None:
    try:
        region, path = parse_image_arg(value)
    except argparse.ArgumentTypeError as exc:
        assert str(exc)
    else:
        assert f"{region}={path}" == value or value.startswith(f"{region}=")
        assert path.is_file()


@given(REGIONS)
def test_image_arguments_split_at_the_first_equals_sign(image_file: Path, region: str) -> None:
    assert parse_image_arg(f"{region}={image_file}") == (region, image_file)


@given(st.text(alphabet=st.characters(blacklist_characters="="), min_size=1))
def test_image_arguments_without_equals_are_rejected(value: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="expected REGION=PATH"):
        parse_image_arg(value)


# capsys is reset by readouterr() in every example, so sharing it across examples is safe.
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=40))
def test_the_cli_never_crashes_on_an_image_argument(capsys: pytest.CaptureFixture[str], value: str) -> None:
    code = main(["--device", "127.0.0.1:1", "analyze", "--item-type", "t", "--image", value])
    err = capsys.readouterr().err
    # Either a one-line usage error, or the argument was fine and the (absent) device was the problem.
    assert code in (2, 3)
    assert len(err.splitlines()) == 1 and err.startswith("veriscope: error: ")


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=1, max_value=3 * UPLOAD_CHUNK_BYTES + 7), st.sampled_from([PNG_MAGIC, JPEG_MAGIC]))
def test_uploads_are_a_header_then_chunks_that_rebuild_the_file(size: int, magic: bytes) -> None:
    data = (magic + hashlib.shake_256(str(size).encode()).digest(size))[: max(size, len(magic))]
    messages = list(upload_requests("s1", "canvas", data))
    header = messages[0].header
    assert messages[0].WhichOneof("payload") == "header"
    assert (header.name, header.region, header.size_bytes) == ("scans/s1", "canvas", len(data))
    assert header.sha256 == hashlib.sha256(data).hexdigest()
    chunks = [m.chunk for m in messages[1:]]
    assert all(m.WhichOneof("payload") == "chunk" for m in messages[1:])
    assert all(0 < len(c) <= UPLOAD_CHUNK_BYTES for c in chunks)
    assert b"".join(chunks) == data


@given(st.binary(max_size=64))
def test_only_png_and_jpeg_bytes_are_accepted_for_upload(data: bytes) -> None:
    try:
        checked = check_image("canvas", data)
    except ValueError as exc:
        assert "empty" in str(exc) or "neither PNG nor JPEG" in str(exc)
    else:
        expected = ImageFormat.PNG if data.startswith(PNG_MAGIC) else ImageFormat.JPEG
        assert checked.format is expected and data.startswith((PNG_MAGIC, JPEG_MAGIC[:3]))
