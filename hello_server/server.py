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
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from hello_protocol import hello_pb2
from hello_protocol.wire import SERVICE_NAME, PresenceRecord
from hello_server.auth import guard
from hello_server.config import ServerConfig
from hello_server.guard import Guard
from hello_server.hub import HistoryLimits, Hub, LocalRooms, Member, RoomHub
from hello_server.log_limits import MalformedRequestLog, RefusalLog
from hello_server.loop_lag import LoopLag
from hello_server.metrics import BackendCollector, HubState, ServerMetrics
from hello_server.reaper import StalledConnections
from hello_server.service import ChatRoomService, encode_message, encode_presence
from hello_server.transport import ServerTransport
from hello_server.waves import Waves

if TYPE_CHECKING:
    from hello_server.redis_hub import RedisHub

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

    def __init__(self, config: ServerConfig, *, share_port: bool = False) -> None:
        """``share_port``: listen alongside the other workers of a --workers supervisor.

        Without it the port is this server's alone: a port another process
        listens on is refused (`BindError`) rather than silently shared.
        """
        self.config = config
        self._share_port = share_port
        self.stalls = StalledConnections(config.stalled_close_seconds, lambda: self.port)
        shared = config.redis_url is not None
        # With Redis, the hub holds this process's members only: history,
        # room retention and presence events live in Redis (RedisHub).
        self.hub = Hub(
            encode_message,
            config.queue,
            config.memory,
            self._evicted,
            history=HistoryLimits(0, 0) if shared else config.history,
            room_ttl=0.0 if shared else config.room_ttl_seconds,
            encode_presence=None if shared else encode_presence,
            history_budget=config.history_budget_bytes,
        )
        # What the service calls: the hub itself, or a shared backend built
        # around it at start (so that a test may replace the hub before).
        self.rooms: RoomHub | None = None
        self._shared: RedisHub | None = None  # the rooms, when they are shared through Redis
        # grpc-stubs predates grpc_health's asyncio servicer.
        self._health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self._start_called = False
        self._server: grpc.aio.Server | None = None  # set once serving
        # When Subscribe streams write under load (the count is for tests).
        self.waves = Waves()
        self._lag_task: asyncio.Task[None] | None = None
        self._malformed_requests = MalformedRequestLog()
        self._port: int | None = None
        self._drain: asyncio.Task[None] | None = None
        self._drain_deadline = math.inf  # event loop time
        self._drain_timer: asyncio.Timeout | None = None
        self.transport: ServerTransport | None = None  # set once serving
        self._lag = LoopLag()
        # Metrics exist only when served: with them off, the service's hooks are no-ops.
        self.metrics: ServerMetrics | None = None
        if config.metrics_port is not None:
            self.metrics = ServerMetrics(self._hub_state(), _limit_values(config))
        self.refusals = RefusalLog()
        self.guard = Guard(config.user_limits, self.metrics, self.hub.room_size, self.refusals)
        self._health_tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The bound port (the real one when the config asked for port 0)."""
        if self._port is None:
            raise RuntimeError("the server is not started")
        return self._port

    @property
    def backend_healthy(self) -> bool:
        """Whether the shared backend (if any) is reachable now."""
        return self._shared is None or self._shared.healthy

    @property
    def address(self) -> str:
        host = self.config.address.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    @property
    def metrics_address(self) -> str | None:
        """host:port of /metrics once it is served (the real port if configured 0)."""
        if self.metrics is None or self.metrics.port is None:
            return None
        host = self.config.address.rsplit(":", 1)[0]
        return f"{host}:{self.metrics.port}"

    def _hub_state(self) -> HubState:
        hub = self.hub

        def tracked_users() -> tuple[int, int]:
            rate = self.guard.send_rate
            return (0 if rate is None else len(rate)), len(self.guard.streams)

        return HubState(
            rooms=lambda: hub.room_count,
            members=lambda: hub.member_count,
            queue_depth=hub.queue_depth,
            history_bytes=lambda: hub.history_bytes,
            loop_lag=lambda: self._lag.seconds,
            tracked_users=tracked_users,
        )

    async def start(self) -> None:
        """Bind and start serving; raise `BindError` if the address is taken.

        A ChatServer starts once: a second call raises RuntimeError, also after
        a failed start (which leaves nothing running).
        """
        if self._start_called:
            raise RuntimeError("a ChatServer can be started only once")
        self._start_called = True
        check_bindable(self.config.host, self.config.port, share_port=self._share_port)
        transport = ServerTransport(
            self.config.transport, self.config.max_receive_bytes, share_port=self._share_port
        )
        server = grpc.aio.server(
            options=transport.options,
            maximum_concurrent_rpcs=self.config.max_concurrent_rpcs or None,
        )
        redis_hub: RedisHub | None = None
        if self.config.redis_url is None:
            self.rooms = LocalRooms(self.hub)
        else:
            # Imported here: a server without --redis never loads redis-py.
            from hello_server.redis_hub import RedisHub

            self.rooms = self._shared = redis_hub = RedisHub(
                self.hub,
                self.config.redis_url,
                encode=encode_message,
                encode_presence=encode_presence,
                history=self.config.history,
                room_ttl=self.config.room_ttl_seconds,
                presence_ttl=self.config.presence_ttl_seconds,
                on_health=self._backend_health,
                as_presence=PresenceRecord,
            )
            if self.metrics is not None:
                self.metrics.register(BackendCollector(redis_hub.stats))
        try:
            port = self._serve_on(server)
            if self.metrics is not None and self.config.metrics_port is not None:
                await self._serve_metrics(self.metrics, self.config.metrics_port)
            await server.start()
            if redis_hub is not None:
                # Serving even if Redis is down: health says NOT_SERVING, calls
                # fail UNAVAILABLE, and the hub reconnects by itself.
                await redis_hub.start()
            await self._set_health(redis_hub is None or redis_hub.healthy)
        except BaseException:
            await _discard(server)
            if redis_hub is not None:
                redis_hub.close()
                await redis_hub.wait_closed()
            if self.metrics is not None:
                await self.metrics.stop()
            raise
        self._port = port
        self._server = server
        self.transport = transport
        transport.watch(port)
        self._lag_task = asyncio.create_task(self._lag.run(), name="loop-lag")
        self._malformed_requests.install()

    async def _serve_metrics(self, metrics: ServerMetrics, port: int) -> None:
        try:
            await metrics.serve(self.config.host, port)
        except OSError as error:
            raise BindError(
                f"cannot serve metrics on {self.config.host}:{port}: {error.strerror or error}"
            ) from None

    def _evicted(self, member: Member) -> None:
        self.stalls.evicted(member)
        self.guard.evicted()
        if self._shared is not None:
            self._shared.evicted(member)

    async def _set_health(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.NOT_SERVING
        if serving:
            status = health_pb2.HealthCheckResponse.SERVING
        for name in ("", SERVICE_NAME):
            await self._health.set(name, status)

    def _backend_health(self, serving: bool) -> None:
        """The shared backend became (un)available: say so, unless draining."""
        if self._drain is not None or self._server is None:
            return
        task = asyncio.create_task(self._set_health(serving), name="health")
        self._health_tasks.add(task)
        task.add_done_callback(self._health_tasks.discard)

    def _serve_on(self, server: grpc.aio.Server) -> int:
        """Register the services on ``server`` and bind it; return the bound port."""
        assert self.rooms is not None
        service = ChatRoomService(
            self.rooms,
            self.config.limits,
            self.config.batch_linger_seconds,
            self._lag,
            self.stalls,
            self.guard,
            self.waves,
        )
        handler = service.rpc_handler()
        if self.config.auth is not None:
            handler = guard(handler, self.config.auth, self.refusals)
        server.add_generic_rpc_handlers((handler,))
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
            if self.config.tls is None:
                port = server.add_insecure_port(self.config.address)
            else:
                port = server.add_secure_port(self.config.address, self.config.tls.credentials())
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
            if self.rooms is not None:
                self.rooms.close()
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
                self.refusals.flush()
                if self.metrics is not None:
                    await self.metrics.stop()
                if self.rooms is not None:
                    await self.rooms.wait_closed()
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


def check_bindable(host: str, port: int, *, share_port: bool = False) -> None:
    """Fail with the system's own reason when the address cannot be bound.

    gRPC reports a taken port only as "Failed to bind" after logging its own
    error line; a trial bind names the cause and keeps the failure to one line.
    With ``share_port`` the trial bind uses SO_REUSEPORT, as the workers of one
    supervisor do: it passes while the supervisor or another worker holds the port.
    """
    if port == 0:
        return
    with bound_socket(host, port, share_port=share_port):
        pass


def bound_socket(host: str, port: int, *, share_port: bool = False) -> socket.socket:
    """A TCP socket bound (not listening) to ``host:port``; `BindError` if it cannot be.

    ``share_port`` sets SO_REUSEPORT, so that gRPC listeners with it set too
    can bind the same port while this socket holds it.
    """
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise BindError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if share_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
    except OSError as error:
        sock.close()
        raise BindError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    return sock


@asynccontextmanager
async def run_server(config: ServerConfig) -> AsyncIterator[ChatServer]:
    """Start a `ChatServer` for the duration of the block, then drain it."""
    server = ChatServer(config)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def _limit_values(config: ServerConfig) -> dict[str, float]:
    """Every configured limit by name, for the ``hello_limit`` gauge (0: off)."""
    users = config.user_limits
    transport = config.transport
    return {
        "send_rate": users.send_rate,
        "send_burst": users.send_burst,
        "streams_per_user": users.max_streams_per_user,
        "rooms_per_user": users.max_rooms_per_user,
        "concurrent_rpcs": config.max_concurrent_rpcs,
        "connections": transport.max_connections,
        "streams_per_connection": transport.max_streams_per_connection,
        "metadata_bytes": transport.max_metadata_bytes,
        "message_bytes": config.max_receive_bytes,
        "queue_messages": config.queue.max_messages,
        "queue_bytes": config.queue.max_bytes,
        "connection_queue_bytes": config.memory.connection_bytes,
        "memory_budget_bytes": config.memory.total_bytes,
        "history_budget_bytes": config.history_budget_bytes,
    }
