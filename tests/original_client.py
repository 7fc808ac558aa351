"""A client built only from the ORIGINAL hello.ChatRoom schema, run as a subprocess.

`tests/test_original_schema.py` compiles the original schema into a temporary
directory and runs this program with that directory on PYTHONPATH, so
``hello_pb2`` here is the original one and never meets the project's
``hello_protocol.hello_pb2`` in one descriptor pool. It imports nothing from the
project.

Usage: python original_client.py ADDRESS ROOM USER

It prints one JSON object per line on stdout, flushing each:
  {"event": "joined"}                      the Join acknowledgement arrived
  {"event": "sent", "success": ..., ...}   SendMessage's reply
  {"event": "received", "id": ..., ...}    each message read from the stream
  {"event": "error", "rpc": ..., "code": ...}  an RPC's failure
It reads the message it sent itself, then one more (which the test sends once
it has seen the first "received" line), checks that SendMessage to a room
nobody is in is NOT_FOUND, and exits 0. Every step has a timeout.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import grpc
import hello_pb2  # type: ignore[import-not-found]  # the original schema's
import hello_pb2_grpc  # type: ignore[import-not-found]

STEP_TIMEOUT = 10.0
OWN_TEXT = "hello from the original schema"


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def emit_message(message: Any) -> None:
    emit(
        event="received",
        id=message.id,
        roomID=message.roomID,
        message=message.message,
        has_timestamp=message.HasField("timestamp"),
        timestamp_ns=message.timestamp.ToNanoseconds(),
    )


async def run(address: str, room: str, user: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = hello_pb2_grpc.ChatRoomStub(channel)
        join = stub.Join(hello_pb2.JoinRequest(roomID=room, user=hello_pb2.User(id=user)))
        await asyncio.wait_for(join.initial_metadata(), STEP_TIMEOUT)
        emit(event="joined")

        reply = await stub.SendMessage(
            hello_pb2.Message(id=user, roomID=room, message=OWN_TEXT), timeout=STEP_TIMEOUT
        )
        emit(event="sent", success=reply.success, message=reply.message)

        for _ in range(2):
            emit_message(await asyncio.wait_for(join.read(), STEP_TIMEOUT))

        try:
            await stub.SendMessage(
                hello_pb2.Message(id=user, roomID=f"{room}-nobody", message="anyone?"),
                timeout=STEP_TIMEOUT,
            )
        except grpc.aio.AioRpcError as error:
            emit(event="error", rpc="SendMessage", code=error.code().name)
        else:
            emit(event="sent-to-empty-room")
        join.cancel()


def main() -> None:
    address, room, user = sys.argv[1:4]
    asyncio.run(asyncio.wait_for(run(address, room, user), 6 * STEP_TIMEOUT))


if __name__ == "__main__":
    main()
