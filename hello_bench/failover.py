"""Failover (issue 9): kill -9 one of two workers mid-run; what its clients lose.

Each round starts ``hello-server --redis URL --workers 2`` on a redis-server of
its own (`hello_bench.procs.running_server`), puts one sender and ``--readers``
Subscribe readers in one room, each on a connection of its own so that
SO_REUSEPORT spreads them over both workers, and has the sender keep
``--in-flight`` sends going for ``--duration`` seconds. Halfway through, the
worker that does *not* serve the sender gets SIGKILL. The readers are
`hello_client.ChatClient` subscriptions with the client's default reconnect
policy (first retry after 0.1 s, jittered): the killed worker's readers rejoin,
on the surviving or the restarted worker, with since_seq/epoch.

Per round it prints: messages lost and duplicated over all readers (every
reader must have every accepted seq exactly once), how many readers the killed
worker had, whether each rejoin was told ``recovered``, and the time to resume:
from the kill to a dead worker's reader being back in the room (rejoined) and to
its next message. The survivor's readers must see no interruption at all.

    python3 -m hello_bench.failover --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import re
import statistics
import time
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import psutil

from hello_bench.procs import ServerProcess, running_server
from hello_client import ChatClient
from hello_client.client import Subscription
from hello_client.events import ChatMessage, Reconnected, Reconnecting

ROOM = "failover"
# Each client on a connection of its own: gRPC would otherwise share one.
OWN_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)
LOG_WAIT = 10.0  # seconds for a debug log line to show the sender's worker
DRAIN_TIMEOUT = 30.0


@dataclass
class Reader:
    subscription: Subscription
    seqs: list[int] = field(default_factory=list)
    lost_at: float | None = None  # monotonic time of the first Reconnecting
    rejoined_at: float | None = None
    resumed_at: float | None = None  # first message after the rejoin
    recovered: list[bool] = field(default_factory=list)

    async def read(self, done: asyncio.Event) -> None:
        while not done.is_set():
            event = await self.subscription.next_event()
            if event is None:
                raise RuntimeError(f"{self.subscription.user}: the stream ended")
            if isinstance(event, ChatMessage):
                self.seqs.append(event.seq)
                if self.rejoined_at is not None and self.resumed_at is None:
                    self.resumed_at = time.monotonic()
            elif isinstance(event, Reconnecting) and self.lost_at is None:
                self.lost_at = time.monotonic()
            elif isinstance(event, Reconnected):
                self.recovered.append(event.recovered)
                self.rejoined_at = self.rejoined_at or time.monotonic()


@dataclass(frozen=True, slots=True)
class Round:
    sent: int
    readers: int
    on_killed_worker: int
    lost: int
    duplicated: int
    out_of_order: int
    survivors_interrupted: int
    recovered: int  # dead worker's readers whose every rejoin said recovered=true
    rejoin_ms: list[float]
    resume_ms: list[float]


async def _worker_of(server: ServerProcess, user: str) -> int:
    """The PID of the worker whose debug log says ``user`` joined."""
    pattern = re.compile(rf"\[(\d+)\]: {user} joined room")
    deadline = time.monotonic() + LOG_WAIT
    while time.monotonic() < deadline:
        for line in list(server.log):
            if match := pattern.search(line):
                return int(match[1])
        await asyncio.sleep(0.01)
    raise RuntimeError(f"no log line says which worker serves {user}")


async def one_round(readers: int, in_flight: int, duration: float, ttl: float) -> Round:
    args = ("--log-level", "debug", "--presence-ttl", str(ttl))
    with running_server("hello", args, redis_workers=2) as server:
        async with AsyncExitStack() as stack:
            talker = ChatClient(server.address, channel_options=OWN_CONNECTION)
            stack.push_async_callback(talker.close)
            marker = await talker.join(ROOM, "sender", reconnect=None)
            stack.push_async_callback(marker.close)
            keep = await _worker_of(server, "sender")
            workers = psutil.Process(server.process.pid).children()
            (victim,) = [w for w in workers if w.pid != keep]
            members: list[Reader] = []
            on_victim: list[bool] = []
            for i in range(readers):
                client = ChatClient(server.address, channel_options=OWN_CONNECTION)
                stack.push_async_callback(client.close)
                subscription = await client.join(ROOM, f"reader-{i}")
                stack.push_async_callback(subscription.close)
                members.append(Reader(subscription))
                on_victim.append(await _worker_of(server, f"reader-{i}") == victim.pid)
            done = asyncio.Event()
            reading = [asyncio.create_task(m.read(done)) for m in members]
            accepted: list[int] = []
            stop_at = time.monotonic() + duration
            kill_at = time.monotonic() + duration / 2
            killed_at = 0.0

            async def send() -> None:
                while time.monotonic() < stop_at:
                    accepted.append(await talker.send(ROOM, "sender", "x" * 100))

            async def kill() -> None:
                nonlocal killed_at
                await asyncio.sleep(max(0.0, kill_at - time.monotonic()))
                victim.kill()
                killed_at = time.monotonic()

            await asyncio.gather(kill(), *(send() for _ in range(in_flight)))
            top = max(accepted)
            deadline = time.monotonic() + DRAIN_TIMEOUT
            while any(not m.seqs or m.seqs[-1] < top for m in members):
                if time.monotonic() > deadline or any(t.done() for t in reading):
                    break
                await asyncio.sleep(0.02)
            done.set()
            for task in reading:
                task.cancel()
            await asyncio.gather(*reading, return_exceptions=True)

    expected = set(accepted)
    lost = duplicated = out_of_order = 0
    for member in members:
        counts = Counter(member.seqs)
        lost += len(expected - counts.keys())
        duplicated += sum(n - 1 for n in counts.values())
        out_of_order += sum(1 for a, b in itertools.pairwise(member.seqs) if b <= a)
    moved = [m for m, dead in zip(members, on_victim, strict=True) if dead]
    stayed = [m for m, dead in zip(members, on_victim, strict=True) if not dead]
    return Round(
        sent=len(accepted),
        readers=readers,
        on_killed_worker=len(moved),
        lost=lost,
        duplicated=duplicated,
        out_of_order=out_of_order,
        survivors_interrupted=sum(m.lost_at is not None for m in stayed),
        recovered=sum(bool(m.recovered) and all(m.recovered) for m in moved),
        rejoin_ms=[1000 * (m.rejoined_at - killed_at) for m in moved if m.rejoined_at],
        resume_ms=[1000 * (m.resumed_at - killed_at) for m in moved if m.resumed_at],
    )


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"median {statistics.median(values):.0f} ms, max {max(values):.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python3 -m hello_bench.failover", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--readers", type=int, default=16)
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds of sending")
    parser.add_argument("--presence-ttl", type=float, default=3.0)
    options = parser.parse_args()
    failed = False
    for i in range(options.rounds):
        result = asyncio.run(
            one_round(options.readers, options.in_flight, options.duration, options.presence_ttl)
        )
        ok = (
            result.lost == result.duplicated == result.out_of_order == 0
            and result.survivors_interrupted == 0
            and 0 < result.on_killed_worker < result.readers
            and result.recovered == result.on_killed_worker
        )
        failed |= not ok
        print(
            f"round {i + 1}: {result.sent} messages to {result.readers} readers, "
            f"{result.on_killed_worker} on the killed worker; lost {result.lost}, "
            f"duplicated {result.duplicated}, out of order {result.out_of_order}; "
            f"survivor's readers interrupted {result.survivors_interrupted}; "
            f"recovered=true {result.recovered}/{result.on_killed_worker}; "
            f"rejoined after kill: {_spread(result.rejoin_ms)}; "
            f"next message after kill: {_spread(result.resume_ms)}"
            + ("" if ok else "  <-- FAILED"),
            flush=True,
        )
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
