"""The yardstick: a minimal grpc.aio server for hello.ChatRoom (Join + SendMessage).

SendMessage stamps and serialises the delivered ``hello.Message`` once and puts
that bytes object into every member's unbounded ``asyncio.Queue``; Join writes
one queued bytes object per stream write (no response serializer, so grpc.aio
passes the bytes through). There is no Subscribe, so `ChatClient` falls back to
Join. No validation, limits or eviction: the fastest plain-Join server this
protocol allows in grpc.aio, which is what hello is compared against.

    python -m hello_bench.baseline --port 0
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import sys
import time

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from hello_protocol import hello_pb2 as pb
from hello_protocol.wire import SERVICE_NAME


class BaselineService:
    """Rooms of member queues; a room goes with its last member."""

    def __init__(self) -> None:
        self._rooms: dict[str, dict[int, asyncio.Queue[bytes]]] = {}
        self._seq: dict[str, int] = {}
        self._ids = itertools.count()

    async def join(
        self, request: pb.JoinRequest, context: grpc.aio.ServicerContext[pb.JoinRequest, bytes]
    ) -> None:
        room = request.roomID
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        member = next(self._ids)
        self._rooms.setdefault(room, {})[member] = queue
        try:
            await context.send_initial_metadata(())  # the join acknowledgement
            while True:
                await context.write(await queue.get())
        finally:
            members = self._rooms[room]
            del members[member]
            if not members:
                del self._rooms[room]
                del self._seq[room]

    async def send_message(
        self, request: pb.Message, context: grpc.aio.ServicerContext[pb.Message, pb.Exit]
    ) -> pb.Exit:
        members = self._rooms.get(request.roomID)
        if not members:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such room")
        seq = self._seq[request.roomID] = self._seq.get(request.roomID, 0) + 1
        seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
        payload = pb.Message(
            id=request.id,
            roomID=request.roomID,
            message=request.message,
            timestamp=Timestamp(seconds=seconds, nanos=nanos),
            seq=seq,
        ).SerializeToString()
        for queue in members.values():
            queue.put_nowait(payload)
        return pb.Exit(success=True, seq=seq)

    def rpc_handler(self) -> grpc.GenericRpcHandler[object, object]:
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "Join": grpc.unary_stream_rpc_method_handler(
                    self.join, request_deserializer=pb.JoinRequest.FromString
                ),
                "SendMessage": grpc.unary_unary_rpc_method_handler(
                    self.send_message,
                    request_deserializer=pb.Message.FromString,
                    response_serializer=pb.Exit.SerializeToString,
                ),
            },
        )


async def serve(host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((BaselineService().rpc_handler(),))
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(f"hello-bench baseline ready on {host}:{bound}", file=sys.stderr, flush=True)
    await stop.wait()
    await server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m hello_bench.baseline", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
