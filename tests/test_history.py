"""Names, history replay, resume and room retention over real gRPC (issue 8, server side).

The contract is ../shared/protocol.md, "Planned additions": headers
``hello-epoch``, ``hello-seq`` and ``hello-recovered`` on the join
acknowledgement; replayed messages before live ones, each exactly once.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc
import pytest

from hello_protocol import hello_pb2 as pb
from hello_protocol.wire import EPOCH_HEADER, RECOVERED_HEADER, SEQ_HEADER
from hello_server import ChatServer, QueueLimits, ServerConfig, run_server
from hello_server.hub import HistoryLimits
from tests.support import within
from tests.support.calls import (
    RPCS,
    acknowledged,
    hub_until,
    joined,
    open_stub,
    receive,
    rpc_error,
    send,
)
from tests.support.network import TcpProxy
from tests.support.redis import BOTH

BACKENDS = BOTH

if TYPE_CHECKING:
    from tests.support.calls import Stub


def request(room: str, user: str, **fields: object) -> pb.JoinRequest:
    return pb.JoinRequest(roomID=room, user=pb.User(id=user), **fields)  # type: ignore[arg-type]


def seqs(messages: list[pb.Message]) -> list[int]:
    return [message.seq for message in messages]


async def fill(stub: Stub, room: str, count: int) -> None:
    for n in range(count):
        await send(stub, room, "bot", f"m{n}")


class TestNames:
    @pytest.mark.parametrize("rpc", RPCS)
    async def test_the_name_sent_is_delivered(self, stub: Stub, rpc: str) -> None:
        call, _ = await acknowledged(stub, rpc, request("names", "ann"))
        await stub.SendMessage(pb.Message(id="bob", roomID="names", message="hi", name="Bob B"))
        (message,) = await receive(call, 1)
        assert (message.id, message.name, message.message) == ("bob", "Bob B", "hi")
        call.cancel()

    async def test_no_name_is_delivered_empty(self, stub: Stub) -> None:
        call = await joined(stub, "names", "ann")
        await send(stub, "names", "bob", "hi")
        (message,) = await receive(call, 1)
        assert message.name == ""
        call.cancel()

    @pytest.mark.parametrize("name", ["\x1b[31mred", " padded", "x" * 129])
    async def test_an_invalid_name_is_refused(self, stub: Stub, name: str) -> None:
        call = await joined(stub, "names", "ann")
        error = await rpc_error(
            stub.SendMessage(pb.Message(id="bob", roomID="names", message="hi", name=name))
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "display name" in (error.details() or "")
        call.cancel()


class TestAcknowledgement:
    @pytest.mark.parametrize("rpc", RPCS)
    async def test_headers_carry_the_epoch_and_last_seq(self, stub: Stub, rpc: str) -> None:
        first, headers = await acknowledged(stub, rpc, request("ack", "ann"))
        assert headers[SEQ_HEADER] == "0"
        assert len(headers[EPOCH_HEADER]) == 16
        assert RECOVERED_HEADER not in headers  # no resume asked
        await fill(stub, "ack", 3)
        second, later = await acknowledged(stub, rpc, request("ack", "bob"))
        assert (later[EPOCH_HEADER], later[SEQ_HEADER]) == (headers[EPOCH_HEADER], "3")
        first.cancel()
        second.cancel()

    async def test_a_new_room_gets_a_new_epoch(self, server: ChatServer, stub: Stub) -> None:
        call, headers = await acknowledged(stub, "Join", request("fresh", "ann"))
        call.cancel()
        await hub_until(server, lambda: not server.hub.has_room("fresh"))
        again, later = await acknowledged(stub, "Join", request("fresh", "ann"))
        assert later[EPOCH_HEADER] != headers[EPOCH_HEADER]
        again.cancel()


class TestReplay:
    @pytest.mark.parametrize("rpc", RPCS)
    async def test_the_latest_messages_come_first_then_live(self, stub: Stub, rpc: str) -> None:
        anchor = await joined(stub, "replay", "anchor")
        await fill(stub, "replay", 5)
        call, headers = await acknowledged(stub, rpc, request("replay", "ann", history=3))
        assert headers[SEQ_HEADER] == "5"
        await send(stub, "replay", "bot", "live")
        messages = await receive(call, 4)
        assert seqs(messages) == [3, 4, 5, 6]
        assert [m.message for m in messages] == ["m2", "m3", "m4", "live"]
        anchor.cancel()
        call.cancel()

    @pytest.mark.parametrize("rpc", RPCS)
    async def test_a_flood_crosses_the_seam_exactly_once(self, stub: Stub, rpc: str) -> None:
        """A joiner arriving mid-flood gets every seq from its replay on, once, in order."""
        total, wanted = 600, 100
        anchor = await joined(stub, "flood", "anchor")
        halfway = asyncio.Event()

        async def flood() -> None:
            for n in range(1, total + 1):
                await send(stub, "flood", "bot", f"m{n}")
                if n == total // 3:
                    halfway.set()

        flooding = asyncio.create_task(flood())
        await within(halfway.wait())
        call, headers = await acknowledged(stub, rpc, request("flood", "ann", history=wanted))
        seam = int(headers[SEQ_HEADER])
        first = max(1, seam - wanted + 1)
        messages = await receive(call, total - first + 1)
        await within(flooding)
        assert seqs(messages) == list(range(first, total + 1))
        assert first < seam < total  # the join did land mid-flood
        anchor.cancel()
        call.cancel()

    async def test_history_is_capped_by_the_configured_size(self) -> None:
        config = ServerConfig(port=0, history=HistoryLimits(max_messages=4, max_bytes=1 << 20))
        async with run_server(config) as server, open_stub(server.address) as stub:
            anchor = await joined(stub, "capped", "anchor")
            await fill(stub, "capped", 10)
            call, _ = await acknowledged(stub, "Join", request("capped", "ann", history=100))
            await send(stub, "capped", "bot", "live")
            assert seqs(await receive(call, 5)) == [7, 8, 9, 10, 11]
            anchor.cancel()
            call.cancel()

    async def test_history_is_capped_by_bytes(self) -> None:
        config = ServerConfig(port=0, history=HistoryLimits(max_messages=100, max_bytes=3000))
        async with run_server(config) as server, open_stub(server.address) as stub:
            anchor = await joined(stub, "bytes", "anchor")
            for _ in range(5):
                await send(stub, "bytes", "bot", "x" * 1000)  # ~1030 bytes serialised
            call, _ = await acknowledged(stub, "Join", request("bytes", "ann", history=100))
            await send(stub, "bytes", "bot", "live")
            assert seqs(await receive(call, 3)) == [4, 5, 6]
            anchor.cancel()
            call.cancel()

    async def test_a_replay_larger_than_the_member_queue_is_not_an_eviction(self) -> None:
        """The replay goes on top of the member's bounds; live messages get the full bounds."""
        config = ServerConfig(port=0, queue=QueueLimits(8, 1 << 20))
        async with run_server(config) as server, open_stub(server.address) as stub:
            anchor = await joined(stub, "big", "anchor")
            await fill(stub, "big", 20)
            call, _ = await acknowledged(stub, "Join", request("big", "ann", history=20))
            for n in range(7):  # within the 8-message bound, unread
                await send(stub, "big", "bot", f"live{n}")
            assert seqs(await receive(call, 27)) == list(range(1, 28))
            anchor.cancel()
            call.cancel()

    @pytest.mark.local_only  # history is in Redis with that backend, not in this process
    async def test_history_is_counted_once_beside_what_members_pin(
        self, server: ChatServer, stub: Stub
    ) -> None:
        """History holds the members' own payloads: counted apart, never twice."""
        reader = await joined(stub, "counted", "ann")
        await fill(stub, "counted", 3)
        held = [m.ByteSize() for m in await receive(reader, 3)]
        usage = server.hub.memory_usage()
        assert usage.history == sum(held)
        # What the reader may still hold is within the history: not added twice.
        assert usage.history <= usage.pinned <= usage.total + usage.history
        reader.cancel()


class TestResume:
    @pytest.mark.parametrize("rpc", RPCS)
    async def test_after_a_cut_exactly_the_missed_messages_arrive(
        self, server: ChatServer, stub: Stub, proxy: TcpProxy, rpc: str
    ) -> None:
        anchor = await joined(stub, "resume", "anchor")
        async with open_stub(proxy.address) as far:
            call, headers = await acknowledged(far, rpc, request("resume", "ann"))
            await fill(stub, "resume", 3)
            seen = await receive(call, 3)
            await proxy.cut()
            await hub_until(server, lambda: server.hub.member_count == 1)
        await fill(stub, "resume", 4)  # seqs 4..7, missed
        back, ack = await acknowledged(
            stub, rpc, request("resume", "ann", since_seq=seen[-1].seq, epoch=headers[EPOCH_HEADER])
        )
        assert (ack[RECOVERED_HEADER], ack[SEQ_HEADER]) == ("true", "7")
        await send(stub, "resume", "bot", "live")
        assert seqs(await receive(back, 5)) == [4, 5, 6, 7, 8]
        anchor.cancel()
        back.cancel()

    @pytest.mark.parametrize(
        ("since", "epoch"), [(2, "0123456789abcdef"), (2, ""), (0, "0123456789abcdef"), (99, None)]
    )
    async def test_a_foreign_epoch_or_seq_recovers_nothing(
        self, stub: Stub, since: int, epoch: str | None
    ) -> None:
        anchor, headers = await acknowledged(stub, "Join", request("lost", "anchor"))
        await fill(stub, "lost", 3)
        asked = headers[EPOCH_HEADER] if epoch is None else epoch
        call, ack = await acknowledged(
            stub, "Join", request("lost", "ann", since_seq=since, epoch=asked, history=10)
        )
        assert ack[RECOVERED_HEADER] == "false"
        await send(stub, "lost", "bot", "live")
        assert seqs(await receive(call, 1)) == [4]  # nothing replayed, not even the history
        anchor.cancel()
        call.cancel()

    async def test_a_seq_older_than_the_history_recovers_nothing(self) -> None:
        config = ServerConfig(port=0, history=HistoryLimits(max_messages=3, max_bytes=1 << 20))
        async with run_server(config) as server, open_stub(server.address) as stub:
            anchor, headers = await acknowledged(stub, "Join", request("old", "anchor"))
            await fill(stub, "old", 10)
            epoch = headers[EPOCH_HEADER]
            call, ack = await acknowledged(
                stub, "Join", request("old", "ann", since_seq=6, epoch=epoch)
            )
            assert ack[RECOVERED_HEADER] == "false"
            await send(stub, "old", "bot", "live")
            assert seqs(await receive(call, 1)) == [11]
            # The oldest seq the history (now 9..11) still reaches back to recovers.
            edge, ack = await acknowledged(
                stub, "Join", request("old", "bob", since_seq=8, epoch=epoch)
            )
            assert ack[RECOVERED_HEADER] == "true"
            assert seqs(await receive(edge, 3)) == [9, 10, 11]
            for open_call in (anchor, call, edge):
                open_call.cancel()


class TestRoomTtl:
    async def test_a_member_returning_within_the_ttl_resumes_losslessly(self) -> None:
        async with (
            run_server(ServerConfig(port=0, room_ttl_seconds=60)) as server,
            open_stub(server.address) as stub,
        ):
            sender = await joined(stub, "kept", "bob")
            call, headers = await acknowledged(stub, "Subscribe", request("kept", "ann"))
            await fill(stub, "kept", 5)
            seen = await receive(call, 1)  # ann read only the first one
            call.cancel()
            sender.cancel()
            await hub_until(server, lambda: server.hub.member_count == 0)
            assert server.hub.room_count == 1  # kept
            refused = stub.SendMessage(pb.Message(id="x", roomID="kept", message="m"))
            error = await rpc_error(refused)
            assert error.code() == grpc.StatusCode.NOT_FOUND
            error = await rpc_error(stub.Members(pb.RoomRequest(roomID="kept")))
            assert error.code() == grpc.StatusCode.NOT_FOUND  # nobody is in it
            back, ack = await acknowledged(
                stub,
                "Subscribe",
                request("kept", "ann", since_seq=seen[-1].seq, epoch=headers[EPOCH_HEADER]),
            )
            assert (ack[RECOVERED_HEADER], ack[EPOCH_HEADER]) == ("true", headers[EPOCH_HEADER])
            await send(stub, "kept", "bob", "live")
            assert seqs(await receive(back, 5)) == [2, 3, 4, 5, 6]
            back.cancel()

    async def test_expired_rooms_are_freed(self) -> None:
        rooms = 300
        async with (
            run_server(ServerConfig(port=0, room_ttl_seconds=0.2)) as server,
            open_stub(server.address) as stub,
        ):
            first_epoch = ""
            for n in range(rooms):
                call, headers = await acknowledged(stub, "Join", request(f"r{n}", "ann"))
                first_epoch = first_epoch or headers[EPOCH_HEADER]
                await send(stub, f"r{n}", "ann", "hello")
                call.cancel()
            await hub_until(server, lambda: server.hub.member_count == 0)
            assert server.hub.room_count > 0  # some at least are still kept
            await hub_until(server, lambda: server.hub.room_count == 0)
            # An expired room starts afresh: a new epoch, and a resume cannot recover.
            call, ack = await acknowledged(
                stub, "Join", request("r0", "ann", since_seq=1, epoch=first_epoch)
            )
            assert ack[RECOVERED_HEADER] == "false"
            assert ack[EPOCH_HEADER] != first_epoch
            assert ack[SEQ_HEADER] == "0"
            call.cancel()
