"""SendStream: pipelined sends, each acknowledged in order, and its client."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
import pytest

from hello_client import ChatClient, HelloError, InvalidInput, RoomNotFound
from hello_client.sender import StreamSender
from hello_protocol import hello_pb2 as pb
from hello_protocol.validation import InputLimits
from hello_protocol.wire import SERVICE_NAME
from hello_server import ChatServer, Hub, QueueLimits, ServerConfig, run_server
from hello_server.hub import LocalRooms
from hello_server.service import ChatRoomService, _internal_errors, encode_message
from tests.support.calls import joined, read_messages

TIMEOUT = 10

if TYPE_CHECKING:
    from tests.support.calls import Stub


class TestSendStreamRpc:
    async def test_each_message_is_acknowledged_in_order(
        self, server: ChatServer, stub: Stub
    ) -> None:
        """Every message on the stream gets one successful Exit, with seqs in send order."""
        member = await joined(stub, "r", "reader")
        requests = [pb.Message(id="bot", roomID="r", message=f"m{i}") for i in range(50)]
        async with asyncio.timeout(TIMEOUT):
            replies = [reply async for reply in stub.SendStream(iter(requests))]
            assert [r.success for r in replies] == [True] * 50
            assert [r.seq for r in replies] == list(range(1, 51))
            delivered = [m.message for m in await read_messages(member, 50)]
        assert delivered == [f"m{i}" for i in range(50)]
        member.cancel()

    async def test_a_refused_message_does_not_end_the_stream(
        self, server: ChatServer, stub: Stub
    ) -> None:
        """A message to a missing room or with bad input is refused alone, with its status."""
        member = await joined(stub, "r", "reader")
        requests = [
            pb.Message(id="bot", roomID="nowhere", message="lost"),
            pb.Message(id="bot", roomID="r", message=""),
            pb.Message(id="bot", roomID="r", message="kept"),
        ]
        async with asyncio.timeout(TIMEOUT):
            replies = [reply async for reply in stub.SendStream(iter(requests))]
            assert [(r.success, r.code) for r in replies] == [
                (False, grpc.StatusCode.NOT_FOUND.value[0]),
                (False, grpc.StatusCode.INVALID_ARGUMENT.value[0]),
                (True, 0),
            ]
            assert "nowhere" in replies[0].message
            assert replies[1].message == "message text is empty"
            assert [m.message for m in await read_messages(member, 1)] == ["kept"]
        member.cancel()


class TestStreamSender:
    async def test_concurrent_sends_resolve_with_their_own_seq(self, server: ChatServer) -> None:
        """Many sends in flight each return the seq of their own message."""
        async with ChatClient(server.address) as client, asyncio.timeout(TIMEOUT):
            room = await client.join("r", "reader")
            async with StreamSender(client) as sender:
                texts = [f"m{i}" for i in range(200)]
                seqs = await asyncio.gather(*(sender.send("r", "bot", t) for t in texts))
            by_seq = {}
            async for message in room:
                by_seq[message.seq] = message.text
                if len(by_seq) == len(texts):
                    break
            assert {seq: by_seq[seq] for seq in seqs} == dict(zip(seqs, texts, strict=True))
            await room.close()

    async def test_refusals_raise_for_that_message_only(self, server: ChatServer) -> None:
        """A refused send raises the library's error; the next send still succeeds."""
        async with ChatClient(server.address) as client, asyncio.timeout(TIMEOUT):
            room = await client.join("r", "reader")
            async with StreamSender(client) as sender:
                with pytest.raises(RoomNotFound, match="nowhere"):
                    await sender.send("nowhere", "bot", "x")
                with pytest.raises(InvalidInput, match="sender id is empty"):
                    await sender.send("r", "", "x")
                assert await sender.send("r", "bot", "fine") == 1
            await room.close()


def _cancel(task: asyncio.Task[int], _: object) -> None:
    task.cancel()


def sender_tasks() -> list[asyncio.Task[object]]:
    """The tasks a StreamSender runs (its writer and its ack readers) still alive."""
    return [
        task
        for task in asyncio.all_tasks()
        if task.get_name().startswith("send-stream") and not task.done()
    ]


class TestCancelledSends:
    IN_FLIGHT = 300

    async def test_cancelling_some_sends_leaves_the_others_unharmed(
        self, server: ChatServer
    ) -> None:
        """300 sends in flight, 50 of them cancelled (task.cancel, wait_for): the rest succeed.

        Every other send gets its own distinct seq, the member receives no message
        twice, and once the sender is closed none of its tasks is left running.
        """
        async with ChatClient(server.address) as client, asyncio.timeout(TIMEOUT):
            room = await client.join("r", "reader")
            received: list[tuple[int, str]] = []

            async def read_until_marker() -> None:
                async for message in room:
                    if message.text == "marker":
                        return
                    received.append((message.seq, message.text))

            reading = asyncio.create_task(read_until_marker())
            sender = StreamSender(client)
            texts = [f"m{i}" for i in range(self.IN_FLIGHT)]
            timed = set(range(5, self.IN_FLIGHT, 12))  # 25 sends under a tiny wait_for
            cancelled = set(range(11, self.IN_FLIGHT, 12))  # 25 sends cancelled by hand
            sends = [
                asyncio.create_task(
                    asyncio.wait_for(sender.send("r", "bot", text), 0.0005)
                    if i in timed
                    else sender.send("r", "bot", text)
                )
                for i, text in enumerate(texts)
            ]
            # Cancel a send when the one before it is answered: by then it has
            # usually been written and awaits its own acknowledgement.
            for i in cancelled:
                sends[i - 1].add_done_callback(functools.partial(_cancel, sends[i]))
            outcomes = await asyncio.gather(*sends, return_exceptions=True)
            await sender.send("r", "bot", "marker")
            await sender.close()
            assert sender_tasks() == []
            await reading
            await room.close()

        succeeded = {texts[i]: seq for i, seq in enumerate(outcomes) if isinstance(seq, int)}
        for i, outcome in enumerate(outcomes):
            # A send cancelled after its ack came back has its seq; the others
            # were cancelled before it did.
            if i in cancelled:
                assert isinstance(outcome, int | asyncio.CancelledError), repr(outcome)
            elif i in timed:
                assert isinstance(outcome, int | TimeoutError), repr(outcome)
            else:
                assert isinstance(outcome, int), f"send {i} failed: {outcome!r}"
        assert any(isinstance(outcomes[i], asyncio.CancelledError) for i in cancelled)
        assert len(set(succeeded.values())) == len(succeeded)  # distinct seqs
        delivered_texts = [text for _, text in received]
        assert len(delivered_texts) == len(set(delivered_texts)), "a message arrived twice"
        delivered = dict(received)
        assert {text: seq for seq, text in delivered.items() if text in succeeded} == succeeded

    async def test_a_failed_stream_is_reaped_and_the_next_send_opens_a_new_one(self) -> None:
        """When the server goes away, the stream's sends fail; closing leaves no task behind."""
        async with run_server(ServerConfig(port=0, grace_seconds=0)) as first:
            address = first.address
            async with ChatClient(address) as client:
                room = await client.join("r", "reader")
                sender = StreamSender(client)
                assert await asyncio.wait_for(sender.send("r", "bot", "one"), TIMEOUT) == 1
                await room.close()
                await asyncio.wait_for(first.stop(), TIMEOUT)
                # Usually UNAVAILABLE; a stream cut by the stop can end INTERNAL.
                with pytest.raises(HelloError):
                    await asyncio.wait_for(sender.send("r", "bot", "two"), TIMEOUT)
                await asyncio.wait_for(sender.close(), TIMEOUT)
                assert sender_tasks() == []


@pytest.fixture
async def original_only_server() -> AsyncIterator[str]:
    """A server that speaks only the original Join and SendMessage RPCs."""
    hub = Hub(encode_message, QueueLimits(100, 1 << 20))
    service = ChatRoomService(LocalRooms(hub), InputLimits(), linger=0.0)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE_NAME,
                {
                    "Join": grpc.unary_stream_rpc_method_handler(_internal_errors(service.join)),
                    "SendMessage": grpc.unary_unary_rpc_method_handler(
                        service.send_message, response_serializer=pb.Exit.SerializeToString
                    ),
                },
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)


async def test_falls_back_to_send_message_without_send_stream(original_only_server: str) -> None:
    """Against a server without SendStream, StreamSender still delivers via SendMessage."""
    async with ChatClient(original_only_server) as client, asyncio.timeout(TIMEOUT):
        room = await client.join("r", "reader")
        assert not room.batched
        async with StreamSender(client) as sender:
            assert await sender.send("r", "bot", "one") == 1
            assert await sender.send("r", "bot", "two") == 2
        assert [(await anext(room)).text for _ in range(2)] == ["one", "two"]
        await room.close()
