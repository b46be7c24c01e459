"""Daemon configuration: a TOML file, overridden by environment variables, validated at start.

Every key has a default, so an empty file (or none) is a valid configuration.
Environment variables override the file: ``VERISCOPE_<SECTION>__<KEY>``, for
example ``VERISCOPE_SERVER__LISTEN=127.0.0.1:6000`` or
``VERISCOPE_CAMERA__KIND=simulated``. Values from the environment are parsed
as TOML values when they parse (``42``, ``true``, ``"text"``) and taken as
strings otherwise.

Validation happens once, at start; a :class:`~veriscope.device.errors.ConfigError`
names the bad key (``camera.width``) and says what was expected.
"""

from __future__ import annotations

import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from veriscope.device.errors import ConfigError

ENV_PREFIX = "VERISCOPE_"


@dataclass(frozen=True)
class ServerConfig:
    """The gRPC listener."""

    listen: str = "127.0.0.1:50051"
    """HOST:PORT to listen on (port 0 picks a free port), or ``unix:PATH``. Only a loopback host or a unix socket
    may serve plaintext; any other listener needs [tls]."""
    max_message_mb: int = 64
    """Largest request or response message, in MiB (a 12 MP PNG is about 25 MiB)."""
    grace_period_s: float = 10.0
    """How long SIGTERM waits for in-flight RPCs before cancelling them, in seconds."""
    max_concurrent_rpcs: int = 64
    """RPCs served at once; more are refused with RESOURCE_EXHAUSTED."""


@dataclass(frozen=True)
class DeviceConfig:
    """The unit's identity and storage."""

    id: str = ""
    """Serial number; empty derives one from the data directory (stable across restarts)."""
    data_dir: str = "data"
    """Where scans, images and keys are stored."""


@dataclass(frozen=True)
class CameraConfig:
    """The camera."""

    kind: str = "simulated"
    """Which implementation: "simulated", "picamera" (a Raspberry Pi camera) or "replay" (frames from a folder)."""
    width: int = 2028
    """Capture width in pixels."""
    height: int = 1520
    """Capture height in pixels."""
    camera_num: int = 0
    """Which Pi camera, for kind "picamera"."""
    folder: str = ""
    """Folder of PNG/JPEG frames to play back, for kind "replay"."""


@dataclass(frozen=True)
class ControllerConfig:
    """The controller board."""

    kind: str = "simulated"
    """Which implementation: "simulated" (pure Python) or "serial" (the ATmega328P board over USB serial)."""
    port: str = ""
    """Serial port of the board, for example /dev/ttyUSB0; for kind "serial", give this or usb_id."""
    usb_id: str = ""
    """USB VID:PID of the board's serial adapter, for example "1a86:7523"; used when port is empty."""
    autofocus_min_steps: int = 0
    """Lower end of the autofocus search, in focus motor steps."""
    autofocus_max_steps: int = 0
    """Upper end of the autofocus search, in steps; 0 searches up to the board's soft limit."""
    handshake_timeout_s: float = 5.0
    """How long to wait for the board's hello after opening the port (the bootloader runs first), in seconds."""


@dataclass(frozen=True)
class ModelConfig:
    """The authentication model."""

    bundle: str = ""
    """Path of the model bundle directory; empty uses the bundled demo model."""
    num_threads: int = 2
    """Threads the TFLite interpreter may use."""


@dataclass(frozen=True)
class ScanConfig:
    """Limits of scans and uploads."""

    max_upload_bytes: int = 32 * 1024 * 1024
    """Largest image file accepted by UploadImage, in bytes."""
    max_image_pixels: int = 40_000_000
    """Largest decoded image accepted, in pixels; larger files are refused as decompression bombs."""
    max_images_per_scan: int = 64
    """Most images one scan may hold."""
    max_open_scans: int = 32
    """Most scans IN_PROGRESS at once; more are refused with RESOURCE_EXHAUSTED."""
    camera_idle_timeout_s: float = 300.0
    """A scan that holds the camera unused this long loses it to the next scan that asks, in seconds."""


@dataclass(frozen=True)
class RetentionConfig:
    """Which finished scans the daemon may delete, and the free space it keeps on the data volume.

    Scans in progress are never deleted, and scans with an expert label only
    with ``prune_labelled``. See device/docs/storage.md.
    """

    max_age_days: int = 0
    """Scans created more than this many days ago are deleted, at start and hourly; 0 keeps scans for ever."""
    min_free_mb: int = 256
    """Free-disk floor, in MiB: below it the oldest scans are deleted, and when that is not enough new scans and
    images are refused with RESOURCE_EXHAUSTED (scans in progress can still complete)."""
    prune_labelled: bool = False
    """True lets the floor and max_age_days delete scans with an expert label too (kept by default: they feed
    training)."""


@dataclass(frozen=True)
class ExposureConfig:
    """Auto-exposure: a percentile of the linear image is brought to a target level, then locked for a scan."""

    percentile: float = 99.0
    """Percentile of the linear luminance that is metered, 50..100."""
    target_level: float = 0.33
    """Level the metered percentile is brought to, as a fraction of full scale, 0.05..0.95."""
    tolerance: float = 0.3
    """Relative distance from the target within which an exposure is kept as it is, 0.02..0.6."""
    start_exposure_us: int = 8000
    """Exposure time every search starts from, in microseconds."""
    max_exposure_us: int = 100_000
    """Longest exposure time before the gain rises above 1.0, in microseconds."""
    max_analogue_gain: float = 8.0
    """Highest analogue gain auto-exposure uses, 1..16."""
    max_frames: int = 8
    """Most frames one search may take, 1..50."""


@dataclass(frozen=True)
class DiscoveryConfig:
    """Announcing the unit on the local network over mDNS/DNS-SD (``_veriscope._tcp``), for ``veriscope devices``.

    What is advertised follows ``server.listen``: a wildcard host (``0.0.0.0``) advertises the unit's IPv4
    addresses on the LAN, a loopback host reaches this machine only, and a unix socket is never advertised.
    Failures (no multicast, port 5353 taken) are logged as warnings; the daemon serves regardless.
    """

    enabled: bool = True
    """True advertises the unit; ``veriscope-device serve --no-advertise`` turns it off."""
    interfaces: tuple[str, ...] = ()
    """Network interfaces to advertise on, by name (``"eth0"``) or IPv4 address; empty means all of them. From the
    environment: ``VERISCOPE_DISCOVERY__INTERFACES=eth0,wlan0``."""


@dataclass(frozen=True)
class TlsConfig:
    """TLS and mTLS of the gRPC listener (see device/docs/security.md).

    With ``cert_file`` empty, the identity that ``veriscope-tool provision`` installed in ``DATA_DIR/keys`` is used
    when there is one; without any, only a loopback or unix listener may start (in plaintext). Relative paths are
    taken from ``device.data_dir``.
    """

    cert_file: str = ""
    """The unit's X.509 certificate (PEM, optionally followed by its CA certificates); needs key_file."""
    key_file: str = ""
    """The certificate's private key (unencrypted PEM, mode 0600)."""
    client_ca_file: str = ""
    """CA certificates (PEM) that client certificates must be issued by; empty means the provisioned
    ``keys/fleet-ca.crt`` when require_client_cert is true."""
    require_client_cert: bool = False
    """True refuses clients without a certificate issued by the client CA (mTLS)."""


@dataclass(frozen=True)
class AuthConfig:
    """Who may call the API: API tokens with roles, rate limits and the audit log (see device/docs/security.md)."""

    mode: str = "auto"
    """"required": every call but health checks needs an API token; "off": no call does; "auto": required when
    server.listen can be reached from other machines, off on a loopback address or a unix socket."""
    rate_per_s: float = 50.0
    """Calls per second each token may make, sustained; more get RESOURCE_EXHAUSTED. 0 turns rate limits off."""
    burst: int = 200
    """Calls each token may make at once after being idle."""
    failed_rate_per_s: float = 1.0
    """Calls per second, sustained, that a peer address may make without a valid token before it gets
    RESOURCE_EXHAUSTED instead of UNAUTHENTICATED; 0 turns this limit off."""
    failed_burst: int = 20
    """Calls without a valid token each peer address may make at once."""
    audit_max_mb: int = 10
    """Size at which DATA_DIR/audit.log is rotated, in MiB."""
    audit_backups: int = 3
    """Rotated audit logs kept (audit.log.1 is the newest)."""


@dataclass(frozen=True)
class UpdateConfig:
    """Over-the-air updates (see device/docs/updates.md)."""

    trust_key: str = ""
    """Path of the fleet's update public key (PEM, from 'veriscope-tool keys generate'); empty refuses every
    update. The command-line flag --update-trust sets it."""
    trial_timeout_s: float = 60.0
    """How long a newly installed model may take to load and pass its self-test before the unit rolls back,
    in seconds."""


@dataclass(frozen=True)
class Config:
    """The whole daemon configuration."""

    server: ServerConfig = field(default_factory=ServerConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    scan: ScanConfig = field(default_factory=ScanConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    exposure: ExposureConfig = field(default_factory=ExposureConfig)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    update: UpdateConfig = field(default_factory=UpdateConfig)
    simulate: bool = False
    """True runs only simulated parts and serves SimulationService."""

    def with_overrides(self, **sections: Mapping[str, Any]) -> Config:
        """Return a copy with ``section={key: value}`` overrides applied and validated."""
        raw = _to_dict(self)
        for section, values in sections.items():
            if isinstance(raw.get(section), dict):
                raw[section].update(values)
            else:
                raw[section] = values
        return typing.cast(Config, _build(Config, raw, ""))


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (if given), apply ``VERISCOPE_*`` environment overrides, and validate.

    Raises :class:`ConfigError` naming the offending key when the file cannot be
    parsed, a key is unknown, or a value has the wrong type or range.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError("--config", f"file {str(path)!r} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("--config", f"{path} is not valid TOML: {exc}") from None
    env = os.environ if environ is None else environ
    for name, text in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise ConfigError(section, f"is set both as a value and as a section (by {name})")
        raw[section][key] = _parse_env_value(text)
    return typing.cast(Config, _build(Config, raw, ""))


def _parse_env_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _to_dict(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _to_dict(getattr(obj, f.name)) for f in fields(obj)}
    return obj


def _build(cls: type[Any], raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(prefix.rstrip("."), f"must be a table, got {type(raw).__name__}")
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(prefix + unknown[0], f"unknown key; known keys here: {', '.join(sorted(known))}")
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in raw:
            continue
        key = prefix + f.name
        hint = hints[f.name]
        value = raw[f.name]
        if is_dataclass(hint):
            values[f.name] = _build(hint, value, key + ".")  # type: ignore[arg-type]
        else:
            values[f.name] = _coerce(key, hint, value)
    result = replace(cls(), **values)
    _validate(result, prefix)
    return result


def _coerce(key: str, hint: Any, value: Any) -> Any:
    expected = get_args(hint) or (hint,) if get_origin(hint) else (hint,)
    if bool in expected:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, f"must be true or false, got {value!r}")
    if int in expected and float not in expected:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(key, f"must be an integer, got {value!r}")
    if float in expected:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(key, f"must be a number, got {value!r}")
    if get_origin(hint) is tuple:
        # A list of strings; one string of comma-separated items too, as an environment variable gives it.
        items = [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value
        if isinstance(items, list | tuple) and all(isinstance(item, str) and item for item in items):
            return tuple(items)
        raise ConfigError(key, f"must be a list of non-empty strings, got {value!r}")
    if str in expected:
        if isinstance(value, str):
            return value
        raise ConfigError(key, f"must be a string, got {value!r}")
    return value


def _require(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise ConfigError(key, message)


def _validate(section: Any, prefix: str) -> None:
    """Range checks that types alone cannot express."""
    if isinstance(section, ServerConfig):
        _require(
            _valid_listen(section.listen), prefix + "listen", f"must be HOST:PORT or unix:PATH, got {section.listen!r}"
        )
        _require(1 <= section.max_message_mb <= 512, prefix + "max_message_mb", "must be 1..512")
        _require(0 <= section.grace_period_s <= 300, prefix + "grace_period_s", "must be 0..300 seconds")
        _require(1 <= section.max_concurrent_rpcs <= 10_000, prefix + "max_concurrent_rpcs", "must be 1..10000")
    elif isinstance(section, CameraConfig):
        kinds = {"simulated", "picamera", "replay"}
        _require(
            section.kind in kinds, prefix + "kind", f"must be one of: {', '.join(sorted(kinds))}; got {section.kind!r}"
        )
        _require(64 <= section.width <= 8192, prefix + "width", f"must be 64..8192 pixels, got {section.width}")
        _require(64 <= section.height <= 8192, prefix + "height", f"must be 64..8192 pixels, got {section.height}")
        _require(0 <= section.camera_num <= 7, prefix + "camera_num", f"must be 0..7, got {section.camera_num}")
        if section.kind == "replay":
            _require(bool(section.folder), prefix + "folder", "kind 'replay' needs the folder of frames to play")
    elif isinstance(section, ControllerConfig):
        kinds = {"simulated", "serial"}
        _require(
            section.kind in kinds, prefix + "kind", f"must be one of: {', '.join(sorted(kinds))}; got {section.kind!r}"
        )
        if section.kind == "serial":
            _require(bool(section.port or section.usb_id), prefix + "port", "kind 'serial' needs port or usb_id")
        if section.usb_id:
            vid, sep, pid = section.usb_id.partition(":")
            ok = bool(sep) and all(len(x) == 4 and all(c in "0123456789abcdefABCDEF" for c in x) for x in (vid, pid))
            _require(ok, prefix + "usb_id", f"must be VID:PID in hex, like 1a86:7523; got {section.usb_id!r}")
        _require(section.autofocus_min_steps >= 0, prefix + "autofocus_min_steps", "must be >= 0")
        _require(
            section.autofocus_max_steps == 0 or section.autofocus_max_steps > section.autofocus_min_steps,
            prefix + "autofocus_max_steps",
            "must be 0 (the board's limit) or greater than autofocus_min_steps",
        )
        _require(0.5 <= section.handshake_timeout_s <= 120, prefix + "handshake_timeout_s", "must be 0.5..120 seconds")
    elif isinstance(section, ModelConfig):
        _require(1 <= section.num_threads <= 16, prefix + "num_threads", "must be 1..16")
    elif isinstance(section, UpdateConfig):
        _require(1 <= section.trial_timeout_s <= 3600, prefix + "trial_timeout_s", "must be 1..3600 seconds")
    elif isinstance(section, ScanConfig):
        _require(
            1024 <= section.max_upload_bytes <= 512 * 1024 * 1024, prefix + "max_upload_bytes", "must be 1 KiB..512 MiB"
        )
        _require(4096 <= section.max_image_pixels <= 200_000_000, prefix + "max_image_pixels", "must be 4096..2e8")
        _require(1 <= section.max_images_per_scan <= 1000, prefix + "max_images_per_scan", "must be 1..1000")
        _require(1 <= section.max_open_scans <= 10_000, prefix + "max_open_scans", "must be 1..10000")
        _require(
            1.0 <= section.camera_idle_timeout_s <= 86_400,
            prefix + "camera_idle_timeout_s",
            "must be 1..86400 seconds",
        )
    elif isinstance(section, RetentionConfig):
        _require(0 <= section.max_age_days <= 36_500, prefix + "max_age_days", "must be 0 (keep for ever)..36500 days")
        _require(0 <= section.min_free_mb <= 1_048_576, prefix + "min_free_mb", "must be 0..1048576 MiB")
    elif isinstance(section, ExposureConfig):
        _require(50.0 <= section.percentile <= 100.0, prefix + "percentile", "must be 50..100")
        _require(0.05 <= section.target_level <= 0.95, prefix + "target_level", "must be 0.05..0.95 of full scale")
        _require(0.02 <= section.tolerance <= 0.6, prefix + "tolerance", "must be 0.02..0.6")
        _require(
            20 <= section.start_exposure_us <= section.max_exposure_us,
            prefix + "start_exposure_us",
            "must be 20..max_exposure_us microseconds",
        )
        _require(section.max_exposure_us <= 1_000_000, prefix + "max_exposure_us", "must be at most 1000000 us")
        _require(1.0 <= section.max_analogue_gain <= 16.0, prefix + "max_analogue_gain", "must be 1..16")
        _require(1 <= section.max_frames <= 50, prefix + "max_frames", "must be 1..50")
    elif isinstance(section, TlsConfig):
        _require(bool(section.key_file) or not section.cert_file, prefix + "key_file", "cert_file needs key_file")
        _require(bool(section.cert_file) or not section.key_file, prefix + "cert_file", "key_file needs cert_file")
    elif isinstance(section, AuthConfig):
        modes = {"auto", "required", "off"}
        _require(
            section.mode in modes, prefix + "mode", f"must be one of: {', '.join(sorted(modes))}; got {section.mode!r}"
        )
        _require(0 <= section.rate_per_s <= 10_000, prefix + "rate_per_s", "must be 0 (no limit)..10000 calls/s")
        _require(1 <= section.burst <= 100_000, prefix + "burst", "must be 1..100000 calls")
        _require(0 <= section.failed_rate_per_s <= 1000, prefix + "failed_rate_per_s", "must be 0 (no limit)..1000")
        _require(1 <= section.failed_burst <= 10_000, prefix + "failed_burst", "must be 1..10000 calls")
        _require(1 <= section.audit_max_mb <= 1024, prefix + "audit_max_mb", "must be 1..1024 MiB")
        _require(1 <= section.audit_backups <= 100, prefix + "audit_backups", "must be 1..100")
    elif isinstance(section, Config) and section.simulate:
        _require(section.camera.kind == "simulated", "camera.kind", "must be 'simulated' when simulating")


def _valid_listen(listen: str) -> bool:
    if listen.startswith("unix:"):
        return len(listen) > len("unix:")
    host, sep, port = listen.rpartition(":")
    return bool(sep) and bool(host) and port.isdigit() and 0 <= int(port) <= 65535


def dump_toml(document: Mapping[str, Any]) -> str:
    """``document`` (as :func:`tomllib.loads` gives it) as TOML: top-level keys, then one table per section.

    Values may be strings, booleans, integers, floats and lists of them, which is all the configuration holds.
    Raises ValueError for anything else, and for a table nested in a section.
    """
    lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in document.items() if not isinstance(v, Mapping)]
    for section, values in document.items():
        if not isinstance(values, Mapping):
            continue
        if lines:
            lines.append("")
        lines.append(f"[{_toml_key(section)}]")
        for key, value in values.items():
            if isinstance(value, Mapping):
                raise ValueError(f"the configuration's [{section}] {key} is a nested table, which it never holds")
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_key(name: str) -> str:
    return name if name and all(c.isascii() and (c.isalnum() or c in "_-") for c in name) else _toml_value(name)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        escaped = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in escaped)
        return f'"{escaped}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ValueError(f"cannot write {value!r} to the configuration")
