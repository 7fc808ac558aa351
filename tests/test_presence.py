"""Presence over real gRPC: the Members RPC and JOINED/LEFT events on Subscribe (issue 8).

Per user, not per session: a user's first session joining is JOINED, its last
leaving is LEFT. Events are live only and go to Subscribe streams that asked.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc

from hello_protocol import hello_pb2 as pb
from hello_protocol.wire import PresenceRecord, frame_batch
from hello_server import ChatServer
from tests.support import TIMEOUT
from tests.support.calls import (
    EOF,
    acknowledged,
    hub_until,
    joined,
    receive,
    rpc_error,
    send,
)
from tests.support.redis import BOTH

BACKENDS = BOTH

if TYPE_CHECKING:
    from tests.support.calls import Stub, SubscribeCall

JOINED = pb.PresenceEvent.JOINED
LEFT = pb.PresenceEvent.LEFT


async def watch(stub: Stub, room: str, user: str) -> SubscribeCall:
    call, _ = await acknowledged(
        stub, "Subscribe", pb.JoinRequest(roomID=room, user=pb.User(id=user), presence=True)
    )
    return call


async def events_until_text(
    call: SubscribeCall, text: str
) -> tuple[list[tuple[str, str, int]], list[pb.Message]]:
    """Read batches until the message ``text``: the presence events (user, name, kind) before it."""
    events: list[tuple[str, str, int]] = []
    messages: list[pb.Message] = []
    async with asyncio.timeout(TIMEOUT):
        while not any(message.message == text for message in messages):
            batch = await call.read()
            assert batch is not EOF, "the stream ended"
            assert isinstance(batch, pb.MessageBatch)
            events += [(e.user.id, e.user.name, e.kind) for e in batch.presence]
            messages += batch.messages
    return events, messages


def members(reply: pb.MemberList) -> list[tuple[str, str, int]]:
    return [(m.user.id, m.user.name, m.sessions) for m in reply.members]


class TestPresenceEvents:
    async def test_two_sessions_of_one_user_make_one_presence(
        self, server: ChatServer, stub: Stub
    ) -> None:
        watcher = await watch(stub, "p", "w")
        first = await joined(stub, "p", "bob", "Bob")
        second, _ = await acknowledged(
            stub, "Subscribe", pb.JoinRequest(roomID="p", user=pb.User(id="bob", name="Bob"))
        )
        await send(stub, "p", "w", "after joins")
        events, _ = await events_until_text(watcher, "after joins")
        assert events == [("bob", "Bob", JOINED)]  # once, not once per session

        listing = await stub.Members(pb.RoomRequest(roomID="p"), timeout=TIMEOUT)
        assert members(listing) == [("w", "", 1), ("bob", "Bob", 2)]
        assert all(m.since.seconds > 0 for m in listing.members)

        first.cancel()
        await hub_until(server, lambda: server.hub.member_count == 2)
        await send(stub, "p", "w", "one left")
        events, _ = await events_until_text(watcher, "one left")
        assert events == []  # bob is still there
        listing = await stub.Members(pb.RoomRequest(roomID="p"), timeout=TIMEOUT)
        assert members(listing) == [("w", "", 1), ("bob", "Bob", 1)]

        second.cancel()
        await hub_until(server, lambda: server.hub.member_count == 1)
        await send(stub, "p", "w", "both left")
        events, _ = await events_until_text(watcher, "both left")
        assert events == [("bob", "Bob", LEFT)]
        listing = await stub.Members(pb.RoomRequest(roomID="p"), timeout=TIMEOUT)
        assert members(listing) == [("w", "", 1)]
        watcher.cancel()

    async def test_streams_that_did_not_ask_get_no_presence(self, stub: Stub) -> None:
        plain, _ = await acknowledged(
            stub, "Subscribe", pb.JoinRequest(roomID="q", user=pb.User(id="ann"))
        )
        # A Join stream cannot carry presence: asking changes nothing.
        join, _ = await acknowledged(
            stub, "Join", pb.JoinRequest(roomID="q", user=pb.User(id="cy"), presence=True)
        )
        comer = await joined(stub, "q", "bob")
        await send(stub, "q", "bob", "hi")
        events, messages = await events_until_text(plain, "hi")
        assert (events, [m.message for m in messages]) == ([], ["hi"])
        assert [m.message for m in await receive(join, 1)] == ["hi"]
        for call in (plain, join, comer):
            call.cancel()


class TestMembersRpc:
    async def test_an_unknown_room_is_not_found(self, stub: Stub) -> None:
        error = await rpc_error(stub.Members(pb.RoomRequest(roomID="nowhere")))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert "does not exist" in (error.details() or "")

    async def test_a_bad_room_id_is_invalid(self, stub: Stub) -> None:
        for room in ("", "\x00x", " padded"):
            error = await rpc_error(stub.Members(pb.RoomRequest(roomID=room)))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "room id" in (error.details() or "")


def test_presence_records_are_framed_as_batch_field_two() -> None:
    message = pb.Message(id="a", roomID="r", message="hi", seq=1).SerializeToString()
    event = pb.PresenceEvent(user=pb.User(id="b"), kind=JOINED)
    batch = pb.MessageBatch.FromString(
        frame_batch([message, PresenceRecord(event.SerializeToString())])
    )
    assert [m.message for m in batch.messages] == ["hi"]
    assert [(e.user.id, e.kind) for e in batch.presence] == [("b", JOINED)]
