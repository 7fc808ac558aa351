"""Slow readers over real gRPC: a member that cannot keep up is evicted, nobody else waits.

The server here has small member queues. gRPC's flow-control windows and the
socket buffers hold several MiB for a client that does not read, so a stalled
reader overflows its queue only after that much was sent: these tests send
kilobyte-sized texts until the hub reports the member gone.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from hello_protocol import hello_pb2 as pb
from hello_server import ChatServer, MemoryBudget, QueueLimits, ServerConfig
from tests.support import within
from tests.support.calls import (
    RPCS,
    drain,
    hub_until,
    member,
    member_users,
    next_messages,
    open_stub,
    receive,
    rpc_error,
    send,
)
from tests.support.redis import BOTH

BACKENDS = BOTH

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
        try:
            reply = await send(stub, room, "talker", text)
        except grpc.aio.AioRpcError as error:
            # With Redis a member is evicted when a message reaches it, after
            # its send returned: the room may end (with its only member) just
            # before this send, which then finds no room. Only once it is gone.
            if error.code() is not grpc.StatusCode.NOT_FOUND or user in member_users(server, room):
                raise
            break
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


# A short delay so the tests see the connection closed quickly; the default is 5 s.
STALLED_CLOSE = 0.5


class TestStalledConnectionIsClosed:
    @pytest.fixture
    def server_config(self) -> ServerConfig:
        return ServerConfig(port=0, queue=QUEUE, stalled_close_seconds=STALLED_CLOSE)

    @pytest.mark.parametrize("rpc", RPCS)
    async def test_evicted_stream_stuck_in_a_write_gets_its_connection_closed(
        self, server: ChatServer, stub: Stub, rpc: str
    ) -> None:
        """A client that stopped reading is evicted, its connection closed after the delay.

        Its handler no longer sits in a write: the hub's counters return to zero,
        and a bystander on another connection gets every message and can still
        join and send.
        """
        async with open_stub(server.address) as its_own_connection:
            stalled = await member(its_own_connection, rpc, "busy", "stalled")
            bystander = await member(stub, rpc, "busy", "bystander")
            reading = asyncio.create_task(read_until(bystander, "the end"))

            sent = await send_until_evicted(server, stub, "busy", "stalled", "s" * (60 * 1024))
            evicted_at = time.monotonic()
            assert server.hub.evicted_count == 1, "the evicted stream was not stuck in a write"
            await hub_until(server, lambda: server.hub.evicted_count == 0)
            assert time.monotonic() - evicted_at >= STALLED_CLOSE * 0.9
            assert server.stalls.closed_connections == 1

            await send(stub, "busy", "talker", "the end")
            assert [m.seq for m in await within(reading)] == list(range(1, sent + 2))
            _, code, _ = await drain(stalled)
            assert code is grpc.StatusCode.UNAVAILABLE  # its connection is gone

            fresh = await member(stub, rpc, "after", "bystander")
            await send(stub, "after", "talker", "still served")
            assert [m.message for m in await receive(fresh, 1)] == ["still served"]
            fresh.cancel()
            bystander.cancel()
        await hub_until(server, lambda: server.hub.member_count == 0)
        assert server.hub.memory_usage().total == 0

    async def test_a_connection_with_a_healthy_stream_is_left_open(
        self, server: ChatServer, stub: Stub
    ) -> None:
        """Only connections whose member streams are ALL stuck are closed."""
        async with open_stub(server.address) as its_own_connection:
            stalled = await member(its_own_connection, "Join", "busy", "stalled")
            healthy = await member(its_own_connection, "Join", "quiet", "stalled")
            await send_until_evicted(server, stub, "busy", "stalled", "h" * (60 * 1024))
            # Longer than the delay: a round trip on the healthy stream, repeated.
            deadline = time.monotonic() + 3 * STALLED_CLOSE
            n = 0
            while time.monotonic() < deadline:
                n += 1
                await send(stub, "quiet", "talker", f"ping {n}")
                [message] = await receive(healthy, 1)
                assert message.seq == n
            assert server.stalls.closed_connections == 0
            assert server.hub.evicted_count == 1
            healthy.cancel()
            # Its last healthy stream gone, the stuck one is closed after the delay.
            await hub_until(server, lambda: server.hub.evicted_count == 0)
            assert server.stalls.closed_connections == 1
            stalled.cancel()


class TestConnectionBudget:
    """The in-process proof of the memory bound: one connection stops reading all its streams."""

    BUDGET = MemoryBudget(total_bytes=24 << 20, connection_bytes=4 << 20)
    ROOMS = 8

    @pytest.fixture
    def server_config(self) -> ServerConfig:
        # A long delay: the client below reads again before its connection would be closed.
        return ServerConfig(
            port=0,
            queue=QUEUE,
            memory_budget_bytes=self.BUDGET.total_bytes,
            connection_queue_bytes=self.BUDGET.connection_bytes,
            stalled_close_seconds=600,
        )

    # With Redis, members are evicted when the payload reaches this node, after
    # the send returned: the test's own room choice below races with that.
    @pytest.mark.local_only
    async def test_a_connection_that_stops_reading_stays_within_its_budget(
        self, server: ChatServer, stub: Stub
    ) -> None:
        """Its largest streams are evicted with the reason; pinned bytes never pass the budgets.

        A bystander joining and sending meanwhile always succeeds, and the stalled
        client, once it reads again, learns why each evicted stream ended.
        """
        text = "b" * (60 * 1024)
        slack = self.BUDGET.connection_bytes // 32 + len(text) + 1024
        async with open_stub(server.address) as zero_window:
            stalled = [await member(zero_window, "Join", f"r{i}", "hog") for i in range(self.ROOMS)]
            sends = 0
            while server.hub.member_count > 0:
                assert sends * len(text) < MAX_SEND_BYTES, "the hog was never evicted"
                rooms = [f"r{i}" for i in range(self.ROOMS) if server.hub.has_room(f"r{i}")]
                await send(stub, rooms[sends % len(rooms)], "talker", text)
                sends += 1
                usage = server.hub.memory_usage()
                assert usage.total <= self.BUDGET.total_bytes + slack
                assert usage.largest_connection[1] <= self.BUDGET.connection_bytes + slack
                if sends % 50 == 0:  # a bystander's fresh Join + SendMessage round trip
                    probe = await member(stub, "Join", "bystanders", "probe")
                    await send(stub, "bystanders", "probe", "ok?")
                    assert [m.message for m in await receive(probe, 1)] == ["ok?"]
                    probe.cancel()
            reasons = [await drain(call) for call in stalled]
        codes = {code for _, code, _ in reasons}
        assert codes == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        details = [detail for _, _, detail in reasons]
        assert any("this connection had more than" in detail for detail in details), details
        await hub_until(server, lambda: server.hub.evicted_count == 0)
        assert server.hub.memory_usage().total == 0
