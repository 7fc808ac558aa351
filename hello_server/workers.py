"""--workers N: a supervisor that runs N hello-server processes on one port as one server.

The supervisor serves nothing itself. It holds the port with a bound, never
listening SO_REUSEPORT socket, so that port 0 becomes one real port for every
worker and a restarted worker always finds its port free to join; the kernel
spreads new connections over the workers' listeners. Each worker is the
ordinary single-process server (``python -m hello_server ... --workers 1
--port P``): health, drain and logs are its own.

- Ready: the supervisor's one ready line comes once every worker has said it
  serves; a worker that exits before that stops them all (exit 3).
- Signals: each SIGINT or SIGTERM the supervisor gets is forwarded once to
  every worker, so the first drains them all and a second cuts every drain
  short (exit 1), exactly as for one process. Workers run in their own process
  group: a terminal's Ctrl-C reaches only the supervisor, never twice a worker.
- A worker that dies while serving is logged with its PID and exit code or
  signal and restarted after a backoff (0.1 s, doubling); more than
  `RESTART_LIMIT` deaths within `RESTART_WINDOW_SECONDS` mean the fault is
  not one worker's, and the supervisor drains the others and exits 4.
- Orphans: each worker holds one end of a socket pair (`WorkerLink`); it says
  "ready" on it, and reads end-of-file when the supervisor is gone, however it
  died (kill -9 included), and then drains as on SIGTERM. Portable, and unlike
  PR_SET_PDEATHSIG it needs no race check at the worker's start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from hello_server.config import ServerConfig
from hello_server.exit_codes import (
    EXIT_FORCED,
    EXIT_OK,
    EXIT_STARTUP_FAILURE,
    EXIT_WORKERS_FAILED,
)
from hello_server.server import BindError, bound_socket, check_bindable
from hello_server.stop_signals import STOP_SIGNALS, ignore_stop_signals

log = logging.getLogger(__name__)

# Deaths of workers (all together) within the window past which the supervisor
# stops restarting them: a worker that keeps dying is a deployment fault that
# restarts only hide. The backoff doubles from the first delay with each death
# still in the window: 0.1, 0.2, 0.4, 0.8, 1.6 s, then the supervisor gives up.
RESTART_LIMIT = 5
RESTART_WINDOW_SECONDS = 60.0
FIRST_RESTART_DELAY_SECONDS = 0.1

# The hidden option that makes a hello-server a worker: the descriptor of its
# end of the supervisor's socket pair.
SUPERVISOR_FD_OPTION = "--supervisor-fd"
_READY = b"ready\n"


def worker_command(
    args: Sequence[str], port: int, link_fd: int, metrics_port: int | None = None
) -> list[str]:
    """The command line of one worker: the supervisor's own options, then the overrides.

    The overrides come last, and the last occurrence of an option wins, also
    over its HELLO_* environment variable. ``metrics_port``: this worker's
    own (each worker serves its own /metrics; see `worker_metrics_port`).
    """
    metrics = [] if metrics_port is None else ["--metrics-port", str(metrics_port)]
    return [
        sys.executable,
        "-m",
        "hello_server",
        *args,
        "--workers",
        "1",
        "--port",
        str(port),
        *metrics,
        SUPERVISOR_FD_OPTION,
        str(link_fd),
    ]


def worker_metrics_port(configured: int | None, slot: int) -> int | None:
    """Worker ``slot``'s metrics port: the configured one plus the slot (0: any free port).

    Workers cannot share one metrics port (a scrape would reach one of them
    at random), so each gets its own, and a restarted worker gets its slot's again.
    """
    if not configured:
        return configured
    return configured + slot


def describe_exit(returncode: int) -> str:
    """How a process ended, for the log: its exit code, or the signal that killed it."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"


@dataclass
class _Worker:
    process: asyncio.subprocess.Process
    link: socket.socket  # the supervisor's end; closing it tells the worker to drain

    @property
    def pid(self) -> int:
        return self.process.pid

    def signal(self, signum: signal.Signals) -> None:
        if self.process.returncode is not None:
            return
        # Not Process.send_signal: it polls (waitpid) first, racing asyncio's
        # child watcher, which then reports the worker's exit code as 255. An
        # exited worker keeps its PID until the watcher has reaped it.
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)


class Supervisor:
    """Runs ``config.workers`` workers on one port until a signal; `run` returns the exit code.

    ``args`` are the options the supervisor was started with, passed on to
    every worker (see `worker_command`).
    """

    def __init__(self, config: ServerConfig, args: Sequence[str]) -> None:
        self.config = config
        self._args = list(args)
        self._live: dict[int, _Worker] = {}  # by slot, 0 .. workers - 1
        self._ready_slots: set[int] = set()
        self._final_codes: dict[int, int] = {}  # by slot, once stopping
        self._deaths: deque[float] = deque()  # loop times of unexpected exits
        self._forwarded = 0  # stop signals sent to every worker (2 at most)
        self._failure: int | None = None  # the exit code when the supervisor gave up
        self._all_ready = asyncio.Event()
        self._stopping = asyncio.Event()

    async def run(self) -> int:
        """Start the workers, serve until a signal (or until giving up), drain; the exit code."""
        config = self.config
        try:
            # A port someone else listens on is refused, not joined.
            check_bindable(config.host, config.port)
            reservation = bound_socket(config.host, config.port, share_port=True)
        except BindError as error:
            print(f"hello-server: error: {error}", file=sys.stderr)
            return EXIT_STARTUP_FAILURE
        loop = asyncio.get_running_loop()
        with reservation:
            port: int = reservation.getsockname()[1]
            for signum in STOP_SIGNALS:
                loop.add_signal_handler(signum, self._on_signal, signum)
            try:
                slots = [
                    asyncio.create_task(self._keep_running(slot, port), name=f"worker-{slot}")
                    for slot in range(config.workers)
                ]
                await _first_of(self._all_ready.wait(), self._stopping.wait())
                if not self._stopping.is_set():
                    host = config.address.rsplit(":", 1)[0]
                    # Each worker's own line says whether it reaches Redis.
                    log.info(
                        "hello-server ready on %s:%d (%d workers; %s; rooms shared through Redis)",
                        host,
                        port,
                        config.workers,
                        config.security,
                    )
                await self._stopping.wait()
                await asyncio.gather(*slots)
            finally:
                ignore_stop_signals(loop)
        return self._exit_code()

    def _exit_code(self) -> int:
        if self._failure is not None:
            return self._failure
        if self._forwarded > 1:
            return EXIT_FORCED
        failed = {slot: code for slot, code in self._final_codes.items() if code != EXIT_OK}
        if failed:
            log.warning("%d of %d workers did not drain cleanly", len(failed), self.config.workers)
            return EXIT_FORCED
        log.info("hello-server stopped")
        return EXIT_OK

    def _on_signal(self, signum: signal.Signals) -> None:
        if self._forwarded == 0:
            log.info(
                "%s: draining %d workers (signal again to stop at once)",
                signum.name,
                len(self._live),
            )
            self._stopping.set()
        elif self._forwarded == 1:
            log.warning("second signal: stopping all workers now")
        else:
            return  # already stopping at once
        self._forward(signum)

    def _forward(self, signum: signal.Signals) -> None:
        """Send ``signum`` once to every worker alive now."""
        self._forwarded += 1
        for worker in self._live.values():
            worker.signal(signum)

    def _give_up(self, code: int) -> None:
        """Drain the workers still running and exit with ``code`` once they are gone."""
        if self._stopping.is_set():
            return
        self._failure = code
        self._stopping.set()
        self._forward(signal.SIGTERM)

    async def _keep_running(self, slot: int, port: int) -> None:
        """Run one worker slot: start, wait, restart after an unexpected exit, until stopping."""
        replaced: int | None = None  # the PID of the worker this one replaces
        while not self._stopping.is_set():
            try:
                worker = await self._spawn(port, slot)
            except OSError as error:  # no process or descriptor to spare, say
                log.error("cannot start a worker: %s: stopping", error)
                self._give_up(
                    EXIT_WORKERS_FAILED if self._all_ready.is_set() else EXIT_STARTUP_FAILURE
                )
                return
            self._live[slot] = worker
            if self._stopping.is_set():  # a signal came while it was being started
                worker.signal(signal.SIGTERM)
            try:
                if await _ready(worker.link):
                    self._ready_slots.add(slot)
                    if replaced is not None:
                        log.info("worker %d is serving in place of %d", worker.pid, replaced)
                    elif len(self._ready_slots) == self.config.workers:
                        self._all_ready.set()
                returncode = await worker.process.wait()
            finally:
                del self._live[slot]
                worker.link.close()
            if self._stopping.is_set():
                self._final_codes[slot] = returncode
                if returncode != EXIT_OK:
                    log.warning("worker %d %s", worker.pid, describe_exit(returncode))
                return
            if not self._all_ready.is_set():
                log.error(
                    "worker %d %s before it was ready: stopping",
                    worker.pid,
                    describe_exit(returncode),
                )
                self._give_up(EXIT_STARTUP_FAILURE)
                return
            delay = self._restart_delay()
            if delay is None:
                log.error(
                    "worker %d %s; %d workers died within %.0f s: stopping",
                    worker.pid,
                    describe_exit(returncode),
                    RESTART_LIMIT + 1,
                    RESTART_WINDOW_SECONDS,
                )
                self._give_up(EXIT_WORKERS_FAILED)
                return
            log.warning(
                "worker %d %s; restarting it in %.1f s",
                worker.pid,
                describe_exit(returncode),
                delay,
            )
            replaced = worker.pid
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    def _restart_delay(self) -> float | None:
        """Record a death; the backoff before the restart, or None past the restart limit."""
        now = asyncio.get_running_loop().time()
        while self._deaths and self._deaths[0] <= now - RESTART_WINDOW_SECONDS:
            self._deaths.popleft()
        if len(self._deaths) >= RESTART_LIMIT:
            return None
        self._deaths.append(now)
        return float(FIRST_RESTART_DELAY_SECONDS * 2 ** (len(self._deaths) - 1))

    async def _spawn(self, port: int, slot: int) -> _Worker:
        mine, theirs = socket.socketpair()
        try:
            with theirs:
                process = await asyncio.create_subprocess_exec(
                    *worker_command(
                        self._args,
                        port,
                        theirs.fileno(),
                        worker_metrics_port(self.config.metrics_port, slot),
                    ),
                    stdin=subprocess.DEVNULL,
                    pass_fds=(theirs.fileno(),),
                    # Its own process group: a terminal's Ctrl-C goes to the
                    # supervisor only, which forwards it once.
                    process_group=0,
                )
        except BaseException:
            mine.close()
            raise
        mine.setblocking(False)
        return _Worker(process, mine)


async def _ready(link: socket.socket) -> bool:
    """Wait for a worker's ready message: True, or False if it exited first."""
    loop = asyncio.get_running_loop()
    received = b""
    while not received.endswith(b"\n"):
        chunk = await loop.sock_recv(link, len(_READY))
        if not chunk:
            return False
        received += chunk
    return received == _READY


async def _first_of(*waits: Coroutine[Any, Any, object]) -> None:
    """Wait until the first of ``waits`` is done; cancel the others."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)


class WorkerLink:
    """A worker's end of its supervisor's socket pair: say ready, notice the supervisor is gone."""

    def __init__(self, fd: int) -> None:
        """Adopt descriptor ``fd``; OSError if it is not an open socket."""
        self._socket = socket.socket(fileno=fd)
        self._watching = False

    def ready(self) -> None:
        """Tell the supervisor this worker serves."""
        self._socket.sendall(_READY)

    def on_supervisor_gone(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (once, in the running loop) when the supervisor has gone."""
        self._socket.setblocking(False)
        loop = asyncio.get_running_loop()

        def readable() -> None:
            # The supervisor never writes: readable means end-of-file (or a reset).
            try:
                if self._socket.recv(64):
                    return
            except BlockingIOError:
                return
            except OSError:
                pass
            self._stop_watching()
            callback()

        loop.add_reader(self._socket.fileno(), readable)
        self._watching = True

    def _stop_watching(self) -> None:
        if self._watching:
            asyncio.get_running_loop().remove_reader(self._socket.fileno())
            self._watching = False

    def close(self) -> None:
        self._stop_watching()
        self._socket.close()
