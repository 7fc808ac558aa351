"""The ChatServer: builds the grpc.aio server and owns its lifecycle.

Start binds and serves the chat, health and reflection services. Stop drains:
health turns NOT_SERVING, the hub refuses new work and ends every open
stream with UNAVAILABLE "server shutting down", then the server stops once
the last member is gone, or at the end of the grace period.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from hello_protocol import hello_pb2
from hello_protocol.wire import SERVICE_NAME
from hello_server.config import ServerConfig
from hello_server.hub import Hub
from hello_server.loop_lag import LoopLag
from hello_server.service import ChatRoomService, encode_message
from hello_server.transport import ServerTransport

log = logging.getLogger(__name__)


class BindError(OSError):
    """The server could not listen on the configured address."""


class ChatServer:
    """One hello-server process's gRPC server, hub and services."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.hub = Hub(encode_message, config.queue)
        # grpc-stubs predates grpc_health's asyncio servicer.
        self._health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self._server: grpc.aio.Server | None = None
        self._lag = LoopLag()
        self._lag_task: asyncio.Task[None] | None = None
        self._port: int | None = None
        self.transport: ServerTransport | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when the config asked for port 0)."""
        if self._port is None:
            raise RuntimeError("the server is not started")
        return self._port

    @property
    def address(self) -> str:
        host = self.config.address.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    async def start(self) -> None:
        """Bind and start serving; raise `BindError` if the address is taken."""
        transport = ServerTransport(self.config.transport, self.config.max_receive_bytes)
        server = grpc.aio.server(options=transport.options)
        service = ChatRoomService(
            self.hub, self.config.limits, self.config.batch_linger_seconds, self._lag
        )
        server.add_generic_rpc_handlers((service.rpc_handler(),))
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (
                hello_pb2.DESCRIPTOR.services_by_name["ChatRoom"].full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        _check_bindable(self.config.host, self.config.port)
        try:
            port = server.add_insecure_port(self.config.address)
        except RuntimeError:
            port = 0
        if port == 0:
            raise BindError(
                f"cannot listen on {self.config.address}: "
                "the address is in use or not available on this machine"
            )
        self._port = port
        await server.start()
        self._server = server
        transport.watch(server, port)
        self.transport = transport
        self._lag_task = asyncio.create_task(self._lag.run(), name="loop-lag")
        for name in ("", SERVICE_NAME):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float | None = None) -> None:
        """Drain and stop; ``grace`` defaults to the configured grace period.

        New calls are refused at once and every chat stream is ended. The
        grace period is for what is left, and ends as soon as the last member
        is gone: streams that never end by themselves (health watchers) must
        not hold every shutdown for the whole period.
        """
        server = self._server
        if server is None:
            return
        grace = self.config.grace_seconds if grace is None else grace
        await self._health.enter_graceful_shutdown()
        self.hub.close()
        draining = asyncio.create_task(server.stop(grace))
        try:
            async with asyncio.timeout(grace):
                await self.hub.wait_until(lambda: self.hub.member_count == 0)
        except TimeoutError:
            pass  # a member stuck writing to a peer that stopped reading
        await server.stop(0)
        await draining
        self._server = None
        if self._lag_task is not None:
            self._lag_task.cancel()

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


def _check_bindable(host: str, port: int) -> None:
    """Fail with the system's own reason when the address cannot be bound.

    gRPC reports a taken port only as "Failed to bind" after logging its own
    error line; a trial bind names the cause and keeps the failure to one line.
    """
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise BindError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(sockaddr)
        except OSError as error:
            raise BindError(f"cannot listen on {host}:{port}: {error.strerror}") from None


@asynccontextmanager
async def run_server(config: ServerConfig) -> AsyncIterator[ChatServer]:
    """Start a `ChatServer` for the duration of the block, then drain it."""
    server = ChatServer(config)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
