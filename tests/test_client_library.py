"""The hello_client library against a real in-process hello server, over real gRPC.

What hello-chat and scripts rely on: ``join`` returns once the server has
acknowledged the join, ``send`` delivers, leaving removes the member at once,
and every failure is one of a few exceptions with a message a person can act on.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from hello_client import (
    ChatClient,
    ChatMessage,
    Evicted,
    HelloError,
    InvalidInput,
    RoomNotFound,
    ServerUnavailable,
    Subscription,
)
from hello_client.sender import StreamSender
from hello_protocol.wire import DEFAULT_MAX_TEXT_BYTES
from hello_server import ChatServer, InputLimits, QueueLimits, ServerConfig, run_server
from tests.support import within
from tests.support.calls import hub_until, member_users
from tests.support.redis import BOTH

BACKENDS = BOTH


@pytest.fixture
async def client(server: ChatServer) -> AsyncIterator[ChatClient]:
    async with ChatClient(server.address) as chat:
        yield chat


class TestJoinAndSend:
    async def test_join_returns_once_the_member_is_registered(
        self, server: ChatServer, client: ChatClient
    ) -> None:
        """When join returns, the server already counts the caller as a member."""
        async with await within(client.join("lobby", "alice", "Alice")) as room:
            assert member_users(server, "lobby") == ["alice"]
            assert (room.room, room.user) == ("lobby", "alice")

    async def test_a_sent_message_arrives_with_sender_room_text_time_and_seq(
        self, client: ChatClient
    ) -> None:
        """send returns the seq the delivered message carries; the timestamp is the server's."""
        async with await client.join("lobby", "alice") as room:
            before = datetime.now(UTC)
            seq = await client.send("lobby", "bob", "hi [b]there[/b] \x1b[31m é")
            message = await within(anext(room))
        assert isinstance(message, ChatMessage)
        assert (message.sender, message.room, message.text, message.seq) == (
            "bob",
            "lobby",
            "hi [b]there[/b] \x1b[31m é",
            seq,
        )
        assert message.timestamp.tzinfo is not None
        assert abs(message.timestamp - before) < timedelta(seconds=30)

    async def test_messages_from_one_sender_arrive_in_order(self, client: ChatClient) -> None:
        """Sends that each waited for their reply arrive in the order sent (as piped mode needs)."""
        async with await client.join("order", "reader") as room:
            for n in range(20):
                await client.send("order", "writer", f"line {n}")
            received = [(await within(anext(room))).text for _ in range(20)]
        assert received == [f"line {n}" for n in range(20)]

    async def test_closing_the_subscription_removes_the_member_and_the_room(
        self, server: ChatServer, client: ChatClient
    ) -> None:
        """Leaving ends the Join call; the server drops the member and the empty room."""
        room = await client.join("brief", "alice")
        await room.close()
        await hub_until(server, lambda: not server.hub.has_room("brief"))
        with pytest.raises(RoomNotFound):
            await client.send("brief", "alice", "anyone?")

    async def test_closing_the_client_ends_its_subscriptions(self, server: ChatServer) -> None:
        """Closing the ChatClient (as hello-chat does on exit) removes its members too."""
        async with ChatClient(server.address) as chat:
            await chat.join("closing", "alice")
            assert server.hub.has_room("closing")
        await hub_until(server, lambda: not server.hub.has_room("closing"))


class TestFailures:
    async def test_sending_to_a_room_nobody_is_in(self, client: ChatClient) -> None:
        """RoomNotFound, saying that nobody has joined the room."""
        with pytest.raises(RoomNotFound, match="room 'ghost' does not exist: nobody has joined"):
            await client.send("ghost", "alice", "hello?")

    @pytest.mark.parametrize(
        ("room", "user", "text", "reason"),
        [
            ("lobby", "alice", "", "message text is empty"),
            ("lobby", " alice", "hi", "starts or ends with whitespace"),
            ("lob\x1bby", "alice", "hi", "control or invisible characters"),
        ],
    )
    async def test_invalid_input_on_send(
        self, client: ChatClient, room: str, user: str, text: str, reason: str
    ) -> None:
        """InvalidInput carries the server's reason."""
        async with await client.join("lobby", "keeper"):
            with pytest.raises(InvalidInput, match=reason):
                await client.send(room, user, text)

    async def test_invalid_input_on_join(self, client: ChatClient) -> None:
        """A join the server refuses raises at join, not at the first read."""
        with pytest.raises(InvalidInput, match="user id is empty"):
            await client.join("lobby", "")

    async def test_no_server_is_server_unavailable(self) -> None:
        """Nothing listening: ServerUnavailable naming the address and the reason."""
        with socket.socket() as sock:  # bound, never listening: connections are refused
            sock.bind(("127.0.0.1", 0))
            address = f"127.0.0.1:{sock.getsockname()[1]}"
            async with ChatClient(address) as chat:
                with pytest.raises(ServerUnavailable, match="connection refused") as refused:
                    await within(chat.send("r", "alice", "hi"))
                with pytest.raises(ServerUnavailable):
                    await within(chat.join("r", "alice"))
        assert str(refused.value).startswith(f"cannot reach server {address}: ")

    async def test_server_shutdown_ends_the_subscription(self) -> None:
        """Without reconnect, a draining server ends the stream: "is shutting down"."""
        async with (
            run_server(ServerConfig(port=0, grace_seconds=5)) as running,
            ChatClient(running.address) as chat,
        ):
            room = await chat.join("doomed", "alice", reconnect=None)
            stopping = asyncio.create_task(running.stop())
            with pytest.raises(ServerUnavailable, match="is shutting down"):
                await within(anext(room))
            await room.close()
            await within(stopping)

    async def test_a_member_that_does_not_read_is_evicted(self) -> None:
        """A stalled subscription, once read again, yields what was queued, then Evicted."""
        config = ServerConfig(port=0, queue=QueueLimits(max_messages=8, max_bytes=1 << 20))
        async with (
            run_server(config) as running,
            ChatClient(running.address) as chat,
            await chat.join("flood", "sleepy") as stalled,
            await chat.join("flood", "keeper"),
        ):
            text = "z" * 16_384
            sent = 0
            while "sleepy" in member_users(running, "flood"):
                assert sent < 8192, "the stalled member was never evicted"
                await chat.send("flood", "talker", text)
                sent += 1
            with pytest.raises(Evicted, match="too slow") as evicted:
                await within(_read_to_the_end(stalled))
        assert isinstance(evicted.value, HelloError)


class TestLimitsBeforeSending:
    """Input over the client's limits is refused by the library, in the server's words."""

    @pytest.mark.parametrize("size", [DEFAULT_MAX_TEXT_BYTES + 1, 69_700])
    async def test_text_over_the_default_limit_names_the_limit(
        self, client: ChatClient, size: int
    ) -> None:
        """Just over, or far over: "message text is N bytes; the limit is 65536 bytes"."""
        async with await client.join("big", "keeper"):
            with pytest.raises(InvalidInput) as refused:
                await client.send("big", "alice", "x" * size)
        assert str(refused.value) == f"message text is {size} bytes; the limit is 65536 bytes"

    async def test_the_text_limit_counts_utf8_bytes(self, server: ChatServer) -> None:
        """The limit is in bytes, as the server counts it: 6 two-byte characters are 12 bytes."""
        async with ChatClient(server.address, max_text_bytes=10) as chat:
            with pytest.raises(InvalidInput, match="message text is 12 bytes; the limit is 10 "):
                await chat.send("any", "alice", "é" * 6)

    async def test_the_clients_own_limit_applies_before_the_server_sees_it(
        self, server: ChatServer
    ) -> None:
        """A client told a smaller limit refuses text the server would accept: no RPC is made."""
        async with (
            ChatClient(server.address, max_text_bytes=10) as chat,
            await chat.join("small", "keeper") as room,
        ):
            with pytest.raises(InvalidInput, match="message text is 11 bytes; the limit is 10"):
                await chat.send("small", "alice", "x" * 11)
            async with StreamSender(chat) as sender:
                with pytest.raises(InvalidInput, match="message text is 11 bytes; the limit is"):
                    await sender.send("small", "alice", "y" * 11)
                # Nothing was sent: the first message the room sees is this one, seq 1.
                assert await sender.send("small", "alice", "fits") == 1
            assert (await within(anext(room))).text == "fits"

    async def test_a_client_told_too_big_a_limit_learns_the_server_refused_the_size(
        self, server: ChatServer
    ) -> None:
        """Over the server's gRPC limit (not the client's): InvalidInput naming the server."""
        async with (
            ChatClient(server.address, max_text_bytes=1 << 20) as chat,
            await chat.join("big", "keeper"),
        ):
            with pytest.raises(InvalidInput, match=r"larger than server \S+ accepts") as refused:
                await chat.send("big", "alice", "x" * 200_000)
        assert "bigger text limit" in str(refused.value)

    async def test_ids_over_the_limit_are_refused_at_join(self, server: ChatServer) -> None:
        """join checks the room and user ids against the client's limits first."""
        async with ChatClient(server.address, max_id_chars=4) as chat:
            with pytest.raises(InvalidInput, match="room id is 5 characters long; the limit is 4"):
                await chat.join("lobby", "bob")
            with pytest.raises(InvalidInput, match="user id is 5 characters long; the limit is 4"):
                await chat.join("hall", "alice")
        assert not server.hub.has_room("lobby")
        assert not server.hub.has_room("hall")


BIG_TEXT_LIMIT = 6 * 1024 * 1024


class TestReceiveLimit:
    """The channel accepts gRPC's default 4 MiB, or the largest message the text limit allows."""

    @pytest.fixture
    def server_config(self) -> ServerConfig:
        return ServerConfig(
            port=0,
            limits=InputLimits(max_text_bytes=BIG_TEXT_LIMIT),
            queue=QueueLimits(max_messages=16, max_bytes=4 * BIG_TEXT_LIMIT),
        )

    async def test_a_client_told_the_servers_limit_receives_a_maximum_size_message(
        self, server: ChatServer
    ) -> None:
        """A server with a bigger text limit works with a client told that limit."""
        text = "m" * BIG_TEXT_LIMIT
        async with (
            ChatClient(server.address, max_text_bytes=BIG_TEXT_LIMIT) as chat,
            await chat.join("huge", "reader") as room,
        ):
            await within(chat.send("huge", "writer", text))
            received = await within(anext(room))
        assert received.text == text

    async def test_a_message_over_the_clients_receive_limit_is_refused(
        self, server: ChatServer
    ) -> None:
        """A client left at the default limits refuses a 5 MiB delivery rather than take it."""
        async with (
            ChatClient(server.address, max_text_bytes=BIG_TEXT_LIMIT) as writer,
            ChatClient(server.address) as default_client,
            await default_client.join("huge", "reader") as room,
        ):
            await within(writer.send("huge", "writer", "m" * (5 * 1024 * 1024)))
            with pytest.raises(HelloError, match="larger than this client accepts") as refused:
                await within(anext(room))
        assert "max_text_bytes" in str(refused.value)


async def _read_to_the_end(subscription: Subscription) -> None:
    async for _ in subscription:
        pass
