"""SimulationService: chooses the virtual item under the simulated lens."""

from __future__ import annotations

from veriscope.device.bench import SimBench
from veriscope.device.errors import InvalidArgument
from veriscope.device.services._errors import ServicerContext, rpc
from veriscope.v1 import simulation_service_pb2 as pb
from veriscope.v1 import simulation_service_pb2_grpc


class SimulationServicer(simulation_service_pb2_grpc.SimulationServiceServicer):
    """Serves SimulationService from the simulated bench."""

    def __init__(self, bench: SimBench) -> None:
        self._bench = bench

    def _item(self) -> pb.PlacedItem | None:
        placed = self._bench.placed()
        if placed is None:
            return None
        return pb.PlacedItem(item_type=placed.item_type, source=placed.source, seed=placed.seed)

    @rpc
    async def PlaceItem(self, request: pb.PlaceItemRequest, context: ServicerContext) -> pb.PlaceItemResponse:
        item = request.item
        if item.seed < 0:
            raise InvalidArgument(f"item.seed must be 0..2^63-1, got {item.seed}")
        self._bench.place(item.item_type, item.source, item.seed)
        return pb.PlaceItemResponse(item=self._item())

    @rpc
    async def GetPlacedItem(
        self, request: pb.GetPlacedItemRequest, context: ServicerContext
    ) -> pb.GetPlacedItemResponse:
        item = self._item()
        return pb.GetPlacedItemResponse(item=item) if item else pb.GetPlacedItemResponse()

    @rpc
    async def ClearItem(self, request: pb.ClearItemRequest, context: ServicerContext) -> pb.ClearItemResponse:
        self._bench.clear()
        return pb.ClearItemResponse()

    @rpc
    async def ListSources(self, request: pb.ListSourcesRequest, context: ServicerContext) -> pb.ListSourcesResponse:
        if not 0 <= request.page_size <= 1000:
            raise InvalidArgument(f"page_size must be 0..1000, got {request.page_size}")
        materials = self._bench.materials()
        try:
            start = int(request.page_token or "0")
        except ValueError:
            raise InvalidArgument(f"page_token {request.page_token!r} is not a token this device issued") from None
        size = request.page_size or len(materials) or 1
        page = materials[start : start + size]
        token = str(start + size) if start + size < len(materials) else ""
        return pb.ListSourcesResponse(
            materials=[
                pb.SimulatedMaterial(name=m.name, sources=list(m.sources), superfake_sources=list(m.superfakes))
                for m in page
            ],
            next_page_token=token,
        )
