"""The named scenarios and the servers/APIs each one is measured against."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

# Named sets of extra hello-server options, for `hello-bench --server-options NAME`:
# each hello target also runs with them, next to the same target without
# them, and the report gives the ratio. Add a set to measure another feature
# (authentication, say) on the send path.
SERVER_OPTIONS: dict[str, tuple[str, ...]] = {
    # Metrics served, and the per-user send rate on but too high to refuse
    # anything (one sender id sends every room's messages here): what both
    # cost on the send path.
    "metrics": ("--metrics-port", "0", "--send-rate", "1000000", "--send-burst", "1000000"),
}


@dataclass(frozen=True, slots=True)
class Target:
    """One server under test and the delivery RPC its subscribers use."""

    server: str  # "hello" or "baseline"
    batched: bool  # True: Subscribe; False: plain Join
    stream_send: bool = False  # senders use StreamSender (SendStream) instead of SendMessage
    options: str = ""  # a `SERVER_OPTIONS` name: the server runs with those options
    # >0: hello-server on a redis-server of the run's own, with --workers this many.
    redis_workers: int = 0
    # >0: readers and senders share this many clients, each on a connection of
    # its own (so that SO_REUSEPORT spreads them over the workers); 0: one
    # client per reader, which gRPC puts on one shared connection.
    connections: int = 0

    @property
    def label(self) -> str:
        api = "subscribe" if self.batched else "join"
        conns = f", {self.connections} conns" if self.connections else ""
        # The bracket names what differs from the same label without it
        # (report.plain_of compares the two).
        extras = [self.options] if self.options else []
        if self.redis_workers == 1:
            extras.append("redis")
        elif self.redis_workers:
            extras.append(f"redis, {self.redis_workers} workers")
        bracket = f" [{', '.join(extras)}]" if extras else ""
        return f"{self.server} {api}{'+sendstream' if self.stream_send else ''}{conns}{bracket}"

    @property
    def server_args(self) -> tuple[str, ...]:
        return SERVER_OPTIONS[self.options] if self.options else ()

    def with_options(self, options: str) -> Target:
        return dataclasses.replace(self, options=options)


BASELINE = Target("baseline", batched=False)
HELLO_JOIN = Target("hello", batched=False)
HELLO_SUBSCRIBE = Target("hello", batched=True)
HELLO_STREAMING = Target("hello", batched=True, stream_send=True)
# The order of one round: the baseline sits between the hello runs.
TARGETS = (HELLO_JOIN, BASELINE, HELLO_SUBSCRIBE, HELLO_STREAMING)
# What --target calls each.
TARGET_NAMES = {
    "join": HELLO_JOIN,
    "baseline": BASELINE,
    "subscribe": HELLO_SUBSCRIBE,
    "sendstream": HELLO_STREAMING,
}

# `hello-bench --redis`: the in-process server, then the Redis backend with one
# worker and with two, all with the same clients on the same connections.
REDIS_CONNECTIONS = 16
HELLO_POOLED = Target("hello", batched=True, connections=REDIS_CONNECTIONS)
REDIS_ONE = dataclasses.replace(HELLO_POOLED, redis_workers=1)
REDIS_TWO = dataclasses.replace(HELLO_POOLED, redis_workers=2)
REDIS_TARGETS = (HELLO_POOLED, REDIS_ONE, REDIS_TWO)


@dataclass(frozen=True, slots=True)
class FanoutScenario:
    """Rooms of readers, one sender per room with some sends in flight."""

    name: str
    description: str
    rooms: int
    readers: int  # healthy readers per room
    in_flight: int  # concurrent SendMessage calls per room's sender
    text_bytes: int = 100
    stalled: int = 0  # readers per room that join and never read


@dataclass(frozen=True, slots=True)
class IdleScenario:
    """Many idle streams held open: memory per stream, and idle latency."""

    name: str
    description: str
    room_size: int = 10


Scenario = FanoutScenario | IdleScenario

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        FanoutScenario("fanout", "1 room x 50 readers, 100 B texts, 16 sends in flight", 1, 50, 16),
        FanoutScenario("rooms", "100 rooms x 10 readers, one sender per room", 100, 10, 1),
        FanoutScenario("bigroom", "1 room x 1000 readers, 16 sends in flight", 1, 1000, 16),
        FanoutScenario(
            "stalled",
            "20 readers + 1 that never reads, 2 KiB texts; vs the same load without it",
            1,
            20,
            16,
            text_bytes=2048,
            stalled=1,
        ),
        IdleScenario("idle", "N idle streams in rooms of 10: server RSS per stream"),
    )
}
