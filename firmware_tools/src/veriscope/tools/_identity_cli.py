"""The ``ca`` and ``provision`` commands of ``veriscope-tool``: the fleet CA, and a unit's identity.

Exit status: 0 done (or nothing to do), 1 refused or failed (the message names
the file and the fix), 2 bad command line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from veriscope.tools.ca import CA_CERT_FILE, CA_DAYS, CA_KEY_FILE, CLIENT_DAYS, DEFAULT_CA_NAME, CaError, FleetCA

_PROVISION_EPILOG = """\
examples:
  veriscope-tool ca init --out /media/usb/fleet-ca
      once per fleet: the CA key (keep it offline) and certificate
  sudo -u veriscope veriscope-tool provision --data-dir /var/lib/veriscope --ca /media/usb/fleet-ca
      on the unit: keys, certificates, config.toml and a first admin token
  veriscope-tool provision --data-dir /var/lib/veriscope --ca /media/usb/fleet-ca --rotate
      a new TLS key and certificate (the old key is gone)
  veriscope-tool provision --device 10.0.0.7:50051 --pairing-code ABCD-EFGH-JKMN-PQRS \
      --fingerprint sha256:3f1c... --ca /media/usb/fleet-ca
      over the network, from a laptop, to a new unit in first-boot mode
      ('veriscope-device serve --first-boot'); the code and fingerprint are on its label

Run it again at any time: it changes only what is missing, issued by another CA,
or expiring within 30 days, and says 'nothing changed' otherwise. Restart the
daemon to use a changed identity. See device/docs/security.md.
"""


def add_commands(commands: Any) -> None:
    """Add ``ca`` and ``provision`` to the ``veriscope-tool`` subcommands."""
    ca = commands.add_parser(
        "ca",
        help="create the fleet CA, or issue client certificates for mTLS",
        description="The fleet CA vouches for every unit it provisions: clients check units against it.",
    )
    ca_commands = ca.add_subparsers(dest="ca_command", metavar="CA_COMMAND", required=True)
    init = ca_commands.add_parser(
        "init",
        help="create a fleet CA: a private key (mode 0600) and a self-signed CA certificate",
        description=f"Create {CA_KEY_FILE} and {CA_CERT_FILE} in --out. Refuses to overwrite an existing CA.",
    )
    init.add_argument("--out", required=True, type=Path, metavar="DIR", help="directory for the CA (created, 0700)")
    init.add_argument("--name", default=DEFAULT_CA_NAME, help=f"the CA's common name (default {DEFAULT_CA_NAME!r})")
    init.add_argument(
        "--key-type", choices=["p256", "ed25519"], default="p256", help="the CA key's algorithm (default p256)"
    )
    init.add_argument("--days", type=int, default=CA_DAYS, help=f"validity in days (default {CA_DAYS}, 20 years)")
    init.add_argument("--json", action="store_true", help="print what was created as JSON")
    init.set_defaults(run=_ca_init)
    client = ca_commands.add_parser(
        "client-cert",
        help="issue a client certificate (and a new key) for units that require mTLS",
        description="Write NAME.key (mode 0600) and NAME.crt to --out, for 'veriscope --client-cert/--client-key'.",
    )
    client.add_argument("--ca", required=True, type=Path, metavar="DIR", help="the fleet CA directory")
    client.add_argument("--name", required=True, help="who holds the certificate, e.g. laptop-7 (its CN)")
    client.add_argument("--out", required=True, type=Path, metavar="DIR", help="where to write the key and certificate")
    client.add_argument("--days", type=int, default=CLIENT_DAYS, help=f"validity in days (default {CLIENT_DAYS})")
    client.add_argument("--json", action="store_true", help="print the files written as JSON")
    client.set_defaults(run=_ca_client_cert)

    provision = commands.add_parser(
        "provision",
        help="give a unit its identity: keys, fleet-CA certificates, TLS config and an admin token",
        description="Provision the unit's data directory, on the unit (--data-dir), or a new unit in first-boot mode "
        "over the network (--device, with its pairing code and first-boot certificate fingerprint). Keys are made on "
        "the unit and never leave it; the fleet CA signs their requests. Idempotent: a second run changes nothing, "
        "and says so.",
        epilog=_PROVISION_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = provision.add_mutually_exclusive_group(required=True)
    where.add_argument("--data-dir", type=Path, metavar="DIR", help="the unit's data directory, on the unit")
    where.add_argument(
        "--device", metavar="HOST:PORT", help="a unit in first-boot mode, over the network (with --pairing-code)"
    )
    provision.add_argument("--pairing-code", metavar="CODE", help="with --device: the unit's one-time pairing code")
    provision.add_argument(
        "--fingerprint",
        metavar="SHA256",
        help="with --device: the SHA-256 of the unit's first-boot certificate, as it printed it; nothing is sent to "
        "a unit that presents another",
    )
    provision.add_argument("--ca", required=True, type=Path, metavar="DIR", help="the fleet CA directory")
    provision.add_argument(
        "--device-id", metavar="ID", help="the unit's id, when it has none yet (default VS-<random>)"
    )
    provision.add_argument(
        "--listen", metavar="HOST:PORT", help="server.listen to configure (default: as configured, else 0.0.0.0:50051)"
    )
    provision.add_argument(
        "--config", type=Path, metavar="FILE", help="the configuration file to write (default DATA_DIR/config.toml)"
    )
    provision.add_argument(
        "--require-client-cert",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="turn mTLS on (or off with --no-require-client-cert); default: as configured, else off",
    )
    provision.add_argument("--rotate", action="store_true", help="replace the TLS key with a new one")
    provision.add_argument(
        "--admin-token",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="create an admin API token when the unit has no active one, printed once (default: on)",
    )
    provision.add_argument("--json", action="store_true", help="print the report as JSON")
    provision.set_defaults(run=_provision)


def run(args: argparse.Namespace) -> int:
    """Run a command that :func:`add_commands` added."""
    code: int = args.run(args)
    return code


def _fail(message: str) -> int:
    print(f"veriscope-tool: error: {message}", file=sys.stderr)
    return 1


def _print_json(data: dict[str, Any]) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def _ca_init(args: argparse.Namespace) -> int:
    try:
        ca = FleetCA.create(args.out, name=args.name, key_type=args.key_type, days=args.days)
    except CaError as exc:
        return _fail(str(exc))
    key_path, cert_path = ca.directory / CA_KEY_FILE, ca.directory / CA_CERT_FILE
    if args.json:
        _print_json(
            {
                "name": ca.name,
                "key_file": str(key_path),
                "certificate_file": str(cert_path),
                "key_type": args.key_type,
                "not_valid_after": ca.certificate.not_valid_after_utc.isoformat(),
            }
        )
        return 0
    print(f"created the fleet CA {ca.name}, valid until {ca.certificate.not_valid_after_utc:%Y-%m-%d}")
    print(f"  {key_path}  private key (mode 0600): keep it offline, it makes units and clients the fleet trusts")
    print(f"  {cert_path}  certificate: give it to clients ('veriscope --ca {cert_path}')")
    print(f"next, on each unit: veriscope-tool provision --data-dir DATA_DIR --ca {ca.directory}")
    return 0


def _ca_client_cert(args: argparse.Namespace) -> int:
    from veriscope.tools.ca import create_client_identity

    try:
        ca = FleetCA.load(args.ca)
        key_path, cert_path = create_client_identity(ca, args.name, args.out, days=args.days)
    except CaError as exc:
        return _fail(str(exc))
    if args.json:
        _print_json({"name": args.name, "key_file": str(key_path), "certificate_file": str(cert_path)})
        return 0
    print(f"issued a client certificate for {args.name!r} by {ca.name}")
    print(f"  {key_path}  private key (mode 0600)")
    print(f"  {cert_path}  certificate")
    print(f"use it with: veriscope --ca {args.ca / CA_CERT_FILE} --client-cert {cert_path} --client-key {key_path} ...")
    return 0


def _provision(args: argparse.Namespace) -> int:
    if args.device is not None:
        return _provision_device(args)
    if args.pairing_code or args.fingerprint:
        print("veriscope-tool: error: --pairing-code and --fingerprint go with --device", file=sys.stderr)
        return 2
    try:
        from veriscope.tools.provision import ProvisionError, provision_data_dir
    except ImportError as exc:
        return _fail(
            f"provision --data-dir runs on the unit and needs the veriscope-device package there ({exc.name} is "
            "missing; pip install 'veriscope-tools[unit]')"
        )
    # The steps below report what they did; the device modules' own log lines would only repeat it.
    logging.getLogger("veriscope.device").addHandler(logging.NullHandler())
    owner = _owner(args.data_dir)
    if owner is not None and owner != os.geteuid():
        print(
            f"veriscope-tool: warning: {args.data_dir} belongs to another user than this command runs as; the keys "
            "it makes are readable by their owner only, so run provision as the daemon's user (sudo -u USER ...)",
            file=sys.stderr,
        )
    try:
        ca = FleetCA.load(args.ca)
        report = provision_data_dir(
            args.data_dir,
            ca,
            device_id=args.device_id,
            listen=args.listen,
            config_file=args.config,
            require_client_cert=args.require_client_cert,
            rotate=args.rotate,
            admin_token=args.admin_token,
        )
    except (CaError, ProvisionError) as exc:
        return _fail(str(exc))
    if args.json:
        _print_json(report.to_dict())
        return 0
    print(f"unit {report.device_id}, data directory {report.data_dir}, fleet CA {ca.name}")
    width = max(len(step.item) for step in report.steps)
    for step in report.steps:
        print(f"  {step.action:<9}  {step.item:<{width}}  {step.path}" + (f": {step.detail}" if step.detail else ""))
    print(f"TLS key pin: {report.tls_key_pin}   (for 'veriscope --pin'; clients with --ca do not need it)")
    if report.admin_token:
        print(f"admin token, shown this once, store it now: {report.admin_token}")
    if report.changed:
        print(f"done. Start (or restart) the unit with: veriscope-device serve --config {report.config_file}")
    else:
        print(f"nothing changed: unit {report.device_id} is already provisioned by {ca.name}")
    return 0


def _owner(path: Path) -> int | None:
    """The user id owning ``path``, or None when it does not exist yet."""
    try:
        return path.stat().st_uid
    except OSError:
        return None


def _provision_device(args: argparse.Namespace) -> int:
    from veriscope.tools._provision_device import DeviceProvisionError, provision_device

    misplaced = [flag for flag, value in (("--device-id", args.device_id), ("--config", args.config)) if value]
    if args.rotate:
        misplaced.append("--rotate")
    if misplaced:
        print(
            f"veriscope-tool: error: {', '.join(misplaced)} cannot be used with --device: a unit in first-boot mode "
            "chooses its own device id and configuration file, and has no key to rotate yet (re-provision a "
            "provisioned unit on it with --data-dir)",
            file=sys.stderr,
        )
        return 2
    if not args.pairing_code or not args.fingerprint:
        print("veriscope-tool: error: --device needs --pairing-code and --fingerprint", file=sys.stderr)
        return 2
    try:
        ca = FleetCA.load(args.ca)
        report = provision_device(
            args.device,
            args.pairing_code,
            args.fingerprint,
            ca,
            listen=args.listen,
            require_client_cert=bool(args.require_client_cert),
            admin_token=args.admin_token,
        )
    except ValueError as exc:
        print(f"veriscope-tool: error: {exc}", file=sys.stderr)
        return 2
    except (CaError, DeviceProvisionError) as exc:
        return _fail(str(exc))
    if args.json:
        _print_json(report.to_dict())
        return 0
    if not report.changed:
        print(f"nothing changed: unit {report.device_id} at {report.address} is already provisioned by {ca.name}")
        return 0
    print(f"provisioned unit {report.device_id} at {report.address} over the network, fleet CA {ca.name}")
    print(f"  it serves TLS on {report.listen} with {report.config_file}, once it has restarted")
    print(f"TLS key pin: {report.tls_key_pin}   (for 'veriscope --pin'; clients with --ca do not need it)")
    print(f"signing key sha256: {report.signing_key_sha256}")
    if report.admin_token:
        print(f"admin token, shown this once, store it now: {report.admin_token}")
    print(f"check it: veriscope --device {report.address} --ca {args.ca / CA_CERT_FILE} --token ... info")
    return 0
