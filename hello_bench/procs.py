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
from contextlib import contextmanager
from dataclasses import dataclass

# No psutil stubs in the dev extras: `ProcessStats` is the typed surface.
import psutil

READY = re.compile(r"ready on (?P<address>\S+)")
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
    stats: ProcessStats
    log: deque[str]


def _pump(stream: Iterator[str], lines: queue.Queue[str | None], log: deque[str]) -> None:
    for line in stream:
        log.append(line.rstrip("\n"))
        lines.put(line)
    lines.put(None)


@contextmanager
def running_server(kind: str, extra_args: Sequence[str] = ()) -> Iterator[ServerProcess]:
    """Start a ``kind`` server ("hello" or "baseline"); stop it by PID on exit."""
    process = subprocess.Popen(
        [sys.executable, *_COMMANDS[kind], *extra_args],
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
        yield ServerProcess(kind, address, process, ProcessStats(process.pid), log)
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
    """CPU time and memory of one process, by PID."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._process = psutil.Process(pid)

    def cpu_seconds(self) -> float:
        """User plus system CPU time so far, all threads."""
        times = self._process.cpu_times()
        return float(times.user + times.system)

    def rss_bytes(self) -> int:
        return int(self._process.memory_info().rss)
