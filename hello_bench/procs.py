"""Child processes: the server under test, started and stopped by its own PID.

`running_server` starts hello-server or the baseline on a free loopback port,
waits for its ready line (which carries the port) and always stops it by its
PID on the way out. A thread keeps draining the server's stderr so a chatty
server can never block on a full pipe.
"""

from __future__ import annotations

import queue
import re
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

# No psutil stubs in the dev extras: `ProcessStats` is the typed surface.
import psutil

from hello_bench.redis_server import redis_server

# Not a worker's own "worker ready on": the supervisor's line, once all serve.
READY = re.compile(r"(?<!worker )ready on (?P<address>\S+)")
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0

_COMMANDS = {
    # The hub ends every stream at once on SIGTERM; a short grace is plenty.
    "hello": ["-m", "hello_server", "--host", "127.0.0.1", "--port", "0", "--grace", "1"],
    "baseline": ["-m", "hello_bench.baseline", "--host", "127.0.0.1", "--port", "0"],
}


@dataclass
class ServerProcess:
    """A running server: its address, and its CPU and memory by PID."""

    kind: str
    address: str
    process: subprocess.Popen[str]
    stats: ProcessStats  # the server, its workers and its redis-server, if any
    log: deque[str]
    redis: ProcessStats | None = None  # the redis-server alone


def _pump(stream: Iterator[str], lines: queue.Queue[str | None], log: deque[str]) -> None:
    for line in stream:
        log.append(line.rstrip("\n"))
        lines.put(line)
    lines.put(None)


@contextmanager
def running_server(
    kind: str, args: Sequence[str] = (), redis_workers: int = 0
) -> Iterator[ServerProcess]:
    """Start a ``kind`` server ("hello" or "baseline") with ``args``; stop it by PID on exit.

    With ``redis_workers``, hello-server runs ``--redis`` on a redis-server of
    its own (started first, killed last) with ``--workers redis_workers``.
    """
    with ExitStack() as stack:
        redis = None
        if redis_workers:
            store = stack.enter_context(redis_server())
            args = (*args, "--redis", store.url, "--workers", str(redis_workers))
            redis = ProcessStats(store.pid)
        with _server(kind, args, redis) as server:
            yield server


@contextmanager
def _server(kind: str, args: Sequence[str], redis: ProcessStats | None) -> Iterator[ServerProcess]:
    process = subprocess.Popen(
        [sys.executable, *_COMMANDS[kind], *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    lines: queue.Queue[str | None] = queue.Queue()
    log: deque[str] = deque(maxlen=50)
    pump = threading.Thread(target=_pump, args=(process.stderr, lines, log), daemon=True)
    try:
        pump.start()
        address = _await_ready(kind, lines, log)
        # After the ready line every worker exists: they are counted from here on.
        stats = ProcessStats(process.pid, children=True, also=redis)
        yield ServerProcess(kind, address, process, stats, log, redis)
    finally:
        stop_process(process)
        pump.join(STOP_TIMEOUT)  # EOF once the server is gone
        process.stderr.close()


def _await_ready(kind: str, lines: queue.Queue[str | None], log: deque[str]) -> str:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise RuntimeError(f"{kind} server not ready after {STARTUP_TIMEOUT} s") from None
        if line is None:
            raise RuntimeError(f"{kind} server exited before it was ready:\n" + "\n".join(log))
        match = READY.search(line)
        if match:
            return match["address"]


def stop_process(process: subprocess.Popen[str]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `STOP_TIMEOUT`."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class ProcessStats:
    """CPU time and memory of one process by PID; with ``children``, of its children too.

    The children are those alive when this is made (a supervisor's workers,
    once it is ready); ``also`` adds another process's figures (a redis-server).
    """

    def __init__(self, pid: int, *, children: bool = False, also: ProcessStats | None = None):
        self.pid = pid
        main = psutil.Process(pid)
        self._processes = [main, *(main.children(recursive=True) if children else ())]
        self._also = also

    @property
    def pids(self) -> tuple[int, ...]:
        """Every process counted."""
        also = self._also.pids if self._also else ()
        return (*(process.pid for process in self._processes), *also)

    def cpu_seconds(self) -> float:
        """User plus system CPU time so far, all threads (0 for a process that has gone)."""
        total = self._also.cpu_seconds() if self._also else 0.0
        for process in self._processes:
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return float(total)

    def rss_bytes(self) -> int:
        total = self._also.rss_bytes() if self._also else 0
        for process in self._processes:
            try:
                total += process.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return int(total)
