"""The fixtures: a real hello server on an ephemeral port, real channels and stubs.

Helpers live in tests/support; this file only wires them into fixtures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import grpc
import pytest

from hello_protocol import hello_pb2_grpc
from hello_server import ChatServer, ServerConfig, run_server
from tests.support.calls import open_channel
from tests.support.network import TcpProxy
from tests.support.processes import ServerProcess, server_process

if TYPE_CHECKING:
    from tests.support.calls import Stub


@pytest.fixture
def server_config() -> ServerConfig:
    """The config for the `server` fixture; override in a module to change it."""
    return ServerConfig(port=0)


@pytest.fixture
async def server(server_config: ServerConfig) -> AsyncIterator[ChatServer]:
    """A real in-process server on an ephemeral port, drained after the test."""
    async with run_server(server_config) as running:
        yield running


@pytest.fixture
async def channel(server: ChatServer) -> AsyncIterator[grpc.aio.Channel]:
    async with open_channel(server.address) as chan:
        yield chan


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> Stub:
    return hello_pb2_grpc.ChatRoomStub(channel)


@pytest.fixture
async def proxy(server: ChatServer) -> AsyncIterator[TcpProxy]:
    """A cuttable TCP relay to the `server` fixture."""
    relay = TcpProxy("127.0.0.1", server.port)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.cut()


@pytest.fixture(scope="module")
def daemon() -> Iterator[ServerProcess]:
    """One default hello-server child process per module; each test uses its own rooms."""
    with server_process() as running:
        running.follow_log()
        yield running
