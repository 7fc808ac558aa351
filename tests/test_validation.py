"""Bad requests over real gRPC: INVALID_ARGUMENT with a readable reason, size limits."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import pytest

from hello_protocol import hello_pb2 as pb
from hello_protocol.wire import JOIN_METHOD, SEND_METHOD, SUBSCRIBE_METHOD
from hello_server import ChatServer
from tests.support.calls import final_status, joined, read_messages, rpc_error, send
from tests.support.redis import BOTH

BACKENDS = BOTH

if TYPE_CHECKING:
    from tests.support.calls import Stub

MAX_ID = 128
MAX_TEXT = 64 * 1024

# (bad value, words the error must contain besides the field's name)
BAD_IDS = {
    "empty": ("", "empty"),
    "129 chars": ("r" * (MAX_ID + 1), "129 characters"),
    "ANSI escape": ("\x1b[31mred", "control"),
    "newline": ("two\nlines", "control"),
    "tab": ("a\tb", "control"),
    "NUL": ("a\x00b", "control"),
    "zero-width space": ("ad\u200bmin", "invisible"),
    "leading space": (" alice", "whitespace"),
    "trailing space": ("alice ", "whitespace"),
}
GOOD_IDS = {
    "one char": "a",
    "128 chars": "r" * MAX_ID,
    "128 two-byte chars": "é" * MAX_ID,  # ids are limited in characters, not bytes
    "inner space": "the lobby",
    "unicode": "café-😀",
}


async def join_status(
    stub: Stub, room: str, user: str, name: str = ""
) -> tuple[grpc.StatusCode, str]:
    call = stub.Join(pb.JoinRequest(roomID=room, user=pb.User(id=user, name=name)))
    return await final_status(call)


class TestJoinArguments:
    @pytest.mark.parametrize(("bad", "words"), BAD_IDS.values(), ids=BAD_IDS.keys())
    async def test_bad_room_id_is_invalid_argument(
        self, server: ChatServer, stub: Stub, bad: str, words: str
    ) -> None:
        """Join with an empty, over-long or malformed room id fails INVALID_ARGUMENT, saying why."""
        code, details = await join_status(stub, bad, "alice")
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        assert "room id" in details
        assert words in details
        assert server.hub.member_count == 0

    @pytest.mark.parametrize(("bad", "words"), BAD_IDS.values(), ids=BAD_IDS.keys())
    async def test_bad_user_id_is_invalid_argument(
        self, server: ChatServer, stub: Stub, bad: str, words: str
    ) -> None:
        """Join with an empty, over-long or malformed user id fails INVALID_ARGUMENT, saying why."""
        code, details = await join_status(stub, "lobby", bad)
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        assert "user id" in details
        assert words in details
        assert server.hub.room_count == 0

    async def test_missing_user_is_invalid_argument(self, stub: Stub) -> None:
        """A JoinRequest without a user has an empty user id and is refused."""
        code, details = await final_status(stub.Join(pb.JoinRequest(roomID="lobby")))
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        assert "user id is empty" in details

    @pytest.mark.parametrize(
        ("bad", "words"),
        [("n" * (MAX_ID + 1), "129 characters"), ("\x1b[2J", "control"), (" Al", "whitespace")],
        ids=["129 chars", "escape", "leading space"],
    )
    async def test_bad_display_name_is_invalid_argument(
        self, server: ChatServer, stub: Stub, bad: str, words: str
    ) -> None:
        """An over-long or malformed display name fails INVALID_ARGUMENT, saying why."""
        code, details = await join_status(stub, "lobby", "alice", bad)
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        assert "display name" in details
        assert words in details
        assert server.hub.member_count == 0

    @pytest.mark.parametrize("good", GOOD_IDS.values(), ids=GOOD_IDS.keys())
    async def test_boundary_and_unicode_ids_are_accepted(
        self, server: ChatServer, stub: Stub, good: str
    ) -> None:
        """Ids of 1 to 128 characters (any byte length), with inner spaces or unicode, are fine."""
        call = await joined(stub, good, good, good)
        await send(stub, good, good, "ok")
        [message] = await read_messages(call, 1)
        assert (message.roomID, message.id) == (good, good)
        call.cancel()

    async def test_empty_display_name_is_accepted(self, server: ChatServer, stub: Stub) -> None:
        """The display name is optional."""
        call = await joined(stub, "lobby", "alice", "")
        assert [m.name for m in server.hub.members("lobby")] == [""]
        call.cancel()


class TestSendArguments:
    @pytest.mark.parametrize(("bad", "words"), BAD_IDS.values(), ids=BAD_IDS.keys())
    async def test_bad_room_id_is_invalid_argument(self, stub: Stub, bad: str, words: str) -> None:
        """SendMessage with a bad room id fails INVALID_ARGUMENT (not NOT_FOUND), saying why."""
        error = await rpc_error(send(stub, bad, "alice", "hi"))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "room id" in str(error.details())
        assert words in str(error.details())

    @pytest.mark.parametrize(("bad", "words"), BAD_IDS.values(), ids=BAD_IDS.keys())
    async def test_bad_sender_id_is_invalid_argument(
        self, stub: Stub, bad: str, words: str
    ) -> None:
        """SendMessage with a bad sender id fails INVALID_ARGUMENT and delivers nothing."""
        call = await joined(stub, "lobby", "alice")
        error = await rpc_error(send(stub, "lobby", bad, "hi"))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "sender id" in str(error.details())
        assert words in str(error.details())
        # Nothing was delivered or numbered: the next good message is seq 1.
        assert (await send(stub, "lobby", "alice", "good")).seq == 1
        assert [m.message for m in await read_messages(call, 1)] == ["good"]
        call.cancel()

    @pytest.mark.parametrize(
        ("text", "size"),
        [
            ("", 0),
            ("x" * (MAX_TEXT + 1), MAX_TEXT + 1),
            ("é" * (MAX_TEXT // 2) + "a", MAX_TEXT + 1),
            ("€" * 21846, 65538),  # 21846 characters, but 65538 UTF-8 bytes
        ],
        ids=["empty", "65537 ascii", "65537 bytes of 2-byte chars", "65538 bytes of 3-byte chars"],
    )
    async def test_empty_or_oversized_text_is_invalid_argument(
        self, stub: Stub, text: str, size: int
    ) -> None:
        """Text must be 1..65536 UTF-8 bytes (bytes, not characters); the error gives the size."""
        call = await joined(stub, "lobby", "alice")
        error = await rpc_error(send(stub, "lobby", "alice", text))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "message text" in str(error.details())
        assert (str(size) if size else "empty") in str(error.details())
        call.cancel()

    @pytest.mark.parametrize(
        "text",
        ["x" * MAX_TEXT, "é" * (MAX_TEXT // 2), "\n"],
        ids=["65536 ascii", "65536 bytes of 2-byte chars", "just a newline"],
    )
    async def test_text_up_to_the_limit_is_delivered_intact(self, stub: Stub, text: str) -> None:
        """Texts of exactly 65536 bytes, or of control characters, are delivered whole."""
        call = await joined(stub, "lobby", "alice")
        assert (await send(stub, "lobby", "alice", text)).success
        [message] = await read_messages(call, 1)
        assert message.message == text
        call.cancel()

    async def test_validation_comes_before_the_room_lookup(self, stub: Stub) -> None:
        """A bad request to a missing room is INVALID_ARGUMENT, not NOT_FOUND."""
        error = await rpc_error(send(stub, "nowhere", "alice", ""))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT


class TestMalformedRequests:
    async def test_invalid_protobuf_to_send_message_is_invalid_argument(
        self, channel: grpc.aio.Channel
    ) -> None:
        """Bytes that are not a hello.Message get INVALID_ARGUMENT naming the expected type."""
        raw = channel.unary_unary(SEND_METHOD, request_serializer=None, response_deserializer=None)
        error = await rpc_error(raw(b"\xff\xff"))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid hello.Message" in str(error.details())

    @pytest.mark.parametrize("method", [JOIN_METHOD, SUBSCRIBE_METHOD])
    async def test_invalid_protobuf_to_a_stream_rpc_is_invalid_argument(
        self, server: ChatServer, channel: grpc.aio.Channel, method: str
    ) -> None:
        """Bytes that are not a hello.JoinRequest get INVALID_ARGUMENT, and nobody joins."""
        raw = channel.unary_stream(method, request_serializer=None, response_deserializer=None)
        code, details = await final_status(raw(b"\xff\xff"))
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid hello.JoinRequest" in details
        assert server.hub.member_count == 0

    async def test_invalid_utf8_in_a_string_field_is_invalid_argument(
        self, channel: grpc.aio.Channel, stub: Stub
    ) -> None:
        """A string field that is not valid UTF-8 makes the request malformed: INVALID_ARGUMENT."""
        call = await joined(stub, "lobby", "alice")
        raw = channel.unary_unary(SEND_METHOD, request_serializer=None, response_deserializer=None)
        # roomID="lobby", id="alice", message=<0xff 0xfe>
        body = b"\x12\x05lobby\x0a\x05alice\x1a\x02\xff\xfe"
        error = await rpc_error(raw(body))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        call.cancel()


class TestReceiveLimit:
    async def test_request_over_the_size_limit_is_resource_exhausted_and_server_goes_on(
        self, stub: Stub
    ) -> None:
        """A 200 KiB SendMessage hits gRPC's receive limit; the same channel keeps working."""
        call = await joined(stub, "lobby", "alice")
        error = await rpc_error(send(stub, "lobby", "alice", "x" * (200 * 1024)))
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (await send(stub, "lobby", "alice", "after")).seq == 1
        assert [m.message for m in await read_messages(call, 1)] == ["after"]
        call.cancel()

    async def test_join_over_the_size_limit_is_resource_exhausted(
        self, server: ChatServer, stub: Stub
    ) -> None:
        """An oversized JoinRequest is refused by gRPC before the service and nobody joins."""
        code, _ = await final_status(stub.Join(pb.JoinRequest(roomID="r" * (200 * 1024))))
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert server.hub.member_count == 0
        call = await joined(stub, "lobby", "alice")
        call.cancel()
