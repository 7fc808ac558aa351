"""One measured run: a fresh server, a load-generator child, the figures.

The parent does no load itself: it starts the server (`hello_bench.procs`) and
the load children (`hello_bench.loadgen`: one, or ``load_processes`` sharing a
fan-out's readers) side by side, tells them when to send, samples the server's
and the load children's CPU time over exactly that window with psutil, and
merges the children's counts. Every child is stopped by its PID on the way out,
whatever happened.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TypeVar

from hello_bench.loadgen import (
    FanoutLoad,
    FanoutOutcome,
    IdleLoad,
    IdleOutcome,
    Latency,
    Load,
    child_main,
)
from hello_bench.procs import ProcessStats, ServerProcess, running_server
from hello_bench.scenarios import FanoutScenario, IdleScenario, Target

SETUP_TIMEOUT = 120.0  # joining up to 20,000 streams on a busy machine
CHILD_STOP_TIMEOUT = 5.0
LEAD_IN = 0.3  # seconds between "go" and the first send
# Deliveries (messages x readers) the senders may be ahead of the readers.
DEFAULT_WINDOW = 5000

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Settings:
    duration: float = 5.0
    window: int = DEFAULT_WINDOW
    in_flight: int | None = None  # None: each scenario's own
    drain_timeout: float = 15.0
    idle_streams: int = 2000
    probes: int = 100
    load_processes: int = 1  # fan-out load children sharing the readers; child 0 sends


@dataclass(frozen=True, slots=True)
class FanoutRecord:
    """One fan-out run's figures; rates are per second of the send window."""

    scenario: str
    variant: str  # "" or, for stalled, "stalled" / "control" (no stalled reader)
    target: str
    round: int
    seconds: float
    deliveries_per_s: float
    sends_per_s: float
    latency: Latency
    send_rpc: Latency
    lost: int
    duplicated: int
    evicted: int
    send_errors: int
    window_waits: int
    drain_seconds: float
    server_cpu_pct: float
    server_rss_mb: float
    load_cpu_pct: float
    # Deliveries per second of server CPU: what one full core would carry if the
    # server scaled linearly; less sensitive than deliveries/s to other load.
    # Server CPU is every worker's and, for a Redis target, redis-server's.
    deliveries_per_cpu_s: float
    redis_cpu_pct: float = 0.0  # redis-server's part of server_cpu_pct


@dataclass(frozen=True, slots=True)
class IdleRecord:
    scenario: str
    target: str
    round: int
    streams: int
    delivered: int
    rss_before_mb: float
    rss_after_mb: float
    rss_per_stream_kb: float
    join_seconds: float
    unloaded: Latency
    loaded: Latency


class _Child:
    """The load child and the parent's end of its pipe."""

    def __init__(self, process: BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        assert process.pid is not None
        self.stats = ProcessStats(process.pid)

    def send(self, kind: str, payload: object) -> None:
        self.conn.send((kind, payload))

    def expect(self, kind: str, payload_type: type[_T], timeout: float) -> _T:
        deadline = time.monotonic() + timeout
        while not self.conn.poll(0.1):
            if not self.process.is_alive():
                raise RuntimeError(f"the load generator exited (code {self.process.exitcode})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {kind!r} from the load generator within {timeout} s")
        got, payload = self.conn.recv()
        if got == "error":
            raise RuntimeError(f"the load generator failed:\n{payload}")
        if got != kind or not isinstance(payload, payload_type):
            raise RuntimeError(f"expected {kind!r} from the load generator, got {got!r}")
        return payload


@contextmanager
def _load_child(load: Load) -> Iterator[_Child]:
    """Start the load child (spawned: no inherited gRPC state); stop it by PID."""
    context = multiprocessing.get_context("spawn")
    parent_end, child_end = context.Pipe()
    process = context.Process(
        target=child_main, args=(child_end, load), name="hello-bench-load", daemon=True
    )
    process.start()
    try:
        yield _Child(process, parent_end)
    finally:
        process.join(CHILD_STOP_TIMEOUT)
        if process.is_alive():
            process.kill()
            process.join()
        parent_end.close()
        child_end.close()


def _sleep_until(wall_time: float) -> None:
    time.sleep(max(0.0, wall_time - time.time()))


@contextmanager
def _server_and_children(
    target: Target, loads: list[Load]
) -> Iterator[tuple[ServerProcess, list[_Child]]]:
    # All start (and import gRPC) at once; the children get the address later.
    with ExitStack() as stack:
        children = [stack.enter_context(_load_child(load)) for load in loads]
        server = stack.enter_context(
            running_server(target.server, target.server_args, target.redis_workers)
        )
        for child in children:
            child.send("start", server.address)
        yield server, children
        for child in children:  # they close their channels before the server goes
            child.process.join(CHILD_STOP_TIMEOUT)


def _load_cpu_seconds(children: list[_Child]) -> float:
    return sum(child.stats.cpu_seconds() for child in children)


def run_fanout(
    scenario: FanoutScenario, target: Target, settings: Settings, round_: int, *, stalled: bool
) -> FanoutRecord:
    """Measure ``scenario`` against ``target``; without stalled readers unless ``stalled``."""
    load = FanoutLoad(
        batched=target.batched,
        stream_send=target.stream_send,
        rooms=scenario.rooms,
        readers=scenario.readers,
        stalled=scenario.stalled if stalled else 0,
        in_flight=settings.in_flight or scenario.in_flight,
        text_bytes=scenario.text_bytes,
        window=settings.window,
        drain_timeout=settings.drain_timeout,
        connections=target.connections,
        shares=settings.load_processes,
    )
    loads: list[Load] = [
        dataclasses.replace(load, share=share) for share in range(settings.load_processes)
    ]
    with _server_and_children(target, loads) as (server, children):
        for child in children:
            child.expect("ready", type(None), SETUP_TIMEOUT)
        t0 = time.time() + LEAD_IN
        t1 = t0 + settings.duration
        for child in children:
            child.send("go", (t0, t1))
        _sleep_until(t0)
        redis_cpu = server.redis.cpu_seconds() if server.redis else 0.0
        server_cpu, load_cpu = server.stats.cpu_seconds(), _load_cpu_seconds(children)
        _sleep_until(t1)
        server_cpu = server.stats.cpu_seconds() - server_cpu
        load_cpu = _load_cpu_seconds(children) - load_cpu
        redis_cpu = server.redis.cpu_seconds() - redis_cpu if server.redis else 0.0
        rss = server.stats.rss_bytes()
        issued = children[0].expect("sent", list, settings.duration + 30)
        for child in children[1:]:
            child.send("sent", issued)
        outcome = FanoutOutcome.merge(
            [
                child.expect("result", FanoutOutcome, settings.drain_timeout + 30)
                for child in children
            ]
        )
    seconds = settings.duration
    variant = "" if not scenario.stalled else ("stalled" if stalled else "control")
    return FanoutRecord(
        scenario=scenario.name,
        variant=variant,
        target=target.label,
        round=round_,
        seconds=seconds,
        deliveries_per_s=outcome.deliveries_in_window / seconds,
        sends_per_s=outcome.sends / seconds,
        latency=Latency.of(outcome.latency_ns),
        send_rpc=Latency.of(outcome.send_rpc_ns),
        lost=outcome.lost,
        duplicated=outcome.duplicated,
        evicted=outcome.evicted,
        send_errors=outcome.send_errors,
        window_waits=outcome.window_waits,
        drain_seconds=outcome.drain_seconds,
        server_cpu_pct=100 * server_cpu / seconds,
        server_rss_mb=rss / 2**20,
        load_cpu_pct=100 * load_cpu / seconds,
        deliveries_per_cpu_s=outcome.deliveries_in_window / server_cpu if server_cpu else 0.0,
        redis_cpu_pct=100 * redis_cpu / seconds,
    )


def run_idle(scenario: IdleScenario, target: Target, settings: Settings, round_: int) -> IdleRecord:
    """Hold ``settings.idle_streams`` idle streams; measure server RSS per stream."""
    load = IdleLoad(
        batched=target.batched,
        streams=settings.idle_streams,
        room_size=scenario.room_size,
        probes=settings.probes,
    )
    with _server_and_children(target, [load]) as (server, (child,)):
        child.expect("ready", Latency, SETUP_TIMEOUT)
        time.sleep(0.5)
        before = server.stats.rss_bytes()
        child.send("hold", None)
        join_seconds = child.expect("held", float, SETUP_TIMEOUT)
        time.sleep(1.0)
        after = server.stats.rss_bytes()
        child.send("check", None)
        outcome = child.expect("result", IdleOutcome, SETUP_TIMEOUT)
    return IdleRecord(
        scenario=scenario.name,
        target=target.label,
        round=round_,
        streams=outcome.streams,
        delivered=outcome.delivered,
        rss_before_mb=before / 2**20,
        rss_after_mb=after / 2**20,
        rss_per_stream_kb=(after - before) / max(1, outcome.streams) / 1024,
        join_seconds=join_seconds,
        unloaded=outcome.unloaded,
        loaded=outcome.loaded,
    )
