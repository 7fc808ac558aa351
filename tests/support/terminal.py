"""Drive the real hello-chat command: as a subprocess, a listener, or in tmux.

Every wait here is for an observable event (a line on a pipe, text on a
tmux screen, a process exit) with a bounded deadline; nothing sleeps to let
something happen. Every process started here is stopped by its own PID (or,
for tmux, by its private socket) if the test left it running.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hello_client import ChatClient, RoomNotFound
from tests.support import TIMEOUT

POLL_INTERVAL = 0.05

_SCRIPT = Path(sys.executable).parent / "hello-chat"


def chat_command() -> list[str]:
    """The installed console script (``pip install -e .`` puts it next to python)."""
    if _SCRIPT.exists():
        return [str(_SCRIPT)]
    return [sys.executable, "-m", "hello_client"]


def child_env(**extra: str) -> dict[str, str]:
    """The environment for hello-chat children: no colour forcing, no stale sizes."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"COLUMNS", "LINES", "HELLO_SERVER", "NO_COLOR", "FORCE_COLOR"}
    }
    env.update(extra)
    return env


def run_chat(
    args: Sequence[str], *, stdin: str | bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``hello-chat ARGS`` to its end with ``stdin`` piped in (empty if None)."""
    data = stdin.encode() if isinstance(stdin, str) else (stdin or b"")
    result = subprocess.run(
        [*chat_command(), *args],
        input=data,
        capture_output=True,
        env=env or child_env(),
        timeout=TIMEOUT,
        check=False,
    )
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
    )


def assert_one_error_line(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """stderr is exactly one ``hello-chat: error:`` line containing ``fragments``."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("hello-chat: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], result.stderr
    assert "Traceback" not in result.stdout + result.stderr


# -- the library, from synchronous tests ----------------------------------------


def send(address: str, room: str, user: str, text: str) -> int:
    """Send one message through the library; return its sequence number."""

    async def go() -> int:
        async with ChatClient(address) as client:
            return await client.send(room, user, text)

    return asyncio.run(go())


def wait_until_room_gone(address: str, room: str, *, user: str = "probe") -> None:
    """Wait (bounded) until SendMessage to ``room`` answers NOT_FOUND.

    Called once the last member's process has exited: the server removes a
    member when its call ends, which it learns from the closed connection.
    Each try is one real RPC; a send that still succeeds reaches nobody.
    """

    async def go() -> None:
        async with ChatClient(address) as client:
            deadline = time.monotonic() + TIMEOUT
            while time.monotonic() < deadline:
                try:
                    await client.send(room, user, "are you there?")
                except RoomNotFound:
                    return
            raise AssertionError(f"room {room!r} still exists {TIMEOUT} s after its member left")

    asyncio.run(go())


# -- a listening member ---------------------------------------------------------


class Listener:
    """``hello-chat listen --json`` as a member of a room, read line by line."""

    def __init__(
        self,
        address: str,
        room: str,
        user: str,
        extra: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.process = subprocess.Popen(
            [*chat_command(), "listen", "--json", *extra, *_who(address, room, user)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env or child_env(),
        )
        self.stdout: queue.Queue[str | None] = queue.Queue()
        self.stderr: queue.Queue[str | None] = queue.Queue()
        for stream, lines in (
            (self.process.stdout, self.stdout),
            (self.process.stderr, self.stderr),
        ):
            threading.Thread(target=_pump, args=(stream, lines), daemon=True).start()
        self.err_lines: list[str] = []

    def wait_joined(self) -> str:
        """Wait for the "joined" notice on stderr; return it."""
        line = self.next_err_line()
        assert line.startswith("joined "), line
        return line

    def next_err_line(self) -> str:
        line = _get(self.stderr, "a line on listen's stderr")
        assert line is not None, "listen closed stderr: " + " | ".join(self.err_lines)
        self.err_lines.append(line)
        return line

    def next_message(self) -> dict[str, Any]:
        """The next JSON message (waits, bounded)."""
        line = _get(self.stdout, "a message from listen")
        assert line is not None, "listen ended; stderr: " + self.drain_stderr()
        message: dict[str, Any] = json.loads(line)
        return message

    def next_text(self) -> str:
        text: str = self.next_message()["text"]
        return text

    def drain_stderr(self) -> str:
        """All of stderr, once the process has ended."""
        self.process.wait(TIMEOUT)
        while (line := _get(self.stderr, "the end of listen's stderr")) is not None:
            self.err_lines.append(line)
        return "\n".join(self.err_lines)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(TIMEOUT)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def _who(address: str, room: str, user: str) -> list[str]:
    return ["--server", address, "--room", room, "--user", user]


def _pump(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def _get(lines: queue.Queue[str | None], what: str) -> str | None:
    try:
        return lines.get(timeout=TIMEOUT)
    except queue.Empty:
        raise AssertionError(f"no {what} within {TIMEOUT} s") from None


@contextmanager
def listening(address: str, room: str, user: str = "observer") -> Iterator[Listener]:
    """A joined listener in ``room`` for the duration of the block."""
    listener = Listener(address, room, user)
    try:
        listener.wait_joined()
        yield listener
    finally:
        listener.stop()


# -- terminals: tmux on a private socket ------------------------------------------

TMUX = shutil.which("tmux")


class Tmux:
    """A private tmux server whose sessions are real terminals for hello-chat."""

    def __init__(self) -> None:
        assert TMUX is not None
        # Unix socket paths are short-limited, so not under pytest's tmp_path.
        self._dir = tempfile.mkdtemp(prefix="hc-tmux-")
        self._socket = os.path.join(self._dir, "s")
        config = os.path.join(self._dir, "tmux.conf")
        with open(config, "w") as file:
            # Keep dead panes (and their exit status) around; no status bar,
            # so the screen is exactly the program's output.
            file.write("set -g remain-on-exit on\nset -g status off\nset -g history-limit 2000\n")
        self._base = [TMUX, "-S", self._socket, "-f", config]
        self._started = False

    def tmux(self, *args: str) -> str:
        result = subprocess.run(
            [*self._base, *args],
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, f"tmux {args}: {result.stderr}"
        return result.stdout

    def start(self, name: str, args: Sequence[str], *, width: int = 80, height: int = 24) -> None:
        """Run ``hello-chat ARGS`` in a new terminal ``width`` x ``height``.

        A shell around it records the exit status in a file: tmux 3.3 at times
        leaves an exited pane's process unreaped (a zombie, no status) for a
        long while, so ``#{pane_dead_status}`` cannot be relied on.
        """
        status = self._status_file(name)
        script = f'"$@"; echo $? > {status}.part && mv {status}.part {status}'
        self.tmux(
            "new-session", "-d", "-s", name, "-x", str(width), "-y", str(height),
            "/bin/sh", "-c", script, "hello-chat", *chat_command(), *args,
        )  # fmt: skip
        self._started = True

    def _status_file(self, name: str) -> str:
        return os.path.join(self._dir, f"{name}.status")

    def screen(self, name: str) -> str:
        """What the terminal shows now, trailing blank lines removed."""
        return self.tmux("capture-pane", "-p", "-t", name).rstrip("\n")

    def transcript(self, name: str) -> list[str]:
        """Every line the terminal showed (scrollback too), wrapped lines joined."""
        captured = self.tmux("capture-pane", "-p", "-J", "-S", "-", "-t", name)
        lines = [line.rstrip() for line in captured.splitlines()]
        # tmux's own remain-on-exit notice is not hello-chat's output.
        return [line for line in lines if line and not line.startswith("Pane is dead")]

    def wait_for(self, name: str, check: Callable[[str], bool] | str) -> str:
        """Poll the screen until ``check`` (or the text) is on it; return the screen."""
        predicate = (lambda screen: check in screen) if isinstance(check, str) else check
        deadline = time.monotonic() + TIMEOUT
        while True:
            screen = self.screen(name)
            if predicate(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{check!r} not on the screen of {name}:\n{screen}")
            time.sleep(POLL_INTERVAL)

    def wait_for_line(self, name: str, text: str) -> list[str]:
        """Poll the whole transcript (scrollback too) until a line contains ``text``."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            lines = self.transcript(name)
            if any(text in line for line in lines):
                return lines
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never shown in {name}:\n" + "\n".join(lines))
            time.sleep(POLL_INTERVAL)

    def keys(self, name: str, *keys: str) -> None:
        """Press keys by tmux name (``Enter``, ``Up``, ``C-d``)."""
        self.tmux("send-keys", "-t", name, *keys)

    def type(self, name: str, text: str) -> None:
        """Type ``text`` literally (no Enter)."""
        self.tmux("send-keys", "-t", name, "-l", text)

    def wait_exit(self, name: str) -> int:
        """Wait (bounded) for hello-chat in ``name`` to exit; return its status."""
        status = Path(self._status_file(name))
        deadline = time.monotonic() + TIMEOUT
        while not status.exists():
            if time.monotonic() > deadline:
                raise AssertionError(f"hello-chat in {name} still running:\n{self.screen(name)}")
            time.sleep(POLL_INTERVAL)
        return int(status.read_text())

    def title(self, name: str) -> str:
        return self.tmux("display-message", "-p", "-t", name, "#{pane_title}").strip()

    def close(self) -> None:
        """Stop this private tmux server (and with it every hello-chat it runs)."""
        if self._started:
            subprocess.run(
                [*self._base, "kill-server"], capture_output=True, timeout=TIMEOUT, check=False
            )
        shutil.rmtree(self._dir, ignore_errors=True)


def prompt_line(screen: str) -> str:
    """The last non-blank line of the screen: where the prompt is."""
    return [line for line in screen.splitlines() if line.strip()][-1]
