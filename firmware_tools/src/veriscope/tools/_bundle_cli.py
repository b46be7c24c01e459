"""The ``keys`` and ``bundle`` commands of ``veriscope-tool``: the update key, and signed update bundles.

Exit status: 0 done (the bundle verified), 1 refused (an invalid or tampered bundle,
or a key or file that cannot be used; the message says why), 2 bad command line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from veriscope.tools import bundles
from veriscope.tools.bundles import BundleError, Manifest

_EXIT_STATUS = """\
exit status:
  0  done; for verify, the bundle is intact and signed by the trusted key
  1  refused: an invalid or tampered bundle, or an unusable key or file (the reason is printed)
  2  bad command line"""

_BUNDLE_EPILOG = f"""\
examples:
  veriscope-tool keys generate --out /media/usb/update-key
      once per fleet: update.key (keep it offline) and update.pub (install it on every unit)
  veriscope-tool bundle build --kind model --source models/bundles/veriscope-demo --version 0.4.0 \\
      --sign-key /media/usb/update-key/update.key --out veriscope-demo-0.4.0.vsb
  veriscope-tool bundle verify veriscope-demo-0.4.0.vsb --trust /media/usb/update-key/update.pub
  veriscope-tool bundle inspect veriscope-demo-0.4.0.vsb --json
  veriscope-tool bundle build --kind combined --part veriscope-controller-1.1.0.vsb \
      --part veriscope-demo-0.4.0.vsb --part veriscope-device-0.2.0.vsb --version 2024.6.0 \
      --sign-key /media/usb/update-key/update.key --out release-2024.6.0.vsb
      one update of several parts, each a bundle built as above and signed by the same key

A bundle is one tar: manifest.json (kind, name, version, compatible hardware, minimum
installed version, each payload's SHA-256 and size), manifest.sig (Ed25519 over the
manifest's exact bytes) and payload/<path>. A combined bundle's payloads are its parts,
payload/<kind>.vsb, for any of controller-firmware, model and device-software; a unit
verifies them all, then installs them in that order as one update. Builds are reproducible: set SOURCE_DATE_EPOCH
to fix the creation time (default: the newest source file's mtime).

{_EXIT_STATUS}"""


def add_commands(commands: Any) -> None:
    """Add ``keys`` and ``bundle`` to the ``veriscope-tool`` subcommands."""
    keys = commands.add_parser(
        "keys",
        help="generate the fleet's update signing key pair",
        description="The update key signs bundles; units install only bundles it signed.",
        epilog=_EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    keys_commands = keys.add_subparsers(dest="keys_command", metavar="KEYS_COMMAND", required=True)
    generate = keys_commands.add_parser(
        "generate",
        help="write a new Ed25519 key pair: NAME.key (mode 0600) and NAME.pub",
        description="Write DIR/NAME.key (PKCS #8 PEM, mode 0600; keep it offline) and DIR/NAME.pub (give it to "
        "units and to 'bundle verify --trust'). Refuses to overwrite either.",
        epilog=_EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    generate.add_argument("--out", required=True, type=Path, metavar="DIR", help="directory for the keys (created)")
    generate.add_argument(
        "--name", default=bundles.DEFAULT_KEY_NAME, type=_name, help="file name of the keys (default 'update')"
    )
    generate.add_argument("--json", action="store_true", help="print the files written and the key id as JSON")
    generate.set_defaults(run=_keys_generate)

    bundle = commands.add_parser(
        "bundle",
        help="build, verify and inspect signed update bundles",
        description="Signed update bundles for models, device software and controller firmware.",
        epilog=_BUNDLE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bundle_commands = bundle.add_subparsers(dest="bundle_command", metavar="BUNDLE_COMMAND", required=True)
    build = bundle_commands.add_parser(
        "build",
        help="build and sign a bundle of every file in a directory, or a combined bundle of part bundles",
        description="Pack every regular file under --source as payload/<relative path>, list their SHA-256 in a "
        "manifest, and sign it with the update key. A combined bundle (--kind combined) packs part bundles, "
        "given with --part (or as --source DIR holding <kind>.vsb files): one of each kind at most among "
        f"{', '.join(bundles.COMBINED_PARTS)}, each signed by --sign-key.",
        epilog=_BUNDLE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build.add_argument("--kind", required=True, choices=bundles.KINDS, help="what the bundle updates")
    build.add_argument(
        "--source", type=Path, metavar="DIR", help="the directory to pack (required unless --kind combined --part)"
    )
    build.add_argument(
        "--part",
        action="append",
        type=Path,
        metavar="BUNDLE",
        help="with --kind combined: a part bundle (model, device-software or controller-firmware) signed by "
        "--sign-key; repeat for each part",
    )
    build.add_argument("--version", required=True, type=_semver, metavar="X.Y.Z", help="the version it installs")
    build.add_argument("--sign-key", required=True, type=Path, metavar="KEY", help="the update private key")
    build.add_argument("--out", required=True, type=Path, metavar="FILE", help="the bundle file to write")
    build.add_argument(
        "--name",
        type=_name,
        help=f"what it updates (default: the source directory's name; for --part, '{bundles.DEFAULT_COMBINED_NAME}')",
    )
    build.add_argument(
        "--hardware",
        action="append",
        type=_name,
        metavar="MODEL",
        help=f"a compatible hardware model; repeat for several (default {bundles.DEFAULT_HARDWARE[0]}; for "
        "--part, the models every part is built for)",
    )
    build.add_argument(
        "--min-installed-version",
        type=_semver,
        metavar="X.Y.Z",
        help="the oldest installed version it may update (default: any; a combined bundle takes none: set it "
        "on its parts)",
    )
    build.add_argument("--json", action="store_true", help="print the manifest as JSON")
    build.set_defaults(run=_build)

    verify = bundle_commands.add_parser(
        "verify",
        help="check a bundle's signature, manifest and every payload hash",
        description="Check everything a unit checks before installing: the signature over the manifest against "
        "the trusted key, the manifest, member names, types and sizes, and every payload's SHA-256; for a "
        "combined bundle, the same of every part, which are listed.",
        epilog=_EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument("bundle", type=Path, metavar="FILE", help="the bundle")
    verify.add_argument("--trust", required=True, type=Path, metavar="PUBFILE", help="the update public key")
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    verify.set_defaults(run=_verify)

    inspect = bundle_commands.add_parser(
        "inspect",
        help="print a bundle's manifest and payload list",
        description="Print the manifest and payloads (and a combined bundle's parts). Without --trust nothing is "
        "verified: use it for display only.",
        epilog=_EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inspect.add_argument("bundle", type=Path, metavar="FILE", help="the bundle")
    inspect.add_argument("--trust", type=Path, metavar="PUBFILE", help="also verify it against this public key")
    inspect.add_argument("--json", action="store_true", help="print the manifest as JSON")
    inspect.set_defaults(run=_inspect)


def run(args: argparse.Namespace) -> int:
    """Run ``veriscope-tool keys|bundle SUBCOMMAND`` and return its exit status."""
    try:
        status: int = args.run(args)
    except BundleError as exc:
        if getattr(args, "json", False) and args.command == "bundle" and args.bundle_command in ("verify", "inspect"):
            _print_json({"bundle": str(args.bundle), "verified": False, "error": exc.reason})
        print(f"veriscope-tool {args.command}: refused: {exc}", file=sys.stderr)
        return 1
    return status


def _keys_generate(args: argparse.Namespace) -> int:
    key_path, pub_path = bundles.generate_keys(args.out, args.name)
    key = bundles.key_id(bundles.load_trust_key(pub_path))
    if args.json:
        _print_json({"private_key": str(key_path), "public_key": str(pub_path), "key_id": key})
    else:
        print(f"wrote {key_path} (private, mode 0600: keep it offline)\nwrote {pub_path} (public)\nkey id {key}")
    return 0


def _usage(message: str) -> int:
    print(f"veriscope-tool bundle build: error: {message}", file=sys.stderr)
    return 2


def _build(args: argparse.Namespace) -> int:
    if args.part and (args.kind != "combined" or args.source is not None):
        return _usage("--part builds a combined bundle: give --kind combined and no --source")
    if args.part:
        if args.min_installed_version is not None:
            return _usage("a combined bundle takes no --min-installed-version; set it on its parts")
        manifest = bundles.build_combined(
            args.part,
            args.out,
            version=args.version,
            signing_key=bundles.load_signing_key(args.sign_key),
            name=args.name or bundles.DEFAULT_COMBINED_NAME,
            compatible_hardware=args.hardware,
        )
    else:
        if args.source is None:
            return _usage("--source DIR is required (or, with --kind combined, --part BUNDLE)")
        if not args.source.is_dir():
            return _usage(f"--source {args.source} is not a directory")
        manifest = bundles.build_bundle(
            args.source,
            args.out,
            kind=args.kind,
            version=args.version,
            signing_key=bundles.load_signing_key(args.sign_key),
            name=args.name,
            compatible_hardware=args.hardware or bundles.DEFAULT_HARDWARE,
            min_installed_version=args.min_installed_version,
        )
    parts = bundles.part_manifests(args.out) if manifest.kind == "combined" else {}
    if args.json:
        _print_json({"bundle": str(args.out), "manifest": manifest.to_dict(), **_parts_json(parts)})
    else:
        print(
            f"built {args.out}: {manifest.kind} {manifest.name} {manifest.version}, "
            f"{len(manifest.payloads)} files, {manifest.total_size} bytes, signed by {manifest.key_id}"
        )
        for line in _parts_text(parts):
            print(line)
    return 0


def _parts_json(parts: dict[str, Manifest]) -> dict[str, Any]:
    """The ``parts`` field of a combined bundle's JSON; nothing for other kinds."""
    return {"parts": [part.to_dict() for part in parts.values()]} if parts else {}


def _parts_text(parts: dict[str, Manifest]) -> list[str]:
    return [
        f"  part {kind + ':':21}{part.name} {part.version}, {len(part.payloads)} files, {part.total_size} bytes"
        + (f", needs {part.min_installed_version} or later" if part.min_installed_version else "")
        for kind, part in parts.items()
    ]


def _verify(args: argparse.Namespace) -> int:
    trust = bundles.load_trust_key(args.trust)
    manifest = bundles.read_bundle(args.bundle, trust).manifest
    parts = bundles.part_manifests(args.bundle, trust) if manifest.kind == "combined" else {}
    if args.json:
        _print_json(
            {"bundle": str(args.bundle), "verified": True, "manifest": manifest.to_dict(), **_parts_json(parts)}
        )
    else:
        print(
            f"ok: {args.bundle} is {manifest.kind} {manifest.name} {manifest.version}, "
            f"{len(manifest.payloads)} files intact, signed by the trusted key {manifest.key_id}"
        )
        for line in _parts_text(parts):
            print(line)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    trust = bundles.load_trust_key(args.trust) if args.trust is not None else None
    if trust is not None:
        manifest, verified = bundles.read_bundle(args.bundle, trust).manifest, True
    else:
        manifest, verified = bundles.inspect_bundle(args.bundle), False
    parts = bundles.part_manifests(args.bundle, trust) if manifest.kind == "combined" else {}
    if args.json:
        _print_json(
            {"bundle": str(args.bundle), "verified": verified, "manifest": manifest.to_dict(), **_parts_json(parts)}
        )
    else:
        print("\n".join([_inspect_text(args.bundle, manifest, verified), *_parts_text(parts)]))
    return 0


def _inspect_text(path: Path, manifest: Manifest, verified: bool) -> str:
    rows = [
        ("bundle", str(path)),
        ("kind", manifest.kind),
        ("name", manifest.name),
        ("version", manifest.version),
        ("hardware", ", ".join(manifest.compatible_hardware)),
        ("min installed", manifest.min_installed_version or "any"),
        ("created", manifest.created),
        ("key id", manifest.key_id),
        ("signature", "verified" if verified else "NOT verified (give --trust, or use 'bundle verify')"),
        ("payloads", f"{len(manifest.payloads)} files, {manifest.total_size} bytes"),
    ]
    lines = [f"{label + ':':15}{value}" for label, value in rows]
    width = max(len(str(p.size)) for p in manifest.payloads)
    lines += [f"  {p.size:>{width}}  {p.sha256}  {p.path}" for p in manifest.payloads]
    return "\n".join(lines)


def _print_json(data: dict[str, Any]) -> None:
    print(json.dumps(data, indent=2), flush=True)


def _semver(value: str) -> str:
    if not bundles.is_semver(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a semantic version X.Y.Z")
    return value


def _name(value: str) -> str:
    if not bundles.is_name(value):
        raise argparse.ArgumentTypeError(f"{value!r} must be lowercase letters, digits, '.', '_' or '-'")
    return value
