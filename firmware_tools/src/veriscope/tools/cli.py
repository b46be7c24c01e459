"""The ``veriscope-tool`` command line: the field technician's toolkit.

Commands:

``flash-controller --port PORT FIRMWARE.hex``
    Flash the controller board through its bootloader and verify it. Exit status 0 on
    success, 1 when flashing failed (the message says whether the board holds a
    half-written image), 2 when the image was refused before anything was written.

``tokens create|list|revoke --data-dir DIR``
    Manage the unit's API tokens, offline, on the unit (see ``veriscope-tool tokens --help``).

``ca init --out DIR``, ``ca client-cert --ca DIR --name NAME --out DIR``
    Create the fleet CA; issue client certificates for mTLS (see :mod:`veriscope.tools.ca`).

``provision --data-dir DIR --ca DIR``
    Give a unit its identity: keys, fleet-CA certificates, TLS configuration and a first
    admin token, idempotently (see :mod:`veriscope.tools.provision`).

``keys generate --out DIR``, ``bundle build|verify|inspect``
    The fleet's update key, and signed update bundles (see :mod:`veriscope.tools.bundles`).
    Exit status 0 ok, 1 invalid or tampered bundle (the reason is printed), 2 bad command line.

``update push|status|rollback --device ADDR``
    Over-the-air model updates (see :mod:`veriscope.tools._update_cli`). Exit status 0 ok, 1 refused,
    2 bad command line, 3 unreachable, 4 trial failed and the unit rolled back.

``diagnose ADDR``, ``logs ADDR``, ``discover``
    Run a unit's self-test and write a report with images; read its daemon log; find units on the LAN
    (see :mod:`veriscope.tools._diagnose_cli`). Exit status 0 ok, 1 a check failed, 2 bad command line,
    3 unit unreachable, 4 authentication problem, 5 self-test refused (a scan owns the camera).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from veriscope.tools import _bundle_cli, _diagnose_cli, _identity_cli, _tokens_cli, _update_cli
from veriscope.tools.flash import FlashError, ImageError, flash_image, load_image, open_port


def main(argv: list[str] | None = None) -> int:
    """Run the ``veriscope-tool`` command line and return its exit code."""
    parser = argparse.ArgumentParser(prog="veriscope-tool", description="Veriscope field technician's toolkit.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    fc = commands.add_parser(
        "flash-controller",
        help="flash the controller board's firmware through its bootloader, and verify it",
        description="Flash an Intel HEX image into the controller board (ATmega328P, Optiboot) over STK500v1, "
        "then read every page back.",
    )
    fc.add_argument("--port", required=True, help="serial port of the board, e.g. /dev/ttyUSB0")
    fc.add_argument("--baud", type=int, default=115200, help="bootloader line rate (default 115200)")
    fc.add_argument("--retries", type=int, default=3, help="attempts per command and per page (default 3)")
    fc.add_argument("--sync-timeout", type=float, default=5.0, help="seconds to wait for the bootloader (default 5)")
    fc.add_argument("firmware", type=Path, metavar="FIRMWARE.hex", help="the image to flash")
    _tokens_cli.add_parser(commands)
    _identity_cli.add_commands(commands)
    _bundle_cli.add_commands(commands)
    _update_cli.add_commands(commands)
    _diagnose_cli.add_commands(commands)
    args = parser.parse_args(argv)
    if args.command == "flash-controller":
        return _flash_controller(args)
    if args.command == "tokens":
        return _tokens_cli.run(args)
    if args.command in ("ca", "provision"):
        return _identity_cli.run(args)
    if args.command in ("keys", "bundle"):
        return _bundle_cli.run(args)
    if args.command == "update":
        return _update_cli.run(args)
    if args.command in ("diagnose", "logs", "discover"):
        return _diagnose_cli.run(args)
    parser.print_help()
    return 2


def _flash_controller(args: argparse.Namespace) -> int:
    err = Console(stderr=True, highlight=False)
    try:
        image = load_image(args.firmware)
    except ImageError as exc:
        err.print(f"[bold red]refused:[/] {exc}")
        return 2
    what = image.info.describe() if image.info else f"{args.firmware.name} (no Veriscope identity block)"
    err.print(f"flashing {what}: {image.byte_count} bytes in {len(image.pages)} pages to {args.port}")

    with Progress(
        TextColumn("{task.description:7}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
        disable=not err.is_terminal,
    ) as bar:
        tasks: dict[str, TaskID] = {phase: bar.add_task(phase, total=image.byte_count) for phase in ("write", "verify")}
        last_pct = {"write": -1, "verify": -1}

        def progress(phase: str, done: int, total: int) -> None:
            bar.update(tasks[phase], completed=done)
            pct = 100 * done // total
            if not err.is_terminal and pct // 25 != last_pct[phase] // 25:
                # Plain progress lines when the output is a log, not a terminal.
                last_pct[phase] = pct
                print(f"{phase}: {done}/{total} bytes ({pct}%)", file=sys.stderr, flush=True)

        try:
            with open_port(args.port, args.baud) as port:
                report = flash_image(
                    port,
                    image,
                    attempts=args.retries,
                    sync_timeout_s=args.sync_timeout,
                    progress=progress,
                    port_name=args.port,
                )
        except FlashError as exc:
            label = "[bold red]FAILED, board holds a half-written image:[/]" if exc.partial else "[bold red]failed:[/]"
            err.print(f"{label} {exc}")
            return 1
    rate = report.bytes_written / report.write_seconds if report.write_seconds else 0.0
    err.print(
        f"[green]done:[/] wrote and verified {report.bytes_written} bytes in {report.seconds:.1f} s "
        f"(writing {rate:.0f} B/s), {report.retries} retries"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
