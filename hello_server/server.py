"""The ChatServer: builds the grpc.aio server and owns its lifecycle.

Start binds and serves the chat, health and reflection services. Stop drains:
health turns NOT_SERVING, the hub refuses new work and ends every open
stream with UNAVAILABLE "server shutting down", then the gRPC server stops
(once: see `ChatServer.stop`) when the last member is gone, at the end of the
grace period, or when a second stop cuts the drain short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
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
from hello_server.log_limits import MalformedRequestLog
from hello_server.loop_lag import LoopLag
from hello_server.reaper import StalledConnections
from hello_server.service import ChatRoomService, encode_message, encode_presence
from hello_server.transport import ServerTransport
from hello_server.waves import Waves

log = logging.getLogger(__name__)


class BindError(OSError):
    """The server could not listen on the configured address."""


class ChatServer:
    """One hello-server process's gRPC server, hub and services.

    Each lifecycle step runs once, in order: `start` once (a second call is
    refused, even after a failed start), then one drain, then one stop of the
    gRPC server. Calling `stop` again, or concurrently, shortens the drain in
    progress and waits for it; after the server stopped it is a no-op.
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.stalls = StalledConnections(config.stalled_close_seconds, lambda: self.port)
        self.hub = Hub(
            encode_message,
            config.queue,
            config.memory,
            self.stalls.evicted,
            history=config.history,
            room_ttl=config.room_ttl_seconds,
            encode_presence=encode_presence,
            history_budget=config.history_budget_bytes,
        )
        # grpc-stubs predates grpc_health's asyncio servicer.
        self._health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self._start_called = False
        self._server: grpc.aio.Server | None = None  # set once serving
        self._lag = LoopLag()
        # When Subscribe streams write under load (the count is for tests).
        self.waves = Waves()
        self._lag_task: asyncio.Task[None] | None = None
        self._malformed_requests = MalformedRequestLog()
        self._port: int | None = None
        self._drain: asyncio.Task[None] | None = None
        self._drain_deadline = math.inf  # event loop time
        self._drain_timer: asyncio.Timeout | None = None
        self.transport: ServerTransport | None = None  # set once serving

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
        """Bind and start serving; raise `BindError` if the address is taken.

        A ChatServer starts once: a second call raises RuntimeError, also after
        a failed start (which leaves nothing running).
        """
        if self._start_called:
            raise RuntimeError("a ChatServer can be started only once")
        self._start_called = True
        _check_bindable(self.config.host, self.config.port)
        transport = ServerTransport(self.config.transport, self.config.max_receive_bytes)
        server = grpc.aio.server(options=transport.options)
        try:
            port = self._serve_on(server)
            await server.start()
            for name in ("", SERVICE_NAME):
                await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        except BaseException:
            await _discard(server)
            raise
        self._port = port
        self._server = server
        self.transport = transport
        transport.watch(port)
        self._lag_task = asyncio.create_task(self._lag.run(), name="loop-lag")
        self._malformed_requests.install()

    def _serve_on(self, server: grpc.aio.Server) -> int:
        """Register the services on ``server`` and bind it; return the bound port."""
        service = ChatRoomService(
            self.hub,
            self.config.limits,
            self.config.batch_linger_seconds,
            self._lag,
            self.stalls,
            self.waves,
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
        try:
            port = server.add_insecure_port(self.config.address)
        except RuntimeError:
            port = 0
        if port == 0:
            raise BindError(
                f"cannot listen on {self.config.address}: "
                "the address is in use or not available on this machine"
            )
        return port

    async def stop(self, grace: float | None = None) -> None:
        """Drain and stop; ``grace`` defaults to the configured grace period.

        New calls are refused at once and every chat stream is ended. The
        grace period is for what is left, and ends as soon as the last member
        is gone: streams that never end by themselves (health watchers) must
        not hold every shutdown for the whole period.

        There is one drain per server. A call while it runs (a second signal)
        ends it no later than ``grace`` from now, and waits for it; a call
        after it finished returns at once; a call on a server that is not
        serving (never started, failed to start, or whose `start` has not
        returned yet) does nothing. Cancelling a caller does not cancel the
        drain.
        """
        if self._server is None:
            return
        grace = self.config.grace_seconds if grace is None else grace
        self._shorten_drain(asyncio.get_running_loop().time() + grace)
        if self._drain is None:
            self._drain = asyncio.create_task(self._drain_and_stop(self._server), name="drain")
        await asyncio.shield(self._drain)

    def _shorten_drain(self, deadline: float) -> None:
        """Make the drain end by ``deadline`` (loop time) unless it ends sooner already."""
        if deadline >= self._drain_deadline:
            return
        self._drain_deadline = deadline
        timer = self._drain_timer
        if timer is not None and not timer.expired():
            timer.reschedule(deadline)

    async def _drain_and_stop(self, server: grpc.aio.Server) -> None:
        try:
            await self._health.enter_graceful_shutdown()
            self.hub.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(self._drain_deadline) as self._drain_timer:
                    await self.hub.wait_until(lambda: self.hub.member_count == 0)
            self._drain_timer = None
        finally:
            try:
                # The server's one and only stop (grpcio 1.85 can crash when
                # two stops of one server overlap), even if the drain failed.
                # It refuses new calls and cancels what is left: health
                # watchers, and members parked in a write to a client that
                # stopped reading.
                await server.stop(None)
            finally:
                self._malformed_requests.uninstall()
                if self.transport is not None:
                    await self.transport.stop_watching()
                if self._lag_task is not None:
                    self._lag_task.cancel()
                    await asyncio.wait((self._lag_task,))

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


async def _discard(server: grpc.aio.Server) -> None:
    """Release a gRPC server that failed to start serving.

    grpc.aio only releases gRPC core (and its threads) when a started server
    stops; one that never started keeps them for the life of the process.
    It listens nowhere when binding failed, so starting it exposes nothing.
    """
    await server.start()
    await server.stop(None)


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
