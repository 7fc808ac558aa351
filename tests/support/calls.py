"""gRPC calls as the tests make them: acknowledged joins, reads, statuses."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from hello_protocol import hello_pb2 as pb
from hello_protocol import hello_pb2_grpc
from hello_protocol.wire import CLIENT_KEEPALIVE_OPTIONS
from hello_server import ChatServer
from tests.support import TIMEOUT

if TYPE_CHECKING:
    from hello_protocol.hello_pb2_grpc import ChatRoomAsyncStub

    # What ChatRoomStub(an aio channel) is, as mypy-protobuf's stubs type it.
    Stub = ChatRoomAsyncStub

# grpc-stubs does not declare the end-of-stream marker that ``read()`` returns.
EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]
JoinCall = grpc.aio.UnaryStreamCall[pb.JoinRequest, pb.Message]
SubscribeCall = grpc.aio.UnaryStreamCall[pb.JoinRequest, pb.MessageBatch]


# -- requests and calls --------------------------------------------------------


def join_request(room: str, user: str, name: str = "") -> pb.JoinRequest:
    return pb.JoinRequest(roomID=room, user=pb.User(id=user, name=name))


async def joined(
    stub: Stub, room: str, user: str, name: str = ""
) -> grpc.aio.UnaryStreamCall[pb.JoinRequest, pb.Message]:
    """Open a Join stream and wait for the server's acknowledgement (headers)."""
    call = stub.Join(join_request(room, user, name))
    async with asyncio.timeout(TIMEOUT):
        await call.initial_metadata()
    return call


async def subscribed(stub: Stub, room: str, user: str, name: str = "") -> SubscribeCall:
    """Open a Subscribe stream and wait for the server's acknowledgement (headers)."""
    call = stub.Subscribe(join_request(room, user, name))
    async with asyncio.timeout(TIMEOUT):
        await call.initial_metadata()
    return call


RPCS = ("Join", "Subscribe")


async def acknowledged(
    stub: Stub, rpc: str, request: pb.JoinRequest
) -> tuple[grpc.aio.UnaryStreamCall[pb.JoinRequest, Any], dict[str, str]]:
    """Open a Join or Subscribe stream with ``request``; return it and its join headers."""
    call = stub.Join(request) if rpc == "Join" else stub.Subscribe(request)
    async with asyncio.timeout(TIMEOUT):
        metadata = await call.initial_metadata()
    headers = {key: value for key, value in metadata if isinstance(value, str)}
    return call, headers


async def member(
    stub: Stub, rpc: str, room: str, user: str, name: str = ""
) -> grpc.aio.UnaryStreamCall[pb.JoinRequest, Any]:
    """Join by ``rpc`` ("Join" or "Subscribe") and wait for the acknowledgement."""
    if rpc == "Join":
        return await joined(stub, room, user, name)
    return await subscribed(stub, room, user, name)


def unbatch(response: object) -> list[pb.Message]:
    """The messages in one stream response: Join sends one, Subscribe a batch."""
    if isinstance(response, pb.MessageBatch):
        assert response.messages, "the server sent an empty batch"
        return list(response.messages)
    assert isinstance(response, pb.Message), f"not a stream response: {response!r}"
    return [response]


async def next_messages(call: grpc.aio.UnaryStreamCall[Any, Any]) -> list[pb.Message]:
    """Read one stream response: a Join message, or a Subscribe batch's messages."""
    async with asyncio.timeout(TIMEOUT):
        response = await call.read()
    assert response is not EOF, "the stream ended"
    return unbatch(response)


async def receive(call: grpc.aio.UnaryStreamCall[Any, Any], count: int) -> list[pb.Message]:
    """Read ``count`` messages from a Join or Subscribe stream."""
    messages: list[pb.Message] = []
    async with asyncio.timeout(TIMEOUT):
        while len(messages) < count:
            response = await call.read()
            assert response is not EOF, f"stream ended after {len(messages)} messages"
            messages.extend(unbatch(response))
    assert len(messages) == count, f"got {len(messages)} messages, expected {count}"
    return messages


async def send(stub: Stub, room: str, sender: str, text: str) -> pb.Exit:
    """SendMessage, bounded by `TIMEOUT`."""
    return await stub.SendMessage(pb.Message(id=sender, roomID=room, message=text), timeout=TIMEOUT)


async def read_messages(call: JoinCall, count: int) -> list[pb.Message]:
    """Read exactly ``count`` messages from a Join stream."""
    messages: list[pb.Message] = []
    async with asyncio.timeout(TIMEOUT):
        while len(messages) < count:
            message = await call.read()
            assert isinstance(message, pb.Message), f"stream ended after {len(messages)} messages"
            messages.append(message)
    return messages


async def final_status(call: grpc.aio.Call) -> tuple[grpc.StatusCode, str]:
    """Wait for a call to end and return its status code and details."""
    async with asyncio.timeout(TIMEOUT):
        return await call.code(), await call.details()


async def count_until_end(call: grpc.aio.UnaryStreamCall[Any, Any]) -> int:
    """Read a stream to its end, whatever its status; return how many responses it carried."""
    received = 0
    async with asyncio.timeout(TIMEOUT):
        with contextlib.suppress(grpc.aio.AioRpcError):
            async for _ in call:
                received += 1
    return received


async def drain(
    call: grpc.aio.UnaryStreamCall[Any, Any],
) -> tuple[list[pb.Message], grpc.StatusCode, str]:
    """Read a Join or Subscribe stream to its end: the messages it still had, and its status.

    A client sees a stream's status only after reading what was sent before it.
    """
    messages: list[pb.Message] = []
    async with asyncio.timeout(TIMEOUT):
        try:
            while (response := await call.read()) is not EOF:
                messages.extend(unbatch(response))
        except grpc.aio.AioRpcError as error:
            return messages, error.code(), error.details() or ""
        return messages, await call.code(), await call.details()


async def rpc_error(awaitable: Awaitable[Any]) -> grpc.aio.AioRpcError:
    """Await a unary call that must fail, and return its error."""
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        async with asyncio.timeout(TIMEOUT):
            await awaitable
    return failure.value


# -- the hub -------------------------------------------------------------------


def member_users(server: ChatServer, room: str) -> list[str]:
    """The user ids of the room's members, one per joined stream."""
    return sorted(member.user_id for member in server.hub.members(room))


async def hub_until(server: ChatServer, predicate: Callable[[], bool]) -> None:
    """Wait until the hub's membership satisfies ``predicate``."""
    async with asyncio.timeout(TIMEOUT):
        await server.hub.wait_until(predicate)


# -- channels -------------------------------------------------------------------


def open_channel(address: str, *, own_connection: bool = False) -> grpc.aio.Channel:
    """A channel as hello's own client configures one (keepalive agreed with the server).

    Channels with equal arguments share one TCP connection through gRPC's
    global subchannel pool; ``own_connection`` gives this one a local pool,
    and so a connection of its own.
    """
    options = [*CLIENT_KEEPALIVE_OPTIONS]
    if own_connection:
        options.append(("grpc.use_local_subchannel_pool", 1))
    return grpc.aio.insecure_channel(address, options=options)


@contextlib.asynccontextmanager
async def open_stub(address: str) -> AsyncIterator[Stub]:
    """A stub on its own channel (its own TCP connection), closed on exit."""
    async with open_channel(address, own_connection=True) as chan:
        yield hello_pb2_grpc.ChatRoomStub(chan)
