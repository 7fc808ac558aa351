"""Run hello-server as a real child process, for tests of the daemon and CLIs.

`server_process` starts ``python -m hello_server --port 0``, waits for its
ready line (which carries the real port) and stops it by its own PID.
`run_server_command` runs the command to completion, for startups that fail.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from tests.support import TIMEOUT

READY = re.compile(r"hello-server ready on (?P<address>[^\s\"]+)")
SERVER_COMMAND = (sys.executable, "-m", "hello_server")


@dataclass
class ServerProcess:
    process: subprocess.Popen[str]
    address: str
    log: list[str]
    _reader: threading.Thread | None = field(default=None, init=False, repr=False)
    _log_changed: threading.Condition = field(
        default_factory=threading.Condition, init=False, repr=False
    )
    _log_ended: bool = field(default=False, init=False, repr=False)

    def signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = TIMEOUT) -> int:
        return self.process.wait(timeout)

    def follow_log(self) -> None:
        """Collect the server's log lines in a thread from now on (idempotent).

        Keeps the pipe drained, so a chatty server never blocks on a full pipe,
        and lets `wait_for_log` wait for a line while the test goes on.
        """
        if self._reader is None:
            self._reader = threading.Thread(target=self._read_log, daemon=True)
            self._reader.start()

    def _read_log(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._log_changed:
                self.log.append(line.rstrip("\n"))
                self._log_changed.notify_all()
        with self._log_changed:
            self._log_ended = True
            self._log_changed.notify_all()

    def wait_for_log(self, pattern: str, timeout: float = TIMEOUT) -> str:
        """Return the first log line matching the regex ``pattern``, waiting for it."""
        self.follow_log()
        regex = re.compile(pattern)
        found: list[str] = []

        def seen() -> bool:
            found[:] = [line for line in self.log if regex.search(line)][:1]
            return bool(found) or self._log_ended

        with self._log_changed:
            self._log_changed.wait_for(seen, timeout)
        if not found:
            raise AssertionError(f"no log line matches {pattern!r}; the log:\n" + self.log_text())
        return found[0]

    async def await_log(self, pattern: str, within: float = TIMEOUT) -> str:
        """`wait_for_log` without blocking the event loop."""
        return await asyncio.to_thread(self.wait_for_log, pattern, within)

    async def await_exit(self, within: float = TIMEOUT) -> int:
        """Wait up to ``within`` seconds for the exit code, without blocking the event loop."""
        return await asyncio.to_thread(self.process.wait, within)

    def log_text(self) -> str:
        with self._log_changed:
            return "\n".join(self.log)

    def rest_of_log(self) -> str:
        """Everything the server wrote after the ready line, once it exited."""
        if self._reader is not None:
            self._reader.join(TIMEOUT)
            return self.log_text()
        assert self.process.stderr is not None
        self.log.extend(self.process.stderr.read().splitlines())
        return "\n".join(self.log)


def start_server(args: Sequence[str] = (), env: dict[str, str] | None = None) -> ServerProcess:
    """Start a server on a free port and return once it logged that it is ready."""
    process = subprocess.Popen(
        [*SERVER_COMMAND, "--port", "0", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert process.stderr is not None
    log: list[str] = []
    # readline() blocks until the server writes; the ready line comes once it
    # listens, and EOF means it exited first.
    for line in process.stderr:
        log.append(line.rstrip("\n"))
        match = READY.search(line)
        if match:
            return ServerProcess(process, match["address"], log)
    process.wait(TIMEOUT)
    raise RuntimeError("hello-server exited before it was ready:\n" + "\n".join(log))


@contextmanager
def server_process(
    args: Sequence[str] = (), env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    """A running hello-server child, killed by its PID if the test left it up."""
    server = start_server(args, env)
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()
        if server._reader is not None:
            server._reader.join(TIMEOUT)
        for stream in (server.process.stdout, server.process.stderr):
            if stream is not None:
                stream.close()


def run_server_command(
    args: Sequence[str], env: dict[str, str] | None = None, timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m hello_server ARGS`` to its end (for startups that must fail).

    A server that starts serving instead is killed when ``timeout`` passes and
    `subprocess.TimeoutExpired` fails the test.
    """
    return subprocess.run(
        [*SERVER_COMMAND, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )
