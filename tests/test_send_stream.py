"""SendStream: pipelined sends, each acknowledged in order, and its client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
import pytest

from hello_client import ChatClient, InvalidInput, RoomNotFound
from hello_client.sender import StreamSender
from hello_protocol import hello_pb2 as pb
from hello_protocol.wire import SERVICE_NAME
from hello_server import ChatServer, Hub, QueueLimits
from hello_server.service import ChatRoomService, encode_message
from hello_server.validation import InputLimits
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


@pytest.fixture
async def original_only_server() -> AsyncIterator[str]:
    """A server that speaks only the original Join and SendMessage RPCs."""
    hub = Hub(encode_message, QueueLimits(100, 1 << 20))
    service = ChatRoomService(hub, InputLimits(), linger=0.0)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE_NAME,
                {
                    "Join": grpc.unary_stream_rpc_method_handler(service.join),
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
