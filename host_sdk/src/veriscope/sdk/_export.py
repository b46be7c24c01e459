"""The training-data export of labelled scans: where each image goes, the manifest, and safe file writes.

The layout is the one ``python -m veriscope.training train --data ROOT`` reads::

    ROOT/manifest.json                                     what was exported, from where, and how
    ROOT/<material>/<source>/<item_id>/<image_id>.png      the images that passed the quality gate

``source`` is the expert's label, ``genuine`` or ``counterfeit``. Each region of
a scan is one item, ``item_id`` = ``<scan_id>-<region>``: stable (a re-export
puts it in the same place) and unique (scan ids are). Two scans of one physical
item are two items; the manifest keeps each one's ``partner_item_id``, so that a
split can keep them together.

Everything here is free of gRPC; the flow that drives it is
``BaseClient._export_scans_flow``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

from veriscope.sdk._models import ImageFormat, Scan, ScanImage, ScanLabel

MANIFEST_FILE = "manifest.json"
"""The manifest's file name, in the export's root."""
FORMAT_VERSION = 1
"""Version of the export layout and of the manifest."""
LAYOUT = "<material>/<source>/<item_id>/<image_id>.png"
SOURCES = {ScanLabel.GENUINE: "genuine", ScanLabel.COUNTERFEIT: "counterfeit"}
"""The source folder of each label; the trainer takes ``genuine`` as genuine and any other source as counterfeit."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_COMPONENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def component(text: str) -> str:
    """``text`` as one safe path component: anything but ``A-Z a-z 0-9 . _ -`` becomes ``_``; no leading dot."""
    return _UNSAFE.sub("_", text).lstrip(".") or "_"


def rfc3339(when: datetime) -> str:
    """An aware time as RFC 3339 in UTC, ``2026-05-28T10:15:00Z``."""
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def check_since(value: object) -> datetime | None:
    """Return ``since`` as an aware datetime: a datetime with a time zone, or a date (midnight UTC), or None.

    Raises:
        TypeError: value is neither.
        ValueError: a datetime without a time zone.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"since must have a time zone, got {value.isoformat()}")
        return value
    if isinstance(value, date):
        return datetime.combine(value, time(), tzinfo=UTC)
    raise TypeError(f"since must be a datetime, a date or None, got {type(value).__name__}")


def parse_since(text: str) -> datetime:
    """Parse ``--since``: an RFC 3339 time (``2026-05-01T08:00:00Z``) or a date (``2026-05-01``, midnight UTC).

    Raises ValueError naming what is wrong.
    """
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
            return datetime.combine(date.fromisoformat(text.strip()), time(), tzinfo=UTC)
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"expected an RFC 3339 time or a date (YYYY-MM-DD), got {text!r}") from None
    if when.tzinfo is None:
        raise ValueError(f"{text!r} needs a time zone, for example {text.strip()}Z")
    return when


def scan_filter(since: datetime | None) -> str:
    """The ListScans filter that selects what an export holds: COMPLETED scans with a label, created at or after since."""
    text = "state = COMPLETED AND label != UNSPECIFIED"
    if since is not None:
        text += f' AND create_time >= "{rfc3339(since)}"'
    return text


@dataclass(frozen=True)
class ExportItem:
    """One item of the export: the accepted images of one region of one labelled scan."""

    scan: Scan
    region: str
    material: str
    source: str
    item_id: str
    images: tuple[ScanImage, ...]

    @property
    def folder(self) -> str:
        """The item's folder relative to the export root, ``<material>/<source>/<item_id>``."""
        return f"{self.material}/{self.source}/{self.item_id}"

    def file(self, image: ScanImage) -> str:
        """An image's file relative to the export root."""
        return f"{self.folder}/{component(image.image_id)}.png"


def items_of(scan: Scan) -> list[ExportItem]:
    """The items of a labelled scan, in region order: every region with images that passed the quality gate.

    The material of a region is the one the verdict judged it as, else the one its progress names.
    """
    if scan.label is None:
        return []
    materials = {r.region: r.material for r in scan.regions}
    if scan.result is not None:
        materials.update({r.region: r.material for r in scan.result.regions})
    order = list(materials) + [i.region for i in scan.images if i.region not in materials]
    items = []
    for region in dict.fromkeys(order):
        images = tuple(i for i in scan.images if i.region == region and i.quality.ok)
        material = materials.get(region, "")
        if images and material:
            items.append(
                ExportItem(
                    scan=scan,
                    region=region,
                    material=component(material),
                    source=SOURCES[scan.label],
                    item_id=component(f"{scan.scan_id}-{region}"),
                    images=images,
                )
            )
    return items


def file_sha256(path: Path) -> str | None:
    """Lowercase hex SHA-256 of a file's bytes, or None when there is no such file."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as file:
            for block in iter(lambda: file.read(1024 * 1024), b""):
                digest.update(block)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    return digest.hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so ``path`` is never left partial.

    The temporary file is ``.<name>.tmp-<pid>`` beside it (never ``*.png``, so no
    reader takes it for an image) and is removed when the write fails.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def item_entry(item: ExportItem, device_id: str, written: Mapping[str, str]) -> dict[str, Any]:
    """The manifest's record of one item; ``written`` maps each image id to the SHA-256 of its PNG file."""
    scan, result = item.scan, item.scan.result
    return {
        "path": item.folder,
        "item_id": item.item_id,
        "material": item.material,
        "source": item.source,
        "scan_id": scan.scan_id,
        "partner_item_id": scan.partner_item_id,
        "item_type": scan.item_type,
        "region": item.region,
        "device_id": device_id,
        "create_time": rfc3339(scan.create_time),
        "label": None if scan.label is None else scan.label.name,
        "label_time": None if scan.label_time is None else rfc3339(scan.label_time),
        "verdict": None if result is None else result.verdict.name,
        "reason": None if result is None or result.reason is None else result.reason.name,
        "score": None if result is None else result.score,
        "model": None if result is None else result.model.to_dict(),
        "images": [
            {
                "image_id": image.image_id,
                "file": item.file(image),
                "sha256": written[image.image_id],
                "stored_sha256": image.sha256,
                "stored_format": None if image.format is None else image.format.name,
                "lighting": None
                if image.metadata is None or image.metadata.lighting is None
                else image.metadata.lighting.name,
            }
            for image in item.images
        ],
    }


def build_manifest(
    *, device_id: str, export_time: datetime, since: datetime | None, filter: str, items: Iterable[dict[str, Any]]
) -> dict[str, Any]:
    """The whole manifest: where and how the export was made, then every item in path order."""
    entries = sorted(items, key=lambda entry: str(entry["path"]))
    return {
        "format": FORMAT_VERSION,
        "generator": "veriscope export",
        "layout": LAYOUT,
        "item_id": "<scan_id>-<region>",
        "sources": {source: f"scans labelled {label.name}" for label, source in SOURCES.items()},
        "device_id": device_id,
        "export_time": rfc3339(export_time),
        "since": None if since is None else rfc3339(since),
        "filter": filter,
        "totals": {
            "scans": len({entry["scan_id"] for entry in entries}),
            "items": len(entries),
            "images": sum(len(entry["images"]) for entry in entries),
        },
        "items": entries,
    }


def manifest_text(manifest: Mapping[str, Any]) -> bytes:
    """The manifest file's bytes: indented JSON, keys in order, one trailing newline."""
    return (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def read_manifest(root: Path) -> dict[str, Any] | None:
    """The manifest of an earlier export into ``root``, or None when there is none.

    Raises ValueError when ``root/manifest.json`` exists but is not an export
    manifest this SDK can read (so an export never overwrites a file it does not own).
    """
    path = root / MANIFEST_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} exists but is not an export manifest: {exc}") from None
    if not (
        isinstance(data, dict)
        and data.get("generator") == "veriscope export"
        and data.get("format") == FORMAT_VERSION
        and isinstance(data.get("items"), list)
        and all(_valid_entry(entry) for entry in data["items"])
    ):
        raise ValueError(f"{path} exists but is not a format {FORMAT_VERSION} manifest of 'veriscope export'")
    return data


def _valid_entry(entry: object) -> bool:
    if not isinstance(entry, dict) or not _relative(entry.get("path"), 3):
        return False
    images = entry.get("images")
    return isinstance(images, list) and all(
        isinstance(image, dict)
        and _relative(image.get("file"), 4)
        and str(image["file"]).startswith(f"{entry['path']}/")
        and isinstance(image.get("sha256"), str)
        for image in images
    )


def _relative(value: object, parts: int) -> bool:
    """True for a path of exactly ``parts`` safe components: nothing a manifest names can point outside the root."""
    return (
        isinstance(value, str)
        and len(value.split("/")) == parts
        and all(_COMPONENT.fullmatch(p) for p in value.split("/"))
    )


def known_files(manifest: Mapping[str, Any] | None) -> dict[tuple[str, str], tuple[str, str]]:
    """(scan id, image id) -> (SHA-256 of the stored image, SHA-256 of its exported PNG), from an earlier manifest.

    A stored JPEG's PNG is only known after converting it; this lets a re-export skip it without asking again.
    """
    if manifest is None:
        return {}
    return {
        (str(entry.get("scan_id")), str(image.get("image_id"))): (str(image.get("stored_sha256")), str(image["sha256"]))
        for entry in manifest["items"]
        for image in entry["images"]
    }


def expected_sha256(scan_id: str, image: ScanImage, known: Mapping[tuple[str, str], tuple[str, str]]) -> str | None:
    """The SHA-256 the exported PNG of ``image`` has, when it is known without asking the unit.

    A stored PNG is sent as stored; a stored JPEG's PNG is known only from an
    earlier export's manifest (``known``, see :func:`known_files`), and only for
    the same stored image.
    """
    if image.format is ImageFormat.PNG:
        return image.sha256
    stored, png = known.get((scan_id, image.image_id), ("", ""))
    return png if stored == image.sha256 and png else None


def prune_previous(
    root: Path,
    previous: Mapping[str, Any] | None,
    entries: Iterable[Mapping[str, Any]],
    device_id: str,
    since: datetime | None,
) -> tuple[list[dict[str, Any]], int]:
    """Settle the items of an earlier export into ``root`` against this one's ``entries``.

    An earlier item this export covers (same device, created at or after
    ``since``) but no longer holds had its label changed or removed: its files
    are deleted. One this export does not cover is kept. Returns the kept
    manifest entries and how many items were removed.
    """
    current = {entry["path"] for entry in entries}
    kept: list[dict[str, Any]] = []
    removed = 0
    for entry in previous["items"] if previous is not None else []:
        if entry["path"] in current:
            continue
        if in_scope(entry, device_id, since):
            remove_item(root, entry)
            removed += 1
        else:
            kept.append(entry)
    return kept, removed


def in_scope(entry: Mapping[str, Any], device_id: str, since: datetime | None) -> bool:
    """True when an earlier export's item falls under this export: same device, and created at or after since."""
    if entry.get("device_id") != device_id:
        return False
    if since is None:
        return True
    try:
        created = datetime.fromisoformat(str(entry.get("create_time")))
    except ValueError:
        return False
    return created.tzinfo is not None and created >= since


def remove_item(root: Path, entry: Mapping[str, Any]) -> None:
    """Delete an earlier export's item: the image files its entry names, then its folders once they are empty."""
    for image in entry["images"]:
        with contextlib.suppress(FileNotFoundError):
            (root / image["file"]).unlink()
    folder = root / entry["path"]
    for _ in range(3):  # the item folder, then its source and material folders
        try:
            folder.rmdir()
        except FileNotFoundError:
            pass
        except OSError:
            return  # not empty: it holds other files
        folder = folder.parent
