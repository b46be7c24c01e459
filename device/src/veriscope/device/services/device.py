"""DeviceService, ModelService and UpdateService: identity, status, models and installed versions."""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from google.protobuf import duration_pb2

from veriscope.device import __version__
from veriscope.device.controller import Controller
from veriscope.device.errors import InvalidArgument, NotFound
from veriscope.device.imager import Imager
from veriscope.device.inference import ModelBundle
from veriscope.device.scans.manager import ScanManager
from veriscope.device.services._convert import LIGHTING_TO_PB, timestamp
from veriscope.device.services._errors import ServicerContext, rpc
from veriscope.device.types import Lighting
from veriscope.v1 import (
    common_pb2,
    device_service_pb2,
    device_service_pb2_grpc,
    model_service_pb2,
    model_service_pb2_grpc,
    update_service_pb2,
    update_service_pb2_grpc,
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
            active_model=model_ref(ctx.bundle),
            capabilities=_capabilities(ctx),
            item_types=item_types_pb(ctx.bundle),
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


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """Serves ModelService from the installed bundles (today: the active one)."""

    def __init__(self, ctx: DeviceContext) -> None:
        self._ctx = ctx

    def _models(self) -> list[model_service_pb2.Model]:
        return [model_pb(self._ctx.bundle, active=True)]

    @rpc
    async def ListModels(
        self, request: model_service_pb2.ListModelsRequest, context: ServicerContext
    ) -> model_service_pb2.ListModelsResponse:
        if not 0 <= request.page_size <= 1000:
            raise InvalidArgument(f"page_size must be 0..1000, got {request.page_size}")
        models = self._models()
        try:
            start = int(request.page_token or "0")
        except ValueError:
            raise InvalidArgument(f"page_token {request.page_token!r} is not a token this device issued") from None
        size = request.page_size or 50
        page = models[start : start + size]
        token = str(start + size) if start + size < len(models) else ""
        return model_service_pb2.ListModelsResponse(models=page, next_page_token=token)

    @rpc
    async def GetModel(
        self, request: model_service_pb2.GetModelRequest, context: ServicerContext
    ) -> model_service_pb2.GetModelResponse:
        if not request.name.startswith("models/"):
            raise InvalidArgument(
                f"name must be 'models/{{name}}@{{version}}' or 'models/active', got {request.name!r}"
            )
        for model in self._models():
            if request.name in (model.name, "models/active" if model.active else None):
                return model_service_pb2.GetModelResponse(model=model)
        raise NotFound(f"model {request.name!r} is not installed")


class UpdateServicer(update_service_pb2_grpc.UpdateServiceServicer):
    """Serves UpdateService: what each component runs today."""

    def __init__(self, ctx: DeviceContext) -> None:
        self._ctx = ctx
        self._install_time = datetime.now(UTC)

    @rpc
    async def GetUpdateStatus(
        self, request: update_service_pb2.GetUpdateStatusRequest, context: ServicerContext
    ) -> update_service_pb2.GetUpdateStatusResponse:
        ctx = self._ctx
        slots = [
            update_service_pb2.Slot(
                component=update_service_pb2.COMPONENT_DEVICE_SOFTWARE,
                label="builtin",
                version=__version__,
                state=update_service_pb2.SLOT_STATE_ACTIVE,
                install_time=timestamp(self._install_time),
            ),
            update_service_pb2.Slot(
                component=update_service_pb2.COMPONENT_MODEL,
                label="builtin",
                version=f"{ctx.bundle.name}@{ctx.bundle.version}",
                state=update_service_pb2.SLOT_STATE_ACTIVE,
                install_time=timestamp(ctx.bundle.created),
            ),
        ]
        if ctx.controller is not None:
            slots.append(
                update_service_pb2.Slot(
                    component=update_service_pb2.COMPONENT_CONTROLLER_FIRMWARE,
                    label="builtin",
                    version=ctx.controller.info.firmware_version,
                    state=update_service_pb2.SLOT_STATE_ACTIVE,
                    install_time=timestamp(self._install_time),
                )
            )
        return update_service_pb2.GetUpdateStatusResponse(slots=slots)
