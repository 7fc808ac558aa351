"""Shared fixtures: a real hello server on an ephemeral port, real channels.

Helpers here never sleep to synchronise: they wait on the server's
acknowledgement (response headers), on stream messages, or on the hub's
membership (`Hub.wait_until`), always bounded by `TIMEOUT` so that a bug
fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import pytest

from hello_protocol import hello_pb2 as pb
from hello_protocol import hello_pb2_grpc
from hello_protocol.wire import CLIENT_KEEPALIVE_OPTIONS
from hello_server import ChatServer, ServerConfig, run_server

# Generous: every wait normally ends in milliseconds, but a busy 2-core CI
# machine can stall a process for seconds. Only a bug should reach this.
TIMEOUT = 15.0

T = TypeVar("T")
JoinCall = grpc.aio.UnaryStreamCall[pb.JoinRequest, pb.Message]
SubscribeCall = grpc.aio.UnaryStreamCall[pb.JoinRequest, pb.MessageBatch]


@pytest.fixture
def server_config() -> ServerConfig:
    """The config for the `server` fixture; override in a module to change it."""
    return ServerConfig(port=0)


@pytest.fixture
async def server(server_config: ServerConfig) -> AsyncIterator[ChatServer]:
    async with run_server(server_config) as running:
        yield running


@pytest.fixture
async def channel(server: ChatServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(server.address, options=CLIENT_KEEPALIVE_OPTIONS) as chan:
        yield chan


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> hello_pb2_grpc.ChatRoomStub:
    return hello_pb2_grpc.ChatRoomStub(channel)


JoinFactory = Callable[..., "grpc.aio.UnaryStreamCall[pb.JoinRequest, pb.Message]"]


# -- requests and calls --------------------------------------------------------


def join_request(room: str, user: str, name: str = "") -> pb.JoinRequest:
    return pb.JoinRequest(roomID=room, user=pb.User(id=user, name=name))


async def joined(
    stub: hello_pb2_grpc.ChatRoomStub, room: str, user: str, name: str = ""
) -> grpc.aio.UnaryStreamCall[pb.JoinRequest, pb.Message]:
    """Open a Join stream and wait for the server's acknowledgement (headers)."""
    call = stub.Join(join_request(room, user, name))
    async with asyncio.timeout(TIMEOUT):
        await call.initial_metadata()
    return call


async def subscribed(
    stub: hello_pb2_grpc.ChatRoomStub, room: str, user: str, name: str = ""
) -> SubscribeCall:
    """Open a Subscribe stream and wait for the server's acknowledgement (headers)."""
    call = stub.Subscribe(join_request(room, user, name))
    async with asyncio.timeout(TIMEOUT):
        await call.initial_metadata()
    return call


RPCS = ("Join", "Subscribe")


async def member(
    stub: hello_pb2_grpc.ChatRoomStub, rpc: str, room: str, user: str, name: str = ""
) -> grpc.aio.UnaryStreamCall[pb.JoinRequest, Any]:
    """Join by ``rpc`` ("Join" or "Subscribe") and wait for the acknowledgement."""
    opened = {"Join": joined, "Subscribe": subscribed}[rpc]
    return await opened(stub, room, user, name)


def unbatch(response: pb.Message | pb.MessageBatch) -> list[pb.Message]:
    """The messages in one stream response: Join sends one, Subscribe a batch."""
    if isinstance(response, pb.MessageBatch):
        assert response.messages, "the server sent an empty batch"
        return list(response.messages)
    return [response]


async def next_messages(call: grpc.aio.UnaryStreamCall[Any, Any]) -> list[pb.Message]:
    """Read one stream response: a Join message, or a Subscribe batch's messages."""
    async with asyncio.timeout(TIMEOUT):
        response = await call.read()
    assert response is not grpc.aio.EOF, "the stream ended"
    return unbatch(response)


async def receive(call: grpc.aio.UnaryStreamCall[Any, Any], count: int) -> list[pb.Message]:
    """Read ``count`` messages from a Join or Subscribe stream."""
    messages: list[pb.Message] = []
    async with asyncio.timeout(TIMEOUT):
        while len(messages) < count:
            response = await call.read()
            assert response is not grpc.aio.EOF, f"stream ended after {len(messages)} messages"
            messages.extend(unbatch(response))
    assert len(messages) == count, f"got {len(messages)} messages, expected {count}"
    return messages


async def send(stub: hello_pb2_grpc.ChatRoomStub, room: str, sender: str, text: str) -> pb.Exit:
    """SendMessage, bounded by `TIMEOUT`."""
    return await stub.SendMessage(pb.Message(id=sender, roomID=room, message=text), timeout=TIMEOUT)


async def read_messages(call: JoinCall, count: int) -> list[pb.Message]:
    """Read exactly ``count`` messages from a Join stream."""
    messages: list[pb.Message] = []
    async with asyncio.timeout(TIMEOUT):
        while len(messages) < count:
            message = await call.read()
            assert message is not grpc.aio.EOF, f"stream ended after {len(messages)} messages"
            messages.append(message)
    return messages


async def final_status(call: grpc.aio.Call) -> tuple[grpc.StatusCode, str]:
    """Wait for a call to end and return its status code and details."""
    async with asyncio.timeout(TIMEOUT):
        return await call.code(), await call.details()


async def drain(
    call: grpc.aio.UnaryStreamCall[Any, Any],
) -> tuple[list[pb.Message], grpc.StatusCode, str]:
    """Read a Join or Subscribe stream to its end: the messages it still had, and its status.

    A client sees a stream's status only after reading what was sent before it.
    """
    messages: list[pb.Message] = []
    async with asyncio.timeout(TIMEOUT):
        try:
            while (response := await call.read()) is not grpc.aio.EOF:
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


async def within(awaitable: Awaitable[T]) -> T:
    """Await anything, bounded by `TIMEOUT`."""
    async with asyncio.timeout(TIMEOUT):
        return await awaitable


# -- channels and the network --------------------------------------------------


@contextlib.asynccontextmanager
async def open_stub(address: str) -> AsyncIterator[hello_pb2_grpc.ChatRoomStub]:
    """A stub on its own channel (its own TCP connection), closed on exit."""
    # Channels with equal arguments share one connection through gRPC's global
    # subchannel pool; a local pool gives this one its own.
    options = (*CLIENT_KEEPALIVE_OPTIONS, ("grpc.use_local_subchannel_pool", 1))
    async with grpc.aio.insecure_channel(address, options=options) as chan:
        yield hello_pb2_grpc.ChatRoomStub(chan)


class TcpProxy:
    """A TCP relay in front of the server whose connections can be cut at once.

    `cut` resets every relayed connection, as a lost network or a killed
    client process would, without the client saying goodbye at the gRPC level.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0

    @property
    def address(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*self._upstream)
        self.connections += 1
        self._writers += [client_w, server_w]
        for reader, writer in ((client_r, server_w), (server_r, client_w)):
            task = asyncio.create_task(self._pump(reader, writer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(1 << 16):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def cut(self) -> None:
        """Reset every relayed connection (RST, no FIN) and stop accepting new ones."""
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in self._writers:
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None


@pytest.fixture
async def proxy(server: ChatServer) -> AsyncIterator[TcpProxy]:
    """A cuttable TCP relay to the `server` fixture."""
    relay = TcpProxy("127.0.0.1", server.port)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.cut()
