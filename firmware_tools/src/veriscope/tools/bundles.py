"""Signed update bundles: build one on a workstation, verify and install one on a unit.

A bundle is one uncompressed tar file holding, in this order:

==================== ==========================================================
``manifest.json``    what the bundle is: kind, name, version, compatible hardware,
                     minimum installed version, and every payload's path,
                     SHA-256 and size (see :class:`Manifest`)
``manifest.sig``     the 64-byte Ed25519 signature over the exact bytes of
                     ``manifest.json``, by the fleet's update key
``payload/<path>``   the payload files, sorted by path, regular files only
==================== ==========================================================

The unit trusts nothing in a bundle until :func:`read_bundle` has checked all of
it against the update public key: the signature over the manifest bytes, the
manifest's schema, that every member is a regular file with a safe name (no
absolute path, no ``..``, no link or device), listed exactly once in the
manifest, within the size caps, and hashes to the listed SHA-256. Only then does
:func:`extract_verified` write anything, into a fresh temporary directory that
it renames into place once every byte written has been hashed again. The module
needs only the standard library and ``cryptography``, so the daemon can use it.

A ``combined`` bundle updates several parts of a unit as one: its payloads are complete signed bundles,
``<kind>.vsb`` for a non-empty subset of :data:`COMBINED_PARTS`, each signed by the same key (see
:func:`build_combined`, :func:`part_manifests`).

Builds are deterministic: the same source, arguments and creation time give the
same bytes (sorted members, fixed owner, mode and modification time; Ed25519
signatures are deterministic).

Every refusal raises :class:`BundleError`, whose message says why.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any, Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

FORMAT: Final = 1
"""The bundle format version written into, and required of, every manifest."""
KINDS: Final = ("model", "device-software", "controller-firmware", "combined")
"""What a bundle may update."""
MANIFEST_NAME: Final = "manifest.json"
SIGNATURE_NAME: Final = "manifest.sig"
PAYLOAD_DIR: Final = "payload"
"""Payload ``a/b.bin`` is the tar member ``payload/a/b.bin``."""
DEFAULT_KEY_NAME: Final = "update"
"""``keys generate`` writes ``update.key`` and ``update.pub`` unless named otherwise."""
DEFAULT_HARDWARE: Final = ("veriscope-pi",)
"""The hardware model a bundle is built for unless told otherwise (the unit's ``hardware_model``)."""
DEFAULT_COMBINED_NAME: Final = "veriscope"
"""The name of a combined bundle unless told otherwise."""

MAX_MEMBER_BYTES: Final = 256 * 1024 * 1024
"""Largest payload file accepted, in bytes (256 MiB)."""
MAX_TOTAL_BYTES: Final = 1024 * 1024 * 1024
"""Largest sum of payload sizes accepted, in bytes (1 GiB)."""
MAX_MANIFEST_BYTES: Final = 1024 * 1024
"""Largest ``manifest.json`` accepted, in bytes (1 MiB)."""
MAX_PAYLOADS: Final = 10_000
"""Most payload files in one bundle."""
SIGNATURE_BYTES: Final = 64
"""Size of an Ed25519 signature."""
FIRMWARE_HEX: Final = "firmware.hex"
"""The Intel HEX image a ``controller-firmware`` bundle carries."""
FIRMWARE_METADATA: Final = "firmware.json"
"""The optional metadata beside it: ``firmware_version``, ``protocol_version``, ``board`` (see
:class:`FirmwareMetadata`)."""
SOFTWARE_METADATA: Final = "software.json"
"""What a ``device-software`` bundle carries beside its wheelhouse: ``{"version": "X.Y.Z"}``, the bundle's version."""
SOFTWARE_WHEELS: Final = "wheels"
"""The directory of a ``device-software`` bundle's wheels (``wheels/*.whl``, no subdirectories)."""
SOFTWARE_PACKAGE: Final = "veriscope_device"
"""The wheel a ``device-software`` bundle must carry at its version (``veriscope_device-VERSION-*.whl``)."""
COMBINED_PARTS: Final = ("controller-firmware", "model", "device-software")
"""The kinds a ``combined`` bundle may hold, one bundle of each at most, in the order a unit installs them."""
FIRMWARE_BOARDS: Final = ("atmega328p",)
"""The controller boards a firmware bundle may name."""
_MAX_FIRMWARE_METADATA_BYTES: Final = 64 * 1024

_CHUNK: Final = 1024 * 1024
_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_KEY_ID = re.compile(r"^sha256:[0-9a-f]{64}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_PATH_COMPONENT = re.compile(r"^[A-Za-z0-9._+@=,-]{1,255}$")
_MANIFEST_KEYS: Final = frozenset(
    {
        "format",
        "kind",
        "name",
        "version",
        "compatible_hardware",
        "min_installed_version",
        "created",
        "payloads",
        "key_id",
    }
)


class BundleError(Exception):
    """A bundle, key or build input was refused; the message says why.

    Attributes:
        reason: The reason, the same as ``str(error)``.
        member: The tar member or payload path concerned, when there is one.
    """

    def __init__(self, reason: str, *, member: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.member = member


@dataclass(frozen=True)
class Payload:
    """One payload file as listed in the manifest.

    Attributes:
        path: Its relative POSIX path, e.g. ``model.tflite``; the tar member is ``payload/<path>``.
        sha256: The lowercase hex SHA-256 of its content.
        size: Its size in bytes.
    """

    path: str
    sha256: str
    size: int

    @property
    def member(self) -> str:
        """The tar member name of this payload."""
        return f"{PAYLOAD_DIR}/{self.path}"


@dataclass(frozen=True)
class Manifest:
    """What a bundle holds and what it may be installed on.

    Attributes:
        format: The bundle format version, :data:`FORMAT`.
        kind: One of :data:`KINDS`.
        name: What is updated, e.g. the model bundle's name (lowercase, digits, ``.``, ``_``, ``-``).
        version: The version this bundle installs (semantic version).
        compatible_hardware: The hardware models (``hardware_model``) it may be installed on.
        min_installed_version: The oldest installed version it may update, or None for any.
        created: When it was built (RFC 3339, UTC, seconds).
        payloads: The payload files, sorted by path.
        key_id: ``sha256:<hex>`` of the raw Ed25519 public key that signs it (see :func:`key_id`).
    """

    format: int
    kind: str
    name: str
    version: str
    compatible_hardware: tuple[str, ...]
    min_installed_version: str | None
    created: str
    payloads: tuple[Payload, ...]
    key_id: str

    @property
    def total_size(self) -> int:
        """The sum of the payload sizes, in bytes."""
        return sum(p.size for p in self.payloads)

    def to_dict(self) -> dict[str, Any]:
        """The manifest as JSON-ready data, the shape of ``manifest.json``."""
        return {
            "format": self.format,
            "kind": self.kind,
            "name": self.name,
            "version": self.version,
            "compatible_hardware": list(self.compatible_hardware),
            "min_installed_version": self.min_installed_version,
            "created": self.created,
            "payloads": [{"path": p.path, "sha256": p.sha256, "size": p.size} for p in self.payloads],
            "key_id": self.key_id,
        }

    def to_bytes(self) -> bytes:
        """The canonical ``manifest.json`` bytes: sorted keys, two-space indent, ASCII, final newline."""
        return (json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=True) + "\n").encode("ascii")

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        """Check ``data`` against the manifest schema and build the manifest.

        Raises:
            BundleError: A field is missing, unknown, of the wrong type or out of range.
        """
        if not isinstance(data, dict):
            raise BundleError("manifest is not a JSON object")
        missing = sorted(_MANIFEST_KEYS - data.keys())
        unknown = sorted(data.keys() - _MANIFEST_KEYS)
        if missing or unknown:
            raise BundleError(f"manifest fields wrong: missing {missing}, unknown {unknown}")
        if data["format"] != FORMAT or isinstance(data["format"], bool):
            raise BundleError(f"manifest format {data['format']!r} is not supported (expected {FORMAT})")
        if data["kind"] not in KINDS:
            raise BundleError(f"manifest kind {data['kind']!r} is not one of {', '.join(KINDS)}")
        name = _checked(data, "name", _NAME, "a name (lowercase letters, digits, '.', '_', '-')")
        version = _checked(data, "version", _SEMVER, "a semantic version X.Y.Z")
        min_installed = data["min_installed_version"]
        if min_installed is not None:
            min_installed = _checked(data, "min_installed_version", _SEMVER, "a semantic version or null")
        hardware = data["compatible_hardware"]
        if (
            not isinstance(hardware, list)
            or not hardware
            or not all(isinstance(h, str) and _NAME.match(h) for h in hardware)
        ):
            raise BundleError("manifest compatible_hardware must be a non-empty list of hardware model names")
        created = data["created"]
        if not isinstance(created, str) or not _parse_time(created):
            raise BundleError(f"manifest created {created!r} is not an RFC 3339 time")
        key = _checked(data, "key_id", _KEY_ID, "'sha256:' and 64 hex digits")
        payloads = tuple(_payload_from(entry) for entry in _list(data["payloads"], "payloads"))
        if not payloads:
            raise BundleError("manifest lists no payloads")
        if len(payloads) > MAX_PAYLOADS:
            raise BundleError(f"manifest lists {len(payloads)} payloads, more than {MAX_PAYLOADS}")
        paths = [p.path for p in payloads]
        if paths != sorted(paths) or len(set(paths)) != len(paths):
            raise BundleError("manifest payloads are not sorted by path, or repeat a path")
        _check_no_file_is_a_directory(paths)
        return cls(
            format=FORMAT,
            kind=data["kind"],
            name=name,
            version=version,
            compatible_hardware=tuple(hardware),
            min_installed_version=min_installed,
            created=created,
            payloads=payloads,
            key_id=key,
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> Manifest:
        """Parse and check ``manifest.json`` bytes (see :meth:`from_dict`).

        Raises:
            BundleError: The bytes are not JSON, or not a valid manifest.
        """
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise BundleError(f"manifest is not valid JSON: {exc}") from None
        return cls.from_dict(data)


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle whose signature, manifest and every payload hash have been checked.

    Attributes:
        path: The bundle file.
        manifest: Its manifest, signed by the trusted key.
        manifest_bytes: The exact signed ``manifest.json`` bytes.
        trusted_key: The public key it was verified against; :func:`extract_verified` checks it again.
    """

    path: Path
    manifest: Manifest
    manifest_bytes: bytes
    trusted_key: ed25519.Ed25519PublicKey


@dataclass(frozen=True)
class Limits:
    """Size caps applied while reading a bundle, in bytes.

    Attributes:
        member_bytes: Largest payload file.
        total_bytes: Largest sum of payload sizes.
    """

    member_bytes: int = MAX_MEMBER_BYTES
    total_bytes: int = MAX_TOTAL_BYTES


def is_semver(value: str) -> bool:
    """Whether ``value`` is a semantic version (``X.Y.Z``, optional ``-pre`` and ``+build``)."""
    return bool(_SEMVER.match(value))


def is_name(value: str) -> bool:
    """Whether ``value`` is a valid bundle, key or hardware model name."""
    return bool(_NAME.match(value))


@dataclass(frozen=True)
class FirmwareMetadata:
    """What ``firmware.json`` in a ``controller-firmware`` bundle says of its image; every field is optional.

    Attributes:
        firmware_version: The version the firmware reports in its handshake (semantic version), or None.
        protocol_version: The serial protocol version it speaks (1..255), or None.
        board: The board it is built for (one of :data:`FIRMWARE_BOARDS`), or None.
    """

    firmware_version: str | None = None
    protocol_version: int | None = None
    board: str | None = None


def parse_firmware_metadata(raw: bytes) -> FirmwareMetadata:
    """Check ``firmware.json`` bytes and return what they say.

    Raises:
        BundleError: Not a JSON object of the known keys, or a value of the wrong type or out of range.
    """
    if len(raw) > _MAX_FIRMWARE_METADATA_BYTES:
        raise BundleError(f"{FIRMWARE_METADATA} is larger than {_MAX_FIRMWARE_METADATA_BYTES} bytes")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"{FIRMWARE_METADATA} is not valid JSON: {exc}") from None
    known = {"firmware_version", "protocol_version", "board"}
    if not isinstance(data, dict) or data.keys() - known:
        raise BundleError(f"{FIRMWARE_METADATA} must be a JSON object with only the keys {', '.join(sorted(known))}")
    version, protocol, board = data.get("firmware_version"), data.get("protocol_version"), data.get("board")
    if version is not None and not (isinstance(version, str) and _SEMVER.match(version)):
        raise BundleError(f"{FIRMWARE_METADATA} firmware_version {version!r} is not a semantic version X.Y.Z")
    if protocol is not None and (
        isinstance(protocol, bool) or not isinstance(protocol, int) or not 1 <= protocol <= 255
    ):
        raise BundleError(f"{FIRMWARE_METADATA} protocol_version {protocol!r} is not an integer 1..255")
    if board is not None and board not in FIRMWARE_BOARDS:
        raise BundleError(f"{FIRMWARE_METADATA} board {board!r} is not one of {', '.join(FIRMWARE_BOARDS)}")
    return FirmwareMetadata(version, protocol, board)


def check_software_payloads(paths: Iterable[str], version: str) -> None:
    """Check the file list of a ``device-software`` bundle: ``software.json`` and ``wheels/*.whl`` only, with the
    ``veriscope_device`` wheel at ``version`` among them.

    Raises:
        BundleError: A file is missing or unexpected.
    """
    names = sorted(paths)
    extra = [
        p
        for p in names
        if p != SOFTWARE_METADATA
        and not (p.startswith(f"{SOFTWARE_WHEELS}/") and p.count("/") == 1 and p.endswith(".whl"))
    ]
    if extra:
        raise BundleError(
            f"a device-software source holds {SOFTWARE_METADATA} and {SOFTWARE_WHEELS}/*.whl only; unexpected: "
            f"{', '.join(extra[:5])}"
        )
    if SOFTWARE_METADATA not in names:
        raise BundleError(f'a device-software source holds {SOFTWARE_METADATA} ({{"version": "{version}"}})')
    # A wheel's version in its file name is normalised (PEP 427): 1.2.0-rc.1 may read 1.2.0rc1, so only the
    # project part is matched here; pip installs the exact version or fails.
    if not any(p.startswith(f"{SOFTWARE_WHEELS}/{SOFTWARE_PACKAGE}-") for p in names):
        raise BundleError(f"a device-software source holds the {SOFTWARE_PACKAGE} wheel in {SOFTWARE_WHEELS}/")


def parse_software_metadata(raw: bytes, version: str) -> None:
    """Check ``software.json`` bytes: a JSON object ``{"version": version}``.

    Raises:
        BundleError: Not JSON, unknown keys, or a version other than ``version``.
    """
    if len(raw) > _MAX_FIRMWARE_METADATA_BYTES:
        raise BundleError(f"{SOFTWARE_METADATA} is larger than {_MAX_FIRMWARE_METADATA_BYTES} bytes")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"{SOFTWARE_METADATA} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or set(data) != {"version"}:
        raise BundleError(f"{SOFTWARE_METADATA} must be a JSON object with only the key version")
    if data["version"] != version:
        raise BundleError(f"{SOFTWARE_METADATA} says version {data['version']!r} but the bundle is version {version}")


# --- keys -------------------------------------------------------------------------------------------------------


def key_id(public_key: ed25519.Ed25519PublicKey) -> str:
    """The key id of an update public key: ``sha256:`` and the hex SHA-256 of its 32 raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def generate_keys(out_dir: Path, name: str = DEFAULT_KEY_NAME) -> tuple[Path, Path]:
    """Make an Ed25519 update key pair: ``out_dir/<name>.key`` (PKCS #8 PEM, mode 0600) and ``<name>.pub``.

    ``out_dir`` is created (mode 0700) when missing. Keep the private key offline: whoever holds it can
    make bundles that every unit trusting the public key installs.

    Returns:
        The private and public key paths.

    Raises:
        BundleError: ``name`` is not a valid name, or either file already exists (nothing is overwritten).
    """
    if not _NAME.match(name):
        raise BundleError(f"key name {name!r} must be lowercase letters, digits, '.', '_' or '-'")
    key_path, pub_path = out_dir / f"{name}.key", out_dir / f"{name}.pub"
    for path in (key_path, pub_path):
        if path.exists() or path.is_symlink():
            raise BundleError(f"{path} already exists; refusing to overwrite a key")
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    private = ed25519.Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_new(key_path, private_pem, 0o600)
    try:
        _write_new(pub_path, public_pem, 0o644)
    except BaseException:
        key_path.unlink()
        raise
    return key_path, pub_path


def load_signing_key(path: Path) -> ed25519.Ed25519PrivateKey:
    """Load an Ed25519 update private key (PEM) made by :func:`generate_keys`.

    Raises:
        BundleError: The file cannot be read or holds no Ed25519 private key.
    """
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise BundleError(f"cannot read signing key {path}: {exc.strerror or exc}") from None
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise BundleError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise BundleError(f"{path} is not an Ed25519 key")
    return key


def load_trust_key(path: Path) -> ed25519.Ed25519PublicKey:
    """Load the fleet's Ed25519 update public key (PEM) made by :func:`generate_keys`.

    Raises:
        BundleError: The file cannot be read or holds no Ed25519 public key.
    """
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise BundleError(f"cannot read trusted key {path}: {exc.strerror or exc}") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise BundleError(f"{path} is not a PEM public key: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise BundleError(f"{path} is not an Ed25519 public key")
    return key


# --- build ------------------------------------------------------------------------------------------------------


def build_bundle(
    source: Path,
    out: Path,
    *,
    kind: str,
    version: str,
    signing_key: ed25519.Ed25519PrivateKey,
    name: str | None = None,
    compatible_hardware: Iterable[str] = DEFAULT_HARDWARE,
    min_installed_version: str | None = None,
    created: datetime | None = None,
) -> Manifest:
    """Build a signed bundle of every regular file under ``source``.

    Args:
        source: The directory whose files become the payloads, keeping their relative paths.
        out: The bundle file to write; it is written to a temporary file and renamed into place.
        kind: One of :data:`KINDS`.
        version: The version the bundle installs (semantic version).
        signing_key: The update private key.
        name: What is updated; defaults to ``source``'s directory name.
        compatible_hardware: The hardware models it may be installed on.
        min_installed_version: The oldest installed version it may update, or None for any.
        created: The build time recorded in the manifest and as every member's mtime; defaults to
            ``$SOURCE_DATE_EPOCH`` when set, else the newest payload's mtime, so rebuilding the same
            files gives the same bytes.

    Returns:
        The signed manifest.

    Raises:
        BundleError: An argument is invalid, ``source`` holds a link, special file or unsafe name,
            or a file exceeds :data:`MAX_MEMBER_BYTES`; or the source does not suit the kind (for
            ``combined``: anything but part bundles ``<kind>.vsb`` signed by ``signing_key``, see
            :func:`build_combined`).
    """
    if not source.is_dir():
        raise BundleError(f"source {source} is not a directory")
    files = _source_files(source)
    if kind == "controller-firmware":
        _check_firmware_source(dict(files), version)
    elif kind == "device-software":
        check_software_payloads((rel for rel, _ in files), version)
        parse_software_metadata(dict(files)[SOFTWARE_METADATA].read_bytes(), version)
    elif kind == "combined":
        compatible_hardware = tuple(compatible_hardware)
        _check_combined_source(files, signing_key.public_key(), compatible_hardware, min_installed_version)
    return _write_bundle(
        files,
        out,
        kind=kind,
        version=version,
        signing_key=signing_key,
        name=name if name is not None else source.resolve().name,
        compatible_hardware=compatible_hardware,
        min_installed_version=min_installed_version,
        created=created,
    )


def build_combined(
    parts: Iterable[Path],
    out: Path,
    *,
    version: str,
    signing_key: ed25519.Ed25519PrivateKey,
    name: str = DEFAULT_COMBINED_NAME,
    compatible_hardware: Iterable[str] | None = None,
    created: datetime | None = None,
) -> Manifest:
    """Build a signed ``combined`` bundle of already built part bundles, so a unit installs them as one update.

    Each part is a bundle of a kind in :data:`COMBINED_PARTS` (at most one of each), signed by ``signing_key``;
    it becomes the payload ``<kind>.vsb``. A combined bundle has no ``min_installed_version`` of its own: each
    part's applies to its part.

    Args:
        parts: The part bundle files, one to three.
        out: The bundle file to write.
        version: The version of the combined release (semantic version).
        signing_key: The update private key, which must have signed every part.
        name: What is updated, :data:`DEFAULT_COMBINED_NAME` unless told otherwise.
        compatible_hardware: The hardware models it may be installed on; every part must name each of them.
            Defaults to the hardware every part names.
        created: As for :func:`build_bundle`; defaults to the newest part's.

    Returns:
        The signed manifest.

    Raises:
        BundleError: No part, a part that does not verify against the key, of another kind or repeated, or
            hardware not every part is built for.
    """
    files: dict[str, Path] = {}
    for path in parts:
        kind = inspect_bundle(path).kind
        if kind not in COMBINED_PARTS:
            raise BundleError(f"{path} is a {kind} bundle; a combined bundle holds {', '.join(COMBINED_PARTS)} parts")
        if part_payload(kind) in files:
            raise BundleError(f"{path} and {files[part_payload(kind)]} are both {kind} bundles; give one of each")
        files[part_payload(kind)] = path
    if not files:
        raise BundleError(f"a combined bundle holds at least one part: {', '.join(COMBINED_PARTS)}")
    listed = sorted(files.items())
    if compatible_hardware is None:
        shared = None
        for _, path in listed:
            hardware = set(inspect_bundle(path).compatible_hardware)
            shared = hardware if shared is None else shared & hardware
        if not shared:
            raise BundleError("the parts are built for no hardware model in common")
        compatible_hardware = tuple(sorted(shared))
    compatible_hardware = tuple(compatible_hardware)
    _check_combined_source(listed, signing_key.public_key(), compatible_hardware, None)
    return _write_bundle(
        listed,
        out,
        kind="combined",
        version=version,
        signing_key=signing_key,
        name=name,
        compatible_hardware=compatible_hardware,
        min_installed_version=None,
        created=created,
    )


def _write_bundle(
    files: list[tuple[str, Path]],
    out: Path,
    *,
    kind: str,
    version: str,
    signing_key: ed25519.Ed25519PrivateKey,
    name: str,
    compatible_hardware: Iterable[str],
    min_installed_version: str | None,
    created: datetime | None,
) -> Manifest:
    """Hash ``files`` (payload path, file), sign the manifest and write the bundle to ``out`` atomically."""
    payloads = tuple(Payload(rel, *_hash_file(path)) for rel, path in files)
    if created is None:
        created = _default_created(path for _, path in files)
    manifest = Manifest.from_dict(
        {
            "format": FORMAT,
            "kind": kind,
            "name": name,
            "version": version,
            "compatible_hardware": list(compatible_hardware),
            "min_installed_version": min_installed_version,
            "created": _format_time(created),
            "payloads": [{"path": p.path, "sha256": p.sha256, "size": p.size} for p in payloads],
            "key_id": key_id(signing_key.public_key()),
        }
    )
    _check_limits(manifest, Limits())
    manifest_bytes = manifest.to_bytes()
    signature = signing_key.sign(manifest_bytes)
    mtime = int(created.timestamp())

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.addfile(_tarinfo(MANIFEST_NAME, len(manifest_bytes), mtime), io.BytesIO(manifest_bytes))
            tar.addfile(_tarinfo(SIGNATURE_NAME, len(signature), mtime), io.BytesIO(signature))
            for payload, (_, path) in zip(manifest.payloads, files, strict=True):
                with path.open("rb") as f:
                    tar.addfile(_tarinfo(payload.member, payload.size, mtime), f)
        # The payloads were hashed before writing; a file changed meanwhile makes a bundle that fails to verify.
        read_bundle(Path(tmp_name), signing_key.public_key())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    return manifest


def part_manifests(path: Path, trust: ed25519.Ed25519PublicKey | None = None) -> dict[str, Manifest]:
    """The manifests of a ``combined`` bundle's parts, by kind, in :data:`COMBINED_PARTS` order.

    With ``trust`` every part is verified completely, as :func:`read_bundle` verifies a bundle (the combined
    bundle itself should be verified first); without it nothing is checked: for display only.

    Raises:
        BundleError: Not a combined bundle, a payload that is not a part, or a part that is refused.
    """
    manifest = inspect_bundle(path)
    if manifest.kind != "combined":
        raise BundleError(f"{path} is a {manifest.kind} bundle, not a combined one")
    found: dict[str, Manifest] = {}
    try:
        with tarfile.open(path, mode="r:") as tar:
            for payload in manifest.payloads:
                kind = _part_kind(payload.path)
                source = tar.extractfile(payload.member)
                if source is None:  # pragma: no cover - members are regular files
                    raise BundleError(f"member {payload.member!r} has no data", member=payload.member)
                with tarfile.open(fileobj=source, mode="r:") as inner:
                    if trust is None:
                        part = Manifest.from_bytes(_read_head(inner)[0])
                    else:
                        part = _scan_tar(inner, trust, Limits(), sink=None)[1]
                if part.kind != kind:
                    raise BundleError(f"part {payload.path!r} is a {part.kind} bundle", member=payload.member)
                found[kind] = part
    except KeyError as exc:
        raise BundleError(f"{path} lacks a listed part: {exc}") from None
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise _tar_error(path, exc) from None
    return {kind: found[kind] for kind in COMBINED_PARTS if kind in found}


def part_payload(kind: str) -> str:
    """The payload path of a combined bundle's part of ``kind``: ``<kind>.vsb``."""
    return f"{kind}.vsb"


def _part_kind(payload_path: str) -> str:
    kind = payload_path.removesuffix(".vsb")
    if kind not in COMBINED_PARTS or payload_path != part_payload(kind):
        raise BundleError(
            f"payload {payload_path!r} is not a part: a combined bundle holds "
            f"{', '.join(part_payload(k) for k in COMBINED_PARTS)}, one or more"
        )
    return kind


def _check_combined_source(
    files: list[tuple[str, Path]],
    trust: ed25519.Ed25519PublicKey,
    hardware: tuple[str, ...],
    min_installed_version: str | None,
) -> None:
    """Refuse combined payloads that are not part bundles the unit would accept together."""
    if min_installed_version is not None:
        raise BundleError("a combined bundle has no minimum installed version; set it on its parts")
    for rel, path in files:
        kind = _part_kind(rel)
        part = read_bundle(path, trust).manifest
        if part.kind != kind:
            raise BundleError(f"{rel} is a {part.kind} bundle, not a {kind} one")
        missing = sorted(set(hardware) - set(part.compatible_hardware))
        if missing:
            raise BundleError(f"the {kind} part is not built for {', '.join(missing)}")


# --- read, verify, extract --------------------------------------------------------------------------------------


def read_bundle(path: Path, trust: ed25519.Ed25519PublicKey, *, limits: Limits | None = None) -> VerifiedBundle:
    """Verify a bundle completely, without writing anything.

    Checks, streaming the file once: that it is an uncompressed tar; that its first members are
    ``manifest.json`` and ``manifest.sig``; the signature over the exact manifest bytes against
    ``trust``; the manifest schema and versions; that every other member is a regular file named
    ``payload/<path>`` with a safe path, listed in the manifest exactly once, of the listed size,
    within ``limits``, and with the listed SHA-256; and that no listed payload is missing.

    Args:
        path: The bundle file.
        trust: The fleet's update public key.
        limits: Size caps; the defaults are :data:`MAX_MEMBER_BYTES` and :data:`MAX_TOTAL_BYTES`.

    Returns:
        The verified bundle, for :func:`extract_verified`.

    Raises:
        BundleError: Anything is wrong; the message names the member and the check that failed.
    """
    manifest_bytes, manifest = _scan(path, trust, limits or Limits(), sink=None)
    return VerifiedBundle(path=path, manifest=manifest, manifest_bytes=manifest_bytes, trusted_key=trust)


def inspect_bundle(path: Path) -> Manifest:
    """Read a bundle's manifest without checking its signature or payloads.

    For display only: nothing in it is trustworthy until :func:`read_bundle` has verified it.

    Raises:
        BundleError: The file is not a bundle or its manifest is malformed.
    """
    try:
        with tarfile.open(path, mode="r:") as tar:
            manifest_bytes, _ = _read_head(tar)
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise _tar_error(path, exc) from None
    return Manifest.from_bytes(manifest_bytes)


def extract_verified(bundle: VerifiedBundle, dest: Path, *, limits: Limits | None = None) -> Path:
    """Install a verified bundle's payloads into ``dest``, all or nothing.

    The bundle file is read and verified again while its payloads are written into a new
    temporary directory beside ``dest`` (so a file swapped after :func:`read_bundle` is caught);
    the directory is renamed to ``dest`` only when every file matched. ``dest`` must not exist:
    install each version into its own directory and switch to it.

    Returns:
        ``dest``, now holding the payload files at their relative paths (files 0644, directories 0755).

    Raises:
        BundleError: ``dest`` exists, the bundle no longer verifies or its manifest changed, or writing
            failed (disk full, permissions); nothing is left behind.
    """
    if dest.exists() or dest.is_symlink():
        raise BundleError(f"install directory {dest} already exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:

        def sink(payload: Payload) -> IO[bytes]:
            target = tmp.joinpath(*PurePosixPath(payload.path).parts)
            target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            return os.fdopen(os.open(target, flags, 0o644), "wb")

        manifest_bytes, _ = _scan(bundle.path, bundle.trusted_key, limits or Limits(), sink=sink)
        if manifest_bytes != bundle.manifest_bytes:
            raise BundleError(f"{bundle.path} changed since it was verified")
        os.chmod(tmp, 0o755)
        _fsync_dir(tmp)
        os.rename(tmp, dest)
        _fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


# --- internals --------------------------------------------------------------------------------------------------

_Sink = Callable[[Payload], IO[bytes]]


def _scan(path: Path, trust: ed25519.Ed25519PublicKey, limits: Limits, sink: _Sink | None) -> tuple[bytes, Manifest]:
    try:
        with tarfile.open(path, mode="r:") as tar:
            return _scan_tar(tar, trust, limits, sink)
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise _tar_error(path, exc) from None


def _scan_tar(
    tar: tarfile.TarFile, trust: ed25519.Ed25519PublicKey, limits: Limits, sink: _Sink | None
) -> tuple[bytes, Manifest]:
    manifest_bytes, signature = _read_head(tar)
    manifest = _verify_manifest(manifest_bytes, signature, trust)
    _check_limits(manifest, limits)
    expected = {p.member: p for p in manifest.payloads}
    seen = {MANIFEST_NAME, SIGNATURE_NAME}
    for member in _members(tar):
        payload = expected.get(member.name)
        if payload is None:
            what = "repeated" if member.name in seen else "not listed in the manifest"
            raise BundleError(f"member {member.name!r} is {what}", member=member.name)
        del expected[member.name]
        seen.add(member.name)
        if member.size != payload.size:
            raise BundleError(
                f"member {member.name!r} is {member.size} bytes, the manifest says {payload.size}",
                member=member.name,
            )
        _copy_and_check(tar, member, payload, sink)
    if expected:
        raise BundleError(f"member {next(iter(expected))!r} is missing ({len(expected)} missing in all)")
    return manifest_bytes, manifest


def _read_head(tar: tarfile.TarFile) -> tuple[bytes, bytes]:
    """Read the first two members, which must be the manifest and its signature."""
    members = _members(tar)
    manifest_bytes = signature = b""
    for wanted, cap in ((MANIFEST_NAME, MAX_MANIFEST_BYTES), (SIGNATURE_NAME, SIGNATURE_BYTES)):
        member = next(members, None)
        if member is None or member.name != wanted:
            found = "nothing" if member is None else repr(member.name)
            raise BundleError(f"expected {wanted!r} as the next member, found {found}", member=wanted)
        if member.size > cap:
            raise BundleError(f"member {wanted!r} is {member.size} bytes, more than {cap}", member=wanted)
        data = _read_member(tar, member)
        if wanted == MANIFEST_NAME:
            manifest_bytes = data
        else:
            signature = data
    return manifest_bytes, signature


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """The tar's members one by one, each refused unless it is a regular file with a safe name."""
    while (member := tar.next()) is not None:
        name = member.name
        if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
            what = "a symlink" if member.issym() else "a hard link" if member.islnk() else "not a regular file"
            raise BundleError(f"member {name!r} is {what}", member=name)
        if name not in (MANIFEST_NAME, SIGNATURE_NAME):
            _check_member_name(name)
        yield member


def _check_member_name(name: str) -> None:
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise BundleError(f"member {name!r} has an absolute path", member=name)
    parts = name.split("/")
    if ".." in parts:
        raise BundleError(f"member {name!r} escapes the install directory", member=name)
    if len(parts) < 2 or parts[0] != PAYLOAD_DIR:
        raise BundleError(f"member {name!r} is not under {PAYLOAD_DIR}/", member=name)
    _check_payload_path("/".join(parts[1:]), member=name)


def _check_payload_path(path: str, *, member: str | None = None) -> None:
    """Refuse payload paths that are not plain relative paths of portable components."""
    where = member if member is not None else path
    if not path or path.startswith("/"):
        raise BundleError(f"payload path {path!r} is empty or absolute", member=where)
    for part in path.split("/"):
        if part in ("", ".", "..") or not _PATH_COMPONENT.match(part):
            raise BundleError(f"payload path {path!r} has an unsafe component {part!r}", member=where)


def _copy_and_check(tarf: tarfile.TarFile, member: tarfile.TarInfo, payload: Payload, sink: _Sink | None) -> None:
    source = tarf.extractfile(member)
    if source is None:  # pragma: no cover - regular files always have data
        raise BundleError(f"member {member.name!r} has no data", member=member.name)
    digest = hashlib.sha256()
    remaining = payload.size
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(sink(payload)) if sink is not None else None
        while remaining:
            chunk = source.read(min(_CHUNK, remaining))
            if not chunk:
                raise BundleError(f"member {member.name!r} is truncated", member=member.name)
            remaining -= len(chunk)
            digest.update(chunk)
            if out is not None:
                out.write(chunk)
        if digest.hexdigest() != payload.sha256:
            raise BundleError(
                f"member {member.name!r} does not match its SHA-256 in the manifest (tampered or corrupted)",
                member=member.name,
            )
        if out is not None:
            out.flush()
            os.fsync(out.fileno())


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    source = tar.extractfile(member)
    data = source.read(member.size) if source is not None else b""
    if len(data) != member.size:
        raise BundleError(f"member {member.name!r} is truncated", member=member.name)
    return data


def _verify_manifest(manifest_bytes: bytes, signature: bytes, trust: ed25519.Ed25519PublicKey) -> Manifest:
    trusted_id = key_id(trust)
    try:
        trust.verify(signature, manifest_bytes)
    except InvalidSignature:
        claimed = _claimed_key_id(manifest_bytes)
        if claimed is not None and claimed != trusted_id:
            raise BundleError(
                f"bundle is signed by key {claimed}, not by the trusted update key {trusted_id}"
            ) from None
        raise BundleError("signature does not match the manifest (tampered manifest or signature)") from None
    manifest = Manifest.from_bytes(manifest_bytes)
    if manifest.key_id != trusted_id:
        raise BundleError(f"manifest names key {manifest.key_id}, not the trusted update key {trusted_id}")
    return manifest


def _claimed_key_id(manifest_bytes: bytes) -> str | None:
    """The key id an unverified manifest claims, to name a wrong key in the error; None if unreadable."""
    try:
        claimed = json.loads(manifest_bytes).get("key_id")
    except (ValueError, AttributeError):
        return None
    return claimed if isinstance(claimed, str) and _KEY_ID.match(claimed) else None


def _check_limits(manifest: Manifest, limits: Limits) -> None:
    for payload in manifest.payloads:
        if payload.size > limits.member_bytes:
            raise BundleError(
                f"payload {payload.path!r} is {payload.size} bytes, more than the {limits.member_bytes} allowed",
                member=payload.member,
            )
    if manifest.total_size > limits.total_bytes:
        raise BundleError(f"payloads total {manifest.total_size} bytes, more than the {limits.total_bytes} allowed")


def _check_no_file_is_a_directory(paths: list[str]) -> None:
    """Refuse ``a`` beside ``a/b``: a file cannot also be a directory when installed."""
    files = set(paths)
    for path in paths:
        parts = path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in files:
                raise BundleError(f"payload {'/'.join(parts[:i])!r} is both a file and a directory")


def _payload_from(entry: Any) -> Payload:
    if not isinstance(entry, dict) or set(entry) != {"path", "sha256", "size"}:
        raise BundleError("manifest payload entries must have exactly path, sha256 and size")
    path, digest, size = entry["path"], entry["sha256"], entry["size"]
    if not isinstance(path, str):
        raise BundleError("manifest payload path must be a string")
    _check_payload_path(path)
    if not isinstance(digest, str) or not _SHA256.match(digest):
        raise BundleError(f"manifest payload {path!r} sha256 must be 64 lowercase hex digits")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BundleError(f"manifest payload {path!r} size must be a non-negative integer")
    return Payload(path, digest, size)


def _checked(data: Mapping[str, Any], field: str, pattern: re.Pattern[str], what: str) -> str:
    value = data[field]
    if not isinstance(value, str) or not pattern.match(value):
        raise BundleError(f"manifest {field} {value!r} is not {what}")
    return value


def _list(value: Any, field: str) -> list[Any]:
    if not isinstance(value, list):
        raise BundleError(f"manifest {field} must be a list")
    return value


def _check_firmware_source(files: Mapping[str, Path], version: str) -> None:
    """Refuse a ``controller-firmware`` source whose image would not flash, or whose versions disagree."""
    extra = sorted(set(files) - {FIRMWARE_HEX, FIRMWARE_METADATA})
    if FIRMWARE_HEX not in files or extra:
        raise BundleError(
            f"a controller-firmware source holds {FIRMWARE_HEX} and optionally {FIRMWARE_METADATA}, nothing else "
            f"(missing {FIRMWARE_HEX})"
            if FIRMWARE_HEX not in files
            else f"a controller-firmware source holds {FIRMWARE_HEX} and optionally {FIRMWARE_METADATA}; "
            f"unexpected: {', '.join(extra)}"
        )
    meta = FirmwareMetadata()
    if FIRMWARE_METADATA in files:
        meta = parse_firmware_metadata(files[FIRMWARE_METADATA].read_bytes())
    # Imported here: the unit reads bundles with the standard library and cryptography only.
    from veriscope.tools.flash import ImageError, load_image

    try:
        image = load_image(files[FIRMWARE_HEX])
    except ImageError as exc:
        raise BundleError(f"{FIRMWARE_HEX} will not flash: {exc}") from None
    known = meta.firmware_version
    if image.info is not None:
        embedded = ".".join(map(str, image.info.version))
        if known is not None and known != embedded:
            raise BundleError(
                f"{FIRMWARE_METADATA} says firmware_version {known}, the image's identity block says {embedded}"
            )
        if meta.protocol_version is not None and meta.protocol_version != image.info.protocol_version:
            raise BundleError(
                f"{FIRMWARE_METADATA} says protocol_version {meta.protocol_version}, the image's identity block "
                f"says {image.info.protocol_version}"
            )
        known = embedded
    if known is not None and known != version:
        raise BundleError(
            f"the firmware reports version {known} but the bundle is version {version}; build the bundle with "
            f"--version {known}, the version the unit will see in the board's handshake"
        )


def _source_files(source: Path) -> list[tuple[str, Path]]:
    files: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(source, followlinks=False):
        dirnames.sort()
        for entry in [*dirnames, *filenames]:
            path = Path(dirpath, entry)
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode) or not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise BundleError(f"{path} is a link or special file; bundles hold regular files only")
            if stat.S_ISREG(mode):
                rel = path.relative_to(source).as_posix()
                _check_payload_path(rel)
                files.append((rel, path))
    files.sort()
    if not files:
        raise BundleError(f"source {source} holds no files")
    for rel, path in files:
        if path.stat().st_size > MAX_MEMBER_BYTES:
            raise BundleError(f"{rel} is larger than {MAX_MEMBER_BYTES} bytes")
    return files


def _hash_file(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _tarinfo(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def _default_created(paths: Iterable[Path]) -> datetime:
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch.isdigit():
        return datetime.fromtimestamp(int(epoch), UTC)
    return datetime.fromtimestamp(int(max(p.stat().st_mtime for p in paths)), UTC)


def _format_time(when: datetime) -> str:
    if when.tzinfo is None:
        raise BundleError("created must be a timezone-aware time")
    return when.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)  # the umask may have narrowed it


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _tar_error(path: Path, exc: BaseException) -> BundleError:
    if isinstance(exc, BundleError):
        return exc
    if isinstance(exc, FileNotFoundError):
        return BundleError(f"{path} does not exist")
    if isinstance(exc, tarfile.TarError | EOFError):
        return BundleError(f"{path} is not a valid bundle tar (truncated or corrupted): {exc}")
    return BundleError(f"cannot read {path} or install from it: {exc}")
