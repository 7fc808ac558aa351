"""The server's transport limits: every gRPC core channel argument it sets, in one place.

One client must not be able to starve the others through the connection
itself, so each limit below is gRPC core's own (grpcio 1.85), configured from
`TransportLimits`; docs/hardening.md ("Transport attacks") has the measured
attacks behind each default. What gRPC core does not do for us is here too:
raising the descriptor limit at start, and telling the operator when the
connection cap refuses clients (core refuses them silently).
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
from dataclasses import dataclass

import psutil

from hello_protocol.wire import (
    DEFAULT_KEEPALIVE_TIME_SECONDS,
    DEFAULT_KEEPALIVE_TIMEOUT_SECONDS,
    MIN_CLIENT_PING_INTERVAL_MS,
)

log = logging.getLogger(__name__)

# A chat client needs a handful of streams; hello-bench's idle scenario puts a
# few hundred on one connection. 1,000 bounds what one connection can make the
# server hold (and the work a rapid-reset loop can start) with room to spare.
DEFAULT_MAX_STREAMS_PER_CONNECTION = 1000
# Well under the usual 20,000+ descriptor hard limit, with room for the rest
# of the process; the cap is lowered at start if the limit is smaller.
DEFAULT_MAX_CONNECTIONS = 10_000
# A real client finishes the HTTP/2 preface in one round trip; 120 s (gRPC's
# default) lets idle sockets pile up and hold descriptors.
DEFAULT_HANDSHAKE_TIMEOUT_SECONDS = 5.0
# gRPC's own default hard limit (16 KiB, soft 80 % of it): hello's requests
# carry a few hundred bytes of headers.
DEFAULT_MAX_METADATA_BYTES = 16 * 1024
# Descriptors kept free of connections: the listener, logs, the event loop.
RESERVED_DESCRIPTORS = 64
# How often a server at its connection cap says so, and how often it looks.
CAP_LOG_INTERVAL_SECONDS = 10.0
CAP_CHECK_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class TransportLimits:
    """Per-connection and per-server limits enforced by gRPC core's HTTP/2 transport."""

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_streams_per_connection: int = DEFAULT_MAX_STREAMS_PER_CONNECTION
    handshake_timeout_seconds: float = DEFAULT_HANDSHAKE_TIMEOUT_SECONDS
    keepalive_time_seconds: float = DEFAULT_KEEPALIVE_TIME_SECONDS
    keepalive_timeout_seconds: float = DEFAULT_KEEPALIVE_TIMEOUT_SECONDS
    max_metadata_bytes: int = DEFAULT_MAX_METADATA_BYTES

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise ValueError("max connections must be at least 1")
        if self.max_streams_per_connection < 1:
            raise ValueError("max streams per connection must be at least 1")
        if not 0.1 <= self.handshake_timeout_seconds <= 120:
            raise ValueError("handshake timeout must be between 0.1 and 120 seconds")
        if not 0.1 <= self.keepalive_time_seconds <= 7200:
            raise ValueError("keepalive time must be between 0.1 and 7200 seconds")
        if not 0.1 <= self.keepalive_timeout_seconds <= 600:
            raise ValueError("keepalive timeout must be between 0.1 and 600 seconds")
        if not 1024 <= self.max_metadata_bytes <= 1024 * 1024:
            raise ValueError("max metadata bytes must be between 1024 and 1048576")

    @property
    def dead_peer_seconds(self) -> float:
        """The bound on noticing a peer that stopped: one ping interval plus its timeout."""
        return self.keepalive_time_seconds + self.keepalive_timeout_seconds


def server_options(
    limits: TransportLimits,
    max_receive_bytes: int,
    max_connections: int | None = None,
    *,
    share_port: bool = False,
) -> list[tuple[str, int]]:
    """The grpc.aio server options: message sizes, keepalive and every transport limit.

    ``max_connections`` overrides ``limits.max_connections`` (see `effective_max_connections`).
    ``share_port`` lets the listener join the other workers of one supervisor on
    their port (SO_REUSEPORT; the kernel spreads new connections over them).
    """
    keepalive_timeout_ms = round(limits.keepalive_timeout_seconds * 1000)
    metadata = limits.max_metadata_bytes
    return [
        # Without this, gRPC shares a port already in use instead of failing;
        # only --workers asks for that, for its own workers (hello_server.workers).
        ("grpc.so_reuseport", 1 if share_port else 0),
        ("grpc.max_receive_message_length", max_receive_bytes),
        ("grpc.max_send_message_length", -1),
        # Dead peers. The server pings every keepalive time. Measured with
        # grpcio 1.85: an unanswered keepalive ping ends the connection only
        # after the general ping timeout, one minute by default (a stopped
        # client in a quiet room was removed after 80 s), so it is set to the
        # keepalive timeout. gRPC also makes the keepalive timeout the
        # socket's TCP_USER_TIMEOUT, which ends a connection whose unread
        # data or zero-window probes go unanswered that long.
        ("grpc.keepalive_time_ms", round(limits.keepalive_time_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", keepalive_timeout_ms),
        ("grpc.http2.ping_timeout_ms", keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        # Clients ping every 20 s (wire.CLIENT_KEEPALIVE_OPTIONS); accept up to
        # twice as often, and close a connection that pings faster than that.
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
        ("grpc.http2.max_ping_strikes", 2),
        # Rapid reset and stream floods: SETTINGS_MAX_CONCURRENT_STREAMS, which
        # gRPC also enforces against streams reset before their handler ran
        # (max_concurrent_streams_overload_protection, on by default). Without
        # it a rapid-reset loop cancelled other clients' calls.
        ("grpc.max_concurrent_streams", limits.max_streams_per_connection),
        # Connections: close those that have not sent the HTTP/2 preface and
        # SETTINGS in time, and refuse those over the cap right after accept.
        ("grpc.server_handshake_timeout_ms", round(limits.handshake_timeout_seconds * 1000)),
        (
            "grpc.max_allowed_incoming_connections",
            limits.max_connections if max_connections is None else max_connections,
        ),
        # Header blocks: the decoded metadata of one request. Over the limit,
        # the call ends with RESOURCE_EXHAUSTED naming the limit. gRPC refuses
        # requests between its soft and hard limits at random; the two are
        # equal so that the refusal is deterministic.
        ("grpc.max_metadata_size", metadata),
        ("grpc.absolute_max_metadata_size", metadata),
    ]


def raise_descriptor_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the soft limit now in force.

    Every connection holds a descriptor; the soft limit is often 1,024 while
    the hard limit allows far more.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft >= hard:
        return soft
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as error:
        log.warning("cannot raise the descriptor limit from %d to %d: %s", soft, target, error)
        return soft
    return target


def effective_max_connections(configured: int, descriptor_limit: int) -> int:
    """The connection cap the descriptor limit can honour, leaving `RESERVED_DESCRIPTORS`."""
    room = max(1, descriptor_limit - RESERVED_DESCRIPTORS)
    if configured > room:
        log.warning(
            "max connections lowered from %d to %d: the descriptor limit is %d",
            configured,
            room,
            descriptor_limit,
        )
        return room
    return configured


def open_descriptors() -> int:
    """How many descriptors this process holds (Linux: /proc/self/fd; else 0)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def server_connections(port: int) -> list[psutil._ntuples.pconn]:
    """This process's TCP sockets connected to a peer on local ``port`` (a socket-table scan)."""
    return [
        conn
        for conn in psutil.Process().net_connections(kind="tcp")
        if conn.raddr and conn.laddr and conn.laddr.port == port
    ]


def established_connections(port: int) -> int:
    """Established TCP connections of this process on local ``port``."""
    return sum(1 for conn in server_connections(port) if conn.status == psutil.CONN_ESTABLISHED)


class ConnectionCapWatch:
    """Logs, at most once per interval, that the connection cap is turning clients away.

    gRPC core closes a connection over ``grpc.max_allowed_incoming_connections``
    right after accepting it and tells the application nothing. So every
    second this counts the process's descriptors (one directory listing)
    beyond those it held at start; only when that reaches the cap, which every
    connection at the cap implies, does it count the established connections
    on the server's port (a scan of the socket table) to be sure, and logs.
    It logs what it can know honestly: that the cap is reached, so new
    connections are being refused, not how many were.
    """

    def __init__(
        self,
        cap: int,
        port: int,
        interval: float = CAP_LOG_INTERVAL_SECONDS,
        check_every: float = CAP_CHECK_SECONDS,
    ) -> None:
        self.cap = cap
        self.port = port
        self.interval = interval
        self.check_every = check_every
        self.reported = 0  # how many times the cap was logged
        self._baseline = open_descriptors()
        self._last_report = -interval

    def at_cap(self) -> bool:
        """True if the server holds ``cap`` connections now."""
        if open_descriptors() - self._baseline < self.cap:
            return False
        return established_connections(self.port) >= self.cap

    def check(self, now: float) -> bool:
        """Log (once per interval) and return True if the server is at its cap."""
        if now - self._last_report < self.interval or not self.at_cap():
            return False
        self._last_report = now
        self.reported += 1
        log.warning(
            "connection cap reached: %d connections held, new ones are refused "
            "(logged at most every %.0f s; --max-connections raises the cap)",
            self.cap,
            self.interval,
        )
        return True

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.check_every)
            self.check(loop.time())


class ServerTransport:
    """The transport side of starting a server: descriptors, options, the cap watch."""

    def __init__(
        self, limits: TransportLimits, max_receive_bytes: int, *, share_port: bool = False
    ) -> None:
        self.limits = limits
        self.descriptor_limit = raise_descriptor_limit()
        self.max_connections = effective_max_connections(
            limits.max_connections, self.descriptor_limit
        )
        self.options = server_options(
            limits, max_receive_bytes, self.max_connections, share_port=share_port
        )
        self.cap_watch: ConnectionCapWatch | None = None
        self._watching: asyncio.Task[None] | None = None

    def watch(self, port: int) -> None:
        """Log when the connection cap refuses clients, until `stop_watching`."""
        self.cap_watch = ConnectionCapWatch(self.max_connections, port)
        self._watching = asyncio.create_task(self.cap_watch.run(), name="connection-cap-watch")

    async def stop_watching(self) -> None:
        """Stop the cap watch and wait until it has stopped."""
        if self._watching is not None:
            self._watching.cancel()
            await asyncio.wait((self._watching,))
