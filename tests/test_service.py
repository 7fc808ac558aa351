"""Join and SendMessage over real gRPC: acknowledgement, delivery, membership, removal."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
import pytest

from hello_protocol import hello_pb2 as pb
from hello_server import ChatServer, Hub, ServerConfig
from hello_server.hub import Catchup, Envelope, Joined
from hello_server.service import encode_message
from tests.support import TIMEOUT, within
from tests.support.calls import (
    final_status,
    hub_until,
    joined,
    member_users,
    open_stub,
    read_messages,
    rpc_error,
    send,
    subscribed,
)
from tests.support.network import TcpProxy
from tests.support.redis import BOTH

BACKENDS = BOTH

if TYPE_CHECKING:
    from tests.support.calls import Stub


class TestJoinAcknowledgement:
    async def test_member_is_registered_before_the_headers_arrive(
        self, server: ChatServer, stub: Stub
    ) -> None:
        """When Join's initial metadata arrives, the hub already holds the member and its room."""
        call = stub.Join(pb.JoinRequest(roomID="lobby", user=pb.User(id="alice", name="Alice")))
        await within(call.initial_metadata())
        # No waiting here: the acknowledgement itself is the guarantee.
        assert server.hub.has_room("lobby")
        [member] = server.hub.members("lobby")
        assert (member.user_id, member.name) == ("alice", "Alice")
        call.cancel()

    async def test_join_creates_the_room_so_sending_works_at_once(
        self, server: ChatServer, stub: Stub
    ) -> None:
        """A message sent right after the acknowledgement is delivered to the new member."""
        call = await joined(stub, "fresh", "alice")
        reply = await send(stub, "fresh", "bob", "welcome")
        assert reply.success
        [message] = await read_messages(call, 1)
        assert message.message == "welcome"
        call.cancel()

    async def test_second_join_joins_the_existing_room(
        self, server: ChatServer, stub: Stub
    ) -> None:
        """Joining an existing room adds a member instead of replacing the room."""
        first = await joined(stub, "lobby", "alice")
        second = await joined(stub, "lobby", "bob")
        assert member_users(server, "lobby") == ["alice", "bob"]
        assert server.hub.room_count == 1
        first.cancel()
        second.cancel()


class TestDelivery:
    async def test_delivered_message_carries_sender_room_text_timestamp_and_seq(
        self, stub: Stub
    ) -> None:
        """Members get the sender's id, room id, text, a server timestamp from the send, and seq."""
        call = await joined(stub, "lobby", "alice")
        before = time.time_ns()
        reply = await send(stub, "lobby", "bob", "hello, world")
        after = time.time_ns()
        assert reply.success
        assert reply.seq == 1
        [message] = await read_messages(call, 1)
        assert message.id == "bob"
        assert message.roomID == "lobby"
        assert message.message == "hello, world"
        assert message.seq == 1
        assert message.HasField("timestamp")
        assert before <= message.timestamp.ToNanoseconds() <= after
        call.cancel()

    async def test_reply_seq_matches_the_delivered_seq_and_counts_up(self, stub: Stub) -> None:
        """Exit.seq is the number the delivered message carries, 1, 2, 3... per room."""
        call = await joined(stub, "lobby", "alice")
        seqs = [(await send(stub, "lobby", "alice", f"m{i}")).seq for i in range(5)]
        assert seqs == [1, 2, 3, 4, 5]
        assert [m.seq for m in await read_messages(call, 5)] == seqs
        call.cancel()

    async def test_non_ascii_text_and_ids_arrive_intact(self, stub: Stub) -> None:
        """Unicode room ids, user ids and text (with spaces and newlines inside) round-trip."""
        room, user, text = "salle café", "zoë 😀", "héllo\nwörld 🌍"
        call = await joined(stub, room, user)
        await send(stub, room, user, text)
        [message] = await read_messages(call, 1)
        assert (message.roomID, message.id, message.message) == (room, user, text)
        call.cancel()

    async def test_senders_own_stream_receives_its_message(self, stub: Stub) -> None:
        """SendMessage delivers to the sender's own Join stream too."""
        alice = await joined(stub, "lobby", "alice")
        await send(stub, "lobby", "alice", "talking to myself")
        [message] = await read_messages(alice, 1)
        assert (message.id, message.message) == ("alice", "talking to myself")
        alice.cancel()

    async def test_sender_need_not_be_a_member(self, stub: Stub) -> None:
        """Anyone may send to an existing room; members receive it with the given sender id."""
        alice = await joined(stub, "lobby", "alice")
        await send(stub, "lobby", "outsider", "knock knock")
        [message] = await read_messages(alice, 1)
        assert message.id == "outsider"
        alice.cancel()

    async def test_every_member_receives_each_message(self, stub: Stub) -> None:
        """All members of the room get the message, each once."""
        calls = [await joined(stub, "lobby", f"user{i}") for i in range(4)]
        await send(stub, "lobby", "user0", "to all")
        for call in calls:
            [message] = await read_messages(call, 1)
            assert message.message == "to all"
        for call in calls:
            call.cancel()

    async def test_messages_stay_in_their_room(self, stub: Stub) -> None:
        """A member of one room does not receive another room's messages."""
        a = await joined(stub, "a", "alice")
        b = await joined(stub, "b", "bob")
        await send(stub, "a", "alice", "only for a")
        await send(stub, "b", "bob", "only for b")
        [in_a] = await read_messages(a, 1)
        [in_b] = await read_messages(b, 1)
        assert (in_a.message, in_a.seq) == ("only for a", 1)
        assert (in_b.message, in_b.seq) == ("only for b", 1)
        a.cancel()
        b.cancel()

    async def test_send_returns_without_waiting_for_members_to_read(
        self, server: ChatServer, stub: Stub
    ) -> None:
        """SendMessage replies while the only member has not read anything yet."""
        call = await joined(stub, "lobby", "alice")
        for i in range(200):
            assert (await send(stub, "lobby", "bob", f"unread {i}")).success
        messages = await read_messages(call, 200)
        assert [m.seq for m in messages] == list(range(1, 201))
        assert member_users(server, "lobby") == ["alice"]
        call.cancel()


class TestSeveralStreams:
    async def test_same_user_on_several_streams_each_receive(
        self, server: ChatServer, stub: Stub
    ) -> None:
        """Two Join streams of one user are two members, and both get every message."""
        phone = await joined(stub, "lobby", "alice")
        laptop = await joined(stub, "lobby", "alice")
        assert member_users(server, "lobby") == ["alice", "alice"]
        await send(stub, "lobby", "bob", "ping")
        for call in (phone, laptop):
            [message] = await read_messages(call, 1)
            assert message.message == "ping"
        phone.cancel()
        laptop.cancel()

    async def test_one_stream_leaving_keeps_the_users_other_stream(
        self, server: ChatServer, stub: Stub
    ) -> None:
        """Cancelling one of a user's streams leaves the other a member that still receives."""
        phone = await joined(stub, "lobby", "alice")
        laptop = await joined(stub, "lobby", "alice")
        phone.cancel()
        await hub_until(server, lambda: server.hub.member_count == 1)
        assert member_users(server, "lobby") == ["alice"]
        await send(stub, "lobby", "bob", "still there?")
        [message] = await read_messages(laptop, 1)
        assert message.message == "still there?"
        laptop.cancel()

    async def test_streams_on_separate_connections_each_receive(
        self, server: ChatServer, stub: Stub
    ) -> None:
        """Members on different client connections all receive (several devices)."""
        async with open_stub(server.address) as other:
            here = await joined(stub, "lobby", "alice")
            there = await joined(other, "lobby", "alice")
            await send(stub, "lobby", "alice", "sync")
            assert (await read_messages(here, 1))[0].message == "sync"
            assert (await read_messages(there, 1))[0].message == "sync"
            here.cancel()
            there.cancel()


class TestRemoval:
    async def test_cancel_removes_the_member_and_the_last_one_deletes_the_room(
        self, server: ChatServer, stub: Stub
    ) -> None:
        """A cancelled Join is removed at once; cancelling the last member deletes the room."""
        alice = await joined(stub, "lobby", "alice")
        bob = await joined(stub, "lobby", "bob")
        alice.cancel()
        await hub_until(server, lambda: member_users(server, "lobby") == ["bob"])
        assert server.hub.has_room("lobby")
        bob.cancel()
        await hub_until(server, lambda: not server.hub.has_room("lobby"))
        assert (server.hub.room_count, server.hub.member_count) == (0, 0)

    async def test_a_deleted_room_no_longer_accepts_messages(
        self, server: ChatServer, stub: Stub
    ) -> None:
        """After the last member left, SendMessage to the room is NOT_FOUND."""
        call = await joined(stub, "lobby", "alice")
        await send(stub, "lobby", "alice", "bye")
        call.cancel()
        await hub_until(server, lambda: not server.hub.has_room("lobby"))
        error = await rpc_error(send(stub, "lobby", "alice", "hello?"))
        assert error.code() is grpc.StatusCode.NOT_FOUND

    async def test_a_recreated_room_starts_again_at_seq_one(
        self, server: ChatServer, stub: Stub
    ) -> None:
        """A room deleted and joined again is a new room: its first message has seq 1."""
        call = await joined(stub, "lobby", "alice")
        assert (await send(stub, "lobby", "alice", "one")).seq == 1
        assert (await send(stub, "lobby", "alice", "two")).seq == 2
        call.cancel()
        await hub_until(server, lambda: not server.hub.has_room("lobby"))
        call = await joined(stub, "lobby", "alice")
        assert (await send(stub, "lobby", "alice", "new")).seq == 1
        [message] = await read_messages(call, 1)
        assert (message.message, message.seq) == ("new", 1)
        call.cancel()

    async def test_closing_the_channel_removes_its_members(
        self, server: ChatServer, stub: Stub
    ) -> None:
        """Closing a client's channel ends its Join streams, and the server removes them."""
        stays = await joined(stub, "lobby", "stays")
        async with open_stub(server.address) as other:
            await joined(other, "lobby", "leaves")
            await joined(other, "solo room", "leaves")
            assert server.hub.member_count == 3
        await hub_until(server, lambda: server.hub.member_count == 1)
        assert member_users(server, "lobby") == ["stays"]
        assert not server.hub.has_room("solo room")
        stays.cancel()

    async def test_lost_connection_removes_its_members(
        self, server: ChatServer, stub: Stub, proxy: TcpProxy
    ) -> None:
        """When the TCP connection is reset (network gone), the server removes its members."""
        stays = await joined(stub, "lobby", "stays")
        async with open_stub(proxy.address) as remote:
            lost = await joined(remote, "lobby", "remote")
            await joined(remote, "remote only", "remote")
            await send(remote, "lobby", "remote", "before the cut")
            assert (await read_messages(lost, 1))[0].message == "before the cut"
            await proxy.cut()
            await hub_until(server, lambda: server.hub.member_count == 1)
            assert member_users(server, "lobby") == ["stays"]
            assert not server.hub.has_room("remote only")
            code, _ = await final_status(lost)
            assert code is grpc.StatusCode.UNAVAILABLE
        await send(stub, "lobby", "stays", "room still works")
        assert [m.message for m in await read_messages(stays, 2)] == [
            "before the cut",
            "room still works",
        ]
        stays.cancel()


class TestNotFound:
    async def test_send_to_a_room_nobody_joined_is_not_found(
        self, server: ChatServer, stub: Stub
    ) -> None:
        """SendMessage to a missing room fails NOT_FOUND, naming the room in plain words."""
        error = await rpc_error(send(stub, "nowhere", "alice", "hello?"))
        assert error.code() is grpc.StatusCode.NOT_FOUND
        assert "'nowhere'" in str(error.details())
        assert "does not exist" in str(error.details())
        assert not server.hub.has_room("nowhere")


class FaultyHub(Hub):
    """A real hub with a bug: room "bug" raises an error the service does not expect."""

    def enter(
        self,
        room_id: str,
        user_id: str,
        name: str = "",
        connection: str = "",
        catchup: Catchup | None = None,
        presence: bool = False,
    ) -> Joined:
        if room_id == "bug":
            raise KeyError("a bug in join")
        return super().enter(room_id, user_id, name, connection, catchup, presence)

    def publish(self, room_id: str, sender_id: str, text: str, name: str = "") -> Envelope:
        if text == "bug":
            raise KeyError("a bug in publish")
        return super().publish(room_id, sender_id, text, name)


@pytest.fixture
async def faulty_stub() -> AsyncIterator[Stub]:
    """A stub to a real server whose hub is a `FaultyHub`."""
    server = ChatServer(ServerConfig(port=0))
    server.hub = FaultyHub(encode_message, server.config.queue)
    await server.start()
    try:
        async with open_stub(server.address) as stub:
            yield stub
    finally:
        await server.stop()


def bug_tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Records that carry a traceback of the injected bug; none may come from gRPC itself."""
    traced = [r for r in caplog.records if r.exc_info is not None]
    assert all(r.name == "hello_server.service" for r in traced), [r.name for r in traced]
    return [r for r in traced if "a bug in" in str(r.exc_info[1] if r.exc_info else "")]


class TestInternalErrors:
    """An unexpected error is a bug: INTERNAL "internal error" and one logged traceback."""

    async def test_send_message(self, faulty_stub: Stub, caplog: pytest.LogCaptureFixture) -> None:
        """SendMessage failing unexpectedly ends INTERNAL, not a retryable UNAVAILABLE."""
        member = await joined(faulty_stub, "room", "alice")
        error = await rpc_error(send(faulty_stub, "room", "alice", "bug"))
        assert (error.code(), error.details()) == (grpc.StatusCode.INTERNAL, "internal error")
        assert len(bug_tracebacks(caplog)) == 1
        assert (await send(faulty_stub, "room", "alice", "fine")).success
        member.cancel()

    @pytest.mark.parametrize("rpc", ["Join", "Subscribe"])
    async def test_join_and_subscribe(
        self, faulty_stub: Stub, caplog: pytest.LogCaptureFixture, rpc: str
    ) -> None:
        """A Join or Subscribe failing unexpectedly ends INTERNAL with one logged traceback."""
        call = getattr(faulty_stub, rpc)(pb.JoinRequest(roomID="bug", user=pb.User(id="alice")))
        assert await final_status(call) == (grpc.StatusCode.INTERNAL, "internal error")
        assert len(bug_tracebacks(caplog)) == 1
        (await subscribed(faulty_stub, "room", "alice")).cancel()  # other rooms still work

    async def test_send_stream_answers_that_message_internal(
        self, faulty_stub: Stub, caplog: pytest.LogCaptureFixture
    ) -> None:
        """On SendStream only the failing message is answered INTERNAL; the stream goes on."""
        member = await joined(faulty_stub, "room", "alice")
        requests = [
            pb.Message(id="bot", roomID="room", message=text) for text in ("one", "bug", "two")
        ]
        async with asyncio.timeout(TIMEOUT):
            replies = [reply async for reply in faulty_stub.SendStream(iter(requests))]
        assert [(r.success, r.code, r.message) for r in replies] == [
            (True, 0, ""),
            (False, grpc.StatusCode.INTERNAL.value[0], "internal error"),
            (True, 0, ""),
        ]
        assert len(bug_tracebacks(caplog)) == 1
        assert [m.message for m in await read_messages(member, 2)] == ["one", "two"]
        member.cancel()
