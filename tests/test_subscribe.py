"""Subscribe over real gRPC: Join's semantics with batched delivery.

Eviction of a stalled Subscribe stream is covered with Join's in test_eviction.py.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import grpc

from hello_protocol import hello_pb2 as pb
from hello_protocol import hello_pb2_grpc
from hello_server import ChatServer, QueueLimits, ServerConfig, run_server
from tests.support import within
from tests.support.calls import (
    final_status,
    hub_until,
    joined,
    member_users,
    open_stub,
    read_messages,
    receive,
    send,
    subscribed,
)
from tests.support.redis import BOTH

BACKENDS = BOTH

if TYPE_CHECKING:
    from tests.support.calls import Stub


class TestSubscribeAcknowledgement:
    async def test_member_is_registered_before_the_headers_arrive(
        self, server: ChatServer, stub: Stub
    ) -> None:
        """When Subscribe's initial metadata arrives, the hub already holds the member."""
        call = stub.Subscribe(pb.JoinRequest(roomID="lobby", user=pb.User(id="bot", name="Bot")))
        await within(call.initial_metadata())
        [member] = server.hub.members("lobby")
        assert (member.user_id, member.name) == ("bot", "Bot")
        call.cancel()

    async def test_bad_request_is_invalid_argument_and_nobody_joins(
        self, server: ChatServer, stub: Stub
    ) -> None:
        """Subscribe validates like Join: a control character in the room id is refused."""
        call = stub.Subscribe(pb.JoinRequest(roomID="\x1b[31m", user=pb.User(id="bot")))
        code, details = await final_status(call)
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        assert "room id" in details
        assert server.hub.member_count == 0


class TestSubscribeDelivery:
    async def test_batches_carry_the_delivered_fields(self, stub: Stub) -> None:
        """A batched message has the sender's id, room id, text, server timestamp and seq."""
        call = await subscribed(stub, "lobby", "bot")
        before = time.time_ns()
        reply = await send(stub, "lobby", "alice", "hello")
        after = time.time_ns()
        [message] = await receive(call, 1)
        assert (message.id, message.roomID, message.message) == ("alice", "lobby", "hello")
        assert message.seq == reply.seq == 1
        assert before <= message.timestamp.ToNanoseconds() <= after
        call.cancel()

    async def test_batches_keep_room_order_without_gaps_or_repeats(self, stub: Stub) -> None:
        """Messages sent faster than they are read arrive batched, in order, each exactly once."""
        call = await subscribed(stub, "lobby", "bot")
        for n in range(300):
            await send(stub, "lobby", "alice", f"m{n}")
        messages = await receive(call, 300)
        assert [m.seq for m in messages] == list(range(1, 301))
        assert [m.message for m in messages] == [f"m{n}" for n in range(300)]
        call.cancel()

    async def test_join_and_subscribe_members_see_the_same_order(
        self, server: ChatServer, stub: Stub
    ) -> None:
        """Join and Subscribe members of one room receive the same messages in the same order."""
        joins = [await joined(stub, "mixed", f"j{i}") for i in range(2)]
        subs = [await subscribed(stub, "mixed", f"s{i}") for i in range(2)]
        per_sender = 100

        async def sender(index: int) -> None:
            async with open_stub(server.address) as own:
                for n in range(per_sender):
                    await send(own, "mixed", f"sender{index}", f"{index}:{n}")

        await within(asyncio.gather(*(sender(i) for i in range(3))))
        total = 3 * per_sender
        orders = [[(m.seq, m.id, m.message) for m in await read_messages(c, total)] for c in joins]
        orders += [[(m.seq, m.id, m.message) for m in await receive(c, total)] for c in subs]
        assert all(order == orders[0] for order in orders)
        assert [seq for seq, _, _ in orders[0]] == list(range(1, total + 1))
        for join in joins:
            join.cancel()
        for sub in subs:
            sub.cancel()

    async def test_senders_own_subscription_receives(self, stub: Stub) -> None:
        """The sender's own Subscribe stream gets its message too."""
        call = await subscribed(stub, "lobby", "bot")
        await send(stub, "lobby", "bot", "echo")
        assert [m.message for m in await receive(call, 1)] == ["echo"]
        call.cancel()


class TestSubscribeRemoval:
    async def test_cancel_removes_the_member_and_deletes_the_empty_room(
        self, server: ChatServer, stub: Stub
    ) -> None:
        """Cancelling a Subscribe stream removes the member; the last one takes the room along."""
        sub = await subscribed(stub, "lobby", "bot")
        join = await joined(stub, "lobby", "alice")
        sub.cancel()
        await hub_until(server, lambda: member_users(server, "lobby") == ["alice"])
        join.cancel()
        await hub_until(server, lambda: server.hub.room_count == 0)

    async def test_closing_the_channel_removes_the_subscriber(
        self, server: ChatServer, stub: Stub
    ) -> None:
        """A Subscribe stream whose channel closes is removed, and its room with it."""
        async with open_stub(server.address) as other:
            await subscribed(other, "lobby", "bot")
            assert server.hub.member_count == 1
        await hub_until(server, lambda: server.hub.room_count == 0)

    async def test_same_user_may_subscribe_and_join_at_once(
        self, server: ChatServer, stub: Stub
    ) -> None:
        """A user's Subscribe and Join streams are separate members; one leaving keeps the other."""
        sub = await subscribed(stub, "lobby", "alice")
        join = await joined(stub, "lobby", "alice")
        assert member_users(server, "lobby") == ["alice", "alice"]
        sub.cancel()
        await hub_until(server, lambda: server.hub.member_count == 1)
        await send(stub, "lobby", "bob", "hi")
        assert [m.message for m in await read_messages(join, 1)] == ["hi"]
        join.cancel()


class TestSubscribeBatchSize:
    async def test_a_burst_reaches_a_client_with_the_default_receive_limit(self) -> None:
        """200 x 60 KB sent while a subscriber does not read reach it, in order, by default limits.

        A batch bounded by count only carried the whole backlog (7.6 MB), which a
        gRPC client with the default 4 MiB receive limit refuses.
        """
        text = "z" * (60 * 1024)
        config = ServerConfig(
            port=0,
            queue=QueueLimits(max_messages=1000, max_bytes=64 << 20),
        )
        async with (
            run_server(config) as server,
            grpc.aio.insecure_channel(server.address) as default_channel,
            open_stub(server.address) as sender,
        ):
            call = await subscribed(hello_pb2_grpc.ChatRoomStub(default_channel), "burst", "bot")
            # Not reading: flow control holds the first writes, the rest queue up.
            for _ in range(200):
                await send(sender, "burst", "alice", text)
            messages = await receive(call, 200)
            assert [m.seq for m in messages] == list(range(1, 201))
            assert all(m.message == text for m in messages)
            call.cancel()
