"""Prometheus metrics for one server: what it counts, and the /metrics endpoint.

Each server has its own `CollectorRegistry` (not prometheus_client's global
one), so several servers in one process (the tests) never clash.

Cost on the hot path: a message is a few integer additions in plain dicts
(see `ServerMetrics`); deliveries are counted once per publish as the
room's member count, never per mailbox put.
What is a state rather than an event (rooms, members, queued messages and
bytes, history, loop lag) is read from the hub when scraped, by a custom
collector, so it costs nothing between scrapes.

Labels are bounded sets (RPC names, status codes, limit names): never a room
or user id.

The endpoint is served on the server's own event loop (asyncio), so the
scrape-time collector reads the hub on the thread that changes it, and a
scrape measures how long a callback waits for the loop right now.

Other parts add their own collectors with `ServerMetrics.register` (the
Redis backend's round-trip and errors, for one).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import grpc
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

STREAM_RPCS = ("Join", "Subscribe", "SendStream")
SEND_RPCS = ("SendMessage", "SendStream")
JOIN_RPCS = ("Join", "Subscribe")
LIMITS = ("send_rate", "streams_per_user", "rooms_per_user")

# Server-side time to validate and publish one message (not the network):
# tens of microseconds normally, milliseconds when the loop is saturated.
SEND_SECONDS_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)

# A scrape request's head must arrive within this long and fit in this many bytes.
HTTP_READ_TIMEOUT_SECONDS = 5.0
HTTP_MAX_HEAD_BYTES = 8192


@dataclass(frozen=True, slots=True)
class HubState:
    """What the scrape-time collector reads: each a cheap call on the event loop."""

    rooms: Callable[[], int]
    members: Callable[[], int]
    queue_depth: Callable[[], tuple[int, int]]  # (messages, bytes) waiting for members
    history_bytes: Callable[[], int]
    loop_lag: Callable[[], float]
    tracked_users: Callable[[], tuple[int, int]]  # (send-rate buckets, users with streams)


class ServerMetrics:
    """The counts the service updates, the state read at scrape time, and /metrics.

    Events are counted in plain ints and dicts, not prometheus_client's
    Counter and Histogram (each takes a lock and a label lookup: several
    microseconds per message on a busy 2-core machine). That is safe
    because the counts change and are scraped on one thread, the event
    loop's; `collect` turns them into metric families when scraped.
    """

    def __init__(self, state: HubState, limits: dict[str, float]) -> None:
        self._state = state
        self._limits = dict(limits)
        self._loop_delay = 0.0
        # Every label combination a scrape should show from the start, at 0.
        self._messages: dict[tuple[str, grpc.StatusCode], int] = {
            (rpc, grpc.StatusCode.OK): 0 for rpc in SEND_RPCS
        }
        self._joins: dict[tuple[str, grpc.StatusCode], int] = {
            (rpc, grpc.StatusCode.OK): 0 for rpc in JOIN_RPCS
        }
        self._refusals = dict.fromkeys(LIMITS, 0)
        self._open_streams = dict.fromkeys(STREAM_RPCS, 0)
        self.deliveries = 0
        self.evictions = 0
        self._send_counts = [0] * (len(SEND_SECONDS_BUCKETS) + 1)  # the last: +Inf
        self._send_sum = 0.0
        self.registry = CollectorRegistry()
        self.registry.register(self)
        ProcessCollector(registry=self.registry)
        self._server: asyncio.Server | None = None
        self.port: int | None = None

    def register(self, collector: Collector) -> None:
        """Add a collector of another part of the server (read at scrape time, on the loop)."""
        self.registry.register(collector)

    # -- events (the service's hooks call these, on the event loop) --------------

    def sent(self, rpc: str, code: grpc.StatusCode, seconds: float, delivered: int) -> None:
        key = (rpc, code)
        self._messages[key] = self._messages.get(key, 0) + 1
        # Prometheus buckets are "less than or equal": the first bound >= seconds.
        self._send_counts[bisect.bisect_left(SEND_SECONDS_BUCKETS, seconds)] += 1
        self._send_sum += seconds
        self.deliveries += delivered

    def joined(self, rpc: str, code: grpc.StatusCode) -> None:
        key = (rpc, code)
        self._joins[key] = self._joins.get(key, 0) + 1

    def refused(self, limit: str) -> None:
        self._refusals[limit] = self._refusals.get(limit, 0) + 1

    def evicted(self) -> None:
        self.evictions += 1

    def stream_opened(self, rpc: str) -> None:
        self._open_streams[rpc] += 1

    def stream_closed(self, rpc: str) -> None:
        self._open_streams[rpc] -= 1

    @contextlib.contextmanager
    def stream(self, rpc: str) -> Iterator[None]:
        """Count a stream as open for the duration of the block."""
        self.stream_opened(rpc)
        try:
            yield
        finally:
            self.stream_closed(rpc)

    # -- the scrape --------------------------------------------------------------

    def collect(self) -> Iterable[Metric]:
        """Every hello metric, from the counts and the hub's state now."""
        messages = CounterMetricFamily(
            "hello_messages",
            "Messages sent, by RPC and status (OK: accepted and published).",
            labels=("rpc", "code"),
        )
        for (rpc, code), count in self._messages.items():
            messages.add_metric((rpc, code.name), count)
        yield messages
        joins = CounterMetricFamily(
            "hello_joins",
            "Join and Subscribe calls, by RPC and status (OK: admitted).",
            labels=("rpc", "code"),
        )
        for (rpc, code), count in self._joins.items():
            joins.add_metric((rpc, code.name), count)
        yield joins
        yield _labelled(
            CounterMetricFamily(
                "hello_limit_refusals",
                "Requests refused by a per-user limit, by limit.",
                labels=("limit",),
            ),
            self._refusals,
        )
        yield CounterMetricFamily(
            "hello_deliveries",
            "Messages queued for members: each accepted message times its room's members.",
            value=self.deliveries,
        )
        yield CounterMetricFamily(
            "hello_evictions",
            "Members evicted for falling behind or over a memory budget.",
            value=self.evictions,
        )
        yield _labelled(
            GaugeMetricFamily("hello_open_streams", "Streams open now, by RPC.", labels=("rpc",)),
            self._open_streams,
        )
        cumulative = list(itertools.accumulate(self._send_counts))
        yield HistogramMetricFamily(
            "hello_send_seconds",
            "Server time to validate and publish one message, accepted or refused.",
            buckets=[
                *zip(map(str, SEND_SECONDS_BUCKETS), cumulative[:-1], strict=True),
                ("+Inf", cumulative[-1]),
            ],
            sum_value=self._send_sum,
        )
        yield _labelled(
            GaugeMetricFamily("hello_limit", "Configured limits (0: off).", labels=("limit",)),
            self._limits,
        )
        yield from self._hub_state()

    def _hub_state(self) -> Iterator[Metric]:
        state = self._state
        messages, queued_bytes = state.queue_depth()
        buckets, users = state.tracked_users()
        for name, doc, value in (
            ("hello_rooms", "Rooms held (with members, or kept by the room TTL).", state.rooms()),
            ("hello_members", "Join and Subscribe streams registered in rooms.", state.members()),
            ("hello_queued_messages", "Messages waiting in members' queues, summed.", messages),
            ("hello_queued_bytes", "Bytes waiting in members' queues, summed.", queued_bytes),
            (
                "hello_history_bytes",
                "Bytes of messages room histories keep.",
                state.history_bytes(),
            ),
            (
                "hello_event_loop_lag_seconds",
                "How late the event loop runs timers, smoothed (measured while streams write).",
                state.loop_lag(),
            ),
            (
                "hello_event_loop_delay_seconds",
                "How long a callback waited for the event loop when this scrape arrived.",
                self._loop_delay,
            ),
            ("hello_send_rate_users", "Users with a send-rate bucket that is not full.", buckets),
            ("hello_stream_users", "Users holding at least one Join or Subscribe stream.", users),
        ):
            yield GaugeMetricFamily(name, doc, value=value)

    # -- the endpoint ------------------------------------------------------------

    async def serve(self, host: str, port: int) -> int:
        """Serve GET /metrics on ``host``:``port`` (0: any free port); return the port."""
        self._server = await asyncio.start_server(
            self._handle, host.strip("[]"), port, limit=HTTP_MAX_HEAD_BYTES
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request per connection: GET /metrics, or 404/405; then close."""
        try:
            async with asyncio.timeout(HTTP_READ_TIMEOUT_SECONDS):
                head = await reader.readuntil(b"\r\n\r\n")
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            writer.close()
            return
        try:
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        except ValueError:
            method, target = "", ""
        if target.split("?", 1)[0] != "/metrics":
            status, body, kind = "404 Not Found", b"only /metrics is served here\n", "text/plain"
        elif method not in ("GET", "HEAD"):
            status, body, kind = "405 Method Not Allowed", b"use GET\n", "text/plain"
        else:
            loop = asyncio.get_running_loop()
            queued = loop.time()
            await asyncio.sleep(0)  # one pass through the loop's ready callbacks
            self._loop_delay = loop.time() - queued
            status, body, kind = "200 OK", generate_latest(self.registry), CONTENT_TYPE_LATEST
        header = (
            f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode("latin-1")
        try:
            writer.write(header if method == "HEAD" else header + body)
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()


@dataclass(slots=True)
class BackendStats:
    """What the shared (Redis) backend counts for the metrics, since the server started."""

    sends: int = 0  # send scripts answered (each a batch of one room's messages)
    sent: int = 0  # messages those scripts accepted
    send_seconds: float = 0.0  # their round trips, added up
    errors: int = 0  # commands that failed: Redis unreachable, timed out or refusing
    pubsub_reconnects: int = 0
    rooms_lost: int = 0  # rooms whose streams here ended: a gap could not be refilled
    ping_seconds: float | None = None  # the last pub/sub PING's round trip


class BackendCollector:
    """The Redis backend's `BackendStats` as metrics, read at scrape time."""

    def __init__(self, stats: BackendStats) -> None:
        self._stats = stats

    def collect(self) -> Iterable[Metric]:
        stats = self._stats
        yield SummaryMetricFamily(
            "hello_redis_send_seconds",
            "Round trips of the send script (one per batch of a room's messages).",
            count_value=stats.sends,
            sum_value=stats.send_seconds,
        )
        yield CounterMetricFamily(
            "hello_redis_sent_messages",
            "Messages accepted by the send script (divided by its count: the mean batch).",
            value=stats.sent,
        )
        yield CounterMetricFamily(
            "hello_redis_errors", "Redis commands that failed.", value=stats.errors
        )
        yield CounterMetricFamily(
            "hello_redis_pubsub_reconnects",
            "Times the pub/sub connection to Redis was made again after a loss.",
            value=stats.pubsub_reconnects,
        )
        yield CounterMetricFamily(
            "hello_redis_rooms_lost",
            "Rooms whose streams here ended UNAVAILABLE (a missed message could not be "
            "refilled from history), so that their clients resume.",
            value=stats.rooms_lost,
        )
        if stats.ping_seconds is not None:
            yield GaugeMetricFamily(
                "hello_redis_ping_seconds",
                "The last PING round trip on the pub/sub connection (one a second).",
                value=stats.ping_seconds,
            )


_Family = TypeVar("_Family", CounterMetricFamily, GaugeMetricFamily)


def _labelled(family: _Family, values: dict[str, float] | dict[str, int]) -> _Family:
    for label, value in values.items():
        family.add_metric((label,), value)
    return family
