"""CalibrationService: the camera's flat-field and white-balance calibration, from a white reference target."""

from __future__ import annotations

import asyncio
import logging

from veriscope.device.errors import FailedPrecondition, InvalidArgument
from veriscope.device.imager import Imager
from veriscope.device.pipeline import calibration
from veriscope.device.scans.manager import ScanManager
from veriscope.device.services._convert import LIGHTING_TO_PB, lighting_from_pb, timestamp
from veriscope.device.services._errors import ServicerContext, rpc
from veriscope.device.types import Lighting
from veriscope.v1 import calibration_service_pb2 as pb
from veriscope.v1 import calibration_service_pb2_grpc

_log = logging.getLogger("veriscope.device.calibration")
NAME = "calibration"
"""Resource name of the singleton calibration."""


def _gains_to_pb(gains: tuple[float, float, float]) -> pb.WhiteBalanceGains:
    return pb.WhiteBalanceGains(red=gains[0], green=gains[1], blue=gains[2])


class CalibrationServicer(calibration_service_pb2_grpc.CalibrationServiceServicer):
    """Serves CalibrationService. Calibrating needs the camera as a capture does, so a scan that owns it blocks it.

    ``problem`` says why the stored calibration could not be loaded at start
    ("" when it loaded or there was none); a new calibration clears it.
    """

    def __init__(
        self,
        imager: Imager,
        manager: ScanManager,
        store: calibration.CalibrationStore,
        *,
        device_id: str,
        problem: str = "",
    ) -> None:
        self._imager = imager
        self._manager = manager
        self._store = store
        self._device_id = device_id
        self._problem = problem

    def _resource(self) -> pb.Calibration:
        current = self._imager.calibration
        where = str(self._store.maps_path)
        if current is None:
            state = pb.CALIBRATION_STATE_INVALID if self._problem else pb.CALIBRATION_STATE_UNCALIBRATED
            return pb.Calibration(name=NAME, state=state, storage_path=where, problem=self._problem)
        channels = [
            pb.ChannelCalibration(
                lighting=LIGHTING_TO_PB[c.lighting],
                exposure_us=c.exposure_us,
                analogue_gain=c.analogue_gain,
                vignetting_depth=c.vignetting_depth,
                white_balance_gains=_gains_to_pb(c.white_balance),
                texture=c.texture,
                level=c.level,
            )
            for c in current.channels
        ]
        first = current.channels[0]
        return pb.Calibration(
            name=NAME,
            state=pb.CALIBRATION_STATE_CALIBRATED,
            calibration_id=current.calibration_id,
            create_time=timestamp(current.create_time),
            device_id=current.device_id,
            camera_model=current.camera_model,
            frames=current.frames,
            vignetting_depth=first.vignetting_depth,
            white_balance_gains=_gains_to_pb(first.white_balance),
            channels=channels,
            storage_path=where,
        )

    @staticmethod
    def _check_name(name: str) -> None:
        if name != NAME:
            raise InvalidArgument(f"name must be {NAME!r}, got {name!r}")

    def _default_channels(self) -> list[Lighting]:
        """The channels the active model captures with that a white target calibrates, the white ring first."""
        used = [Lighting(v) for v in self._manager.bundle.lighting if v in {x.value for x in Lighting}]
        return [Lighting.WHITE_RING, *(c for c in used if c in calibration.CALIBRATABLE and c != Lighting.WHITE_RING)]

    @rpc
    async def GetCalibration(
        self, request: pb.GetCalibrationRequest, context: ServicerContext
    ) -> pb.GetCalibrationResponse:
        self._check_name(request.name)
        return pb.GetCalibrationResponse(calibration=self._resource())

    @rpc
    async def Calibrate(self, request: pb.CalibrateRequest, context: ServicerContext) -> pb.CalibrateResponse:
        self._check_name(request.name)
        frames = request.frames or calibration.DEFAULT_FRAMES
        if not 1 <= frames <= calibration.MAX_FRAMES:
            raise InvalidArgument(f"frames must be 1..{calibration.MAX_FRAMES}, got {request.frames}")
        asked = [lighting_from_pb(v, "lighting_channels") for v in request.lighting_channels]
        lightings = calibration.check_channels(asked or self._default_channels())
        owner = self._manager.busy_owner()
        if owner is not None:
            raise FailedPrecondition(
                f"camera busy: scans/{owner} owns the camera until it completes or is cancelled; "
                "calibrate when no scan is in progress"
            )
        imager = self._imager
        async with self._manager.camera_lock:
            made = await asyncio.to_thread(
                calibration.calibrate,
                lambda lighting, params: imager.auto_expose(lighting, params, corrected=False),
                imager.uncorrected_frames,
                lightings,
                frames=frames,
                params=imager.exposure_params,
                device_id=self._device_id,
                camera_model=imager.camera.info.model,
            )
            await asyncio.to_thread(self._store.save, made)
            imager.set_calibration(made)
            self._problem = ""
        first = made.channels[0]
        _log.info(
            "calibrated %s (%s): vignetting %.0f %%, white balance %.3f/%.3f/%.3f, stored in %s",
            ", ".join(c.lighting.value for c in made.channels),
            made.calibration_id,
            100 * first.vignetting_depth,
            *first.white_balance,
            self._store.maps_path,
        )
        return pb.CalibrateResponse(calibration=self._resource())
