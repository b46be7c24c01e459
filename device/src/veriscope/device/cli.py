"""The ``veriscope-device`` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from veriscope.device import __version__
from veriscope.device.config import load_config
from veriscope.device.errors import VeriscopeError

_EPILOG = """\
examples:
  veriscope-device serve --simulate
      a simulated unit on 127.0.0.1:50051 with the bundled demo model
  veriscope-device serve --simulate --listen 127.0.0.1:0 --data-dir /tmp/vs
      pick a free port (printed on stdout) and keep data in /tmp/vs
  veriscope-device serve --config /etc/veriscope/device.toml
  veriscope-device serve --simulate --auth required --data-dir /tmp/vs
      every call but health checks needs an API token: make one, on the running unit too,
      with 'veriscope-tool tokens create --data-dir /tmp/vs --role admin'
  veriscope-device serve --simulate --listen 0.0.0.0:50051 --data-dir /var/lib/veriscope
      reachable from the LAN, and announced over mDNS for 'veriscope devices'; a listener
      on the network serves TLS only, so the data dir must hold the identity that
      'veriscope-tool provision' installs (or give --tls-cert and --tls-key)
  veriscope-device serve --config /var/lib/veriscope/config.toml
      a unit as 'veriscope-tool provision' configured it
  veriscope-device serve --first-boot --listen 0.0.0.0:50051 --data-dir /var/lib/veriscope
      a new unit: serves only health checks and ProvisioningService (self-signed TLS, pairing
      code) until 'veriscope-tool provision --device ...' provisions it, then exits with 75;
      once provisioned, the same command serves normally with DATA_DIR/config.toml
  veriscope-device pairing-code --data-dir /var/lib/veriscope
      a new pairing code and the first-boot certificate fingerprint, for the unit's label

configuration:
  A TOML file (--config) with sections [server], [device], [camera],
  [controller], [model], [scan], [retention], [exposure], [discovery], [tls], [auth], [update].
  Environment variables override it:
  VERISCOPE_<SECTION>__<KEY>, e.g. VERISCOPE_SERVER__LISTEN=127.0.0.1:6000.
  Command-line flags override both.

exit codes:
  0  stopped cleanly (SIGTERM or Ctrl-C drains in-flight RPCs first)
  2  bad command line or configuration (the message names the bad key), including a
     listener on the network without TLS
  1  any other start-up failure (model bundle, hardware, certificate signing key,
     TLS key or certificate)
  75 first-boot mode ended: the unit is provisioned; start it again (systemd
     Restart=on-failure does) to serve in normal mode
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="veriscope-device",
        description="The Veriscope device daemon: serves the scanner's gRPC API.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"veriscope-device {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser(
        "serve",
        help="run the daemon",
        description="Run the daemon until SIGTERM. Prints the address it listens on.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "--simulate", action="store_true", help="use only simulated hardware and serve SimulationService"
    )
    serve.add_argument("--listen", metavar="HOST:PORT", help="address to listen on (default 127.0.0.1:50051)")
    serve.add_argument(
        "--data-dir",
        metavar="DIR",
        type=Path,
        help="where scans, images and the signing key are stored (default ./data)",
    )
    serve.add_argument("--config", metavar="FILE", type=Path, help="TOML configuration file")
    serve.add_argument(
        "--no-advertise",
        action="store_true",
        help="do not announce the unit on the LAN over mDNS (the same as [discovery] enabled = false)",
    )
    serve.add_argument(
        "--auth",
        choices=["auto", "required", "off"],
        help="'required': every call but health checks needs an API token ('veriscope-tool tokens create'); "
        "'off': none does; 'auto' (default, [auth] mode): required unless --listen is loopback or unix:",
    )
    serve.add_argument(
        "--first-boot",
        action="store_true",
        help="when the unit has no TLS identity yet, serve only health checks and ProvisioningService, over TLS with "
        "a self-signed first-boot certificate, to a technician with the pairing code; exit with 75 once provisioned. "
        "A provisioned unit serves normally (with DATA_DIR/config.toml unless --config is given)",
    )
    serve.add_argument(
        "--update-trust",
        metavar="PUBFILE",
        type=Path,
        help="the fleet's update public key (PEM); without it the unit refuses updates ([update] trust_key)",
    )
    pairing = sub.add_parser(
        "pairing-code",
        help="make a new first-boot pairing code and print it with the first-boot certificate fingerprint",
        description="Make a new one-time pairing code for first-boot provisioning (any older unused code stops "
        "working) and print it with the fingerprint of the unit's first-boot certificate, for the unit's label. "
        "Only the code's hash is stored (DATA_DIR/auth/pairing-code). Run it as the daemon's user.",
    )
    pairing.add_argument("--data-dir", metavar="DIR", type=Path, required=True, help="the unit's data directory")
    pairing.add_argument("--json", action="store_true", help="print the code and fingerprint as JSON")
    tls = serve.add_argument_group(
        "TLS",
        "A listener that is not loopback or unix: serves TLS only. Without these flags the daemon uses\n"
        "[tls] of the configuration, else the identity that 'veriscope-tool provision' installed in\n"
        "DATA_DIR/keys. See device/docs/security.md.",
    )
    tls.add_argument("--tls-cert", metavar="FILE", type=Path, help="the unit's certificate, PEM ([tls] cert_file)")
    tls.add_argument("--tls-key", metavar="FILE", type=Path, help="its private key, PEM, mode 0600 ([tls] key_file)")
    tls.add_argument(
        "--client-ca",
        metavar="FILE",
        type=Path,
        help="require client certificates issued by this CA (mTLS; [tls] client_ca_file, require_client_cert)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``veriscope-device`` command line and return its exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "pairing-code":
        return _pairing_code(args.data_dir, as_json=args.json)
    try:
        config = load_config(args.config)
        if args.first_boot and args.config is None:
            # Once provisioned, the same command line serves with the configuration provisioning wrote.
            data_dir = args.data_dir if args.data_dir else Path(config.device.data_dir)
            written = data_dir.expanduser() / "config.toml"
            if written.is_file():
                config = load_config(written)
        overrides: dict[str, dict[str, object]] = {}
        if args.listen:
            overrides["server"] = {"listen": args.listen}
        if args.data_dir:
            overrides["device"] = {"data_dir": str(args.data_dir)}
        if args.no_advertise:
            overrides["discovery"] = {"enabled": False}
        if args.auth:
            overrides["auth"] = {"mode": args.auth}
        tls: dict[str, object] = {}
        if args.tls_cert or args.tls_key:
            tls |= {"cert_file": str(args.tls_cert.resolve()) if args.tls_cert else ""}
            tls |= {"key_file": str(args.tls_key.resolve()) if args.tls_key else ""}
        if args.client_ca:
            tls |= {"client_ca_file": str(args.client_ca.resolve()), "require_client_cert": True}
        if tls:
            overrides["tls"] = tls
        if args.update_trust:
            overrides["update"] = {"trust_key": str(args.update_trust.resolve())}
        if overrides:
            config = config.with_overrides(**overrides)
        if args.simulate:
            config = config.with_overrides(simulate=True)  # type: ignore[arg-type]
    except VeriscopeError as exc:
        print(f"veriscope-device: error: {exc}", file=sys.stderr)
        return 2
    from veriscope.device import allocator
    from veriscope.device.server import serve

    allocator.tune()  # before the server's threads exist, so they share the bounded arenas
    try:
        return asyncio.run(serve(config, first_boot=args.first_boot))
    except VeriscopeError as exc:
        print(f"veriscope-device: error: {exc}", file=sys.stderr)
        return 2 if exc.__class__.__name__ == "ConfigError" else 1


def _pairing_code(data_dir: Path, *, as_json: bool) -> int:
    """``veriscope-device pairing-code``: a new code and the first-boot fingerprint; 1 when the unit is provisioned."""
    from veriscope.device.auth.pairing import PairingCodeStore
    from veriscope.device.config import Config
    from veriscope.device.provisioning import FirstBootIdentity, is_provisioned

    data_dir = data_dir.expanduser()
    try:
        if is_provisioned(Config(), data_dir):
            print(
                f"veriscope-device: error: the unit in {data_dir} is provisioned; a pairing code is for first boot only",
                file=sys.stderr,
            )
            return 1
        data_dir.mkdir(parents=True, exist_ok=True)
        identity = FirstBootIdentity.load_or_create(data_dir)
        code = PairingCodeStore(data_dir).create()
    except (VeriscopeError, OSError) as exc:
        print(f"veriscope-device: error: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps({"pairing_code": code, "fingerprint": identity.fingerprint}, indent=2))
    else:
        print(f"pairing code: {code}")
        print(f"fingerprint:  {identity.fingerprint}")
        print(
            f"provision with: veriscope-tool provision --device ADDR --pairing-code {code} "
            f"--fingerprint {identity.fingerprint} --ca CA_DIR"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
