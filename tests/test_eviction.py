"""Slow readers over real gRPC: a member that cannot keep up is evicted, nobody else waits.

The server here has small member queues. gRPC's flow-control windows and the
socket buffers hold several MiB for a client that does not read, so a stalled
reader overflows its queue only after that much was sent: these tests send
kilobyte-sized texts until the hub reports the member gone.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from hello_protocol import hello_pb2 as pb
from hello_server import ChatServer, QueueLimits, ServerConfig
from tests.support import within
from tests.support.calls import (
    RPCS,
    drain,
    member,
    member_users,
    next_messages,
    open_stub,
    receive,
    rpc_error,
    send,
)

if TYPE_CHECKING:
    from tests.support.calls import Stub
QUEUE = QueueLimits(max_messages=64, max_bytes=1 << 20)
# Far more than the flow-control windows and socket buffers can absorb.
MAX_SEND_BYTES = 64 << 20


@pytest.fixture
def server_config() -> ServerConfig:
    return ServerConfig(port=0, queue=QUEUE)


async def send_until_evicted(
    server: ChatServer, stub: Stub, room: str, user: str, text: str
) -> int:
    """Send ``text`` to ``room`` until ``user`` is no longer a member; return how many were sent.

    Every SendMessage must return (bounded by TIMEOUT) while the member stalls.
    """
    sent = 0
    while user in member_users(server, room):
        assert sent * len(text) < MAX_SEND_BYTES, f"{user} was never evicted"
        reply = await send(stub, room, "talker", text)
        sent += 1
        assert (reply.success, reply.seq) == (True, sent)
    return sent


async def read_until(call: grpc.aio.UnaryStreamCall[Any, Any], last_text: str) -> list[pb.Message]:
    """Read a member's messages up to and including the one with ``last_text``."""
    messages: list[pb.Message] = []
    while not messages or messages[-1].message != last_text:
        messages += await next_messages(call)
    return messages


class TestStalledReader:
    @pytest.mark.parametrize("rpc", RPCS)
    @pytest.mark.parametrize("text_bytes", [8 * 1024, 60 * 1024], ids=["count bound", "byte bound"])
    async def test_stalled_reader_is_evicted_and_others_get_every_message(
        self, server: ChatServer, stub: Stub, rpc: str, text_bytes: int
    ) -> None:
        """A member that never reads is evicted with RESOURCE_EXHAUSTED; readers get everything."""
        async with open_stub(server.address) as its_own_connection:
            stalled = await member(its_own_connection, rpc, "busy", "stalled")
            readers = [await member(stub, rpc, "busy", f"reader{i}") for i in range(2)]
            reading = [asyncio.create_task(read_until(call, "the end")) for call in readers]

            sent = await send_until_evicted(server, stub, "busy", "stalled", "x" * text_bytes)

            assert member_users(server, "busy") == ["reader0", "reader1"]
            await send(stub, "busy", "talker", "the end")
            for messages in await within(asyncio.gather(*reading)):
                assert [m.seq for m in messages] == list(range(1, sent + 2))

            # The evicted stream gets what was already on its way, in order, then the status.
            received, code, details = await drain(stalled)
            assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "too slow" in details
            assert "'busy'" in details
            assert [m.seq for m in received] == list(range(1, len(received) + 1))
            assert len(received) < sent
        for call in readers:
            call.cancel()

    @pytest.mark.parametrize("rpc", RPCS)
    async def test_evicting_the_only_member_deletes_the_room(
        self, server: ChatServer, stub: Stub, rpc: str
    ) -> None:
        """When the evicted member was the last one, the room is gone: sending is NOT_FOUND."""
        async with open_stub(server.address) as its_own_connection:
            stalled = await member(its_own_connection, rpc, "lonely", "stalled")
            await send_until_evicted(server, stub, "lonely", "stalled", "y" * (60 * 1024))
            assert not server.hub.has_room("lonely")
            error = await rpc_error(send(stub, "lonely", "talker", "anyone?"))
            assert error.code() is grpc.StatusCode.NOT_FOUND
            _, code, _ = await drain(stalled)
            assert code is grpc.StatusCode.RESOURCE_EXHAUSTED

    async def test_other_rooms_are_not_affected(self, server: ChatServer, stub: Stub) -> None:
        """An eviction in one room leaves members of other rooms, even the same user's, alone."""
        async with open_stub(server.address) as its_own_connection:
            stalled = await member(its_own_connection, "Join", "busy", "alice")
            elsewhere = await member(its_own_connection, "Join", "quiet", "alice")
            await send_until_evicted(server, stub, "busy", "alice", "z" * (60 * 1024))
            assert member_users(server, "quiet") == ["alice"]
            await send(stub, "quiet", "bob", "still here")
            assert [m.message for m in await receive(elsewhere, 1)] == ["still here"]
            stalled.cancel()
            elsewhere.cancel()

    async def test_an_evicted_user_can_join_again(self, server: ChatServer, stub: Stub) -> None:
        """Eviction is not a ban: the same user may join again and receive new messages."""
        async with open_stub(server.address) as its_own_connection:
            stalled = await member(its_own_connection, "Join", "busy", "alice")
            await send_until_evicted(server, stub, "busy", "alice", "w" * (60 * 1024))
            stalled.cancel()
            again = await member(stub, "Join", "busy", "alice")
            await send(stub, "busy", "bob", "welcome back")
            [message] = await receive(again, 1)
            assert (message.message, message.seq) == ("welcome back", 1)
            again.cancel()
