"""Expert labels, image downloads and the training-data export in the SDK and the CLI, against the scripted unit:
``label_scan()``, ``read_scan_image()`` and ``export_scans()``, sync and async, ``veriscope label`` and
``veriscope export``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import pytest_asyncio
from sdk_fakes import BASE_SECONDS, JPEG_MAGIC, FakeServer, FakeUnit, MiB, blurry_report, fake_png_of, png_bytes

from veriscope.sdk import (
    AsyncClient,
    Client,
    DataLossError,
    ExportProgress,
    FailedPreconditionError,
    ImageFormat,
    NotFoundError,
    ScanLabel,
)
from veriscope.sdk._cli import main
from veriscope.v1 import scan_service_pb2

ITEM = "tote-classic"
CANVAS_PNG = png_bytes(3 * MiB + 5)
CANVAS_JPEG = JPEG_MAGIC + bytes(range(256)) * 40
HANDLE_PNG = png_bytes(2000)
BLURRY_PNG = png_bytes(1500)


@pytest.fixture
def client(address: str) -> Iterator[Client]:
    with Client(address) as client:
        yield client


@pytest_asyncio.fixture
async def aclient(address: str) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(address) as client:
        yield client


def _completed(client: Client, unit: FakeUnit, partner_item_id: str | None = None) -> str:
    """A COMPLETED scan: a blurry canvas image (rejected), a canvas PNG over 3 MiB, a canvas JPEG, a handle PNG."""
    unit.upload_quality.append(blurry_report())
    result = client.analyze(
        ITEM,
        [("canvas", BLURRY_PNG), ("canvas", CANVAS_PNG), ("canvas", CANVAS_JPEG), ("handle", HANDLE_PNG)],
        partner_item_id=partner_item_id,
    )
    return result.scan_id


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- label_scan ----------------------------------------------------------------------------------------------------


def test_label_scan_sets_replaces_and_removes_the_label(client: Client, unit: FakeUnit) -> None:
    scan_id = _completed(client, unit)
    assert client.get_scan(scan_id).label is None
    genuine = client.label_scan(scan_id, ScanLabel.GENUINE)
    assert genuine.label is ScanLabel.GENUINE and genuine.label_time == datetime.fromtimestamp(
        BASE_SECONDS + 300.5, UTC
    )
    assert genuine.to_dict()["label"] == "GENUINE" and genuine.to_dict()["label_time"].endswith("Z")
    assert client.label_scan(f"scans/{scan_id}", ScanLabel.COUNTERFEIT).label is ScanLabel.COUNTERFEIT
    cleared = client.label_scan(scan_id, None)
    assert cleared.label is None and cleared.label_time is None and cleared.to_dict()["label"] is None
    assert cleared.verdict is genuine.verdict


def test_label_scan_errors(client: Client, unit: FakeUnit) -> None:
    with pytest.raises(NotFoundError):
        client.label_scan("nope", ScanLabel.GENUINE)
    open_scan = client.create_scan(ITEM)
    with pytest.raises(FailedPreconditionError, match="IN_PROGRESS"):
        client.label_scan(open_scan.scan_id, ScanLabel.GENUINE)
    with pytest.raises(TypeError, match="ScanLabel"):
        client.label_scan(open_scan.scan_id, "GENUINE")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scan_id"):
        client.label_scan("a b", ScanLabel.GENUINE)
    assert unit.count("LabelScan") == 2  # the bad arguments were refused before any call


async def test_async_label_scan(aclient: AsyncClient, client: Client, unit: FakeUnit) -> None:
    scan_id = _completed(client, unit)
    labelled = await aclient.label_scan(scan_id, ScanLabel.COUNTERFEIT)
    assert labelled.label is ScanLabel.COUNTERFEIT and labelled.label_time is not None


# --- read_scan_image -----------------------------------------------------------------------------------------------


def test_read_scan_image_joins_the_chunks_and_asks_for_the_format(client: Client, unit: FakeUnit) -> None:
    scan_id = _completed(client, unit)
    images = {i.size_bytes: i for i in client.get_scan(scan_id).images}
    canvas, jpeg = images[len(CANVAS_PNG)], images[len(CANVAS_JPEG)]
    assert jpeg.format is ImageFormat.JPEG
    assert client.read_scan_image(scan_id, canvas.image_id) == CANVAS_PNG
    assert client.read_scan_image(scan_id, jpeg.image_id) == CANVAS_JPEG
    assert client.read_scan_image(scan_id, jpeg.image_id, format=ImageFormat.PNG) == fake_png_of(CANVAS_JPEG)
    sent = unit.image_reads[-1]
    assert sent.name == f"scans/{scan_id}/images/{jpeg.image_id}"
    assert sent.format == scan_service_pb2.ReadScanImageRequest(format="IMAGE_FORMAT_PNG").format
    assert unit.image_reads[0].format == 0


def test_read_scan_image_checks_what_it_received(client: Client, unit: FakeUnit) -> None:
    scan_id = _completed(client, unit)
    image_id = client.get_scan(scan_id).images[1].image_id
    unit.corrupt_reads = True
    with pytest.raises(DataLossError, match="announced"):
        client.read_scan_image(scan_id, image_id)
    unit.corrupt_reads = False
    with pytest.raises(NotFoundError):
        client.read_scan_image(scan_id, "img-99")
    with pytest.raises(ValueError, match="image_id"):
        client.read_scan_image(scan_id, "../x")
    with pytest.raises(TypeError, match="format"):
        client.read_scan_image(scan_id, image_id, format="PNG")  # type: ignore[arg-type]


async def test_async_read_scan_image(aclient: AsyncClient, client: Client, unit: FakeUnit) -> None:
    scan_id = _completed(client, unit)
    image_id = next(i.image_id for i in client.get_scan(scan_id).images if i.size_bytes == len(CANVAS_PNG))
    assert await aclient.read_scan_image(scan_id, image_id) == CANVAS_PNG


# --- export_scans --------------------------------------------------------------------------------------------------


def _labelled(client: Client, unit: FakeUnit) -> tuple[str, str, str]:
    """Three completed scans: one labelled GENUINE, one COUNTERFEIT, one without a label."""
    genuine = _completed(client, unit, "listing-1")
    fake = _completed(client, unit, "listing-2")
    _completed(client, unit)
    client.label_scan(genuine, ScanLabel.GENUINE)
    client.label_scan(fake, ScanLabel.COUNTERFEIT)
    return genuine, fake, "unlabelled"


def _files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _expected(scan_id: str, source: str) -> dict[str, bytes]:
    """The files an exported scan of the fake makes: accepted images only, the JPEG as PNG."""
    return {
        f"coated-canvas/{source}/{scan_id}-canvas/img-2.png": CANVAS_PNG,
        f"coated-canvas/{source}/{scan_id}-canvas/img-3.png": fake_png_of(CANVAS_JPEG),
        f"leather/{source}/{scan_id}-handle/img-4.png": HANDLE_PNG,
    }


def test_export_writes_the_training_layout_and_the_manifest(
    client: Client, unit: FakeUnit, server: FakeServer, tmp_path: Path
) -> None:
    genuine, fake, _ = _labelled(client, unit)
    seen: list[ExportProgress] = []
    summary = client.export_scans(tmp_path / "out", progress=seen.append)
    root = tmp_path / "out"

    expected = {**_expected(genuine, "genuine"), **_expected(fake, "counterfeit")}
    files = _files(root)
    assert set(files) == {*expected, "manifest.json"}
    assert all(files[name] == hashlib.sha256(data).hexdigest() for name, data in expected.items())
    assert (summary.out, summary.scans, summary.items, summary.images, summary.skipped) == (root, 2, 4, 6, 0)
    assert summary.manifest == root / "manifest.json" and summary.removed == 0
    assert [p.images_written for p in seen] == [1, 2, 3, 4, 5, 6]
    assert [(p.scans_done, p.scans_total, p.scan_id) for p in seen[2:4]] == [(0, 2, genuine), (1, 2, fake)]
    assert unit.image_reads[-1].format == scan_service_pb2.ReadScanImageRequest(format="IMAGE_FORMAT_PNG").format
    assert _last_filter(server) == "state = COMPLETED AND label != UNSPECIFIED"

    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["device_id"] == "VS-0001" and manifest["since"] is None
    assert manifest["filter"] == "state = COMPLETED AND label != UNSPECIFIED"
    assert manifest["layout"] == "<material>/<source>/<item_id>/<image_id>.png"
    assert manifest["totals"] == {"scans": 2, "items": 4, "images": 6}
    datetime.fromisoformat(manifest["export_time"])
    item = next(i for i in manifest["items"] if i["path"] == f"coated-canvas/counterfeit/{fake}-canvas")
    assert {k: item[k] for k in ("scan_id", "partner_item_id", "region", "material", "label", "verdict")} == {
        "scan_id": fake,
        "partner_item_id": "listing-2",
        "region": "canvas",
        "material": "coated-canvas",
        "label": "COUNTERFEIT",
        "verdict": "AUTHENTIC",
    }
    assert item["label_time"].endswith("Z") and item["model"]["name"] == "veriscope-demo"
    assert [(i["image_id"], i["sha256"], i["stored_format"]) for i in item["images"]] == [
        ("img-2", hashlib.sha256(CANVAS_PNG).hexdigest(), "PNG"),
        ("img-3", hashlib.sha256(fake_png_of(CANVAS_JPEG)).hexdigest(), "JPEG"),
    ]


def _last_filter(server: FakeServer) -> str:
    request = server.scan.last_list_request
    assert request is not None
    return request.filter


def test_a_second_export_skips_every_file_and_asks_for_nothing(client: Client, unit: FakeUnit, tmp_path: Path) -> None:
    _labelled(client, unit)
    client.export_scans(tmp_path)
    before = _files(tmp_path)
    reads = len(unit.image_reads)
    again = client.export_scans(tmp_path)
    assert (again.scans, again.items, again.images, again.skipped) == (2, 4, 0, 6)
    assert len(unit.image_reads) == reads  # the JPEG's PNG too is known from the manifest
    after = _files(tmp_path)
    assert {k: v for k, v in after.items() if k != "manifest.json"} == {
        k: v for k, v in before.items() if k != "manifest.json"
    }


def test_a_damaged_file_is_written_again(client: Client, unit: FakeUnit, tmp_path: Path) -> None:
    genuine, _, _ = _labelled(client, unit)
    client.export_scans(tmp_path)
    damaged = tmp_path / f"leather/genuine/{genuine}-handle/img-4.png"
    damaged.write_bytes(b"half a file")
    again = client.export_scans(tmp_path)
    assert (again.images, again.skipped) == (1, 5)
    assert damaged.read_bytes() == HANDLE_PNG


def test_an_interrupted_export_leaves_no_partial_file_and_resumes(
    client: Client, unit: FakeUnit, tmp_path: Path
) -> None:
    _labelled(client, unit)

    def stop_after_two(progress: ExportProgress) -> None:
        if progress.images_written == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        client.export_scans(tmp_path, progress=stop_after_two)
    partial = _files(tmp_path)
    assert len(partial) == 2 and "manifest.json" not in partial
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and not p.name.endswith(".png")]
    resumed = client.export_scans(tmp_path)
    # The stored PNG is skipped; the stored JPEG's PNG is fetched again, as no manifest has recorded it yet.
    assert (resumed.images, resumed.skipped) == (5, 1)
    assert len(_files(tmp_path)) == 7


def test_a_changed_or_removed_label_moves_or_removes_the_item(client: Client, unit: FakeUnit, tmp_path: Path) -> None:
    genuine, fake, _ = _labelled(client, unit)
    client.export_scans(tmp_path)
    client.label_scan(genuine, ScanLabel.COUNTERFEIT)
    moved = client.export_scans(tmp_path)
    assert (moved.removed, moved.items) == (2, 4)
    assert set(_files(tmp_path)) == {
        *_expected(genuine, "counterfeit"),
        *_expected(fake, "counterfeit"),
        "manifest.json",
    }
    assert not (tmp_path / "coated-canvas" / "genuine").exists()

    client.label_scan(fake, None)
    shrunk = client.export_scans(tmp_path)
    assert (shrunk.scans, shrunk.items, shrunk.removed) == (1, 2, 2)
    assert set(_files(tmp_path)) == {*_expected(genuine, "counterfeit"), "manifest.json"}
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert {i["scan_id"] for i in manifest["items"]} == {genuine}


def test_since_selects_newer_scans_and_keeps_older_items(
    client: Client, unit: FakeUnit, server: FakeServer, tmp_path: Path
) -> None:
    genuine, fake, _ = _labelled(client, unit)
    client.export_scans(tmp_path)
    newer = datetime.fromtimestamp(BASE_SECONDS + 1, UTC)  # the fake's second scan, `fake`, was created then
    summary = client.export_scans(tmp_path, since=newer)
    assert (summary.scans, summary.items, summary.removed) == (1, 2, 0)
    assert _last_filter(server).endswith('create_time >= "2026-05-28T20:26:41Z"')
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["since"] == "2026-05-28T20:26:41Z"
    assert {i["scan_id"] for i in manifest["items"]} == {genuine, fake}  # the older item stays listed
    assert client.export_scans(tmp_path / "day", since=date(2026, 5, 29)).scans == 0
    with pytest.raises(ValueError, match="time zone"):
        client.export_scans(tmp_path, since=datetime(2026, 5, 28))


def test_nothing_labelled_writes_nothing(client: Client, unit: FakeUnit, tmp_path: Path) -> None:
    _completed(client, unit)
    summary = client.export_scans(tmp_path / "out")
    assert (summary.scans, summary.items, summary.images, summary.manifest) == (0, 0, 0, None)
    assert not (tmp_path / "out").exists()


def test_a_foreign_manifest_is_never_overwritten(client: Client, unit: FakeUnit, tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text('{"name": "something else"}')
    with pytest.raises(ValueError, match="not a format 1 manifest"):
        client.export_scans(tmp_path)
    (tmp_path / "manifest.json").write_text(
        json.dumps({"generator": "veriscope export", "format": 1, "items": [{"path": "../../etc", "images": []}]})
    )
    with pytest.raises(ValueError, match="manifest"):
        client.export_scans(tmp_path)


async def test_async_export(aclient: AsyncClient, client: Client, unit: FakeUnit, tmp_path: Path) -> None:
    genuine, fake, _ = _labelled(client, unit)
    seen: list[int] = []

    async def progress(p: ExportProgress) -> None:
        seen.append(p.images_written + p.images_skipped)

    summary = await aclient.export_scans(tmp_path, progress=progress)
    assert (summary.scans, summary.items, summary.images) == (2, 4, 6) and seen == [1, 2, 3, 4, 5, 6]
    assert set(_files(tmp_path)) == {*_expected(genuine, "genuine"), *_expected(fake, "counterfeit"), "manifest.json"}


# --- CLI -----------------------------------------------------------------------------------------------------------


def test_cli_label(capsys: pytest.CaptureFixture[str], client: Client, unit: FakeUnit, address: str) -> None:
    scan_id = _completed(client, unit)
    code, out, err = run(capsys, "--device", address, "label", scan_id, "genuine", "--json")
    assert code == 0 and err == ""
    assert json.loads(out)["label"] == "GENUINE" and json.loads(out)["scan_id"] == scan_id
    code, out, _ = run(capsys, "--device", address, "label", f"scans/{scan_id}", "counterfeit")
    assert code == 0 and out.strip() == f"scan {scan_id} labelled COUNTERFEIT (verdict AUTHENTIC)"
    code, out, _ = run(capsys, "--device", address, "label", scan_id, "--clear")
    assert code == 0 and "label removed" in out and client.get_scan(scan_id).label is None
    client.label_scan(scan_id, ScanLabel.GENUINE)
    code, _, _ = run(capsys, "--device", address, "label", scan_id, "none")
    assert code == 0 and client.get_scan(scan_id).label is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["label", "s1"], "give a LABEL"),
        (["label", "s1", "genuine", "--clear"], "not both"),
        (["label", "s1", "real"], "invalid choice"),
        (["export"], "--out"),
        (["export", "--out", "x", "--since", "yesterday"], "RFC 3339"),
        (["export", "--out", "x", "--since", "2026-05-01T10:00:00"], "time zone"),
    ],
)
def test_cli_usage_errors(capsys: pytest.CaptureFixture[str], address: str, args: list[str], message: str) -> None:
    code, out, err = run(capsys, "--device", address, *args)
    assert code == 2 and out == "" and message in err and len(err.splitlines()) == 1


def test_cli_label_of_a_scan_in_progress_exits_1(
    capsys: pytest.CaptureFixture[str], client: Client, address: str
) -> None:
    scan_id = client.create_scan(ITEM).scan_id
    code, out, err = run(capsys, "--device", address, "label", scan_id, "genuine")
    assert code == 1 and out == "" and "FAILED_PRECONDITION" in err and "IN_PROGRESS" in err


def test_cli_export_json_and_text(
    capsys: pytest.CaptureFixture[str], client: Client, unit: FakeUnit, address: str, tmp_path: Path
) -> None:
    _labelled(client, unit)
    code, out, err = run(capsys, "--device", address, "export", "--out", str(tmp_path), "--json")
    assert code == 0 and err == ""
    assert json.loads(out) == {"out": str(tmp_path), "scans": 2, "items": 4, "images": 6, "skipped": 0}
    code, out, err = run(capsys, "--device", address, "export", "--out", str(tmp_path), "--since", "2026-05-28")
    assert code == 0
    assert "exported 2 labelled scans as 4 items" in out and "0 images written, 6 already in place" in out
    assert f"make train TRAIN_DATA={tmp_path}" in out
    assert err.splitlines() == [
        "scan 1/2: 0 images written, 1 already in place",
        "scan 2/2: 0 images written, 4 already in place",
    ]
    code, out, err = run(capsys, "--device", address, "export", "--out", str(tmp_path), "-q")
    assert code == 0 and err == ""


def test_cli_export_of_nothing_says_so_and_exits_0(
    capsys: pytest.CaptureFixture[str], address: str, tmp_path: Path
) -> None:
    code, out, err = run(capsys, "--device", address, "export", "--out", str(tmp_path / "x"), "--since", "2026-05-01")
    assert code == 0 and err == ""
    assert out.strip() == (
        "nothing to export: no completed scan since 2026-05-01T00:00:00+00:00 is labelled "
        "(veriscope label SCAN_ID genuine|counterfeit)"
    )
    code, out, _ = run(capsys, "--device", address, "export", "--out", str(tmp_path / "x"), "--json")
    assert code == 0 and json.loads(out) == {
        "out": str(tmp_path / "x"),
        "scans": 0,
        "items": 0,
        "images": 0,
        "skipped": 0,
    }
