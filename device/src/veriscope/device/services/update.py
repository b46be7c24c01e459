"""UpdateService: resumable bundle uploads, verified installs with a trial, rollback, and what is installed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from veriscope.device import __version__
from veriscope.device.auth.roles import Role
from veriscope.device.errors import FailedPrecondition, InvalidArgument
from veriscope.device.services._convert import timestamp
from veriscope.device.services._errors import ServicerContext, rpc
from veriscope.device.services.device import DeviceContext
from veriscope.device.updates import ModelUpdater, SlotView, UploadState, UploadStore
from veriscope.device.updates.combined import KIND as COMBINED_KIND
from veriscope.device.updates.combined import CombinedUpdater
from veriscope.device.updates.firmware import KIND as FIRMWARE_KIND
from veriscope.device.updates.firmware import FirmwareSlotView, FirmwareUpdater
from veriscope.device.updates.models import TRUST_FLAG
from veriscope.device.updates.slots import Result
from veriscope.device.updates.software import KIND as SOFTWARE_KIND
from veriscope.device.updates.software import SoftwareSlotView, SoftwareUpdater
from veriscope.tools import bundles
from veriscope.v1 import update_service_pb2, update_service_pb2_grpc

SLOT_STATE_TO_PB = {
    "active": update_service_pb2.SLOT_STATE_ACTIVE,
    "trial": update_service_pb2.SLOT_STATE_TRIAL,
    "previous": update_service_pb2.SLOT_STATE_PREVIOUS,
    "failed": update_service_pb2.SLOT_STATE_FAILED,
    "standby": update_service_pb2.SLOT_STATE_STANDBY,
}
"""The updater's slot states on the wire."""
_OUTCOME_TO_PB = {
    "trial": update_service_pb2.UPDATE_OUTCOME_TRIAL,
    "committed": update_service_pb2.UPDATE_OUTCOME_COMMITTED,
    "rolled_back": update_service_pb2.UPDATE_OUTCOME_ROLLED_BACK,
    "manual_rollback": update_service_pb2.UPDATE_OUTCOME_MANUAL_ROLLBACK,
}

RoleOf = Callable[[Any], Role | None]
"""Maps a call's metadata to its token's role (the interceptor's ``caller_role``)."""


def _time(text: str) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def slot_pb(
    view: SlotView | FirmwareSlotView | SoftwareSlotView,
    component: update_service_pb2.Component.ValueType = update_service_pb2.COMPONENT_MODEL,
) -> update_service_pb2.Slot:
    """A slot of ``component`` (a model slot by default) on the wire."""
    slot = update_service_pb2.Slot(
        component=component,
        label=view.label,
        version=view.version,
        state=SLOT_STATE_TO_PB[view.state],
        name=view.name,
    )
    installed = _time(view.install_time)
    if installed is not None:
        slot.install_time.CopyFrom(timestamp(installed))
    return slot


def result_pb(
    result: Result, component: update_service_pb2.Component.ValueType = update_service_pb2.COMPONENT_MODEL
) -> update_service_pb2.UpdateResult:
    """An update's result on the wire; a model update's unless ``component`` says otherwise.

    An outcome the wire has no value for (``failed``: a firmware update whose fallback failed too) is sent as
    UPDATE_OUTCOME_UNSPECIFIED, with the message saying what happened.
    """
    pb = update_service_pb2.UpdateResult(
        component=component,
        version=result.version,
        label=result.label,
        outcome=_OUTCOME_TO_PB.get(result.outcome, update_service_pb2.UPDATE_OUTCOME_UNSPECIFIED),
        message=result.message,
    )
    for name, text in (("start_time", result.start_time), ("end_time", result.end_time)):
        when = _time(text)
        if when is not None:
            getattr(pb, name).CopyFrom(timestamp(when))
    return pb


def upload_pb(state: UploadState) -> update_service_pb2.Upload:
    """An upload on the wire."""
    return update_service_pb2.Upload(
        name=f"uploads/{state.upload_id}",
        upload_id=state.upload_id,
        size_bytes=state.size_bytes,
        sha256=state.sha256,
        committed_bytes=state.committed_bytes,
        complete=state.complete,
    )


def _upload_id(name: str, field: str) -> str:
    prefix, _, upload_id = name.partition("/")
    if prefix != "uploads" or not upload_id:
        raise InvalidArgument(f"{field} must be 'uploads/{{upload_id}}', got {name!r:.80}")
    return upload_id


_Verified = TypeVar("_Verified")
"""What a component's ``verify`` returns for its ``install``."""


class UpdateServicer(update_service_pb2_grpc.UpdateServiceServicer):
    """Serves UpdateService for model, controller-firmware, device-software and combined bundles. Without
    ``firmware`` (``software``, ``combined``) those kinds are refused with FAILED_PRECONDITION."""

    def __init__(
        self,
        ctx: DeviceContext,
        updater: ModelUpdater,
        uploads: UploadStore,
        role_of: RoleOf,
        *,
        firmware: FirmwareUpdater | None = None,
        software: SoftwareUpdater | None = None,
        combined: CombinedUpdater | None = None,
    ) -> None:
        self._ctx = ctx
        self._updater = updater
        self._firmware = firmware
        self._software = software
        self._combined = combined
        self._uploads = uploads
        self._role_of = role_of
        self._start_time = datetime.now(UTC)
        self._upload_locks: dict[str, asyncio.Lock] = {}

    def _require_trust(self) -> None:
        if self._updater.trust is None:
            raise FailedPrecondition(
                f"this unit accepts no updates: start the daemon with {TRUST_FLAG} PUBFILE, the fleet's update "
                "public key ([update] trust_key in the configuration)"
            )

    @rpc
    async def GetUpdateStatus(
        self, request: update_service_pb2.GetUpdateStatusRequest, context: ServicerContext
    ) -> update_service_pb2.GetUpdateStatusResponse:
        ctx = self._ctx
        software = self._software
        if software is not None:
            slots = [
                slot_pb(view, update_service_pb2.COMPONENT_DEVICE_SOFTWARE)
                for view in await asyncio.to_thread(software.slots)
            ]
        else:
            slots = [
                update_service_pb2.Slot(
                    component=update_service_pb2.COMPONENT_DEVICE_SOFTWARE,
                    label="builtin",
                    version=__version__,
                    state=update_service_pb2.SLOT_STATE_ACTIVE,
                    install_time=timestamp(self._start_time),
                    name="veriscope-device",
                )
            ]
        slots += [slot_pb(view) for view in await asyncio.to_thread(self._updater.slots)]
        firmware = self._firmware
        if firmware is not None:
            slots += [
                slot_pb(view, update_service_pb2.COMPONENT_CONTROLLER_FIRMWARE)
                for view in await asyncio.to_thread(firmware.slots)
            ]
        elif ctx.controller is not None:
            slots.append(
                update_service_pb2.Slot(
                    component=update_service_pb2.COMPONENT_CONTROLLER_FIRMWARE,
                    label="builtin",
                    version=ctx.controller.info.firmware_version,
                    state=update_service_pb2.SLOT_STATE_ACTIVE,
                    install_time=timestamp(self._start_time),
                    name=ctx.controller.info.kind,
                )
            )
        result = self._updater.pointer().result
        results = [result_pb(result)] if result is not None else []
        firmware_result = await asyncio.to_thread(firmware.result) if firmware is not None else None
        if firmware_result is not None:
            results.append(result_pb(firmware_result, update_service_pb2.COMPONENT_CONTROLLER_FIRMWARE))
        software_result = await asyncio.to_thread(software.result) if software is not None else None
        if software_result is not None:
            results.append(result_pb(software_result, update_service_pb2.COMPONENT_DEVICE_SOFTWARE))
        combined_result = await asyncio.to_thread(self._combined.result) if self._combined is not None else None
        if combined_result is not None:
            results.append(result_pb(combined_result, update_service_pb2.COMPONENT_COMBINED))
        return update_service_pb2.GetUpdateStatusResponse(slots=slots, results=results)

    @rpc
    async def UploadBundle(
        self, request_iterator: AsyncIterator[update_service_pb2.UploadBundleRequest], context: ServicerContext
    ) -> update_service_pb2.UploadBundleResponse:
        self._require_trust()
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("content") != "header":
            raise InvalidArgument("an UploadBundle stream starts with a header (upload_id, size_bytes, sha256)")
        header = first.header
        lock = self._upload_locks.setdefault(header.upload_id, asyncio.Lock())
        if lock.locked():
            raise FailedPrecondition(f"upload {header.upload_id!r} is being streamed already; retry shortly")
        async with lock:
            state = await asyncio.to_thread(self._uploads.start, header.upload_id, header.size_bytes, header.sha256)
            async for message in request_iterator:
                if message.WhichOneof("content") != "chunk":
                    raise InvalidArgument("only the first message of an UploadBundle stream is a header")
                chunk = message.chunk
                state = await asyncio.to_thread(self._uploads.append, header.upload_id, chunk.offset, chunk.data)
            return update_service_pb2.UploadBundleResponse(upload=upload_pb(state))

    @rpc
    async def GetUpload(
        self, request: update_service_pb2.GetUploadRequest, context: ServicerContext
    ) -> update_service_pb2.GetUploadResponse:
        state = await asyncio.to_thread(self._uploads.get, _upload_id(request.name, "name"))
        return update_service_pb2.GetUploadResponse(upload=upload_pb(state))

    @rpc
    async def InstallBundle(
        self, request: update_service_pb2.InstallBundleRequest, context: ServicerContext
    ) -> update_service_pb2.InstallBundleResponse:
        self._require_trust()
        upload_id = _upload_id(request.upload, "upload")
        path = await asyncio.to_thread(self._uploads.bundle_path, upload_id)
        role = self._role_of(context.invocation_metadata())
        is_admin = role is not None and role.allows(Role.ADMIN)
        kind = await asyncio.to_thread(_kind_of, path)
        combined = self._combined
        if combined is not None and kind == COMBINED_KIND:
            return await self._install_combined(combined, upload_id, path, request.allow_downgrade, is_admin)
        if combined is not None and combined.busy:
            raise FailedPrecondition("a combined update is running; wait for it to end")
        if self._firmware is not None and kind == FIRMWARE_KIND:
            return await self._install_firmware(self._firmware, upload_id, path, request.allow_downgrade, is_admin)
        if self._software is not None and kind == SOFTWARE_KIND:
            return await self._install_software(self._software, upload_id, path, request.allow_downgrade, is_admin)
        if self._updater.busy:
            raise FailedPrecondition("a model update is on trial; wait for it to commit or roll back")
        verified = await self._verify_or_discard(
            upload_id, self._updater.verify, path, request.allow_downgrade, is_admin
        )
        result = await self._updater.install(verified)
        await asyncio.to_thread(self._uploads.delete, upload_id)
        view = next(v for v in await asyncio.to_thread(self._updater.slots) if v.label == result.label)
        return update_service_pb2.InstallBundleResponse(slot=slot_pb(view), result=result_pb(result))

    async def _verify_or_discard(
        self, upload_id: str, verify: Callable[..., _Verified], path: Path, allow_downgrade: bool, is_admin: bool
    ) -> _Verified:
        """Check an uploaded bundle with ``verify``; a bundle it refuses is deleted, as it would be refused again.

        (A downgrade refused for the caller's role is PERMISSION_DENIED, not FAILED_PRECONDITION: it stays, so that
        an admin can install it.)
        """
        try:
            return await asyncio.to_thread(verify, path, allow_downgrade=allow_downgrade, is_admin=is_admin)
        except FailedPrecondition:
            await asyncio.to_thread(self._uploads.delete, upload_id)
            raise

    async def _install_firmware(
        self, firmware: FirmwareUpdater, upload_id: str, path: Path, allow_downgrade: bool, is_admin: bool
    ) -> update_service_pb2.InstallBundleResponse:
        if firmware.busy:
            raise FailedPrecondition("a controller firmware update is running; wait for it to end")
        prepared = await self._verify_or_discard(upload_id, firmware.verify, path, allow_downgrade, is_admin)
        result = await firmware.install(prepared)
        await asyncio.to_thread(self._uploads.delete, upload_id)
        view = next(iter(await asyncio.to_thread(firmware.slots)))
        return update_service_pb2.InstallBundleResponse(
            slot=slot_pb(view, update_service_pb2.COMPONENT_CONTROLLER_FIRMWARE),
            result=result_pb(result, update_service_pb2.COMPONENT_CONTROLLER_FIRMWARE),
        )

    async def _install_software(
        self, software: SoftwareUpdater, upload_id: str, path: Path, allow_downgrade: bool, is_admin: bool
    ) -> update_service_pb2.InstallBundleResponse:
        if software.busy:
            raise FailedPrecondition("a device software update is being installed; wait for it to end")
        verified = await self._verify_or_discard(upload_id, software.verify, path, allow_downgrade, is_admin)
        # The slot is built and swapped in; the daemon then exits (EXIT_RESTART) once this response is sent.
        result = await software.install_async(verified)
        await asyncio.to_thread(self._uploads.delete, upload_id)
        view = next(v for v in await asyncio.to_thread(software.slots) if v.label == result.label)
        return update_service_pb2.InstallBundleResponse(
            slot=slot_pb(view, update_service_pb2.COMPONENT_DEVICE_SOFTWARE),
            result=result_pb(result, update_service_pb2.COMPONENT_DEVICE_SOFTWARE),
        )

    async def _install_combined(
        self, combined: CombinedUpdater, upload_id: str, path: Path, allow_downgrade: bool, is_admin: bool
    ) -> update_service_pb2.InstallBundleResponse:
        prepared = await self._verify_or_discard(upload_id, combined.verify, path, allow_downgrade, is_admin)
        result = await combined.install(prepared)
        await asyncio.to_thread(self._uploads.delete, upload_id)
        return update_service_pb2.InstallBundleResponse(result=result_pb(result, update_service_pb2.COMPONENT_COMBINED))

    @rpc
    async def RollbackUpdate(
        self, request: update_service_pb2.RollbackUpdateRequest, context: ServicerContext
    ) -> update_service_pb2.RollbackUpdateResponse:
        if self._combined is not None and self._combined.busy:
            raise FailedPrecondition("a combined update is running; wait for it to end")
        if request.component != update_service_pb2.COMPONENT_MODEL:
            raise FailedPrecondition(
                "this unit rolls back model bundles only (component COMPONENT_MODEL); a controller firmware "
                "update falls back by itself when it fails, and device software rolls back by itself when its trial "
                "fails, see device/docs/updates.md"
            )
        view = await self._updater.roll_back()
        return update_service_pb2.RollbackUpdateResponse(slot=slot_pb(view))


def _kind_of(path: Path) -> str:
    """The kind an uploaded bundle claims, to pick its installer; that installer verifies everything."""
    try:
        return bundles.inspect_bundle(path).kind
    except bundles.BundleError:
        return ""  # the model installer refuses it with the full reason
