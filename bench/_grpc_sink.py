"""A gRPC server that only counts the bytes of a client stream: the transport ceiling for UploadImage.

Run as a program it serves ``/bench.Sink/Take`` on a free loopback port, with
the daemon's message-size options, prints the port and serves until killed.
The client side is :func:`transfer.grpc_ceiling_mb_per_s`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from grpc import aio

METHOD = "/bench.Sink/Take"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def _raw(data: bytes) -> bytes:
    return data


async def _take(requests: AsyncIterator[bytes], context: aio.ServicerContext) -> bytes:
    received = 0
    async for chunk in requests:
        received += len(chunk)
    return received.to_bytes(8, "big")


async def _serve() -> None:
    server = aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
    )
    handler = grpc.method_handlers_generic_handler(
        "bench.Sink",
        {"Take": grpc.stream_unary_rpc_method_handler(_take, request_deserializer=_raw, response_serializer=_raw)},
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(_serve())
