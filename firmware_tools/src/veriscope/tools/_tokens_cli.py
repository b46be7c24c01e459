"""``veriscope-tool tokens``: create, list and revoke a unit's API tokens, offline, on the unit.

The commands work on the unit's data directory (``--data-dir``, the daemon's
``[device] data_dir``), not over the network: they are how the first admin token
is provisioned, and they keep working when every token is lost. A running
daemon picks up changes at its next call. They need the ``veriscope-device``
package, which is installed on the unit (``pip install 'veriscope-tools[unit]'``
elsewhere). Run them as the user the daemon runs as, so that it can read the
token file (mode 0600).

Exit status: 0 on success, 1 when the token file cannot be used or the token
does not exist, 2 for a bad argument.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROLES = ("operator", "technician", "admin")
"""The roles, least first; the same as ``veriscope.device.auth.roles.Role``."""

_EPILOG = """\
roles:
  operator     scan and read: scans, uploads, captures, previews, status, models
  technician   operator, plus calibrate, label scans, update models and firmware, read logs
  admin        technician, plus manage tokens and configuration

examples:
  veriscope-tool tokens create --data-dir /var/lib/veriscope --role admin --name alice --json
  veriscope-tool tokens create --data-dir /var/lib/veriscope --role operator --name counter-1 --expires 30d
  veriscope-tool tokens list --data-dir /var/lib/veriscope
  veriscope-tool tokens revoke --data-dir /var/lib/veriscope 1a2b3c4d

The token is shown once, at creation: the unit keeps only its SHA-256. Give it to the
client as 'veriscope --token', $VERISCOPE_TOKEN or Client(token=...). See
device/docs/security.md."""


def add_parser(commands: Any) -> None:
    """Add ``tokens`` and its subcommands to ``veriscope-tool``'s subparsers."""
    tokens = commands.add_parser(
        "tokens",
        help="create, list and revoke the unit's API tokens (on the unit, offline)",
        description="Create, list and revoke the API tokens of a unit, in its data directory. "
        "A running daemon applies changes from its next call.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = tokens.add_subparsers(dest="tokens_command", metavar="SUBCOMMAND", required=True)

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--data-dir", required=True, type=Path, metavar="DIR", help="the unit's data directory ([device] data_dir)"
        )
        parser.add_argument("--json", action="store_true", help="print JSON instead of text")

    create = sub.add_parser("create", help="create a token and print it (shown only this once)")
    common(create)
    create.add_argument("--role", required=True, choices=ROLES, help="what the token may do")
    create.add_argument("--name", default="", help="a label: who or what holds the token (at most 64 characters)")
    create.add_argument(
        "--expires",
        default="never",
        metavar="WHEN",
        help="a duration from now (90m, 12h, 30d, 2w), an RFC 3339 time (2026-12-31T23:59:59Z) or 'never' (default)",
    )
    listing = sub.add_parser("list", help="list every token: id, name, role, created, expires, state")
    common(listing)
    revoke = sub.add_parser("revoke", help="revoke a token; the daemon refuses it from its next call")
    common(revoke)
    revoke.add_argument("token", metavar="ID", help="the token's id (8 hex digits), or the whole token")


def run(args: argparse.Namespace) -> int:
    """Run ``veriscope-tool tokens SUBCOMMAND`` and return its exit status."""
    try:
        from veriscope.device.auth import tokens as store_module
        from veriscope.device.errors import InvalidArgument, VeriscopeError
    except ImportError as exc:
        if not (exc.name or "").startswith("veriscope.device"):
            raise
        print(
            "veriscope-tool tokens: error: needs the veriscope-device package, which is installed on the unit; "
            "run this command there (or pip install 'veriscope-tools[unit]')",
            file=sys.stderr,
        )
        return 1
    store = store_module.TokenStore(args.data_dir)
    now = store_module.utc_now()
    try:
        if args.tokens_command == "create":
            expires = store_module.parse_expires(args.expires, now)
            issued = store.create(args.role, name=args.name, expires=expires)
            data: Any = {"token": issued.token, **issued.record.to_dict(now)}
            text = _created_text(data)
        elif args.tokens_command == "list":
            records = [record.to_dict(now) for record in store.list()]
            data, text = records, _list_text(records, store.path)
        else:
            record = store.revoke(args.token).to_dict(now)
            data, text = record, f"revoked token {record['id']} ({record['name'] or 'no name'}, {record['role']})"
    except InvalidArgument as exc:
        print(f"veriscope-tool tokens: error: {exc}", file=sys.stderr)
        return 2
    except VeriscopeError as exc:
        print(f"veriscope-tool tokens: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(data, indent=2) if args.json else text, flush=True)
    return 0


def _created_text(data: dict[str, Any]) -> str:
    expires = data["expires"] or "never"
    return (
        f"{data['token']}\n\n"
        f"created {data['role']} token {data['id']} ({data['name'] or 'no name'}), expires {expires}.\n"
        "This is the only time the token is shown: give it to its holder now."
    )


def _list_text(records: list[dict[str, Any]], path: Path) -> str:
    if not records:
        return f"no tokens in {path}; create one with 'veriscope-tool tokens create'"
    header = ("ID", "ROLE", "STATE", "CREATED", "EXPIRES", "NAME")
    rows = [(r["id"], r["role"], r["state"], r["created"], r["expires"] or "never", r["name"]) for r in records]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]
    )
