"""The hello-chat command: parse options, run one mode, turn the outcome into an exit code.

``hello-chat --room R --user U`` is the interactive room when stdin is a
terminal (see ``ui``) and sends each input line otherwise. ``send`` and
``listen`` are the scripting commands. Every failure ends as one line on
stderr and an exit code from the table below; never a traceback (set
``HELLO_DEBUG=1`` to see one for an unexpected error).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
import traceback
from collections.abc import AsyncIterator, Coroutine
from typing import Annotated, Any

import typer
from rich.console import Console

from hello_client.client import ChatClient
from hello_client.errors import HelloError, InvalidInput, ServerUnavailable
from hello_client.render import inert, message_json, message_line, message_renderable
from hello_client.ui import run_room
from hello_protocol.wire import DEFAULT_ADDRESS, DEFAULT_PORT

EXIT_OK = 0
EXIT_FAILED = 1  # the server refused: room not found, invalid input, evicted
EXIT_USAGE = 2  # bad options (click's own code for usage errors)
EXIT_UNREACHABLE = 3  # the server cannot be reached, or went away
EXIT_INTERRUPTED = 130  # 128 + SIGINT: a scripting command stopped by Ctrl-C

SERVER_ENV = "HELLO_SERVER"
DEBUG_ENV = "HELLO_DEBUG"
PROG = "hello-chat"
_READ_AHEAD = 256  # piped lines read but not yet sent

# "\b" keeps click from re-wrapping the paragraph that follows it.
ROOM_EXAMPLES = """\b
Examples:
  hello-chat --room lobby --user alice              chat at the terminal
  hello-chat --room lobby --user alice --name "Alice Liddell"
  hello-chat --room lobby --user bot < notes.txt    send each line of a file
  uptime | hello-chat --room ops --user cron        send a command's output
  HELLO_SERVER=chat.example:8080 hello-chat --room lobby --user alice

\b
Piped input is sent without joining: the room must have members, or the
first line fails with "room ... does not exist" (exit 1). Blank lines are
skipped. Exit codes: 0 ok, 1 refused by the server (room not found, invalid
input, evicted), 2 usage error, 3 server unreachable or gone.
"""

SEND_EXAMPLES = """\b
Examples:
  hello-chat send --room lobby --user alice "hello, everyone"
  hello-chat send --room ops --user cron backup finished    (words are joined)
  hello-chat send --server chat.example:8080 --room ops --user cron "disk full"

\b
Exit codes: 0 sent, 1 refused (room not found: nobody has joined it; invalid
input), 2 usage error, 3 server unreachable.
"""

LISTEN_EXAMPLES = """\b
Examples:
  hello-chat listen --room lobby --user logger
  hello-chat listen --room lobby --user bot --json | jq -r .text
  hello-chat listen --room lobby --user bot --json --count 1    (wait for one)

\b
"joined ROOM as USER" goes to stderr once the server acknowledged the join;
stdout has only messages. JSON lines have the keys id (the sender), room,
text, timestamp (RFC 3339, UTC) and seq (null from servers that do not number
messages). Exit codes: 0 done (--count reached), 1 refused or evicted,
2 usage error, 3 server unreachable or gone, 130 interrupted (Ctrl-C).
"""

app = typer.Typer(
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

RoomOption = Annotated[
    str, typer.Option("--room", "-r", metavar="ROOM", help="Room id.", show_default=False)
]
UserOption = Annotated[
    str,
    typer.Option(
        "--user", "-u", metavar="USER", help="Your user id in the room.", show_default=False
    ),
]
NameOption = Annotated[
    str,
    typer.Option(
        "--name", "-n", metavar="NAME", help="Display name sent with the join.", show_default=False
    ),
]
ServerOption = Annotated[
    str,
    typer.Option(
        "--server",
        "-s",
        envvar=SERVER_ENV,
        metavar="HOST:PORT",
        help="Server as host:port (port defaults to 8080).",
    ),
]


@app.callback(invoke_without_command=True, epilog=ROOM_EXAMPLES)
def room(
    ctx: typer.Context,
    room: Annotated[
        str | None,
        typer.Option("--room", "-r", metavar="ROOM", help="Room id.", show_default=False),
    ] = None,
    user: Annotated[
        str | None,
        typer.Option(
            "--user", "-u", metavar="USER", help="Your user id in the room.", show_default=False
        ),
    ] = None,
    name: NameOption = "",
    server: ServerOption = DEFAULT_ADDRESS,
) -> None:
    """Chat in a room: interactive on a terminal, one message per input line when piped.

    On a terminal: messages appear above a prompt; Enter sends, Up recalls,
    /help lists the commands, /quit or Ctrl-D leaves.
    """
    if ctx.invoked_subcommand is not None:
        given = [
            f"--{option}"
            for option in ("room", "user", "name", "server")
            if _from_command_line(ctx, option)
        ]
        if given:
            ctx.fail(
                f"put {', '.join(given)} after the command name: "
                f"{PROG} {ctx.invoked_subcommand} {' '.join(given)} ..."
            )
        return
    if room is None or user is None:
        missing = " and ".join(opt for opt, v in (("--room", room), ("--user", user)) if v is None)
        ctx.fail(f"missing {missing}; see {PROG} --help")
    target = _target(server)
    if not sys.stdin.isatty():
        _exit(_run(_pipe_lines(target, room, user)))
    if not sys.stdout.isatty():
        ctx.fail(
            f"the interactive room needs a terminal on stdout; to record a room use "
            f"{PROG} listen --room {room} --user {user} > FILE"
        )
    # Ctrl-C at the prompt is a way to leave, not an interruption.
    _exit(_run(_interactive(target, room, user, name), interrupted=EXIT_OK))


@app.command(epilog=SEND_EXAMPLES)
def send(
    text: Annotated[
        list[str],
        typer.Argument(metavar="TEXT", help="The message; several words are joined by spaces."),
    ],
    room: RoomOption,
    user: UserOption,
    server: ServerOption = DEFAULT_ADDRESS,
) -> None:
    """Send one message to a room that has members, then exit."""
    _exit(_run(_send(_target(server), room, user, " ".join(text))))


@app.command(epilog=LISTEN_EXAMPLES, short_help="Join a room and print its messages.")
def listen(
    room: RoomOption,
    user: UserOption,
    name: NameOption = "",
    json_lines: Annotated[
        bool, typer.Option("--json", help="One JSON object per message and line.")
    ] = False,
    count: Annotated[
        int | None,
        typer.Option(min=1, metavar="N", help="Exit after this many messages.", show_default=False),
    ] = None,
    server: ServerOption = DEFAULT_ADDRESS,
) -> None:
    """Join a room and print its messages until interrupted (or --count of them)."""
    _exit(_run(_listen(_target(server), room, user, name, json_lines=json_lines, count=count)))


def main() -> None:
    _quiet_grpc_core()
    app(prog_name=PROG)


def _quiet_grpc_core() -> None:
    """Keep gRPC's C-core log lines off the terminal; hello-chat reports problems itself.

    The C-core writes straight to file descriptor 2, and logs some ordinary
    events even at its default verbosity (an INFO line when a shutting-down
    server sends GOAWAY); GRPC_VERBOSITY only counts if set before grpc is
    imported, which the package import has done by now. So fd 2 goes to
    /dev/null and Python's ``sys.stderr`` moves to a copy of the real one.
    Setting HELLO_DEBUG, GRPC_VERBOSITY or GRPC_TRACE leaves fd 2 alone.
    """
    if any(os.environ.get(name) for name in (DEBUG_ENV, "GRPC_VERBOSITY", "GRPC_TRACE")):
        return
    try:
        real_stderr = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:  # no stderr at all: nothing to protect
        return
    sys.stderr.flush()
    sys.stderr = open(  # noqa: SIM115 - lives as long as the process
        real_stderr, "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace"
    )
    os.dup2(devnull, 2)
    os.close(devnull)


# -- the modes ----------------------------------------------------------------


async def _interactive(target: str, room: str, user: str, name: str) -> None:
    async with ChatClient(target) as client, await client.join(room, user, name) as subscription:
        await run_room(client, subscription)


async def _send(target: str, room: str, user: str, text: str) -> None:
    async with ChatClient(target) as client:
        await client.send(room, user, text)


async def _pipe_lines(target: str, room: str, user: str) -> None:
    """Send each non-blank stdin line, in order, each once the previous one was accepted.

    No join: like ``send``, this delivers to the room's members, so a room
    without members is an error rather than a message nobody will read.
    """
    async with ChatClient(target) as client:
        async for number, text in _stdin_lines():
            try:
                await client.send(room, user, text)
            except HelloError as error:
                # Same class (so the same exit code), with the line number.
                raise type(error)(f"line {number} not sent: {error}") from None


async def _listen(
    target: str, room: str, user: str, name: str, *, json_lines: bool, count: int | None
) -> None:
    if json_lines:
        console = None
    elif sys.stdout.isatty():
        console = Console(markup=False, highlight=False, emoji=False)
    else:
        console = None
    printed = 0
    async with ChatClient(target) as client, await client.join(room, user, name) as subscription:
        print(f"joined {inert(room)} as {inert(user)}", file=sys.stderr, flush=True)
        async for message in subscription:
            if json_lines:
                print(message_json(message), flush=True)
            elif console is not None:
                console.print(message_renderable(message, me=user, width=console.width))
            else:
                print(message_line(message, me=user), flush=True)
            printed += 1
            if count is not None and printed >= count:
                return
    raise ServerUnavailable(f"server {target} ended the stream of room {room}")


async def _stdin_lines() -> AsyncIterator[tuple[int, str]]:
    """Number and text of each non-blank line of stdin (any line ending).

    A daemon thread reads, so that a slow producer (``tail -f log | ...``)
    never blocks the event loop and Ctrl-C is not held up by a pending read;
    a semaphore keeps it at most ``_READ_AHEAD`` lines ahead of the sends.
    """
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[bytes | OSError | None] = asyncio.Queue()
    slots = threading.Semaphore(_READ_AHEAD)

    def read() -> None:
        item: bytes | OSError | None = None
        try:
            for raw in sys.stdin.buffer:
                slots.acquire()
                loop.call_soon_threadsafe(lines.put_nowait, raw)
        except OSError as error:
            item = error
        with contextlib.suppress(RuntimeError):  # the loop is closed: hello-chat is exiting
            loop.call_soon_threadsafe(lines.put_nowait, item)

    threading.Thread(target=read, name="stdin-lines", daemon=True).start()
    number = 0
    while (raw := await lines.get()) is not None:
        slots.release()
        if isinstance(raw, OSError):
            raise HelloError(f"cannot read the input after line {number}: {raw.strerror}")
        number += 1
        raw = raw.removesuffix(b"\n").removesuffix(b"\r")
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            raise InvalidInput(f"line {number} not sent: it is not valid UTF-8 text") from None
        if text.strip():
            yield number, text


# -- running a mode -----------------------------------------------------------


def _from_command_line(ctx: typer.Context, option: str) -> bool:
    source = ctx.get_parameter_source(option)
    return source is not None and source.name == "COMMANDLINE"


def _target(server: str) -> str:
    """``host:port`` for gRPC; a bare host gets the default port."""
    if ":" not in server or (server.startswith("[") and server.endswith("]")):
        return f"{server}:{DEFAULT_PORT}"
    return server


def _run(main: Coroutine[Any, Any, None], *, interrupted: int = EXIT_INTERRUPTED) -> int:
    """Run a mode; return its exit code after reporting any failure in one line."""
    try:
        return asyncio.run(_until_signal(main))
    except KeyboardInterrupt:
        return interrupted
    except HelloError as error:
        _error(str(error))
        return EXIT_UNREACHABLE if isinstance(error, ServerUnavailable) else EXIT_FAILED
    except _Terminated as terminated:
        return 128 + terminated.signum
    except BrokenPipeError:
        # The reader of stdout went away (``listen | head -1``): that is its
        # choice, not our failure. Point stdout at /dev/null so the final
        # flush at exit does not fail again.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as error:  # no traceback at the terminal
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        _error(f"unexpected {type(error).__name__}: {error} (set {DEBUG_ENV}=1 for details)")
        return EXIT_FAILED


class _Terminated(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


async def _until_signal(main: Coroutine[Any, Any, None]) -> int:
    """Run ``main``; SIGTERM or SIGHUP cancel it, so it still leaves the room."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        task.cancel()

    for signum in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await main
    except asyncio.CancelledError:
        if received:
            raise _Terminated(received[0]) from None
        raise
    return EXIT_OK


def _error(message: str) -> None:
    print(f"{PROG}: error: {inert(message)}", file=sys.stderr, flush=True)


def _exit(code: int) -> None:
    raise typer.Exit(code)
