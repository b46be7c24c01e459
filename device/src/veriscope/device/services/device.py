"""DeviceService: the unit's identity and status; and the wire form of a model, which ModelService shares."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from google.protobuf import duration_pb2

from veriscope.device import __version__
from veriscope.device.controller import Controller
from veriscope.device.diagnostics import CHECKS, CheckResult, CheckStatus, SelfTest
from veriscope.device.errors import FailedPrecondition, InvalidArgument
from veriscope.device.imager import Imager
from veriscope.device.inference import ModelBundle
from veriscope.device.logbuffer import LogBuffer, LogLine
from veriscope.device.scans.manager import ScanManager
from veriscope.device.services._convert import LIGHTING_TO_PB, timestamp
from veriscope.device.services._errors import ServicerContext, rpc
from veriscope.device.types import Lighting
from veriscope.v1 import (
    common_pb2,
    device_service_pb2,
    device_service_pb2_grpc,
    model_service_pb2,
)

API_VERSION = "v1"


@dataclass
class DeviceContext:
    """What the device-level services need to know about the running unit."""

    device_id: str
    hardware_model: str
    manager: ScanManager
    bundle: ModelBundle
    data_dir: str
    imager: Imager | None = None
    controller: Controller | None = None
    simulated: bool = False
    signing_public_key: str = ""
    start_monotonic: float = field(default_factory=time.monotonic)
    min_free_bytes: int = 0
    """The retention floor of the data volume, in bytes."""
    logs: LogBuffer | None = None
    """The daemon's recent log lines; None serves none."""


def _capabilities(ctx: DeviceContext) -> list[device_service_pb2.Capability.ValueType]:
    caps = [device_service_pb2.CAPABILITY_UPLOAD]
    if ctx.imager is not None:
        caps += [device_service_pb2.CAPABILITY_CAPTURE, device_service_pb2.CAPABILITY_PREVIEW]
    if ctx.controller is not None:
        caps += [
            device_service_pb2.CAPABILITY_AUTOFOCUS,
            device_service_pb2.CAPABILITY_LIGHTING_WHITE_RING,
            device_service_pb2.CAPABILITY_LIGHTING_RAKING,
            device_service_pb2.CAPABILITY_LIGHTING_UV,
        ]
    if ctx.simulated:
        caps.append(device_service_pb2.CAPABILITY_SIMULATION)
    return caps


def item_types_pb(bundle: ModelBundle) -> list[common_pb2.ItemType]:
    """The bundle's item types on the wire."""
    return [
        common_pb2.ItemType(
            name=t.name,
            display_name=t.display_name,
            regions=[
                common_pb2.RegionSpec(name=r.name, material=r.material, min_images=r.min_images, hint=r.hint)
                for r in t.regions
            ],
        )
        for t in bundle.item_types
    ]


def model_ref(bundle: ModelBundle) -> common_pb2.ModelRef:
    """A reference to the bundle's model."""
    return common_pb2.ModelRef(name=bundle.name, version=bundle.version, sha256=bundle.sha256)


class DeviceServicer(device_service_pb2_grpc.DeviceServiceServicer):
    """Serves DeviceService."""

    def __init__(self, ctx: DeviceContext) -> None:
        self._ctx = ctx

    @rpc
    async def GetDevice(
        self, request: device_service_pb2.GetDeviceRequest, context: ServicerContext
    ) -> device_service_pb2.GetDeviceResponse:
        ctx = self._ctx
        hardware = device_service_pb2.Hardware(model=ctx.hardware_model, simulated=ctx.simulated)
        if ctx.imager is not None:
            info = ctx.imager.camera.info
            hardware.camera_model = info.model
            hardware.sensor_width = info.sensor_width
            hardware.sensor_height = info.sensor_height
        if ctx.controller is not None:
            c = ctx.controller.info
            hardware.controller.CopyFrom(
                device_service_pb2.ControllerInfo(
                    connected=True,
                    kind=c.kind,
                    firmware_version=c.firmware_version,
                    protocol_version=c.protocol_version,
                    build_id=c.build_id,
                )
            )
        device = device_service_pb2.Device(
            name="device",
            device_id=ctx.device_id,
            hardware=hardware,
            software_version=__version__,
            active_model=model_ref(ctx.manager.bundle),
            capabilities=_capabilities(ctx),
            item_types=item_types_pb(ctx.manager.bundle),
            signing_public_key=ctx.signing_public_key,
            api_version=API_VERSION,
        )
        return device_service_pb2.GetDeviceResponse(device=device)

    @rpc
    async def GetStatus(
        self, request: device_service_pb2.GetStatusRequest, context: ServicerContext
    ) -> device_service_pb2.GetStatusResponse:
        ctx = self._ctx
        owner = ctx.manager.busy_owner()
        status = device_service_pb2.DeviceStatus(
            state=device_service_pb2.DEVICE_STATE_BUSY if owner else device_service_pb2.DEVICE_STATE_READY,
            message=f"scan {owner} owns the camera" if owner else "ready",
            uptime=duration_pb2.Duration(seconds=int(time.monotonic() - ctx.start_monotonic)),
            active_scan=f"scans/{owner}" if owner else "",
            controller_connected=ctx.controller is not None,
            board_temperature_c=ctx.controller.temperature_c() if ctx.controller else math.nan,
            storage_free_bytes=shutil.disk_usage(ctx.data_dir).free,
            read_time=timestamp(datetime.now(UTC)),
        )
        if ctx.controller is not None:
            status.focus_steps = ctx.controller.focus_position()
            status.lit_channels.extend(
                LIGHTING_TO_PB[ch]
                for ch, duty in sorted(ctx.controller.leds().items())
                if duty > 0 and ch is not Lighting.OFF
            )
        return device_service_pb2.GetStatusResponse(status=status)

    @rpc
    async def RunSelfTest(
        self, request: device_service_pb2.RunSelfTestRequest, context: ServicerContext
    ) -> AsyncIterator[device_service_pb2.RunSelfTestResponse]:
        ctx = self._ctx
        owner = ctx.manager.busy_owner()
        if owner is not None:
            raise FailedPrecondition(
                f"camera busy: scans/{owner} owns the camera until it completes or is cancelled; "
                "run the self-test when no scan is in progress"
            )
        test = SelfTest(
            imager=ctx.imager, bundle=ctx.manager.bundle, data_dir=Path(ctx.data_dir), min_free_bytes=ctx.min_free_bytes
        )
        _log.info("self-test started")
        failed: list[str] = []
        async with ctx.manager.camera_lock:
            for number, name in enumerate(CHECKS, start=1):
                result = await asyncio.to_thread(test.run, name)
                if result.status is CheckStatus.FAIL:
                    failed.append(name)
                    _log.warning("self-test check %s failed: %s", name, result.message)
                for image in result.images:
                    yield device_service_pb2.RunSelfTestResponse(
                        image=device_service_pb2.SelfTestImage(check=name, name=image.name, png_data=image.png),
                        check_number=number,
                        total_checks=len(CHECKS),
                    )
                yield device_service_pb2.RunSelfTestResponse(
                    check=_check_pb(result), check_number=number, total_checks=len(CHECKS)
                )
        _log.info("self-test finished: %s", f"failed {', '.join(failed)}" if failed else "no check failed")

    @rpc
    async def ReadLogs(
        self, request: device_service_pb2.ReadLogsRequest, context: ServicerContext
    ) -> AsyncIterator[device_service_pb2.ReadLogsResponse]:
        if request.min_level not in _LEVELS:
            raise InvalidArgument(f"min_level {request.min_level} is not a LogLevel")
        min_level = _LEVELS[request.min_level]
        since = None
        if request.HasField("since_time"):
            try:
                since = request.since_time.ToDatetime(tzinfo=UTC)
            except (ValueError, OverflowError, OSError):
                raise InvalidArgument(f"since_time {request.since_time} is not a valid time") from None
        logs = self._ctx.logs
        if logs is None:
            return
        if not request.follow:
            lines = logs.lines(since=since, min_level=min_level)
            for start in range(0, len(lines), LOG_BATCH_LINES):
                yield device_service_pb2.ReadLogsResponse(
                    entries=[_log_entry_pb(line) for line in lines[start : start + LOG_BATCH_LINES]]
                )
            return
        # Batches whatever has queued up, so a burst of lines crosses a slow link in few messages.
        follow = logs.follow(since=since, min_level=min_level)
        try:
            batch: list[LogLine] = []
            pending: asyncio.Task[LogLine] | None = None
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(anext(follow))
                done, _ = await asyncio.wait({pending}, timeout=0 if batch else None)
                if done:
                    batch.append(pending.result())
                    pending = None
                if batch and (not done or len(batch) >= LOG_BATCH_LINES):
                    yield device_service_pb2.ReadLogsResponse(entries=[_log_entry_pb(line) for line in batch])
                    batch = []
        finally:
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await pending
            await follow.aclose()


_log = logging.getLogger("veriscope.device.diagnostics")
LOG_BATCH_LINES = 500
"""Most log lines in one ReadLogs message."""
_STATUS_TO_PB = {
    CheckStatus.PASS: device_service_pb2.SELF_TEST_STATUS_PASS,
    CheckStatus.WARN: device_service_pb2.SELF_TEST_STATUS_WARN,
    CheckStatus.FAIL: device_service_pb2.SELF_TEST_STATUS_FAIL,
    CheckStatus.SKIPPED: device_service_pb2.SELF_TEST_STATUS_SKIPPED,
}
_LEVELS = {
    device_service_pb2.LOG_LEVEL_UNSPECIFIED: logging.NOTSET,
    device_service_pb2.LOG_LEVEL_DEBUG: logging.DEBUG,
    device_service_pb2.LOG_LEVEL_INFO: logging.INFO,
    device_service_pb2.LOG_LEVEL_WARNING: logging.WARNING,
    device_service_pb2.LOG_LEVEL_ERROR: logging.ERROR,
    device_service_pb2.LOG_LEVEL_CRITICAL: logging.CRITICAL,
}


def _check_pb(result: CheckResult) -> device_service_pb2.SelfTestCheck:
    check = device_service_pb2.SelfTestCheck(
        name=result.name,
        status=_STATUS_TO_PB[result.status],
        message=result.message,
        measurements={k: float(v) for k, v in result.measurements.items()},
    )
    check.duration.FromNanoseconds(round(result.duration_s * 1e9))
    return check


def _log_level_pb(level: int) -> device_service_pb2.LogLevel.ValueType:
    """The wire level of a ``logging`` level number: the highest named level at or below it."""
    best = device_service_pb2.LOG_LEVEL_DEBUG
    for wire, number in _LEVELS.items():
        if number and number <= level and number >= _LEVELS[best]:
            best = wire
    return best


def _log_entry_pb(line: LogLine) -> device_service_pb2.LogEntry:
    return device_service_pb2.LogEntry(
        sequence=line.sequence,
        log_time=timestamp(line.time),
        level=_log_level_pb(line.level),
        logger=line.logger,
        message=line.message,
    )


def model_pb(bundle: ModelBundle, *, active: bool) -> model_service_pb2.Model:
    """A bundle on the wire."""
    import json

    lighting = [LIGHTING_TO_PB.get(Lighting(ch), common_pb2.LIGHTING_CHANNEL_UNSPECIFIED) for ch in bundle.lighting]
    return model_service_pb2.Model(
        name=f"models/{bundle.name}@{bundle.version}",
        ref=model_ref(bundle),
        active=active,
        materials=list(bundle.materials),
        lighting=lighting,
        input=model_service_pb2.ModelInput(
            width=bundle.input.tile_px,
            height=bundle.input.tile_px,
            channels=bundle.input.channels,
            dtype=bundle.input.dtype,
            scale=bundle.input.scale,
            zero_point=bundle.input.zero_point,
        ),
        size_bytes=bundle.size_bytes,
        threshold=bundle.thresholds.item,
        manifest_json=json.dumps(bundle.manifest, sort_keys=True),
        create_time=timestamp(bundle.created),
        item_types=item_types_pb(bundle),
    )
