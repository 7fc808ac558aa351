"""Shared fixtures: a real hello server on an ephemeral port, real channels."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import grpc
import pytest

from hello_protocol import hello_pb2 as pb
from hello_protocol import hello_pb2_grpc
from hello_protocol.wire import CLIENT_KEEPALIVE_OPTIONS
from hello_server import ChatServer, ServerConfig, run_server


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


async def joined(
    stub: hello_pb2_grpc.ChatRoomStub, room: str, user: str, name: str = ""
) -> grpc.aio.UnaryStreamCall[pb.JoinRequest, pb.Message]:
    """Open a Join stream and wait for the server's acknowledgement (headers)."""
    call = stub.Join(pb.JoinRequest(roomID=room, user=pb.User(id=user, name=name)))
    await call.initial_metadata()
    return call
