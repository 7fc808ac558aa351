"""Run hello-server as a real child process, for tests of the daemon and CLIs.

`server_process` starts ``python -m hello_server --port 0``, waits for its
ready line (which carries the real port) and stops it by its own PID.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

READY = re.compile(r"hello-server ready on (?P<address>\S+)")
STARTUP_TIMEOUT = 30.0


@dataclass
class ServerProcess:
    process: subprocess.Popen[str]
    address: str
    log: list[str]

    def signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        return self.process.wait(timeout)

    def rest_of_log(self) -> str:
        """Everything the server wrote after the ready line, once it exited."""
        assert self.process.stderr is not None
        self.log.extend(self.process.stderr.read().splitlines())
        return "\n".join(self.log)


def start_server(args: Sequence[str] = (), env: dict[str, str] | None = None) -> ServerProcess:
    """Start a server on a free port and return once it logged that it is ready."""
    process = subprocess.Popen(
        [sys.executable, "-m", "hello_server", "--port", "0", *args],
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
    process.wait(STARTUP_TIMEOUT)
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
        for stream in (server.process.stdout, server.process.stderr):
            if stream is not None:
                stream.close()
