"""Assembles the daemon from its configuration and runs the gRPC server.

Data flows down once: services -> scan manager -> imager / analyzer -> hardware
and store. This module only builds those layers and wires them together;
configuration picks the hardware implementations.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from veriscope.device import sdnotify
from veriscope.device.auth.interceptor import build_interceptor
from veriscope.device.auth.pairing import PairingCodeStore, PairingInterceptor
from veriscope.device.auth.ratelimit import RateLimiter
from veriscope.device.bench import SimBench
from veriscope.device.camera import Camera
from veriscope.device.certificates import SigningKey
from veriscope.device.config import Config
from veriscope.device.controller import Controller
from veriscope.device.discovery import start_advertising
from veriscope.device.errors import ConfigError, InvalidArgument, ResourceExhausted, VeriscopeError
from veriscope.device.identity import Transport, listener_transport
from veriscope.device.imager import Imager
from veriscope.device.inference import ModelBundle
from veriscope.device.logbuffer import LogBuffer
from veriscope.device.pipeline import calibration
from veriscope.device.pipeline.exposure import ExposureParams
from veriscope.device.provisioning import FirstBootIdentity, Provisioner, is_provisioned
from veriscope.device.scans.manager import ScanLimits, ScanManager
from veriscope.device.scans.store import RetentionPolicy, ScanStore
from veriscope.device.services.calibration import CalibrationServicer
from veriscope.device.services.capture import CaptureServicer
from veriscope.device.services.device import DeviceContext, DeviceServicer
from veriscope.device.services.model import ModelServicer
from veriscope.device.services.provisioning import ProvisioningServicer
from veriscope.device.services.scan import ScanServicer
from veriscope.device.services.simulation import SimulationServicer
from veriscope.device.services.update import UpdateServicer
from veriscope.device.stage import OperatorStage
from veriscope.device.updates import ModelUpdater, UploadStore
from veriscope.device.updates.combined import CombinedUpdater
from veriscope.device.updates.firmware import FirmwareUpdater
from veriscope.device.updates.selftest import self_test
from veriscope.device.updates.software import ENV_SLOT, EXIT_RESTART, SoftwareUpdater
from veriscope.tools import bundles as update_bundles
from veriscope.v1 import (
    calibration_service_pb2,
    calibration_service_pb2_grpc,
    capture_service_pb2,
    capture_service_pb2_grpc,
    device_service_pb2,
    device_service_pb2_grpc,
    model_service_pb2,
    model_service_pb2_grpc,
    provisioning_service_pb2,
    provisioning_service_pb2_grpc,
    scan_service_pb2,
    scan_service_pb2_grpc,
    simulation_service_pb2,
    simulation_service_pb2_grpc,
    update_service_pb2,
    update_service_pb2_grpc,
)

_log = logging.getLogger("veriscope.device")
DEMO_BUNDLE = "veriscope-demo"
EXIT_PROVISIONED = 75
"""The exit code of a first-boot daemon once the unit is provisioned: restart it (systemd ``Restart=on-failure``)
and it serves in normal mode."""


def default_bundle_dir() -> Path:
    """The demo bundle shipped in the repository's ``models/bundles``."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "models" / "bundles" / DEMO_BUNDLE
        if (candidate / "manifest.json").is_file():
            return candidate
    raise ConfigError("model.bundle", f"no bundle configured and the demo bundle {DEMO_BUNDLE!r} was not found")


def _model_updater(config: Config, data_dir: Path, builtin_dir: Path) -> ModelUpdater:
    """The model slots of ``data_dir``, with the update key ([update] trust_key) when one is configured."""
    trust = None
    if config.update.trust_key:
        try:
            trust = update_bundles.load_trust_key(Path(config.update.trust_key).expanduser())
        except update_bundles.BundleError as exc:
            raise ConfigError("update.trust_key", exc.reason) from None
    hardware = "veriscope-sim" if config.simulate else "veriscope-pi"
    # A simulated unit stands in for a Pi, so it accepts bundles built for one.
    accepted = (hardware, "veriscope-pi") if config.simulate else (hardware,)
    return ModelUpdater(
        data_dir / "models",
        builtin_dir,
        trust=trust,
        accepted_hardware=accepted,
        trial_timeout_s=config.update.trial_timeout_s,
        num_threads=config.model.num_threads,
    )


def _device_id(config: Config, data_dir: Path) -> str:
    if config.device.id:
        return config.device.id
    path = data_dir / "device_id"
    if path.is_file():
        return path.read_text().strip()
    prefix = "VS-SIM-" if config.simulate else "VS-"
    device_id = prefix + secrets.token_hex(4).upper()
    path.write_text(device_id + "\n")
    return device_id


def _camera(config: Config, bench: SimBench | None) -> Camera:
    """The camera the configuration asks for."""
    kind = config.camera.kind
    if kind == "simulated":
        from veriscope.device.camera.simulated import SimulatedCamera

        assert bench is not None
        return SimulatedCamera(bench)
    if kind == "picamera":
        from veriscope.device.camera.picamera import Picamera2Camera

        return Picamera2Camera(config.camera.camera_num, still_size=(config.camera.width, config.camera.height))
    from veriscope.device.camera.replay import ReplayCamera

    return ReplayCamera(config.camera.folder, max_pixels=config.scan.max_image_pixels)


def _controller(config: Config, bench: SimBench | None) -> Controller:
    """The controller board the configuration asks for."""
    if config.controller.kind == "simulated":
        from veriscope.device.controller.simulated import SimulatedController

        assert bench is not None
        return SimulatedController(bench)
    from veriscope.device.controller.serial_board import SerialController

    board = SerialController(
        config.controller.port or None,
        usb_id=config.controller.usb_id or None,
        handshake_timeout_s=config.controller.handshake_timeout_s,
    )
    if bench is None:
        return board
    from veriscope.device.bench import MirroredController

    return MirroredController(board, bench)


@dataclass
class Daemon:
    """A built, not yet started daemon."""

    config: Config
    server: grpc.aio.Server
    health: health_aio.HealthServicer
    context: DeviceContext
    store: ScanStore
    port: int = 0
    transport: Transport | None = None
    """How the listener is secured; None serves plaintext (a loopback or unix listener)."""
    software: SoftwareUpdater | None = None
    """The device software slots (DATA_DIR/software): installs, and the trial of a daemon started on a new slot."""
    combined: CombinedUpdater | None = None
    """Combined updates (DATA_DIR/updates/combined.json): one found on trial at start is settled once serving."""

    @property
    def address(self) -> str:
        """HOST:PORT the daemon listens on (after :meth:`start`), or the ``unix:PATH`` it serves."""
        listen = self.config.server.listen
        if listen.startswith("unix:"):
            return listen
        return f"{listen.rpartition(':')[0]}:{self.port}"

    @property
    def tls(self) -> bool:
        """True when the listener serves TLS."""
        return self.transport is not None and self.transport.tls

    async def start(self) -> str:
        """Bind and start serving; returns the bound address."""
        listen = self.config.server.listen
        credentials = self.transport.server_credentials() if self.transport is not None else None
        try:
            if credentials is None:
                self.port = self.server.add_insecure_port(listen)
            else:
                self.port = self.server.add_secure_port(listen, credentials)
        except RuntimeError as exc:
            raise ConfigError("server.listen", f"cannot listen on {self.config.server.listen}: {exc}") from None
        await self.server.start()
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        return self.address

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop accepting RPCs, let in-flight ones finish within the grace period, then close."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.config.server.grace_period_s if grace_s is None else grace_s)
        imager = self.context.imager
        if imager is not None:
            try:
                imager.lights_off()
            except VeriscopeError as exc:
                _log.warning("could not switch the lights off at shutdown: %s", exc)
            imager.camera.close()
        if self.context.controller is not None:
            self.context.controller.close()
        self.store.close()
        if self.context.logs is not None:
            self.context.logs.uninstall()


def build_daemon(config: Config) -> Daemon:
    """Build every layer from ``config``. Raises ConfigError, IdentityError or ModelError with a clear message."""
    data_dir = Path(config.device.data_dir).expanduser()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError("device.data_dir", f"cannot create {data_dir}: {exc.strerror}") from None
    device_id = _device_id(config, data_dir)
    # Checked first: a listener that may not start should say so before anything slow is loaded.
    transport = listener_transport(config, data_dir, device_id)
    bundle_dir = Path(config.model.bundle) if config.model.bundle else default_bundle_dir()
    updater = _model_updater(config, data_dir, bundle_dir)
    # The slot the pointer names (DATA_DIR/models/current.json), else the configured bundle: see updates/.
    active = updater.load_at_start()
    bundle: ModelBundle = active.bundle
    analyzer = active.analyzer
    signing_key = SigningKey.load_or_create(data_dir)
    retention = config.retention
    store = ScanStore(
        data_dir,
        retention=RetentionPolicy(retention.max_age_days, retention.min_free_mb, retention.prune_labelled),
    )
    try:
        store.prune()
        interrupted = store.mark_interrupted()
        if interrupted:
            _log.warning("marked %d scans INTERRUPTED: they were in progress when the daemon last stopped", interrupted)
    except ResourceExhausted as exc:
        # A full volume still serves the scans it holds; new scans are refused with this same message.
        _log.error("%s", exc)

    bench = None
    if config.camera.kind == "simulated" or config.controller.kind == "simulated":
        bench = SimBench(sensor_width_px=config.camera.width, sensor_height_px=config.camera.height)
    camera = _camera(config, bench)
    controller = _controller(config, bench)
    window = None
    if config.controller.autofocus_min_steps or config.controller.autofocus_max_steps:
        window = (
            config.controller.autofocus_min_steps,
            config.controller.autofocus_max_steps or controller.focus_range.max_steps,
        )
    exposure = config.exposure
    try:
        exposure_params = ExposureParams(
            percentile=exposure.percentile,
            target_level=exposure.target_level,
            tolerance=exposure.tolerance,
            start_exposure_us=exposure.start_exposure_us,
            max_exposure_us=exposure.max_exposure_us,
            max_analogue_gain=exposure.max_analogue_gain,
            max_frames=exposure.max_frames,
        )
    except InvalidArgument as exc:
        raise ConfigError("exposure", str(exc)) from None
    try:
        imager = Imager(
            camera,
            controller,
            quality_thresholds=bundle.quality_thresholds,
            focus_window=window,
            exposure_params=exposure_params,
        )
    except InvalidArgument as exc:
        raise ConfigError("controller.autofocus_max_steps", str(exc)) from None
    calibrations = calibration.CalibrationStore(data_dir / "calibration", calibration.camera_key(camera.info.model))
    stored, calibration_problem = calibration.load_at_start(calibrations)
    imager.set_calibration(stored)
    limits = ScanLimits(
        max_upload_bytes=config.scan.max_upload_bytes,
        max_image_pixels=config.scan.max_image_pixels,
        max_images_per_scan=config.scan.max_images_per_scan,
        max_open_scans=config.scan.max_open_scans,
        camera_idle_timeout_s=config.scan.camera_idle_timeout_s,
    )
    stage = bench if bench is not None and config.camera.kind == "simulated" else OperatorStage()
    manager = ScanManager(
        store,
        bundle,
        analyzer,
        device_id=device_id,
        imager=imager,
        stage=stage,
        limits=limits,
        signing_key=signing_key,
    )
    updater.attach(manager)
    ctx = DeviceContext(
        device_id=device_id,
        hardware_model="veriscope-sim" if config.simulate else "veriscope-pi",
        manager=manager,
        bundle=bundle,
        data_dir=str(data_dir),
        imager=imager,
        controller=controller,
        simulated=config.simulate,
        signing_public_key=signing_key.public_key_pem,
        min_free_bytes=retention.min_free_mb * 1024 * 1024,
        logs=LogBuffer.install(),
    )

    max_bytes = config.server.max_message_mb * 1024 * 1024
    access = build_interceptor(config.auth, config.server.listen, data_dir)
    server = grpc.aio.server(
        interceptors=[access],
        options=[
            ("grpc.max_send_message_length", max_bytes),
            ("grpc.max_receive_message_length", max_bytes),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=config.server.max_concurrent_rpcs,
    )
    device_service_pb2_grpc.add_DeviceServiceServicer_to_server(DeviceServicer(ctx), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(ctx, updater), server)
    uploads = UploadStore(data_dir / "updates" / "incoming")
    firmware = FirmwareUpdater(
        data_dir / "firmware",
        controller,
        manager,
        trust=updater.trust,
        accepted_hardware=updater.accepted_hardware,
        handshake_timeout_s=config.controller.handshake_timeout_s,
    )
    software = SoftwareUpdater(
        data_dir / "software",
        trust=updater.trust,
        accepted_hardware=updater.accepted_hardware,
        trial_timeout_s=config.update.trial_timeout_s,
        running_slot=os.environ.get(ENV_SLOT),
    )
    combined = CombinedUpdater(data_dir / "updates", updater, firmware=firmware, software=software)
    update_service_pb2_grpc.add_UpdateServiceServicer_to_server(
        UpdateServicer(
            ctx, updater, uploads, access.caller_role, firmware=firmware, software=software, combined=combined
        ),
        server,
    )
    scan_service_pb2_grpc.add_ScanServiceServicer_to_server(ScanServicer(manager), server)
    capture_service_pb2_grpc.add_CaptureServiceServicer_to_server(CaptureServicer(imager, manager), server)
    calibration_service_pb2_grpc.add_CalibrationServiceServicer_to_server(
        CalibrationServicer(imager, manager, calibrations, device_id=device_id, problem=calibration_problem), server
    )
    # A provisioned unit refuses provisioning (FAILED_PRECONDITION) rather than not knowing the service.
    provisioning_service_pb2_grpc.add_ProvisioningServiceServicer_to_server(ProvisioningServicer(None), server)
    services = [
        device_service_pb2.DESCRIPTOR.services_by_name["DeviceService"].full_name,
        model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
        update_service_pb2.DESCRIPTOR.services_by_name["UpdateService"].full_name,
        scan_service_pb2.DESCRIPTOR.services_by_name["ScanService"].full_name,
        capture_service_pb2.DESCRIPTOR.services_by_name["CaptureService"].full_name,
        calibration_service_pb2.DESCRIPTOR.services_by_name["CalibrationService"].full_name,
        provisioning_service_pb2.DESCRIPTOR.services_by_name["ProvisioningService"].full_name,
    ]
    if config.simulate and bench is not None:
        simulation_service_pb2_grpc.add_SimulationServiceServicer_to_server(SimulationServicer(bench), server)
        services.append(simulation_service_pb2.DESCRIPTOR.services_by_name["SimulationService"].full_name)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    services.append(health.SERVICE_NAME)
    reflection.enable_server_reflection([*services, reflection.SERVICE_NAME], server)
    return Daemon(
        config=config,
        server=server,
        health=health_servicer,
        context=ctx,
        store=store,
        transport=transport,
        software=software,
        combined=combined,
    )


async def software_health_check(daemon: Daemon) -> None:
    """The health check of new device software on trial: the daemon reports SERVING and its active model passes
    :func:`~veriscope.device.updates.selftest.self_test`.

    Raises:
        ModelError: The self-test failed.
        RuntimeError: The health service does not report SERVING.
    """
    response = await daemon.health.Check(health_pb2.HealthCheckRequest(service=""), None)
    if response is None or response.status != health_pb2.HealthCheckResponse.SERVING:
        raise RuntimeError("the daemon does not report SERVING")
    await asyncio.to_thread(self_test, daemon.context.manager.model.analyzer)


@dataclass
class FirstBootDaemon:
    """A built, not yet started daemon in first-boot mode: health and ProvisioningService over self-signed TLS.

    Attributes:
        pairing_code: The pairing code made at this start, to be shown once; None when the unit has one already.
        provisioned: Set once the unit is provisioned; the daemon then stops.
    """

    config: Config
    server: grpc.aio.Server
    health: health_aio.HealthServicer
    identity: FirstBootIdentity
    device_id: str
    pairing_code: str | None
    provisioned: asyncio.Event
    port: int = 0

    @property
    def address(self) -> str:
        """HOST:PORT the daemon listens on, after :meth:`start`."""
        return f"{self.config.server.listen.rpartition(':')[0]}:{self.port}"

    async def start(self) -> str:
        """Bind with the first-boot certificate and start serving; returns the bound address."""
        credentials = grpc.ssl_server_credentials([(self.identity.key_pem, self.identity.cert_pem)])
        try:
            self.port = self.server.add_secure_port(self.config.server.listen, credentials)
        except RuntimeError as exc:
            raise ConfigError("server.listen", f"cannot listen on {self.config.server.listen}: {exc}") from None
        await self.server.start()
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        return self.address

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop accepting RPCs and let in-flight ones finish within the grace period."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.config.server.grace_period_s if grace_s is None else grace_s)


def build_first_boot_daemon(config: Config) -> FirstBootDaemon:
    """Build the first-boot daemon of an unprovisioned unit: its keys, first-boot certificate and pairing code are
    made when missing. Loads no model and opens no hardware.

    Raises ConfigError when the unit is provisioned already or the data directory cannot be made, and
    IdentityError, SigningKeyError or PairingCodeError when a key or the pairing code cannot be written.
    """
    data_dir = Path(config.device.data_dir).expanduser()
    if config.server.listen.startswith(("unix:", "unix-abstract:")):
        raise ConfigError("server.listen", "first-boot mode serves TLS on HOST:PORT, not on a unix socket")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError("device.data_dir", f"cannot create {data_dir}: {exc.strerror}") from None
    if is_provisioned(config, data_dir):
        raise ConfigError("--first-boot", f"the unit in {data_dir} is provisioned: start it without --first-boot")
    device_id = _device_id(config, data_dir)
    identity = FirstBootIdentity.load_or_create(data_dir)
    codes = PairingCodeStore(data_dir)
    provisioner = Provisioner(data_dir, device_id, codes, config)
    provisioner.prepare()
    code = codes.ensure()
    provisioned = asyncio.Event()
    auth = config.auth
    server = grpc.aio.server(
        interceptors=[PairingInterceptor(codes, peer_limiter=RateLimiter(auth.failed_rate_per_s, auth.failed_burst))],
        options=[("grpc.so_reuseport", 0)],
        maximum_concurrent_rpcs=config.server.max_concurrent_rpcs,
    )
    provisioning_service_pb2_grpc.add_ProvisioningServiceServicer_to_server(
        ProvisioningServicer(provisioner, on_provisioned=provisioned.set), server
    )
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    return FirstBootDaemon(config, server, health_servicer, identity, device_id, code, provisioned)


async def serve_first_boot(config: Config, *, ready: asyncio.Event | None = None) -> int:
    """Run the first-boot daemon until the unit is provisioned (then return :data:`EXIT_PROVISIONED`) or until
    SIGTERM or SIGINT (then return 0)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    daemon = build_first_boot_daemon(config)
    address = await daemon.start()
    identity = daemon.identity
    print(
        f"veriscope-device: first-boot mode: unit {daemon.device_id} is not provisioned; serving only health checks "
        f"and ProvisioningService, TLS with the self-signed {identity.cert_path}",
        flush=True,
    )
    print(f"veriscope-device: first-boot certificate fingerprint {identity.fingerprint}", flush=True)
    if daemon.pairing_code is not None:
        print(
            f"veriscope-device: pairing code {daemon.pairing_code} (shown this once; 'veriscope-device pairing-code' "
            "makes a new one)",
            flush=True,
        )
    else:
        print("veriscope-device: pairing code: the one on the unit's label (not shown again)", flush=True)
    print(f"veriscope-device: serving on {address}", flush=True)
    if ready is not None:
        ready.set()
    stopping = asyncio.ensure_future(stop.wait())
    provisioned = asyncio.ensure_future(daemon.provisioned.wait())
    async with sdnotify.serving(f"first-boot mode, serving on {address}"):
        await asyncio.wait([stopping, provisioned], return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    provisioned.cancel()
    # The grace period lets the InstallUnitIdentity response reach the installer.
    await daemon.stop()
    if daemon.provisioned.is_set():
        print(
            f"veriscope-device: unit {daemon.device_id} is provisioned; exiting with {EXIT_PROVISIONED} so that it "
            "restarts in normal mode",
            flush=True,
        )
        return EXIT_PROVISIONED
    print("veriscope-device: stopped", flush=True)
    return 0


def _provisioned(config: Config) -> bool:
    return is_provisioned(config, Path(config.device.data_dir).expanduser())


async def serve(config: Config, *, ready: asyncio.Event | None = None, first_boot: bool = False) -> int:
    """Run the daemon until SIGTERM or SIGINT, then drain in-flight RPCs and return 0.

    With ``first_boot``, an unprovisioned unit runs :func:`serve_first_boot` instead. A daemon started on device
    software on trial runs its health check once serving and commits it; it returns
    :data:`~veriscope.device.updates.software.EXIT_RESTART` when the trial fails (rolled back) or new software was
    installed, so that systemd starts the daemon again on the software ``DATA_DIR/software/current`` names.
    """
    if first_boot and not _provisioned(config):
        return await serve_first_boot(config, ready=ready)
    # Signals are handled before the address is printed: whoever waits for that line may send SIGTERM at once.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    daemon = build_daemon(config)
    address = await daemon.start()
    transport = daemon.transport
    if transport is not None and transport.identity is not None:
        identity = transport.identity
        print(
            f"veriscope-device: {transport.describe()} with {identity.cert_path} (key pin {identity.pin})", flush=True
        )
    print(f"veriscope-device: serving on {address}", flush=True)
    advertiser = start_advertising(daemon)
    if ready is not None:
        ready.set()
    software = daemon.software
    restart = software.restart if software is not None else asyncio.Event()
    trial = None
    if software is not None:
        software_trial = software.run_trial(lambda: software_health_check(daemon))
        combined = daemon.combined
        trial = asyncio.ensure_future(combined.run_at_start(software_trial) if combined is not None else software_trial)
    # READY=1, WATCHDOG=1 from this loop, and STOPPING=1 under systemd (Type=notify); nothing otherwise.
    async with sdnotify.serving(f"serving on {address}"):
        stopping, restarting = asyncio.ensure_future(stop.wait()), asyncio.ensure_future(restart.wait())
        await asyncio.wait([stopping, restarting], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        restarting.cancel()
    if trial is not None and not trial.done():
        trial.cancel()  # not committed: the next start on this slot rolls it back
    if advertiser is not None:
        # Withdrawn first, so that hosts stop finding a unit that is going away.
        await advertiser.close()
    print("veriscope-device: draining in-flight RPCs", flush=True)
    await daemon.stop()
    if restart.is_set() and not stop.is_set():
        print(
            f"veriscope-device: the device software changed; exiting with {EXIT_RESTART} so that it restarts on it",
            flush=True,
        )
        return EXIT_RESTART
    print("veriscope-device: stopped", flush=True)
    return 0
