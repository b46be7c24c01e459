"""``veriscope-tool diagnose|logs|discover``: check a unit over the network, read its log, find it on the LAN.

``diagnose ADDR`` runs the unit's self-test (camera, controller, LEDs, focus
travel, temperature, model checksums, storage) and writes ``report.md`` and
``report.json`` with the images the checks took, as PNG files beside them.
``logs ADDR`` prints the daemon's recent log lines, and with ``--follow`` keeps
printing new ones, reconnecting and resuming after the last line it printed
when a slow or flaky link drops. ``discover`` lists the units on the LAN.

Each result streams back in its own small message (one image, one check, or a
batch of log lines), so a slow link shows progress and never carries a large
message; every call has a deadline.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from veriscope.sdk import (
    Client,
    DeadlineExceededError,
    DeviceInfo,
    DeviceUnavailableError,
    LogEntry,
    LogLevel,
    PermissionDeniedError,
    SelfTestCheck,
    SelfTestStatus,
    TlsError,
    UnauthenticatedError,
    VeriscopeError,
    discover,
)

EXIT_OK = 0
"""Every check passed (warnings allowed); the command did what was asked."""
EXIT_FAILED = 1
"""A self-test check failed; for ``logs``, the unit refused the call."""
EXIT_USAGE = 2
"""A bad command line."""
EXIT_UNREACHABLE = 3
"""The unit did not answer (address, network, TLS listener needing --ca/--pin) or a deadline passed."""
EXIT_AUTH = 4
"""The unit refused the token (missing, wrong, expired, or below technician) or its TLS identity did not match."""
EXIT_REFUSED = 5
"""The unit refused to run the self-test (a scan owns the camera) or broke it off."""
EXIT_INTERRUPTED = 130
"""Interrupted with Ctrl-C."""
ENV_TOKEN = "VERISCOPE_TOKEN"
ENV_CA = "VERISCOPE_CA"
LOG_RETRIES = 5
"""Reconnections ``logs --follow`` makes after the link drops, before it gives up."""
_STATUS_STYLE = {
    SelfTestStatus.PASS: "green",
    SelfTestStatus.WARN: "yellow",
    SelfTestStatus.FAIL: "bold red",
    SelfTestStatus.SKIPPED: "dim",
}
_CHECK_COUNT = 7

EXIT_CODES_HELP = """\
exit status:
  0    every check passed (WARN allowed); logs and discover: done
  1    a check FAILED (diagnose); the unit refused the call (logs)
  2    bad command line
  3    the unit is unreachable, or a deadline passed (check the address, the network, --ca/--pin)
  4    authentication: no token, a wrong or expired one, a role below technician, or a TLS identity mismatch
  5    the unit refused or broke off the self-test (a scan owns the camera: finish or cancel it)
  130  interrupted"""


def add_commands(commands: Any) -> None:
    """Add ``diagnose``, ``logs`` and ``discover`` to ``veriscope-tool``'s subparsers."""
    diagnose = commands.add_parser(
        "diagnose",
        help="run a unit's self-test and write a report with images",
        description="Run the unit's self-test (camera, controller, LEDs, focus travel, temperature, model "
        "checksums, storage) and write DIR/report.md and DIR/report.json, with the images the checks took as "
        "PNG files beside them. Needs a technician token.",
        epilog=EXIT_CODES_HELP
        + "\n\nexamples:\n  veriscope-tool diagnose 192.168.1.40:50051 --ca fleet-ca.crt --out unit-40\n"
        "  VERISCOPE_TOKEN=... veriscope-tool diagnose 127.0.0.1:50051 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    diagnose.add_argument("address", metavar="ADDR", help="the unit, HOST:PORT")
    diagnose.add_argument(
        "--out", type=Path, metavar="DIR", help="where to write the report (default ./diagnose-DEVICE_ID-TIME)"
    )
    diagnose.add_argument("--json", action="store_true", help="print the report as JSON to stdout")
    diagnose.add_argument(
        "--timeout", type=float, default=300.0, metavar="S", help="bound on the whole self-test (default 300)"
    )
    _connection_options(diagnose)

    logs = commands.add_parser(
        "logs",
        help="print a unit's recent daemon log lines, and follow new ones",
        description="Print the unit daemon's recent log lines (it keeps the last 5000), oldest first. With "
        "--follow, keep printing new lines until Ctrl-C, reconnecting after a dropped link and resuming after the "
        "last line printed. Needs a technician token.",
        epilog=EXIT_CODES_HELP.replace("every check passed (WARN allowed); logs and discover: done", "done")
        + "\n\nexamples:\n  veriscope-tool logs 192.168.1.40:50051 --since 15m --level warning\n"
        "  veriscope-tool logs 192.168.1.40:50051 --follow --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    logs.add_argument("address", metavar="ADDR", help="the unit, HOST:PORT")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new lines until Ctrl-C")
    logs.add_argument(
        "--since",
        type=_since,
        metavar="T",
        help="only lines since T: a duration back from now (90s, 15m, 2h, 1d) or an ISO 8601 time",
    )
    logs.add_argument(
        "--level",
        type=_level,
        metavar="L",
        help="only lines at or above L: debug, info, warning, error, critical",
    )
    logs.add_argument("--json", action="store_true", help="print one JSON object per line")
    _connection_options(logs)

    disc = commands.add_parser(
        "discover",
        help="list the Veriscope units on the local network (mDNS)",
        description="Browse the local network for Veriscope units and list them with their addresses.",
        epilog="exit status: 0 done (also when no unit answered), 2 bad command line, 3 mDNS cannot run here",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    disc.add_argument("--timeout", type=float, default=2.0, metavar="S", help="seconds to listen (default 2)")
    disc.add_argument("--json", action="store_true", help="print a JSON list")
    disc.add_argument(
        "--interface",
        action="append",
        metavar="IF",
        help="browse on this interface only (a name or one of this host's IPv4 addresses); repeatable",
    )


def _connection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument("--token", default=None, help=f"API token of a technician or admin (default: ${ENV_TOKEN})")
    group.add_argument("--ca", metavar="FILE", default=None, help=f"TLS: the fleet CA certificate (default: ${ENV_CA})")
    group.add_argument("--pin", metavar="SHA256", help="TLS: sha256:<hex> of the unit's key, accept only that key")
    group.add_argument("--client-cert", metavar="FILE", help="TLS: a client certificate, for a unit requiring mTLS")
    group.add_argument("--client-key", metavar="FILE", help="TLS: the client certificate's private key")
    group.add_argument("--tls-name", metavar="NAME", help="TLS: the name the unit's certificate must carry")


def run(args: argparse.Namespace) -> int:
    """Run ``diagnose``, ``logs`` or ``discover``; returns the exit status."""
    err = Console(stderr=True, highlight=False)
    try:
        if args.command == "discover":
            return _discover(args, err)
        with _client(args) as client:
            if args.command == "diagnose":
                return _diagnose(client, args, err)
            return _logs(client, args, err)
    except KeyboardInterrupt:
        err.print("interrupted")
        return EXIT_INTERRUPTED
    except (UnauthenticatedError, PermissionDeniedError, TlsError) as exc:
        err.print(f"[bold red]authentication:[/] {exc}")
        return EXIT_AUTH
    except (DeviceUnavailableError, DeadlineExceededError) as exc:
        hint = "" if args.ca or args.pin else "; a unit that serves TLS needs --ca FILE or --pin SHA256"
        err.print(f"[bold red]unreachable:[/] {exc} (unit {args.address}{hint})")
        return EXIT_UNREACHABLE
    except VeriscopeError as exc:
        err.print(f"[bold red]refused:[/] {exc}")
        return EXIT_REFUSED if args.command == "diagnose" else EXIT_FAILED
    except ValueError as exc:  # a bad --ca, --pin or client certificate
        err.print(f"[bold red]error:[/] {exc}")
        return EXIT_USAGE


def _client(args: argparse.Namespace) -> Client:
    return Client(
        args.address,
        token=args.token or os.environ.get(ENV_TOKEN) or None,
        ca=args.ca or os.environ.get(ENV_CA) or None,
        pinned_key=args.pin,
        client_cert=args.client_cert,
        client_key=args.client_key,
        tls_server_name=args.tls_name,
    )


# --- diagnose ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """A finished self-test, as written to disk."""

    device: DeviceInfo
    checks: tuple[SelfTestCheck, ...]
    start_time: datetime
    images: dict[tuple[str, str], str]
    """(check, image name) -> file name of the PNG in the report's directory."""

    @property
    def failed(self) -> list[str]:
        """The checks that failed."""
        return [c.name for c in self.checks if c.status is SelfTestStatus.FAIL]

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        d = self.device
        return {
            "device": {
                "device_id": d.device_id,
                "hardware_model": d.hardware.model,
                "software_version": d.software_version,
                "controller_firmware": d.hardware.controller.firmware_version or None,
                "active_model": f"{d.model.name}@{d.model.version}" if d.model else None,
            },
            "start_time": self.start_time.isoformat().replace("+00:00", "Z"),
            "passed": not self.failed,
            "failed": self.failed,
            "checks": [
                {
                    **check.to_dict(),
                    "images": [
                        {"name": i.name, "file": self.images[(check.name, i.name)], "size_bytes": len(i.png)}
                        for i in check.images
                    ],
                }
                for check in self.checks
            ],
        }


def _diagnose(client: Client, args: argparse.Namespace, err: Console) -> int:
    device = client.get_device()
    start = datetime.now(UTC)
    out: Path = args.out or Path(f"diagnose-{_safe(device.device_id)}-{start:%Y%m%d-%H%M%S}")
    checks: list[SelfTestCheck] = []
    with Progress(
        TextColumn("{task.description:40}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=not err.is_terminal,
    ) as bar:
        task = bar.add_task(f"self-test of {device.device_id}", total=_CHECK_COUNT)
        for check in client.run_self_test(timeout_s=args.timeout):
            checks.append(check)
            style = _STATUS_STYLE.get(check.status, "")
            bar.update(task, total=check.total_checks, completed=check.check_number, description=f"{check.name}")
            bar.console.print(f"[{style}]{check.status.value:7}[/] {check.name}: {check.message}")
    report = write_report(out, device, checks, start)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2), flush=True)
    failed = report.failed
    verdict = f"[bold red]FAILED: {', '.join(failed)}[/]" if failed else "[green]all checks passed[/]"
    err.print(f"{verdict}; report in {out / 'report.md'}")
    return EXIT_FAILED if failed else EXIT_OK


def write_report(out: Path, device: DeviceInfo, checks: list[SelfTestCheck], start: datetime) -> Report:
    """Write ``report.md``, ``report.json`` and the checks' PNG images into ``out`` (created); return the report."""
    out.mkdir(parents=True, exist_ok=True)
    images: dict[tuple[str, str], str] = {}
    for check in checks:
        for image in check.images:
            name = f"{_safe(check.name)}-{_safe(image.name)}.png"
            (out / name).write_bytes(image.png)
            images[(check.name, image.name)] = name
    report = Report(device, tuple(checks), start, images)
    (out / "report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    (out / "report.md").write_text(_markdown(report))
    return report


def _markdown(report: Report) -> str:
    d = report.device
    firmware = d.hardware.controller.firmware_version or "none"
    lines = [
        f"# Self-test of {d.device_id}",
        "",
        f"- Run: {report.start_time:%Y-%m-%d %H:%M:%S} UTC",
        f"- Hardware: {d.hardware.model}; daemon {d.software_version}; controller firmware {firmware}",
        f"- Result: **{'FAILED: ' + ', '.join(report.failed) if report.failed else 'all checks passed'}**",
        "",
        "| Check | Status | Message |",
        "| --- | --- | --- |",
    ]
    for check in report.checks:
        message = check.message.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {check.name} | **{check.status.value}** | {message} |")
    for check in report.checks:
        lines += ["", f"## {check.name}: {check.status.value}", "", check.message, ""]
        if check.measurements:
            lines += ["| Measurement | Value |", "| --- | --- |"]
            lines += [f"| {k} | {_number(v)} |" for k, v in sorted(check.measurements.items())]
            lines.append("")
        for image in check.images:
            lines += [f"![{check.name}: {image.name}]({report.images[(check.name, image.name)]})", ""]
        lines.append(f"_{check.duration.total_seconds():.2f} s_")
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.6g}"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "_"


# --- logs --------------------------------------------------------------------------------------------------------


def _since(text: str) -> datetime:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if match:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        return datetime.now(UTC) - timedelta(seconds=float(match.group(1)) * unit)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration (90s, 15m, 2h, 1d) nor an ISO 8601 time"
        ) from None
    return when if when.tzinfo else when.astimezone()


def _level(text: str) -> LogLevel:
    try:
        return LogLevel[text.upper()]
    except KeyError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a level; use one of {', '.join(level.value.lower() for level in LogLevel)}"
        ) from None


def _logs(client: Client, args: argparse.Namespace, err: Console) -> int:
    for entry in follow_logs(client, since=args.since, min_level=args.level, follow=args.follow, err=err):
        if args.json:
            print(json.dumps(entry.to_dict()), flush=True)
        else:
            when = entry.time.astimezone().strftime("%Y-%m-%d %H:%M:%S") if entry.time else "?"
            level = entry.level.value if entry.level else "?"
            print(f"{when} {level:8} {entry.logger}: {entry.message}", flush=True)
    return EXIT_OK


def follow_logs(
    client: Client,
    *,
    since: datetime | None,
    min_level: LogLevel | None,
    follow: bool,
    err: Console,
    retries: int = LOG_RETRIES,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[LogEntry]:
    """The unit's log lines; when following, reconnects after a dropped link and resumes after the last line.

    A reconnection waits 2, 4, 8 ... (at most 30) seconds; ``retries`` failed reconnections in a row end it
    with the last error.
    """
    last_sequence = 0
    attempt = 0
    while True:
        try:
            for entry in client.read_logs(since=since, min_level=min_level, follow=follow):
                if entry.sequence <= last_sequence:
                    continue  # sent again after a reconnection
                last_sequence = entry.sequence
                if entry.time is not None:
                    since = entry.time
                attempt = 0
                yield entry
            return
        except (DeviceUnavailableError, DeadlineExceededError) as exc:
            if not follow or attempt >= retries:
                raise
            attempt += 1
            delay_s = min(30.0, 2.0**attempt)
            err.print(f"[yellow]link lost ({exc}); reconnecting in {delay_s:.0f} s ({attempt}/{retries})[/]")
            sleep(delay_s)


# --- discover ----------------------------------------------------------------------------------------------------


def _discover(args: argparse.Namespace, err: Console) -> int:
    try:
        devices = discover(args.timeout, interfaces=args.interface)
    except ValueError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        return EXIT_USAGE
    except DeviceUnavailableError as exc:
        err.print(f"[bold red]mDNS unavailable:[/] {exc}")
        return EXIT_UNREACHABLE
    if args.json:
        print(json.dumps([d.to_dict() for d in devices], indent=2), flush=True)
        return EXIT_OK
    if not devices:
        err.print(f"no Veriscope unit answered within {args.timeout:g} s")
        return EXIT_OK
    header = ("device id", "address", "model", "software", "model version", "TLS")
    rows = [
        (
            d.device_id,
            d.address,
            d.model + (" (simulated)" if d.simulated else ""),
            d.software_version,
            d.model_version,
            "yes" if d.tls else "no",
        )
        for d in devices
    ]
    out = Console(highlight=False)
    if not out.is_terminal:
        # Whole lines for a pipe or a log, never a table wrapped at 80 columns.
        for row in (header, *rows):
            print("\t".join(row), flush=True)
        return EXIT_OK
    table = Table(*header)
    for row in rows:
        table.add_row(*row)
    out.print(table)
    return EXIT_OK
