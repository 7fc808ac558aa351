"""The client library's names, history, presence, members and reconnect (issue 8, client 1).

Real in-process servers over real gRPC; a lost connection is a TcpProxy that
resets its connections, a restart a new server on the same port.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from hello_client import (
    ChatClient,
    ChatMessage,
    PresenceChange,
    Reconnected,
    Reconnecting,
    ReconnectPolicy,
    RoomEvent,
    RoomNotFound,
    ServerUnavailable,
    StreamSender,
    Subscription,
)
from hello_protocol import hello_pb2 as pb
from hello_server import ChatServer, ServerConfig, run_server
from tests.support import within
from tests.support.network import TcpProxy
from tests.support.redis import BOTH
from tests.support.terminal import TMUX, Listener, Tmux

BACKENDS = BOTH

# Fast retries keep the tests short; the policy itself is the default's shape.
QUICK = ReconnectPolicy(first_delay=0.05, max_delay=0.5, give_up_seconds=60)


@pytest.fixture
async def client(server: ChatServer) -> AsyncIterator[ChatClient]:
    async with ChatClient(server.address) as chat:
        yield chat


async def events_until(room: Subscription, text: str) -> list[RoomEvent]:
    """Every event of ``room`` up to and including the message ``text``."""
    seen: list[RoomEvent] = []
    async with asyncio.timeout(30):
        async for event in room.events():
            seen.append(event)
            if isinstance(event, ChatMessage) and event.text == text:
                return seen
    raise AssertionError(f"the stream ended before {text!r}: {seen}")


def messages(events: list[RoomEvent]) -> list[ChatMessage]:
    return [event for event in events if isinstance(event, ChatMessage)]


class TestNamesHistoryMembers:
    async def test_the_name_sent_is_delivered(self, client: ChatClient) -> None:
        async with await client.join("names", "ann") as room:
            await client.send("names", "bob", "hi", name="Bob Dylan")
            await client.send("names", "carl", "yo")
            async with StreamSender(client) as sender:
                await sender.send("names", "dee", "streamed", name="Dee Dee")
            got = [await within(anext(room)) for _ in range(3)]
        assert [(m.sender, m.name) for m in got] == [
            ("bob", "Bob Dylan"),
            ("carl", ""),
            ("dee", "Dee Dee"),
        ]

    async def test_history_replays_the_latest_then_live(self, client: ChatClient) -> None:
        async with await client.join("hist", "anchor") as anchor:
            for n in range(5):
                await client.send("hist", "bob", f"m{n}")
            async with await client.join("hist", "ann", history=3) as room:
                assert (room.joined_seq, len(room.epoch) > 0) == (5, True)
                await client.send("hist", "bob", "live")
                got = [(await within(anext(room))) for _ in range(4)]
                assert [m.text for m in got] == ["m2", "m3", "m4", "live"]
                assert room.last_seq == 6
            assert anchor.epoch == room.epoch

    async def test_members_lists_the_users(self, client: ChatClient) -> None:
        async with (
            await client.join("who", "ann", "Ann"),
            await client.join("who", "ann"),
            await client.join("who", "bob"),
        ):
            members = await within(client.members("who"))
        assert sorted((m.user, m.name, m.sessions) for m in members) == [
            ("ann", "Ann", 2),
            ("bob", "", 1),
        ]

    async def test_members_of_an_unknown_room_is_room_not_found(self, client: ChatClient) -> None:
        with pytest.raises(RoomNotFound):
            await within(client.members("nobody-here"))

    async def test_presence_changes_are_yielded_by_events(self, client: ChatClient) -> None:
        async with await client.join("pres", "ann", presence=True) as room:
            async with await client.join("pres", "bob", "Bob"):
                pass
            changes: list[PresenceChange] = []
            async with asyncio.timeout(30):
                async for event in room.events():
                    assert isinstance(event, PresenceChange)
                    changes.append(event)
                    if not event.joined:
                        break
        assert [(c.user, c.name, c.joined) for c in changes] == [
            ("bob", "Bob", True),
            ("bob", "Bob", False),
        ]


class TestReconnect:
    async def test_a_dropped_connection_resumes_exactly_once(
        self, server: ChatServer, client: ChatClient, proxy: TcpProxy
    ) -> None:
        """A sender keeps sending while the reader's connection is reset: every seq once."""
        total = 60
        async with (
            await client.join("blip", "anchor"),  # keeps the room while ann is away
            ChatClient(proxy.address) as far,
            await far.join("blip", "ann", reconnect=QUICK) as room,
        ):
            first = await client.send("blip", "bob", "m0")

            async def keep_sending() -> None:
                for n in range(1, total):
                    await client.send("blip", "bob", f"m{n}")
                    if n == total // 3:
                        await proxy.drop()
                await client.send("blip", "bob", "end")

            sending = asyncio.create_task(keep_sending())
            events = await events_until(room, "end")
            await within(sending)
        seqs = [m.seq for m in messages(events)]
        assert seqs == list(range(first, first + total + 1))
        reconnected = [e for e in events if isinstance(e, Reconnected)]
        assert reconnected, "the connection was never lost"
        assert all(e.recovered for e in reconnected)
        assert room.reconnects == len(reconnected)

    async def test_a_restarted_server_is_rejoined_and_the_loss_reported(self) -> None:
        """A new server on the same port: a new epoch, so recovered=False, and the room goes on."""
        first = ChatServer(ServerConfig(port=0, grace_seconds=1))
        await first.start()
        port = first.port
        try:
            async with ChatClient(first.address) as chat:
                room = await chat.join("again", "ann", reconnect=QUICK)
                await chat.send("again", "ann", "before")
                assert (await within(anext(room))).text == "before"
                old_epoch = room.epoch
                await first.stop()
                assert isinstance(await within(room.next_event()), Reconnecting)
                async with run_server(ServerConfig(port=port)):
                    back = await within(room.next_event())
                    assert isinstance(back, Reconnected)
                    assert not back.recovered
                    assert room.epoch != old_epoch
                    await chat.send("again", "bob", "after")
                    after = await within(anext(room))
                    assert (after.text, after.seq, room.recovered) == ("after", 1, False)
                    await room.close()
        finally:
            await first.stop()

    async def test_replayed_history_is_told_apart_from_live_and_later_epochs(self) -> None:
        """``replayed``: the join's history only; a restarted room's low seqs are live."""
        first = ChatServer(ServerConfig(port=0, grace_seconds=1))
        await first.start()
        port = first.port
        try:
            async with ChatClient(first.address) as chat:
                anchor = await chat.join("told", "anchor", reconnect=None)
                for n in range(3):
                    await chat.send("told", "bob", f"m{n}")
                room = await chat.join("told", "ann", history=2, reconnect=QUICK)
                await chat.send("told", "bob", "live")
                got = [await within(anext(room)) for _ in range(3)]
                assert [(m.text, room.replayed(m)) for m in got] == [
                    ("m1", True),
                    ("m2", True),
                    ("live", False),
                ]
                await anchor.close()
                await first.stop()
                assert isinstance(await within(room.next_event()), Reconnecting)
                async with run_server(ServerConfig(port=port)):
                    back = await within(room.next_event())
                    assert isinstance(back, Reconnected)
                    assert not back.recovered  # a new epoch
                    await chat.send("told", "bob", "after")
                    after = await within(anext(room))
                    assert (after.text, after.seq, room.replayed(after)) == ("after", 1, False)
                    await room.close()
        finally:
            await first.stop()

    async def test_without_reconnect_a_drain_ends_the_subscription(self) -> None:
        async with (
            run_server(ServerConfig(port=0, grace_seconds=1)) as running,
            ChatClient(running.address) as chat,
        ):
            room = await chat.join("once", "ann", reconnect=None)
            stopping = asyncio.create_task(running.stop())
            with pytest.raises(ServerUnavailable, match="shutting down"):
                await within(anext(room))
            await within(stopping)

    async def test_giving_up_raises_server_unavailable(self) -> None:
        policy = ReconnectPolicy(first_delay=0.05, max_delay=0.1, give_up_seconds=0.5)
        running = ChatServer(ServerConfig(port=0, grace_seconds=1))
        await running.start()
        async with ChatClient(running.address) as chat:
            room = await chat.join("gone", "ann", reconnect=policy)
            await running.stop()
            assert isinstance(await within(room.next_event()), Reconnecting)
            with pytest.raises(ServerUnavailable, match="gave up rejoining gone"):
                await within(room.next_event())

    async def test_close_during_reconnect_ends_the_events(self) -> None:
        running = ChatServer(ServerConfig(port=0, grace_seconds=1))
        await running.start()
        async with ChatClient(running.address) as chat:
            room = await chat.join("bye", "ann", reconnect=QUICK)
            await running.stop()
            assert isinstance(await within(room.next_event()), Reconnecting)
            waiting = asyncio.create_task(room.next_event())
            await room.close()
            assert await within(waiting) is None

    async def test_closing_the_client_interrupts_the_backoff_wait(self) -> None:
        """ChatClient.close() with the server gone ends its subscriptions at once, cleanly."""
        # A wait far longer than TIMEOUT: only close() can end it in time.
        patient = ReconnectPolicy(first_delay=600, max_delay=600, give_up_seconds=3600)
        loop = asyncio.get_running_loop()
        unhandled: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _, context: unhandled.append(context))
        try:
            running = ChatServer(ServerConfig(port=0, grace_seconds=1))
            await running.start()
            chat = ChatClient(running.address)
            room = await chat.join("bye", "ann", reconnect=patient)
            await running.stop()
            assert isinstance(await within(room.next_event()), Reconnecting)
            waiting = asyncio.create_task(room.next_event())
            # One turn of the loop (no time passes): the task runs up to its
            # first suspension, the backoff wait, and is still in it.
            await asyncio.sleep(0)
            assert not waiting.done()
            await within(chat.close())
            assert await within(waiting) is None
            assert await within(room.next_event()) is None  # and it stays ended
            await room.close()  # closing again is harmless
            assert asyncio.all_tasks() == {asyncio.current_task()}
        finally:
            loop.set_exception_handler(None)
        assert unhandled == []


class _OriginalServer:
    """A server of the original protocol: Join and SendMessage only, no join headers.

    Stands in for the servers written before issue 8, which the real one no
    longer is; ``end_streams`` ends every Join with UNAVAILABLE, as a drain does.
    """

    def __init__(self) -> None:
        self.members: list[asyncio.Queue[pb.Message | None]] = []
        self.server = grpc.aio.server()
        handlers = {
            "Join": grpc.unary_stream_rpc_method_handler(
                self._join,
                request_deserializer=pb.JoinRequest.FromString,
                response_serializer=pb.Message.SerializeToString,
            ),
            "SendMessage": grpc.unary_unary_rpc_method_handler(
                self._send,
                request_deserializer=pb.Message.FromString,
                response_serializer=pb.Exit.SerializeToString,
            ),
        }
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("hello.ChatRoom", handlers),)
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.joined = asyncio.Event()

    async def _join(
        self, request: pb.JoinRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.Message]:
        inbox: asyncio.Queue[pb.Message | None] = asyncio.Queue()
        self.members.append(inbox)
        await context.send_initial_metadata(())  # the acknowledgement, with no hello headers
        self.joined.set()
        try:
            while (message := await inbox.get()) is not None:
                yield message
            await context.abort(grpc.StatusCode.UNAVAILABLE, "going away")
        finally:
            self.members.remove(inbox)

    async def _send(
        self, request: pb.Message, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Exit:
        for inbox in self.members:
            inbox.put_nowait(request)  # no seq, no timestamp: the original server's way
        return pb.Exit(success=True)

    def end_streams(self) -> None:
        self.joined.clear()
        for inbox in self.members:
            inbox.put_nowait(None)


class TestOriginalServer:
    async def test_no_headers_degrade_quietly_and_reconnect_reports_no_recovery(self) -> None:
        original = _OriginalServer()
        await original.server.start()
        try:
            async with ChatClient(f"127.0.0.1:{original.port}") as chat:
                room = await within(
                    chat.join("old", "ann", history=5, presence=True, reconnect=QUICK)
                )
                assert (room.batched, room.epoch, room.joined_seq) == (False, "", 0)
                await chat.send("old", "bob", "one")
                await chat.send("old", "bob", "one")  # same seq 0 twice: nothing is dropped
                assert [(await within(anext(room))).text for _ in range(2)] == ["one", "one"]
                original.end_streams()
                assert isinstance(await within(room.next_event()), Reconnecting)
                assert await within(room.next_event()) == Reconnected(recovered=False, attempts=1)
                await within(original.joined.wait())
                await chat.send("old", "bob", "two")
                assert (await within(anext(room))).text == "two"
                await room.close()
        finally:
            await original.server.stop(None)


class TestListenResumes:
    async def test_listen_json_resumes_a_dropped_connection_without_loss(
        self, client: ChatClient, proxy: TcpProxy
    ) -> None:
        """The real `listen --json` behind a dropping proxy: every seq once, "no message missed"."""
        async with await client.join("logged", "anchor"):  # keeps the room while logger is away
            listener = Listener(proxy.address, "logged", "logger", ["--count", "20"])
            try:
                await asyncio.to_thread(listener.wait_joined)
                for n in range(5):
                    await client.send("logged", "bob", f"m{n}")
                seen = [await asyncio.to_thread(listener.next_message) for _ in range(5)]
                await proxy.drop()
                for n in range(5, 20):
                    await client.send("logged", "bob", f"m{n}")
                seen += [await asyncio.to_thread(listener.next_message) for _ in range(15)]
                assert await asyncio.to_thread(listener.process.wait, 30) == 0
                errors = await asyncio.to_thread(listener.drain_stderr)
            finally:
                listener.stop()
        assert [m["text"] for m in seen] == [f"m{n}" for n in range(20)]
        assert [m["seq"] for m in seen] == list(range(1, 21))
        assert "hello-chat: lost logged (" in errors
        assert "hello-chat: rejoined logged; no message missed" in errors


@pytest.mark.skipif(TMUX is None, reason="the terminal tests drive tmux")
class TestRoomAcrossADrop:
    async def test_the_room_says_reconnecting_then_nothing_missed(
        self, client: ChatClient, proxy: TcpProxy
    ) -> None:
        """The interactive room behind a dropping proxy: the two status lines, then the message."""
        term = Tmux()
        try:
            async with await client.join("steady", "anchor"):
                args = ["--server", proxy.address, "--room", "steady", "--user", "ola"]
                term.start("ola", args)
                await asyncio.to_thread(term.wait_for, "ola", "[steady] ola>")
                await proxy.drop()
                await asyncio.to_thread(term.wait_for, "ola", "reconnecting…")
                await client.send("steady", "bob", "while you were out")
                await asyncio.to_thread(term.wait_for, "ola", "reconnected, nothing missed")
                await asyncio.to_thread(term.wait_for, "ola", "bob: while you were out")
                term.type("ola", "/quit")
                term.keys("ola", "Enter")
                assert await asyncio.to_thread(term.wait_exit, "ola") == 0
        finally:
            term.close()
