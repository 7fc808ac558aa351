"""The daemon's one configuration object, validated when it is built."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from google.protobuf.timestamp_pb2 import Timestamp

from hello_protocol import hello_pb2 as pb
from hello_protocol.validation import InputLimits
from hello_protocol.wire import DEFAULT_PORT, ENVELOPE_ALLOWANCE_BYTES
from hello_server.hub import HistoryLimits, QueueLimits
from hello_server.limits import UserLimits
from hello_server.logs import LOG_FORMATS
from hello_server.memory import MemoryBudget
from hello_server.transport import TransportLimits

if TYPE_CHECKING:  # both import ConfigError from here
    from hello_server.auth import TokenVerifier
    from hello_server.tls import ServerTls

LOG_LEVELS = ("debug", "info", "warning", "error")

# Busy Subscribe streams gather for this long per batch: long enough to cut
# the number of writes (each costs far more than its bytes), short enough to
# keep latency low. Quiet streams never wait (see ChatRoomService._write_batches).
DEFAULT_LINGER_SECONDS = 0.005

# A member may fall this far behind (queued plus what its stream is writing)
# before it is evicted: what a chat client needs (Centrifugo's default client
# queue is 1 MB), and 15 maximum-size messages. The count bound caps the
# per-message overhead that bytes do not show (~41 bytes each, 170 KiB).
DEFAULT_QUEUE_MESSAGES = 4096
DEFAULT_QUEUE_BYTES = 1024 * 1024

# Bytes of messages waiting for all members together: 256 full member queues,
# or ~3,800 maximum-size messages, on top of the server's own ~100 MB; past
# it the member holding the most is evicted. With the history budget as well,
# the whole server stays within about 1 GB (docs/hardening.md).
DEFAULT_MEMORY_BUDGET = 256 * 1024 * 1024
# ...and for all members on one client connection: 16 full member queues. A
# client in many rooms rarely has all of them full at once; one that stops
# reading every stream (a zero flow-control window) is evicted after 16 MiB.
DEFAULT_CONNECTION_QUEUE_BYTES = 16 * 1024 * 1024

# An evicted stream whose client does not read keeps its handler in a write;
# when every member stream of a connection is in that state this long, the
# connection is closed (hello_server.reaper). Long enough for a client that
# was only paused to learn why it was evicted.
DEFAULT_STALLED_CLOSE_SECONDS = 5.0


# A room keeps its latest DEFAULT_HISTORY_MESSAGES messages for replay and
# resume, and at most DEFAULT_HISTORY_BYTES of them: a room of typical chat
# lines (~200 bytes) keeps all 500 (~100 KiB); a room of 64 KiB messages keeps
# the latest 15, so that it pins no more than one full member queue. The same
# bytes objects the members got: no copies.
DEFAULT_HISTORY_MESSAGES = 500
DEFAULT_HISTORY_BYTES = 1024 * 1024
# Bytes of messages all rooms' histories keep together: as much as the member
# budget, so history at most doubles what messages may pin; ~2,200 rooms of
# 200-character lines keep their full 500, and 10,000 such rooms take ~380 MB
# RSS instead of ~1.4 GB (docs/benchmarks.md, "History memory"). Past it the
# largest histories lose their oldest messages first.
DEFAULT_HISTORY_BUDGET = 256 * 1024 * 1024
# How long a room whose last member left keeps its epoch, seq and history:
# by default it ends with its last member, as it always did.
DEFAULT_ROOM_TTL_SECONDS = 0.0
MAX_ROOM_TTL_SECONDS = 7 * 24 * 3600


REDIS_URL_SCHEMES = ("redis://", "rediss://", "unix://")
# With --redis, each server refreshes its members' presence entries every
# third of this, so a server that dies (kill -9, lost host) stops counting
# within this long plus one sweep (a third of it): 20 s at most by default.
# Shorter finds dead servers sooner and costs one Redis round trip per third.
DEFAULT_PRESENCE_TTL_SECONDS = 15.0

# gRPC's server-wide cap on calls in progress (grpc.aio's maximum_concurrent_rpcs).
# It counts every call, and a Join or Subscribe stream is a call for as long
# as the member stays: so it caps open streams (plus unary calls in flight),
# server-wide. Calls over it end at once with RESOURCE_EXHAUSTED "Concurrent
# RPC limit exceeded!". An idle stream costs about 20 KB of RSS
# (docs/benchmarks.md), so 60,000 streams are about 1.2 GB: the same order
# as the memory budgets, and above hello-bench's largest idle run (50,000
# streams). Connections x streams per connection (10,000 x 1,000) would be no
# bound at all.
DEFAULT_MAX_CONCURRENT_RPCS = 60_000


class ConfigError(ValueError):
    """A setting is out of range; the text names the setting."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything `ChatServer` needs; the CLI only builds one of these."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    limits: InputLimits = field(default_factory=InputLimits)
    queue: QueueLimits = field(
        default_factory=lambda: QueueLimits(DEFAULT_QUEUE_MESSAGES, DEFAULT_QUEUE_BYTES)
    )
    grace_seconds: float = 5.0
    log_level: str = "info"
    batch_linger_seconds: float = DEFAULT_LINGER_SECONDS
    # None: the default, raised to hold one member queue (and one connection's).
    memory_budget_bytes: int | None = None
    connection_queue_bytes: int | None = None
    stalled_close_seconds: float = DEFAULT_STALLED_CLOSE_SECONDS
    transport: TransportLimits = field(default_factory=TransportLimits)
    history: HistoryLimits = field(
        default_factory=lambda: HistoryLimits(DEFAULT_HISTORY_MESSAGES, DEFAULT_HISTORY_BYTES)
    )
    room_ttl_seconds: float = DEFAULT_ROOM_TTL_SECONDS
    history_budget_bytes: int = DEFAULT_HISTORY_BUDGET
    # The shared Redis backend (None: rooms live in this process only).
    redis_url: str | None = None
    # Server processes sharing the port (SO_REUSEPORT); more than one needs Redis.
    workers: int = 1
    # Per-user send rate, streams and rooms (hello_server.limits).
    user_limits: UserLimits = field(default_factory=UserLimits)
    # gRPC's cap on calls in progress, server-wide (0: none).
    max_concurrent_rpcs: int = DEFAULT_MAX_CONCURRENT_RPCS
    # Prometheus /metrics on this port of the same host (None: off; 0: any free port).
    metrics_port: int | None = None
    log_format: str = "text"
    # TLS (None: plaintext) and token authentication (None: open, ids trusted).
    tls: ServerTls | None = None
    auth: TokenVerifier | None = None
    # How long a server's presence entries in Redis outlive its last heartbeat.
    presence_ttl_seconds: float = DEFAULT_PRESENCE_TTL_SECONDS

    def __post_init__(self) -> None:
        if not self.host:
            raise ConfigError("host must not be empty")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is not in 0..65535")
        if self.queue.max_messages < 1:
            raise ConfigError("queue size must be at least 1 message")
        largest = largest_delivery_bytes(self.limits)
        if self.queue.max_bytes < largest:
            raise ConfigError(
                f"queue byte bound ({self.queue.max_bytes}) must hold at least one "
                f"largest delivered message ({largest} bytes: a "
                f"{self.limits.max_text_bytes}-byte text, "
                f"{self.limits.max_id_chars}-character ids and the envelope)"
            )
        memory = self.memory
        if memory.connection_bytes < self.queue.max_bytes:
            raise ConfigError(
                f"connection queue budget ({memory.connection_bytes}) must hold at "
                f"least one full member queue ({self.queue.max_bytes} bytes)"
            )
        if memory.total_bytes < memory.connection_bytes:
            raise ConfigError(
                f"memory budget ({memory.total_bytes}) must be at least the "
                f"connection queue budget ({memory.connection_bytes} bytes)"
            )
        if self.history.max_messages < 0:
            raise ConfigError("history size must not be negative (0 keeps no history)")
        if self.history.max_bytes < 0:
            raise ConfigError("history byte bound must not be negative")
        if self.history_budget_bytes < self.history.max_bytes:
            raise ConfigError(
                f"history budget ({self.history_budget_bytes}) must hold at least one "
                f"room's full history ({self.history.max_bytes} bytes)"
            )
        if not 0 <= self.room_ttl_seconds <= MAX_ROOM_TTL_SECONDS:
            raise ConfigError(f"room TTL must be between 0 and {MAX_ROOM_TTL_SECONDS} s")
        if not 0 < self.stalled_close_seconds <= 3600:
            raise ConfigError("stalled close delay must be more than 0 and at most 3600 s")
        if not 0 <= self.batch_linger_seconds <= 1:
            raise ConfigError("batch linger must be between 0 and 1000 ms")
        if self.grace_seconds < 0:
            raise ConfigError("grace period must not be negative")
        if self.redis_url is not None and not self.redis_url.startswith(REDIS_URL_SCHEMES):
            raise ConfigError(
                f"Redis URL {self.redis_url!r} must start with one of "
                f"{', '.join(REDIS_URL_SCHEMES)}"
            )
        if not 0.3 <= self.presence_ttl_seconds <= 3600:
            raise ConfigError("presence TTL must be between 0.3 and 3600 s")
        if self.workers < 1:
            raise ConfigError("workers must be at least 1")
        if self.workers > 1 and self.redis_url is None:
            raise ConfigError(
                f"--workers {self.workers} needs --redis: workers share rooms through Redis"
            )
        if self.max_concurrent_rpcs < 0:
            raise ConfigError("max concurrent RPCs must not be negative (0: no limit)")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics port {self.metrics_port} is not in 0..65535")
        if self.metrics_port is not None and self.metrics_port == self.port != 0:
            raise ConfigError(f"metrics port {self.metrics_port} is the chat port")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"log format must be one of {', '.join(LOG_FORMATS)}")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log level must be one of {', '.join(LOG_LEVELS)}")

    @property
    def memory(self) -> MemoryBudget:
        """The memory budgets: as set, or the defaults raised to hold what the queue allows."""
        connection = self.connection_queue_bytes
        if connection is None:
            connection = max(DEFAULT_CONNECTION_QUEUE_BYTES, self.queue.max_bytes)
        total = self.memory_budget_bytes
        if total is None:
            total = max(DEFAULT_MEMORY_BUDGET, connection)
        return MemoryBudget(total, connection)

    @property
    def security(self) -> str:
        """For the ready line: TLS or not, tokens or not (nothing secret)."""
        if self.tls is None:
            transport = "plaintext"
        elif self.tls.client_ca is None:
            transport = "TLS"
        else:
            transport = "TLS, client certificates required"
        if self.auth is None:
            return f"{transport}; open: no authentication, user ids trusted as sent"
        return f"{transport}; {self.auth.describe}"

    @property
    def address(self) -> str:
        """The address to bind, bracketing IPv6 literals."""
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"

    @property
    def max_receive_bytes(self) -> int:
        """The gRPC message size limit: the largest text plus its envelope."""
        return self.limits.max_text_bytes + ENVELOPE_ALLOWANCE_BYTES

    @property
    def logging_level(self) -> int:
        return logging.getLevelNamesMapping()[self.log_level.upper()]


# The widest character an id may hold: 4 bytes in UTF-8, and printable.
_WIDEST_ID_CHAR = "\N{GRINNING FACE}"


def largest_delivery_bytes(limits: InputLimits) -> int:
    """The size of the largest ``hello.Message`` a member can be sent, plus room to grow.

    A text of the size limit and two ids of the length limit in 4-byte
    characters, with the widest timestamp and sequence number, serialised as
    the hub does; plus `ENVELOPE_ALLOWANCE_BYTES` for fields the protocol may
    add to a delivery (a display name, up to 4 x the id limit, fits in it).
    A member's queue that cannot hold one of these would evict everyone at
    the first such message.
    """
    widest_id = _WIDEST_ID_CHAR * limits.max_id_chars
    largest = pb.Message(
        id=widest_id,
        roomID=widest_id,
        message="x" * limits.max_text_bytes,
        timestamp=Timestamp(seconds=2**63 - 1, nanos=999_999_999),
        seq=2**64 - 1,
    )
    return largest.ByteSize() + ENVELOPE_ALLOWANCE_BYTES
