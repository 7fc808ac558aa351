"""The fixtures: a real hello server on an ephemeral port, real channels and stubs.

Helpers live in tests/support; this file only wires them into fixtures.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import grpc
import pytest

from hello_protocol import hello_pb2_grpc
from hello_server import ChatServer, ServerConfig, run_server
from tests.support.calls import open_channel
from tests.support.network import TcpProxy
from tests.support.processes import ServerProcess, server_process
from tests.support.redis import EXTERNAL_URL, flush, redis_server

if TYPE_CHECKING:
    from tests.support.calls import Stub


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run a module's `server` tests on both backends if it says ``BACKENDS = BOTH``."""
    if "backend" in metafunc.fixturenames:
        backends = getattr(metafunc.module, "BACKENDS", ("local",))
        if metafunc.definition.get_closest_marker("local_only"):
            backends = ("local",)
        metafunc.parametrize("backend", backends, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """Which hub the `server` fixture uses: "local" (in-process) or "redis"."""
    return str(getattr(request, "param", "local"))


@pytest.fixture(scope="session")
def redis() -> Iterator[str]:
    """The URL of a real Redis for the whole run (tests/support/redis.py)."""
    if EXTERNAL_URL:
        yield EXTERNAL_URL
        return
    with redis_server() as running:
        yield running.url


@pytest.fixture
def server_config() -> ServerConfig:
    """The config for the `server` fixture; override in a module to change it."""
    return ServerConfig(port=0)


@pytest.fixture
async def server(
    server_config: ServerConfig, backend: str, request: pytest.FixtureRequest
) -> AsyncIterator[ChatServer]:
    """A real server on an ephemeral port, drained after the test.

    In a module with ``BACKENDS = BOTH`` each test runs twice: with the
    in-process hub and with the Redis backend (on an emptied Redis).
    """
    config = server_config
    if backend == "redis":
        url = request.getfixturevalue("redis")
        await flush(url)
        config = dataclasses.replace(server_config, redis_url=url)
    async with run_server(config) as running:
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
