"""The load generator: a child process that drives the server through `ChatClient`.

One child process per run and one event loop in it: it holds every reader and
every sender of the run, leaving the machine's other core to the server. A
fan-out run may instead split its readers over several children (``shares``):
child 0 also holds the senders, the others only read. The parent
(`hello_bench.runner`) steers each over a multiprocessing pipe; each step waits
for the previous one, and every wait is bounded by the parent:

    fanout:  parent ("start", address)  child ("ready", None)   readers joined
             parent ("go", (t0, t1))    the same t0, t1 to every child
             child 0 ("sent", Issued)   sending over: what each room issued
             parent ("sent", Issued)    forwarded to the other children
             child ("result", FanoutOutcome)
    idle:    parent ("start", address)  child ("ready", Latency)   unloaded probe
             parent ("hold", None)      child ("held", seconds)    N streams joined
             parent ("check", None)     child ("result", IdleOutcome)

A failure is sent as ("error", traceback text). A text is "<counter> <time.time_ns()
at send> " padded to its size: the reader measures latency at receipt and counts
every counter. Each room has exactly one sender, so (room, counter) identifies a
message, and after the send phase every reader must hold every accepted counter
exactly once (lost and duplicated are counted per reader).

Senders keep ``in_flight`` sends going per room, but wait while ``window``
deliveries (messages sent times healthy readers, less those read) are owed to
the readers: SendMessage returns once a message is queued, so without this a
server that accepts faster than it delivers would queue until it evicts, and
the latency of an overloaded run would only measure how long it ran. Child 0
sees only its own readers, so with several children the window counts those
alone; the CLI therefore allows several only with the window off.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import signal
import time
import traceback
from array import array
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import TypeVar, cast

from hello_client import ChatClient
from hello_client.client import Subscription
from hello_client.errors import HelloError
from hello_client.sender import StreamSender

JOIN_CONCURRENCY = 200  # joins in progress at once while setting up
# Fan-out readers share connections of at most this many streams each, and the
# senders have a connection of their own, as separate clients would: the
# server caps the streams of one connection (1,000 by default), so a room of
# 1,000 readers and its sender on one connection would leave no stream for a send.
READERS_PER_CONNECTION = 250
# Idle streams share these channels, each on a connection of its own: the
# server caps the streams of one connection (--max-streams-per-connection,
# 1,000 by default), and without a local subchannel pool grpc would put every
# channel on one shared connection. 20,000 streams make 313 per connection.
CLIENTS_PER_IDLE_POOL = 64
OWN_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)
PROBE_TIMEOUT = 5.0
# Between idle probe messages: well past any coalescing linger (hello's is 5 ms),
# so each probe message finds its stream idle.
PROBE_GAP = 0.025
DRAIN_POLL = 0.02  # seconds between checks that every reader has everything

_T = TypeVar("_T")
SendFunction = Callable[[str, str, str], Awaitable[int]]  # (room, user, text) -> seq
Issued = list[tuple[int, list[int]]]  # per room: counters issued, counters whose send failed


@dataclass(frozen=True, slots=True)
class Latency:
    """Percentiles of a set of samples, in milliseconds."""

    count: int = 0
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan

    @classmethod
    def of(cls, samples_ns: Sequence[int]) -> Latency:
        if not samples_ns:
            return cls()
        ordered = sorted(samples_ns)

        def rank(q: float) -> float:  # nearest-rank percentile
            return ordered[max(0, math.ceil(q * len(ordered)) - 1)] / 1e6

        return cls(len(ordered), rank(0.50), rank(0.99), ordered[-1] / 1e6)


@dataclass(frozen=True, slots=True)
class FanoutLoad:
    """What one fan-out run's child does."""

    batched: bool
    stream_send: bool
    rooms: int
    readers: int  # healthy readers per room
    stalled: int  # readers per room that never read
    in_flight: int
    text_bytes: int
    window: int  # deliveries owed to readers before senders wait
    drain_timeout: float
    # >0: readers and senders share this many clients, each on its own
    # connection (spread over a server's workers); 0: a client per reader.
    connections: int = 0
    # This child holds readers i of each room with i % shares == share; child 0
    # also holds the senders.
    share: int = 0
    shares: int = 1


@dataclass(frozen=True, slots=True)
class FanoutOutcome:
    """One child's counts; `merge` adds up those of a run's children."""

    deliveries_in_window: int  # received between t0 and t1
    deliveries: int  # received in all, drain included
    sends: int  # accepted SendMessage calls
    send_errors: int
    latency_ns: array[int]  # send to receipt, every delivery
    send_rpc_ns: array[int]  # SendMessage call time: a blocked sender shows here
    lost: int
    duplicated: int
    evicted: int  # healthy readers whose stream ended early
    window_waits: int  # times a sender waited for the readers to catch up
    drain_seconds: float

    @classmethod
    def merge(cls, outcomes: Sequence[FanoutOutcome]) -> FanoutOutcome:
        def total(name: str) -> int:
            return sum(cast(int, getattr(o, name)) for o in outcomes)

        latency_ns: array[int] = array("q")
        send_rpc_ns: array[int] = array("q")
        for outcome in outcomes:
            latency_ns.extend(outcome.latency_ns)
            send_rpc_ns.extend(outcome.send_rpc_ns)
        return cls(
            deliveries_in_window=total("deliveries_in_window"),
            deliveries=total("deliveries"),
            sends=total("sends"),
            send_errors=total("send_errors"),
            latency_ns=latency_ns,
            send_rpc_ns=send_rpc_ns,
            lost=total("lost"),
            duplicated=total("duplicated"),
            evicted=total("evicted"),
            window_waits=total("window_waits"),
            drain_seconds=max(o.drain_seconds for o in outcomes),
        )


@dataclass(frozen=True, slots=True)
class IdleLoad:
    """What one idle run's child does."""

    batched: bool
    streams: int
    room_size: int
    probes: int


@dataclass(frozen=True, slots=True)
class IdleOutcome:
    unloaded: Latency  # 2-member room, before the idle streams
    loaded: Latency  # the same while every idle stream is held
    join_seconds: float
    streams: int
    delivered: int  # idle streams that received their room's check message


Load = FanoutLoad | IdleLoad


def child_main(conn: Connection, load: Load) -> None:
    """The child process's entry point."""
    # Ctrl-C reaches the whole process group: the parent alone handles it,
    # and stops this process by its PID.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        asyncio.run(_fanout(conn, load) if isinstance(load, FanoutLoad) else _idle(conn, load))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        raise


async def _receive(conn: Connection, kind: str) -> object:
    message_kind, payload = await asyncio.to_thread(conn.recv)
    if message_kind != kind:
        raise RuntimeError(f"expected {kind!r} from the parent, got {message_kind!r}")
    return payload


# -- fan-out -------------------------------------------------------------------


@dataclass(slots=True)
class _Flow:
    """Deliveries owed to healthy readers; senders wait while ``window`` are owed."""

    window: int
    owed: int = 0
    waiters: int = 0
    waits: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(slots=True)
class _Room:
    name: str
    healthy: int
    issued: int = 0  # counters handed out; the next message's counter
    failed: list[int] = field(default_factory=list)


@dataclass(slots=True)
class _Reader:
    room: _Room
    subscription: Subscription
    counts: bytearray = field(default_factory=bytearray)  # deliveries per counter
    received: int = 0
    in_window: int = 0
    ended: bool = False


async def _read(reader: _Reader, t1_ns: int, flow: _Flow, latencies: array[int]) -> None:
    """Count every delivery: the hot loop of the load generator."""
    counts = reader.counts
    record = latencies.append
    clock = time.time_ns
    try:
        async for message in reader.subscription:
            now = clock()
            counter_text, sent_text, _ = message.text.split(" ", 2)
            record(now - int(sent_text))
            counter = int(counter_text)
            if counter >= len(counts):
                counts.extend(bytes(counter + 1024 - len(counts)))
            seen = counts[counter]
            if seen < 255:
                counts[counter] = seen + 1
            reader.received += 1
            if now < t1_ns:
                reader.in_window += 1
            flow.owed -= 1
            if flow.waiters and flow.owed < flow.window:
                flow.wake.set()
    except HelloError:
        reader.ended = True  # evicted, or the server went away
        reader.room.healthy -= 1
        flow.owed -= reader.room.issued - reader.received


async def _send(
    send: SendFunction, room: _Room, flow: _Flow, text_bytes: int, t1_ns: int, rpc_ns: array[int]
) -> None:
    """One of a room's ``in_flight`` send loops; stops at t1."""
    while True:
        while flow.owed >= flow.window:
            remaining = (t1_ns - time.time_ns()) / 1e9
            if remaining <= 0:
                return
            flow.waiters += 1
            flow.waits += 1
            flow.wake.clear()
            try:
                await asyncio.wait_for(flow.wake.wait(), remaining)
            except TimeoutError:
                return
            finally:
                flow.waiters -= 1
        start = time.time_ns()
        if start >= t1_ns:
            return
        counter = room.issued
        room.issued += 1
        flow.owed += room.healthy
        text = f"{counter} {start} ".ljust(text_bytes, "x")
        try:
            await send(room.name, "sender", text)
        except HelloError:
            room.failed.append(counter)
            flow.owed -= room.healthy
            continue
        rpc_ns.append(time.time_ns() - start)


async def _fanout(conn: Connection, load: FanoutLoad) -> None:
    address = str(await _receive(conn, "start"))
    async with AsyncExitStack() as stack:
        joins = asyncio.Semaphore(JOIN_CONCURRENCY)
        # Readers on their own connections: a given number spread over the
        # workers (SO_REUSEPORT spreads connections), else as few as the
        # server's per-connection stream cap allows.
        mine = range(load.share, load.readers, load.shares)
        stalled = range(load.share, load.stalled, load.shares)
        streams = load.rooms * (len(mine) + len(stalled))
        count = load.connections or max(1, math.ceil(streams / READERS_PER_CONNECTION))
        pool = [
            ChatClient(address, batched=load.batched, channel_options=OWN_CONNECTION)
            for _ in range(count)
        ]
        for pooled in pool:
            stack.push_async_callback(pooled.close)
        turn = itertools.count()

        async def join(room: str, user: str) -> Subscription:
            client = pool[next(turn) % len(pool)]
            async with joins:
                subscription = await client.join(room, user, reconnect=None)
            stack.push_async_callback(subscription.close)
            return subscription

        rooms = [_Room(f"room-{r}", len(mine)) for r in range(load.rooms)]
        readers = await asyncio.gather(
            *(_wrap_reader(room, join(room.name, f"reader-{i}")) for room in rooms for i in mine)
        )
        # Stalled readers join and never read: their streams back up in the server.
        await asyncio.gather(*(join(room.name, f"stalled-{i}") for room in rooms for i in stalled))
        senders: list[SendFunction] = []
        if load.share == 0:
            if not load.connections:  # the senders' own connection, apart from the readers'
                own = ChatClient(address, batched=load.batched, channel_options=OWN_CONNECTION)
                stack.push_async_callback(own.close)
            for _ in rooms:
                # With a given connection count, senders spread over the workers too.
                client = pool[next(turn) % len(pool)] if load.connections else own
                if load.stream_send:
                    sender = StreamSender(client)
                    stack.push_async_callback(sender.close)
                    senders.append(sender.send)
                else:
                    senders.append(client.send)
        conn.send(("ready", None))

        t0, t1 = cast(tuple[float, float], await _receive(conn, "go"))
        t1_ns = int(t1 * 1e9)
        latencies: array[int] = array("q")
        rpc_ns: array[int] = array("q")
        flow = _Flow(load.window)
        reading = [asyncio.create_task(_read(r, t1_ns, flow, latencies)) for r in readers]
        await asyncio.sleep(max(0.0, t0 - time.time()))
        if load.share == 0:
            await asyncio.gather(
                *(
                    _send(send, room, flow, load.text_bytes, t1_ns, rpc_ns)
                    for room, send in zip(rooms, senders, strict=True)
                    for _ in range(load.in_flight)
                )
            )
            conn.send(("sent", [(room.issued, room.failed) for room in rooms]))
        else:  # the readers learn from child 0, through the parent, what was sent
            issued = cast(Issued, await _receive(conn, "sent"))
            for room, (count, failed) in zip(rooms, issued, strict=True):
                room.issued, room.failed = count, failed
        drain_start = time.monotonic()
        for _ in range(math.ceil(load.drain_timeout / DRAIN_POLL)):
            if all(r.ended or r.received >= r.room.issued - len(r.room.failed) for r in readers):
                break
            await asyncio.sleep(DRAIN_POLL)
        drain_seconds = time.monotonic() - drain_start
        for task in reading:
            task.cancel()
        await asyncio.gather(*reading, return_exceptions=True)

    sent = rooms if load.share == 0 else []  # the others know the same rooms from child 0
    lost = duplicated = 0
    for reader in readers:
        room = reader.room
        counts = reader.counts[: room.issued].ljust(room.issued, b"\0")
        missing_failed = sum(1 for c in room.failed if counts[c] == 0)
        lost += counts.count(0) - missing_failed
        duplicated += sum(counts) - (room.issued - counts.count(0))
    conn.send(
        (
            "result",
            FanoutOutcome(
                deliveries_in_window=sum(r.in_window for r in readers),
                deliveries=sum(r.received for r in readers),
                sends=sum(room.issued - len(room.failed) for room in sent),
                send_errors=sum(len(room.failed) for room in sent),
                latency_ns=latencies,
                send_rpc_ns=rpc_ns,
                lost=lost,
                duplicated=duplicated,
                evicted=sum(r.ended for r in readers),
                window_waits=flow.waits,
                drain_seconds=drain_seconds,
            ),
        )
    )


async def _wrap_reader(room: _Room, joining: Awaitable[Subscription]) -> _Reader:
    return _Reader(room, await joining)


# -- idle ------------------------------------------------------------------------


async def _probe(
    client: ChatClient, sender: Subscription, receiver: Subscription, n: int
) -> Latency:
    """Send ``n`` messages one at a time to a 2-member room; time each to the other member.

    Each is timed from just before the SendMessage call to its arrival at the
    other member, which is reading before the call starts.
    """

    async def arrival() -> int:
        message = await anext(receiver)
        return time.time_ns() - int(message.text.split(" ")[1])

    samples: list[int] = []
    for i in range(n):
        timing = asyncio.create_task(asyncio.wait_for(arrival(), PROBE_TIMEOUT))
        await client.send("probe", "a", f"{i} {time.time_ns()} ")
        samples.append(await timing)
        await asyncio.wait_for(anext(sender), PROBE_TIMEOUT)  # the sender's own copy
        await asyncio.sleep(PROBE_GAP)
    return Latency.of(samples)


async def _idle(conn: Connection, load: IdleLoad) -> None:
    address = str(await _receive(conn, "start"))
    async with AsyncExitStack() as stack:
        a = ChatClient(address, batched=load.batched)
        b = ChatClient(address, batched=load.batched)
        for client in (a, b):
            stack.push_async_callback(client.close)
        sub_a = await a.join("probe", "a", reconnect=None)
        sub_b = await b.join("probe", "b", reconnect=None)
        stack.push_async_callback(sub_a.close)
        stack.push_async_callback(sub_b.close)
        await _probe(a, sub_a, sub_b, 20)  # warm up
        unloaded = await _probe(a, sub_a, sub_b, load.probes)
        conn.send(("ready", unloaded))

        await _receive(conn, "hold")
        pool = [
            ChatClient(address, batched=load.batched, channel_options=OWN_CONNECTION)
            for _ in range(CLIENTS_PER_IDLE_POOL)
        ]
        for client in pool:
            stack.push_async_callback(client.close)
        joins = asyncio.Semaphore(JOIN_CONCURRENCY)
        streams: list[Subscription] = []

        async def join(i: int) -> None:
            async with joins:
                subscription = await pool[i % len(pool)].join(
                    f"idle-{i // load.room_size}", f"idle-{i}", reconnect=None
                )
            stack.push_async_callback(subscription.close)
            streams.append(subscription)

        start = time.monotonic()
        await asyncio.gather(*(join(i) for i in range(load.streams)))
        join_seconds = time.monotonic() - start
        conn.send(("held", join_seconds))

        await _receive(conn, "check")
        loaded = await _probe(a, sub_a, sub_b, load.probes)
        # Still delivering: one message to every idle room, read on every stream.
        idle_rooms = sorted({s.room for s in streams})
        await asyncio.gather(*(_bounded(joins, a.send(room, "a", "check")) for room in idle_rooms))
        arrived = await asyncio.gather(
            *(_bounded(joins, _next_within(s, PROBE_TIMEOUT)) for s in streams)
        )
    conn.send(
        (
            "result",
            IdleOutcome(unloaded, loaded, join_seconds, len(streams), sum(arrived)),
        )
    )


async def _bounded(limit: asyncio.Semaphore, work: Awaitable[_T]) -> _T:
    async with limit:
        return await work


async def _next_within(subscription: Subscription, seconds: float) -> bool:
    try:
        await asyncio.wait_for(anext(subscription), seconds)
    except (TimeoutError, HelloError, StopAsyncIteration):
        return False
    return True
