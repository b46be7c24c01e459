"""The ``veriscope`` command line: drive a Veriscope unit from a shell.

Each command maps to one SDK call. Results go to stdout (plain text, or JSON
with ``--json``); progress and errors go to stderr, and an error is always
exactly one line naming the gRPC status, so scripts can rely on both streams.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from veriscope.sdk import _cli_output as out
from veriscope.sdk._base import DEFAULT_TARGET, MAX_PAGE_SIZE, check_name, check_scan_id
from veriscope.sdk._client import Client
from veriscope.sdk._discovery import discover
from veriscope.sdk._exceptions import CertificateError, DeadlineExceededError, DeviceUnavailableError, VeriscopeError
from veriscope.sdk._export import parse_since
from veriscope.sdk._models import (
    CaptureSettings,
    ImageFormat,
    ImageHeatmap,
    LightingChannel,
    PreviewFrame,
    ScanEvent,
    ScanEventType,
    ScanLabel,
)

PROG = "veriscope"
ENV_DEVICE = "VERISCOPE_DEVICE"
ENV_TOKEN = "VERISCOPE_TOKEN"
ENV_CA = "VERISCOPE_CA"

EXIT_OK = 0
EXIT_RPC_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130

EXIT_CODES = f"""\
exit codes:
  {EXIT_OK}    success (whatever the verdict)
  {EXIT_RPC_ERROR}    the device answered with an error; stderr names its status, e.g. NOT_FOUND, or
       UNAUTHENTICATED (no or bad --token) and PERMISSION_DENIED (the token's role is too low);
       TLS_ERROR: the unit's certificate does not match --ca or --pin, or it refused --client-cert
       (verify-certificate: the certificate is not valid; stderr says why)
  {EXIT_USAGE}    usage error: a bad argument, an image file that is missing or not PNG/JPEG,
       or an output directory that cannot be written
  {EXIT_UNREACHABLE}    the device is unreachable or failed (UNAVAILABLE), or too slow (DEADLINE_EXCEEDED)
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C); a scan in progress is cancelled first"""


class UsageError(Exception):
    """A command-line argument is wrong; the message says which and why."""


class CommandFailed(Exception):
    """A command ran and its answer is no (a certificate that is not valid): ``data`` is its JSON output."""

    def __init__(self, message: str, data: Any, exit_code: int = EXIT_RPC_ERROR) -> None:
        super().__init__(message)
        self.data = data
        self.exit_code = exit_code


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr, like every other veriscope error."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


# --- Argument types (input from outside: checked strictly, errors name the argument) -----------------------------


def parse_image_arg(value: str) -> tuple[str, Path]:
    """Parse ``--image REGION=PATH``: the region before the first '=', a readable file after it."""
    region, sep, path = value.partition("=")
    if not sep or not region or not path:
        raise argparse.ArgumentTypeError(f"expected REGION=PATH, for example canvas=photo.png, got {value!r}")
    try:
        check_name(region, "region")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad region in {value!r}: {exc}") from None
    file = Path(path)
    if not file.is_file():
        what = "is not a file" if file.exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"{path!r} {what} (in {value!r})")
    return region, file


def parse_scan_id_arg(value: str) -> str:
    """Parse a SCAN_ID argument (an id, or ``scans/{id}``)."""
    try:
        return check_scan_id(value, "SCAN_ID")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _name_arg(value: str) -> str:
    try:
        return check_name(value, "value")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("value ")) from None


def _timeout_arg(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {value!r}") from None
    if not (seconds > 0 and seconds != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {value!r}")
    return seconds


def _fps_arg(value: str) -> float:
    try:
        fps = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of frames per second, got {value!r}") from None
    if not 1.0 <= fps <= 30.0:
        raise argparse.ArgumentTypeError(f"must be 1..30 frames per second, got {value!r}")
    return fps


def _int_arg(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(f"must be {low}..{high}, got {number}")
        return number

    return parse


# --- Commands ----------------------------------------------------------------------------------------------------

# A command returns (JSON data, text); main prints one of them to stdout.
Output = tuple[Any, str]


def _progress(args: argparse.Namespace) -> out.Progress | None:
    if args.quiet:
        return None
    return out.Progress(sys.stderr, live=sys.stderr.isatty())


DISCOVERY_TIMEOUT_S = 2.0
"""How long ``veriscope devices`` listens for units by default, in seconds."""


def cmd_devices(client: Client | None, args: argparse.Namespace) -> Output:
    timeout = args.timeout or DISCOVERY_TIMEOUT_S
    devices = discover(timeout)
    text = out.devices_text(devices, timeout)
    if not devices and args.json:
        print(text, file=sys.stderr)  # stdout holds the JSON: []
    return [device.to_dict() for device in devices], text


def cmd_info(client: Client, args: argparse.Namespace) -> Output:
    device = client.get_device()
    return device.to_dict(), out.device_text(device)


def cmd_status(client: Client, args: argparse.Namespace) -> Output:
    status = client.get_status()
    return status.to_dict(), out.status_text(status)


def cmd_models(client: Client, args: argparse.Namespace) -> Output:
    models = client.list_models()
    return [m.to_dict() for m in models], out.models_text(models)


def _wait_for_placement(progress: out.Progress | None) -> Callable[[ScanEvent], None]:
    """An on_event callback that, before each capture, says where to put the scanner and waits for Enter."""

    def on_event(event: ScanEvent) -> None:
        if progress is not None:
            progress(event)
        if event.type is ScanEventType.CAPTURING:
            if progress is not None:
                progress.close()
            print(f"place the scanner on {event.region}, then press Enter ", end="", file=sys.stderr, flush=True)
            if not sys.stdin.readline():
                print(file=sys.stderr)  # end the prompt's line, so the error is a line of its own
                raise UsageError("--interactive needs a terminal or input on stdin")

    return on_event


def cmd_scan(client: Client, args: argparse.Namespace) -> Output:
    progress = _progress(args)
    on_event = _wait_for_placement(progress) if args.interactive else progress
    try:
        result = client.scan(
            args.item_type,
            partner_item_id=args.partner_item_id,
            max_retakes_per_region=args.max_retakes,
            on_event=on_event,
        )
    finally:
        if progress is not None:
            progress.close()
    return result.to_dict(), out.result_text(result)


def cmd_analyze(client: Client, args: argparse.Namespace) -> Output:
    progress = _progress(args)
    try:
        result = client.analyze(args.item_type, args.image, partner_item_id=args.partner_item_id, on_event=progress)
    finally:
        if progress is not None:
            progress.close()
    return result.to_dict(), out.result_text(result)


def cmd_scans(client: Client, args: argparse.Namespace) -> Output:
    if args.all:
        scans = list(client.iter_scans(filter=args.filter, page_size=args.page_size))
        token = None
    else:
        page = client.list_scans(page_size=args.page_size, page_token=args.page_token, filter=args.filter)
        scans, token = list(page.scans), page.next_page_token
    text = out.scans_text(scans)
    if token is not None:
        more = f"more scans: veriscope scans --page-token {token}"
        if args.json:
            print(f"{PROG}: {more}", file=sys.stderr)
        else:
            text += "\n\n" + more
    return [out.scan_summary(scan) for scan in scans], text


def cmd_scan_get(client: Client, args: argparse.Namespace) -> Output:
    scan = client.get_scan(args.scan_id)
    return scan.to_dict(), out.scan_text(scan)


EXPLANATION_FILE = "explanation.json"
_UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def heatmap_file_name(image: ImageHeatmap, taken: set[str]) -> str:
    """``<region>-<image_id>.png`` with anything but ``A-Z a-z 0-9 . _ -`` replaced, unique among ``taken``."""
    stem = _UNSAFE_FILE_CHARS.sub("_", f"{image.region}-{image.image_id}").lstrip(".") or "image"
    name, n = f"{stem}.png", 1
    while name in taken or name == EXPLANATION_FILE:
        n += 1
        name = f"{stem}-{n}.png"
    taken.add(name)
    return name


def cmd_explain(client: Client, args: argparse.Namespace) -> Output:
    explanation = client.get_scan_explanation(args.scan_id)
    directory: Path = args.out
    directory.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    heatmaps = [image.save(directory / heatmap_file_name(image, taken)) for image in explanation.images]
    report = explanation.to_dict()
    for entry, path in zip(report["images"], heatmaps, strict=True):
        entry["file"] = path.name
    report_path = directory / EXPLANATION_FILE
    report_path.write_text(out.to_json(report) + "\n", encoding="utf-8")
    data = {
        "scan_id": explanation.scan_id,
        "directory": str(directory),
        "heatmaps": [str(path) for path in heatmaps],
        "explanation": str(report_path),
    }
    return data, out.explanation_text(explanation, heatmaps, report_path)


def cmd_cancel(client: Client, args: argparse.Namespace) -> Output:
    scan = client.cancel_scan(args.scan_id)
    return scan.to_dict(), f"scan {scan.scan_id} {scan.state.name.lower()}"


def cmd_certificate(client: Client, args: argparse.Namespace) -> Output:
    check_writable_file(args.out)
    certificate = client.get_scan_certificate(args.scan_id)
    path = certificate.save(args.out)
    return {**certificate.to_dict(), "path": str(path)}, out.certificate_saved_text(certificate, path)


def _read_limited(path: Path, option: str, limit: int) -> bytes:
    """Up to ``limit + 1`` bytes of a file named on the command line; UsageError when it cannot be read."""
    try:
        with path.open("rb") as file:
            return file.read(limit + 1)
    except FileNotFoundError:
        raise UsageError(f"{option} {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"{option} {str(path)!r} is a directory; give a file") from None
    except OSError as exc:
        raise UsageError(f"{option} {str(path)!r} cannot be read: {exc.strerror or exc}") from None


def cmd_verify_certificate(client: Client | None, args: argparse.Namespace) -> Output:
    # Imported here: cryptography is only needed by this command, and every other one starts faster without it.
    from veriscope.sdk import certificates

    # Every failure exits 1, as the command promises: a certificate that cannot be checked is not valid.
    try:
        trust = _read_limited(args.trust, "--trust", 1024 * 1024)
        document = _read_limited(args.file, "FILE", certificates.MAX_DOCUMENT_BYTES)
    except UsageError as exc:
        data = {"valid": False, "file": str(args.file), "reason": "unreadable", "error": str(exc)}
        raise CommandFailed(f"{str(args.file)!r} cannot be verified: {exc}", data) from None
    try:
        certificate = certificates.verify_certificate(document, trust)
    except ValueError as exc:  # --trust is not a usable PEM
        data = {"valid": False, "file": str(args.file), "reason": "bad_trust", "error": str(exc)}
        raise CommandFailed(
            f"{str(args.file)!r} cannot be verified: --trust {str(args.trust)!r}: {exc}", data
        ) from None
    except CertificateError as exc:
        data = {"valid": False, "file": str(args.file), "reason": exc.reason, "error": exc.details}
        raise CommandFailed(f"{str(args.file)!r} is NOT a valid certificate: {exc.details}", data) from None
    data = {"valid": True, "file": str(args.file), "certificate": certificate.to_dict()}
    return data, out.certificate_text(certificate)


LABELS = {"genuine": ScanLabel.GENUINE, "counterfeit": ScanLabel.COUNTERFEIT, "none": None}
"""The expert labels by their command-line names; none removes a label."""


def cmd_label(client: Client, args: argparse.Namespace) -> Output:
    if args.clear and args.label not in (None, "none"):
        raise UsageError(f"give a LABEL or --clear, not both (got {args.label!r} and --clear)")
    if not args.clear and args.label is None:
        raise UsageError("give a LABEL (genuine, counterfeit or none) or --clear")
    scan = client.label_scan(args.scan_id, None if args.clear else LABELS[args.label])
    return scan.to_dict(), out.label_text(scan)


def _since_arg(value: str) -> datetime:
    try:
        return parse_since(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_export(client: Client, args: argparse.Namespace) -> Output:
    check_output_dir(args.out)
    quiet = args.quiet or args.json
    progress = None if quiet else out.ExportProgressView(sys.stderr, live=sys.stderr.isatty())
    try:
        summary = client.export_scans(args.out, since=args.since, progress=progress)
    finally:
        if progress is not None:
            progress.close()
    since = None if args.since is None else args.since.isoformat()
    return out.export_summary(summary), out.export_text(summary, since)


CALIBRATE_INSTRUCTIONS = (
    "place the white reference target flat under the lens, covering the whole field; keep it clean, still "
    "and out of strong ambient light"
)
CALIBRATABLE = {"white_ring": LightingChannel.WHITE_RING, "raking": LightingChannel.RAKING}
"""Lighting channels a white target calibrates, by their command-line names."""


def cmd_calibrate(client: Client, args: argparse.Namespace) -> Output:
    if args.show:
        current = client.get_calibration()
        return current.to_dict(), out.calibration_text(current)
    channels = [CALIBRATABLE[name] for name in args.lighting] if args.lighting else None

    def say(line: str) -> None:
        if not args.quiet:
            print(f"{PROG}: {line}", file=sys.stderr, flush=True)

    say(CALIBRATE_INSTRUCTIONS)
    if args.interactive:
        print("press Enter when the target is in place ", end="", file=sys.stderr, flush=True)
        if not sys.stdin.readline():
            print(file=sys.stderr)
            raise UsageError("--interactive needs a terminal or input on stdin")
    which = ", ".join(args.lighting) if args.lighting else "the model's lighting channels"
    frames = args.frames or 8
    say(f"calibrating {which}: auto-exposing the target, then averaging {frames} frames per channel...")
    made = client.calibrate(lighting_channels=channels, frames=args.frames)
    say(f"calibrated: {made.calibration_id}")
    return made.to_dict(), out.calibration_text(made, fresh=True)


LIGHTING_NAMES = {
    "white_ring": LightingChannel.WHITE_RING,
    "raking": LightingChannel.RAKING,
    "uv": LightingChannel.UV,
    "off": LightingChannel.OFF,
}
"""Lighting channels by their command-line names."""
IMAGE_SUFFIXES = {".png": ImageFormat.PNG, ".jpg": ImageFormat.JPEG, ".jpeg": ImageFormat.JPEG}
"""Output file name endings and the encoding each asks the device for."""


def check_output_file(path: Path) -> ImageFormat:
    """The encoding ``path``'s ending asks for, once it is known that the file can be written.

    Raises UsageError (exit 2, before anything is captured) for another ending, a
    directory, a missing parent directory or a file that cannot be created.
    """
    fmt = IMAGE_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise UsageError(f"--out {str(path)!r} must end in .png, .jpg or .jpeg")
    check_writable_file(path)
    return fmt


def check_writable_file(path: Path) -> None:
    """Make sure ``path`` can be written, leaving nothing behind; UsageError (exit 2) for a directory, a missing
    parent directory or a file that cannot be created."""
    if path.is_dir():
        raise UsageError(f"--out {str(path)!r} is a directory; give a file name")
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(f"--out {str(path)!r}: directory {str(parent)!r} does not exist")
    try:
        if path.exists():
            with path.open("ab"):
                pass
        else:
            # Create it to be sure (permissions, read-only file systems), and leave nothing behind.
            with path.open("xb"):
                pass
            path.unlink()
    except OSError as exc:
        raise UsageError(f"--out {str(path)!r} cannot be written: {exc.strerror or exc}") from None


def check_output_dir(directory: Path) -> None:
    """Create ``directory`` if needed and make sure files can be written in it; UsageError otherwise."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".veriscope-write-test-{os.getpid()}"
        with probe.open("wb"):
            pass
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"--out {str(directory)!r} cannot be written: {exc.strerror or exc}") from None


def cmd_capture(client: Client, args: argparse.Namespace) -> Output:
    fmt = check_output_file(args.out)
    settings = CaptureSettings(lighting=LIGHTING_NAMES[args.lighting]) if args.lighting else None
    result = client.capture(settings, image_format=fmt)
    args.out.write_bytes(result.data)
    return out.capture_summary(args.out, result), out.capture_text(args.out, result)


def preview_file_name(index: int) -> str:
    """``frame-000000.jpg``: the name of the ``index``-th saved preview frame."""
    return f"frame-{index:06d}.jpg"


def cmd_preview(client: Client, args: argparse.Namespace) -> Output:
    directory: Path = args.out
    check_output_dir(directory)
    lighting = LIGHTING_NAMES[args.lighting] if args.lighting else None
    stream = client.stream_preview(max_fps=args.fps, width_px=args.width, max_frames=args.frames, lighting=lighting)
    progress = None if args.quiet else out.PreviewProgress(sys.stderr, args.frames, live=sys.stderr.isatty())
    frames: list[PreviewFrame] = []
    files: list[Path] = []
    start = time.monotonic()
    try:
        for frame in stream:
            path = directory / preview_file_name(len(files))
            path.write_bytes(frame.jpeg)
            frames.append(frame)
            files.append(path)
            if progress is not None:
                progress(frame, len(files), time.monotonic() - start)
    finally:
        stream.close()
        if progress is not None:
            progress.close()
    summary = out.preview_summary(directory, files, frames, time.monotonic() - start, args.lighting or "white_ring")
    return summary, out.preview_text(summary)


def cmd_sim_place(client: Client, args: argparse.Namespace) -> Output:
    item = client.place_item(args.item_type, args.source, args.seed)
    return item.to_dict(), "placed " + out.placed_text(item)


def cmd_sim_get(client: Client, args: argparse.Namespace) -> Output:
    item = client.get_placed_item()
    return (None if item is None else item.to_dict()), out.placed_text(item)


def cmd_sim_clear(client: Client, args: argparse.Namespace) -> Output:
    client.clear_item()
    return {"cleared": True}, "the stage is empty"


def cmd_sim_sources(client: Client, args: argparse.Namespace) -> Output:
    materials = client.list_sources()
    return [m.to_dict() for m in materials], out.sources_text(materials)


# --- Parser ------------------------------------------------------------------------------------------------------


def _add_common(parser: argparse.ArgumentParser) -> None:
    """Options accepted after the command too (``veriscope scan --json``). SUPPRESS keeps the global values."""
    group = parser.add_argument_group("common options (also accepted before the command)")
    group.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print machine-readable JSON")
    group.add_argument("--device", metavar="HOST:PORT", default=argparse.SUPPRESS, help="the unit to talk to")
    group.add_argument("--token", metavar="TOKEN", default=argparse.SUPPRESS, help="the API token to call with")
    group.add_argument("--ca", metavar="FILE", default=argparse.SUPPRESS, help="TLS: the fleet CA certificate")
    group.add_argument("--pin", metavar="SHA256", default=argparse.SUPPRESS, help="TLS: the unit's key pin")
    group.add_argument(
        "--timeout", metavar="SECONDS", type=_timeout_arg, default=argparse.SUPPRESS, help="deadline of each call"
    )


def _command(
    subparsers: Any, name: str, summary: str, description: str, examples: str, run: Callable[..., Output], **kw: Any
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=summary,
        description=description,
        epilog="examples:\n" + examples,
        formatter_class=_formatter,
        **kw,
    )
    parser.set_defaults(run=run, offline=False)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """Build the ``veriscope`` argument parser."""
    default_device = os.environ.get(ENV_DEVICE) or DEFAULT_TARGET
    parser = _Parser(
        prog=PROG,
        formatter_class=_formatter,
        description=(
            "Drive a Veriscope authentication scanner: show what it is, scan the item under its lens,\n"
            "authenticate image files, and browse past scans.\n\n"
            "Results go to stdout (text, or JSON with --json); progress and errors go to stderr.\n"
            "An error is one line: 'veriscope: error: STATUS: message'."
        ),
        epilog=(
            "examples:\n"
            "  veriscope devices                                the units on the local network, and their addresses\n"
            "  veriscope info                                   what the unit is and which items it knows\n"
            "  veriscope --device 10.0.0.7:50051 scan --item-type tote-classic\n"
            "  veriscope analyze --item-type tote-classic --image canvas=a.png --image handle=b.jpg --json\n"
            "  veriscope scans --all --json\n"
            "  veriscope explain 01HV3K9TQ4 --out ./why         heat-maps of why a scan got its verdict\n"
            "  veriscope label 01HV3K9TQ4 counterfeit           an expert's ground truth, for training\n"
            "  veriscope export --out build/labelled            labelled scans as a training data set\n"
            "  veriscope certificate 01HV3K9TQ4 --out a.cert    its signed certificate of authenticity\n"
            "  veriscope verify-certificate a.cert --trust unit.pem   check one offline, no unit needed\n"
            "  veriscope capture --out frame.png --json         one frame, with its quality report\n"
            "  veriscope preview --out ./live --frames 50       save live preview frames\n"
            "  veriscope calibrate                              calibrate on the white reference target\n"
            "  veriscope COMMAND --help                         more on one command\n\n" + EXIT_CODES
        ),
    )
    parser.add_argument(
        "--device",
        metavar="HOST:PORT",
        default=default_device,
        help=f"the unit to talk to (default: ${ENV_DEVICE}, else {DEFAULT_TARGET}; now {default_device})",
    )
    parser.add_argument(
        "--token",
        metavar="TOKEN",
        default=os.environ.get(ENV_TOKEN) or None,
        help=f"API token (vs_<id>_<secret>) for a unit that requires one (default: ${ENV_TOKEN}, which keeps it "
        "out of the process list); an admin creates it on the unit with 'veriscope-tool tokens create'",
    )
    parser.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_timeout_arg,
        default=None,
        help="deadline of each call (default: 10 s for quick calls, 60 s for captures and verdicts)",
    )
    tls = parser.add_argument_group(
        "TLS",
        "A unit on the network serves TLS only: give --ca or --pin to check it (a unit on this machine's\n"
        "loopback serves plaintext, and needs neither). See device/docs/security.md.",
    )
    tls.add_argument(
        "--ca",
        metavar="FILE",
        default=os.environ.get(ENV_CA) or None,
        help=f"the fleet CA certificate (fleet-ca.crt): accept only units it issued (default: ${ENV_CA})",
    )
    tls.add_argument(
        "--pin",
        metavar="SHA256",
        help="sha256:<hex> of the unit's TLS key, as 'veriscope-tool provision' printed it: accept only that key",
    )
    tls.add_argument("--client-cert", metavar="FILE", help="a client certificate, for a unit that requires mTLS")
    tls.add_argument("--client-key", metavar="FILE", help="the client certificate's private key")
    tls.add_argument(
        "--tls-name",
        metavar="NAME",
        help="the name the unit's certificate must carry (default veriscope-unit; a device id accepts that unit only)",
    )
    parser.add_argument("--json", action="store_true", default=False, help="print machine-readable JSON to stdout")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    p = _command(
        sub,
        "devices",
        "list the Veriscope units on the local network (no --device needed)",
        "Listen for Veriscope units announcing themselves over mDNS/DNS-SD (_veriscope._tcp) on the\n"
        "local network, and list them with the address to give --device. Finding none is not an\n"
        "error (exit 0): the output says what to check. A unit is announced when its daemon listens\n"
        "on the network (server.listen 0.0.0.0:50051; 127.0.0.1 is seen from its own machine only)\n"
        "and its [discovery] is enabled, the default.\n"
        "With --json: [{device_id, address, addresses, port, model, software_version, api_version,\n"
        "model_version, tls, simulated}], sorted by device_id; [] when none answered.",
        "  veriscope devices\n"
        "  veriscope devices --timeout 5 --json\n"
        "  veriscope --device \"$(veriscope devices --json | jq -r '.[0].address')\" info",
        cmd_devices,
    )
    p.set_defaults(offline=True)
    p.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_timeout_arg,
        default=argparse.SUPPRESS,
        help=f"how long to listen for units (default: {DISCOVERY_TIMEOUT_S:g} s)",
    )
    p.add_argument_group("common options (also accepted before the command)").add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print machine-readable JSON"
    )

    p = _command(
        sub,
        "info",
        "show the unit's identity, versions and item types",
        "Show the unit's serial number, software and model versions, hardware, capabilities,\n"
        "and the item types it can authenticate with the regions each one needs.\n"
        "With --json: {device_id, software_version, model: {name, version, sha256}, item_types:\n"
        "[{name, regions: [region names], region_details: [...]}], signing_public_key, ...};\n"
        "signing_public_key is the PEM of the key that signs certificates of authenticity: save it\n"
        "to a file for 'veriscope verify-certificate --trust'.",
        "  veriscope info\n  veriscope --device 10.0.0.7:50051 info --json",
        cmd_info,
    )
    _add_common(p)

    p = _command(
        sub,
        "status",
        "show the unit's operating status",
        "Show whether the unit is ready, which scan owns the camera, the controller board,\n"
        "temperature, focus position and free storage.",
        "  veriscope status\n  veriscope status --json",
        cmd_status,
    )
    _add_common(p)

    p = _command(
        sub,
        "models",
        "list the installed models",
        "List the authentication models installed on the unit, the active one first.",
        "  veriscope models\n  veriscope models --json",
        cmd_models,
    )
    _add_common(p)

    p = _command(
        sub,
        "scan",
        "scan the item under the lens and print the verdict",
        "Scan the item under the lens with the unit's camera: every required region is captured\n"
        "and checked by the quality gate, retaken when it fails (the hints appear on stderr),\n"
        "then the unit decides AUTHENTIC or UNVERIFIED. Ctrl-C cancels the scan on the unit.\n"
        "With --json: {scan_id, item_type, verdict, reason, score, model: {name, version},\n"
        "regions: [{region, score, images: [{image_id, score, quality: {ok, issues}}]}], ...}.",
        "  veriscope scan --item-type tote-classic\n"
        "  veriscope scan --item-type tote-classic --partner-item-id listing-4711 --json > verdict.json\n"
        "  veriscope scan --item-type tote-classic --max-retakes 0\n"
        "  veriscope scan --item-type tote-classic --interactive     handheld: wait for Enter before each region",
        cmd_scan,
    )
    p.add_argument("--item-type", required=True, type=_name_arg, help="the item type (see 'veriscope info')")
    p.add_argument("--partner-item-id", metavar="ID", help="your own id for the item, at most 128 characters")
    p.add_argument(
        "--max-retakes",
        metavar="N",
        type=_int_arg(0, 1000),
        default=3,
        help="how often a region may be retaken after failing the quality gate (default: 3)",
    )
    p.add_argument(
        "-i",
        "--interactive",
        action="store_true",
        help="before each capture, say where to place the scanner and wait for Enter",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    _add_common(p)

    p = _command(
        sub,
        "analyze",
        "authenticate an item from PNG or JPEG files",
        "Authenticate an item from images taken elsewhere: create a scan, upload each file\n"
        "(PNG or JPEG, at most 32 MiB) for its region, and print the verdict. Give --image once\n"
        "per image; a region that needs two images takes two --image options.\n"
        "With --json: the same object as 'veriscope scan --json'.",
        "  veriscope analyze --item-type tote-classic --image canvas=canvas1.png --image canvas=canvas2.png \\\n"
        "      --image handle=handle.jpg\n"
        "  veriscope analyze --item-type tote-classic --image canvas=c.png --json",
        cmd_analyze,
    )
    p.add_argument("--item-type", required=True, type=_name_arg, help="the item type (see 'veriscope info')")
    p.add_argument(
        "--image",
        metavar="REGION=PATH",
        action="append",
        required=True,
        type=parse_image_arg,
        help="an image file and the region it shows; repeat for every image",
    )
    p.add_argument("--partner-item-id", metavar="ID", help="your own id for the item, at most 128 characters")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    _add_common(p)

    p = _command(
        sub,
        "scans",
        "list scans, newest first",
        "List the unit's scans, newest first, one page at a time (or all with --all).\n"
        "With --json: a list of {scan_id, item_type, partner_item_id, state, verdict, reason, score,\n"
        "create_time, label}; the next page token, if any, is printed on stderr.",
        "  veriscope scans\n"
        "  veriscope scans --page-size 20 --page-token TOKEN\n"
        "  veriscope scans --all --filter 'verdict = UNVERIFIED' --json",
        cmd_scans,
    )
    p.add_argument("--page-size", metavar="N", type=_int_arg(1, MAX_PAGE_SIZE), help="scans per page (default: 50)")
    p.add_argument("--page-token", metavar="TOKEN", help="continue after the page that returned TOKEN")
    p.add_argument("--all", action="store_true", help="fetch every page")
    p.add_argument(
        "--filter",
        metavar="EXPR",
        help="conditions joined by AND on item_type, partner_item_id, state, verdict, label (=, !=) or create_time "
        "(<, >=, ...)",
    )
    _add_common(p)

    p = _command(
        sub,
        "scan-get",
        "show one scan, with its verdict once completed",
        "Show one scan: its state, the progress of each region, every image's quality, and the\n"
        "verdict once it is completed. SCAN_ID may also be given as scans/SCAN_ID.",
        "  veriscope scan-get 01HV3K9TQ4\n  veriscope get 01HV3K9TQ4 --json",
        cmd_scan_get,
        aliases=["get"],
    )
    p.add_argument("scan_id", metavar="SCAN_ID", type=parse_scan_id_arg, help="the scan's id")
    _add_common(p)

    p = _command(
        sub,
        "explain",
        "save heat-maps of why a completed scan got its verdict",
        "Save the evidence behind a completed scan's verdict into DIR (created if missing):\n"
        "  <region>-<image_id>.png  one heat-map per analysed image: the image as the model saw it,\n"
        "                           each tile tinted by its score: red = counterfeit-like, amber =\n"
        "                           at the threshold, green = genuine-like, grey hatched = material\n"
        "                           the model does not recognise\n"
        f"  {EXPLANATION_FILE}         tile scores and familiarity (rows of columns) of every image, the\n"
        "                           thresholds, tile positions, and each region's reasons in words\n"
        "Existing files of the same names are replaced. SCAN_ID may also be given as scans/SCAN_ID.\n"
        "The scan must be COMPLETED (FAILED_PRECONDITION otherwise, exit 1).\n"
        "With --json: {scan_id, directory, heatmaps: [paths], explanation: path}.",
        "  veriscope explain 01HV3K9TQ4 --out ./why\n  veriscope explain scans/01HV3K9TQ4 --out /tmp/why --json",
        cmd_explain,
    )
    p.add_argument("scan_id", metavar="SCAN_ID", type=parse_scan_id_arg, help="the scan's id")
    p.add_argument(
        "--out", metavar="DIR", type=Path, required=True, help="directory to write the heat-maps and explanation into"
    )
    _add_common(p)

    p = _command(
        sub,
        "certificate",
        "save the signed certificate of authenticity of a completed scan",
        "Save the certificate of authenticity of a completed scan to FILE, byte for byte as the unit\n"
        "signed it (Ed25519) when the scan completed. It names the unit, the item type, your partner\n"
        "item id, the verdict with its reason and score, the model, the SHA-256 of every image and the\n"
        "times. A certificate of an UNVERIFIED item says that it could NOT be verified, and why.\n"
        "Keep FILE unchanged: any edit, even of whitespace, makes it invalid. Anyone can check it\n"
        "offline with 'veriscope verify-certificate FILE --trust unit.pem', where unit.pem is the\n"
        "unit's public key: the signing_public_key of 'veriscope info --json'.\n"
        "The scan must be COMPLETED (FAILED_PRECONDITION otherwise, exit 1). A FILE that cannot be\n"
        "written is refused before anything is fetched (exit 2).\n"
        "With --json: {scan_id, path, size_bytes, signing_key_sha256}.",
        "  veriscope certificate 01HV3K9TQ4 --out tote.cert\n"
        "  veriscope --device 10.0.0.7:50051 info --json | jq -r .signing_public_key > unit.pem\n"
        "  veriscope --device 10.0.0.7:50051 certificate scans/01HV3K9TQ4 --out tote.cert --json",
        cmd_certificate,
    )
    p.add_argument("scan_id", metavar="SCAN_ID", type=parse_scan_id_arg, help="the scan's id")
    p.add_argument("--out", metavar="FILE", type=Path, required=True, help="the file to write the certificate to")
    _add_common(p)

    p = _command(
        sub,
        "verify-certificate",
        "check a certificate of authenticity offline (no unit needed)",
        "Check a certificate file offline, without any unit: that every byte is as the unit signed\n"
        "it, and that the key that signed it is one you trust. --trust is a PEM file holding either\n"
        "the unit's public key (the signing_public_key of 'veriscope info --json'), or the\n"
        "certificate of a fleet CA that issued the unit's signer certificate.\n\n"
        "A valid certificate prints its verdict, item, unit and time, and exits 0, whatever the\n"
        "verdict: a valid certificate of an UNVERIFIED item is still valid, so read the verdict.\n"
        "A certificate that is not valid exits 1 and says why, for example:\n"
        "  signature does not match: the certificate was altered or signed by another key\n"
        "  key not trusted: ... signed by key sha256 ..., not by the trusted key ...\n"
        "  not canonical: ... the file was reformatted or edited\n"
        "  unknown format: not JSON ... (truncated, damaged or not a certificate)\n"
        "A FILE or --trust that cannot be read, or a --trust that is not a PEM key or certificate,\n"
        "also exits 1 (reason unreadable or bad_trust).\n"
        "With --json: {valid: true, file, certificate: {format, scan_id, device_id, item_type,\n"
        "partner_item_id, verdict, reason, score, threshold, summary, statement, model, images: [{image_id,\n"
        "region, origin, sha256, accepted, used}], create_time, complete_time, issue_time,\n"
        "signing_key_sha256, signing_public_key, signer_certificate, trusted_by}}, or\n"
        "{valid: false, file, reason, error} where reason is one of unknown_format, not_canonical,\n"
        "malformed, key_not_trusted, signature_mismatch, unreadable, bad_trust.",
        "  veriscope verify-certificate tote.cert --trust unit.pem\n"
        "  veriscope verify-certificate tote.cert --trust fleet-ca.crt --json",
        cmd_verify_certificate,
    )
    p.set_defaults(offline=True)
    p.add_argument("file", metavar="FILE", type=Path, help="the certificate file")
    p.add_argument(
        "--trust",
        metavar="PEM",
        type=Path,
        required=True,
        help="PEM file of the unit's public key, or of a fleet CA certificate",
    )
    p.add_argument_group("common options (also accepted before the command)").add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print machine-readable JSON"
    )

    p = _command(
        sub,
        "cancel",
        "cancel a scan in progress",
        "Cancel a scan that has not completed, and release the camera.",
        "  veriscope cancel 01HV3K9TQ4",
        cmd_cancel,
    )
    p.add_argument("scan_id", metavar="SCAN_ID", type=parse_scan_id_arg, help="the scan's id")
    _add_common(p)

    p = _command(
        sub,
        "label",
        "record an expert's ground truth about a scanned item, for training",
        "Record what an expert found the item of a COMPLETED scan to be: genuine or counterfeit.\n"
        "The label is stored with the scan and selects it for 'veriscope export'; it never changes\n"
        "the verdict or the certificate. Labelling again replaces the label; 'none' (or --clear)\n"
        "removes a wrong one. SCAN_ID may also be given as scans/SCAN_ID. A scan that is not\n"
        "COMPLETED gives FAILED_PRECONDITION (exit 1).\n"
        "With --json: the scan, as 'veriscope scan-get --json', with its label and label_time.",
        "  veriscope label 01HV3K9TQ4 genuine\n"
        "  veriscope label 01HV3K9TQ4 counterfeit --json\n"
        "  veriscope label 01HV3K9TQ4 --clear",
        cmd_label,
    )
    p.add_argument("scan_id", metavar="SCAN_ID", type=parse_scan_id_arg, help="the scan's id")
    p.add_argument("label", metavar="LABEL", nargs="?", choices=sorted(LABELS), help="genuine, counterfeit or none")
    p.add_argument("--clear", action="store_true", help="remove the scan's label (the same as LABEL none)")
    _add_common(p)

    p = _command(
        sub,
        "export",
        "write labelled scans as a training data set",
        "Write every COMPLETED scan that has a label (see 'veriscope label') into DIR, in the layout\n"
        "'python -m veriscope.training train --data DIR' and 'make train TRAIN_DATA=DIR' read:\n"
        "  DIR/<material>/<genuine|counterfeit>/<scan_id>-<region>/<image_id>.png\n"
        "  DIR/manifest.json   the device, export time, --since, the filter, and per item its scan,\n"
        "                      partner item id, region, material, label, verdict, model and SHA-256s\n"
        "Each region of a scan is one item, holding its images that passed the quality gate; stored\n"
        "JPEGs are converted to PNG on the unit. Run it again at any time: files already in place\n"
        "with the right SHA-256 are skipped, files are written to a temporary name and renamed (an\n"
        "interrupted export leaves no partial PNG and resumes), and items whose label changed or was\n"
        "removed are moved or deleted. --since TIME (RFC 3339, or a date for its midnight UTC) takes\n"
        "only scans created at or after it. No labelled scan is not an error (exit 0).\n"
        "Progress goes to stderr unless --json or --quiet.\n"
        "With --json: {out, scans, items, images, skipped}: images written now, and already in place.",
        "  veriscope export --out build/labelled\n"
        "  veriscope --device 10.0.0.7:50051 export --out build/labelled --since 2026-05-01 --json\n"
        "  make train TRAIN_DATA=build/labelled",
        cmd_export,
    )
    p.add_argument("--out", metavar="DIR", type=Path, required=True, help="the data set's root folder")
    p.add_argument(
        "--since", metavar="TIME", type=_since_arg, help="only scans created at or after TIME (RFC 3339 or a date)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    _add_common(p)

    p = _command(
        sub,
        "calibrate",
        "calibrate the camera from the white reference target (technicians)",
        "Calibrate the camera's flat field and white balance from the white reference target:\n"
        "place it flat under the lens, covering the whole field, then run this command. For each\n"
        "lighting channel the unit auto-exposes the target, averages several frames, and stores\n"
        "the result; from then on every capture is corrected and its metadata names the calibration.\n"
        "Calibrate after installing or replacing the camera, LEDs or cover glass, and whenever the\n"
        "corners of captures look darker or the colours drift.\n\n"
        "The numbers: VIGNETTING is how much darker the corners were than the centre before\n"
        "correction (CORNERS is the ratio); WHITE BALANCE are the red/green/blue gains that make the\n"
        "white target neutral (green is 1). A target that is not white, not flat or badly exposed is\n"
        "refused (exit 1) with what is wrong, for example 'target not uniform: corner/centre ratio\n"
        "0.31'; the previous calibration then stays in use. --show prints the current calibration.\n"
        "With --json: {state, calibration_id, create_time, device_id, camera_model, frames,\n"
        "vignetting_depth, white_balance_gains: {red, green, blue}, channels: [...], storage_path, problem}.",
        "  veriscope --device 10.0.0.7:50051 calibrate\n"
        "  veriscope calibrate --lighting white_ring --lighting raking --frames 16\n"
        "  veriscope calibrate --show --json",
        cmd_calibrate,
    )
    p.add_argument(
        "--lighting",
        action="append",
        choices=sorted(CALIBRATABLE),
        help="a lighting channel to calibrate; repeat for several (default: those the model uses, at least white_ring)",
    )
    p.add_argument(
        "--frames", metavar="N", type=_int_arg(1, 64), help="frames averaged per lighting channel, 1..64 (default: 8)"
    )
    p.add_argument(
        "--show", "--status", action="store_true", help="print the current calibration instead of calibrating"
    )
    p.add_argument("-i", "--interactive", action="store_true", help="wait for Enter once the target is in place")
    p.add_argument("-q", "--quiet", action="store_true", help="no instructions or progress on stderr")
    _add_common(p)

    p = _command(
        sub,
        "capture",
        "capture one frame to a PNG or JPEG file",
        "Capture one full-resolution frame outside any scan (auto-focus stays where it is) and\n"
        "write it to FILE: PNG for .png, JPEG for .jpg/.jpeg. The quality gate's verdict and the\n"
        "settings used are printed. A FILE that cannot be written is refused before capturing\n"
        "(exit 2); a scan that owns the camera gives FAILED_PRECONDITION (exit 1).\n"
        "With --json: {path, quality: {ok, issues: [names], hints, ...}, settings: {exposure_us,\n"
        "analogue_gain, lighting, led_duty_pct, focus_steps, lens_position}, metadata: {...}, format, size_bytes}.",
        "  veriscope capture --out frame.png\n"
        "  veriscope --device 10.0.0.7:50051 capture --out uv.jpg --lighting uv --json",
        cmd_capture,
    )
    p.add_argument("--out", metavar="FILE", type=Path, required=True, help="the file to write (.png, .jpg, .jpeg)")
    p.add_argument("--lighting", choices=list(LIGHTING_NAMES), help="the lighting channel (default: white_ring)")
    _add_common(p)

    p = _command(
        sub,
        "preview",
        "save live preview frames to a directory",
        "Stream low-resolution JPEG preview frames and save them into DIR (created if missing) as\n"
        "frame-000000.jpg, frame-000001.jpg, ... in the order received; files of the same names are\n"
        "replaced. Progress goes to stderr. A client slower than --fps gets the newest frames: the\n"
        "frames it missed are dropped on the unit (counted in 'dropped'), never queued.\n"
        "With --json: {directory, frames, files: [paths], width_px, height_px, fps, requested_fps,\n"
        "dropped, first_sequence, last_sequence, lighting, elapsed_s}.",
        "  veriscope preview --out ./live --frames 50\n"
        "  veriscope --device 10.0.0.7:50051 preview --out /tmp/p --frames 300 --fps 15 --width 800 --json",
        cmd_preview,
    )
    p.add_argument("--out", metavar="DIR", type=Path, required=True, help="directory to save the frames into")
    p.add_argument(
        "--frames", metavar="N", type=_int_arg(1, 1_000_000), default=100, help="frames to save (default: 100)"
    )
    p.add_argument("--fps", metavar="FPS", type=_fps_arg, help="frames per second to aim for, 1..30 (default: 10)")
    p.add_argument("--width", metavar="PX", type=_int_arg(64, 1280), help="frame width, 64..1280 (default: 640)")
    p.add_argument("--lighting", choices=list(LIGHTING_NAMES), help="the lighting channel (default: white_ring)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    _add_common(p)

    sim = sub.add_parser(
        "sim",
        help="control a simulated unit: place, get, clear, sources",
        description="Control the virtual item under a simulated unit's lens (a daemon started with --simulate).",
        epilog="examples:\n  veriscope sim place --item-type tote-classic --source counterfeit-a --seed 7\n"
        "  veriscope sim sources",
        formatter_class=_formatter,
    )
    sim_sub = sim.add_subparsers(title="sim commands", metavar="SIM_COMMAND", required=True)
    p = _command(
        sim_sub,
        "place",
        "place a virtual item under the lens",
        "Place a virtual item under the lens, replacing any item there. The same item type,\n"
        "source and seed always make the same item.",
        "  veriscope sim place --item-type tote-classic --source genuine --seed 1\n"
        "  veriscope sim place --item-type tote-classic --source counterfeit-a --seed 7 --json",
        cmd_sim_place,
    )
    p.add_argument("--item-type", required=True, type=_name_arg, help="the item type")
    p.add_argument(
        "--source",
        default="genuine",
        type=_name_arg,
        help="'genuine' or a counterfeit source (see 'veriscope sim sources')",
    )
    p.add_argument(
        "--seed", type=_int_arg(0, 2**63 - 1), default=0, help="which individual item, 0..2^63-1 (default: 0)"
    )
    _add_common(p)
    p = _command(
        sim_sub,
        "get",
        "show the virtual item under the lens",
        "Show the virtual item under the lens.",
        "  veriscope sim get",
        cmd_sim_get,
    )
    _add_common(p)
    p = _command(
        sim_sub,
        "clear",
        "remove the virtual item",
        "Remove the virtual item, leaving an empty stage.",
        "  veriscope sim clear",
        cmd_sim_clear,
    )
    _add_common(p)
    p = _command(
        sim_sub,
        "sources",
        "list the materials and sources the simulator can make",
        "List the simulated materials, each with 'genuine' and its counterfeit sources; superfakes\n"
        "are so close to genuine that one poor image cannot tell them apart.",
        "  veriscope sim sources --json",
        cmd_sim_sources,
    )
    _add_common(p)
    return parser


def _version() -> str:
    from veriscope.sdk import __version__

    return __version__


# --- Main --------------------------------------------------------------------------------------------------------


def _fail(message: str) -> None:
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``veriscope`` command line and return its exit code (see ``veriscope --help``)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        _fail(str(exc))
        return EXIT_USAGE
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    try:
        if args.offline:
            data, text = args.run(None, args)
        else:
            with Client(
                args.device,
                timeout_s=args.timeout,
                token=args.token,
                ca=args.ca,
                pinned_key=args.pin,
                client_cert=args.client_cert,
                client_key=args.client_key,
                tls_server_name=args.tls_name,
            ) as client:
                data, text = args.run(client, args)
    except CommandFailed as exc:
        if args.json:
            print(out.to_json(exc.data), flush=True)
        _fail(str(exc))
        return exc.exit_code
    except (DeviceUnavailableError, DeadlineExceededError) as exc:
        # A plaintext client is turned away by a TLS unit with nothing but "Socket closed".
        hint = "" if args.offline or args.ca or args.pin else "; a unit that serves TLS needs --ca FILE or --pin SHA256"
        _fail(str(exc) if args.offline else f"{exc} (device {args.device}{hint})")
        return EXIT_UNREACHABLE
    except VeriscopeError as exc:
        _fail(str(exc))
        return EXIT_RPC_ERROR
    except (UsageError, ValueError, OSError) as exc:
        _fail(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _fail("interrupted")
        return EXIT_INTERRUPTED
    try:
        print(out.to_json(data) if args.json else text, flush=True)
    except BrokenPipeError:
        # The reader (``| head``, say) went away: not an error of ours. Point stdout at devnull so the
        # interpreter's final flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK
