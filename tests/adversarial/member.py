"""A minimal chat member for tests that stop a client.

Run as ``python -m tests.adversarial.member ADDRESS ROOM``.

Joins ROOM as user "stopped", prints "joined" once the server acknowledged,
then reads messages until the call ends (or the process is stopped or killed).
"""

from __future__ import annotations

import asyncio
import sys

import grpc

from hello_protocol import hello_pb2 as pb
from hello_protocol.wire import CLIENT_KEEPALIVE_OPTIONS, JOIN_METHOD


async def member(address: str, room: str) -> None:
    async with grpc.aio.insecure_channel(address, options=CLIENT_KEEPALIVE_OPTIONS) as channel:
        join = channel.unary_stream(
            JOIN_METHOD,
            request_serializer=pb.JoinRequest.SerializeToString,
            response_deserializer=pb.Message.FromString,
        )
        call = join(pb.JoinRequest(roomID=room, user=pb.User(id="stopped")))
        await call.initial_metadata()
        print("joined", flush=True)
        async for _ in call:
            pass


if __name__ == "__main__":
    asyncio.run(member(sys.argv[1], sys.argv[2]))
