"""ModelService: the installed model bundles (every loadable slot), the active one first."""

from __future__ import annotations

import asyncio

from veriscope.device.errors import InvalidArgument, NotFound
from veriscope.device.services._errors import ServicerContext, rpc
from veriscope.device.services.device import DeviceContext, model_pb
from veriscope.device.services.update import SLOT_STATE_TO_PB
from veriscope.device.updates import ModelUpdater
from veriscope.v1 import model_service_pb2, model_service_pb2_grpc


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """Serves ModelService from the model slots: the built-in bundle and slots ``a`` and ``b``."""

    def __init__(self, ctx: DeviceContext, updater: ModelUpdater) -> None:
        self._ctx = ctx
        self._updater = updater

    def _models(self) -> list[model_service_pb2.Model]:
        models = []
        for view in self._updater.slots():
            active = view.state == "active"
            bundle = self._ctx.manager.bundle if active else self._updater.bundle(view.label)
            if bundle is None:
                continue
            model = model_pb(bundle, active=active)
            model.slot = view.label
            model.state = SLOT_STATE_TO_PB[view.state]
            models.append(model)
        return models

    @rpc
    async def ListModels(
        self, request: model_service_pb2.ListModelsRequest, context: ServicerContext
    ) -> model_service_pb2.ListModelsResponse:
        if not 0 <= request.page_size <= 1000:
            raise InvalidArgument(f"page_size must be 0..1000, got {request.page_size}")
        models = await asyncio.to_thread(self._models)
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
        for model in await asyncio.to_thread(self._models):
            if request.name in (model.name, "models/active" if model.active else None):
                return model_service_pb2.GetModelResponse(model=model)
        raise NotFound(f"model {request.name!r} is not installed")
