"""The hello-chat command line: options in, one mode run, its exit code out.

``hello-chat --room R --user U`` is the interactive room when stdin is a
terminal and sends each input line otherwise; ``send`` and ``listen`` are the
scripting commands. This module only parses and checks options: the modes are
in ``modes``, running one and its exit codes in ``runner``. A usage error is
one ``hello-chat: error:`` line and exit 2, like every other failure.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Annotated

import typer

from hello_client import modes
from hello_client.address import server_target
from hello_client.credentials import ClientTls, bearer_metadata, read_token
from hello_client.runner import EXIT_INTERRUPTED, EXIT_OK, run_mode
from hello_client.terminal import PROG, print_error, quiet_grpc_core
from hello_protocol.wire import DEFAULT_ADDRESS

__all__ = ["SERVER_ENV", "app", "main"]

SERVER_ENV = "HELLO_SERVER"
_DISTRIBUTION = "hello-chat"

# "\b" keeps click from re-wrapping the paragraph that follows it.
_ROOM_EXAMPLES = """\b
Examples:
  hello-chat --room lobby --user alice              chat at the terminal
  hello-chat --room lobby --user alice --name "Alice Liddell"
  hello-chat --room lobby --user bot < notes.txt    send each line of a file
  uptime | hello-chat --room ops --user cron        send a command's output
  HELLO_SERVER=chat.example:8080 hello-chat --room lobby --user alice
  hello-chat --ca ca.pem --token-file alice.jwt -s chat.example:8443 -r lobby -u alice

\b
Piped input is sent without joining: the room must have members, or the
first line fails with "room ... does not exist" (exit 1). Blank lines are
skipped. --room, --user and --server may also come before send or listen.
Exit codes: 0 ok, 1 refused by the server (room not found, invalid input,
evicted), 2 usage error, 3 server unreachable or gone.
"""

_SEND_EXAMPLES = """\b
Examples:
  hello-chat send --room lobby --user alice "hello, everyone"
  hello-chat send --room ops --user cron backup finished    (words are joined)
  hello-chat --server chat.example:8080 send --room ops --user cron "disk full"

\b
Exit codes: 0 sent, 1 refused (room not found: nobody has joined it; invalid
input, such as a text over 64 KiB), 2 usage error, 3 server unreachable.
"""

_LISTEN_EXAMPLES = """\b
Examples:
  hello-chat listen --room lobby --user logger
  hello-chat listen --room lobby --user bot --json | jq -r .text
  hello-chat listen --room lobby --user bot --json --count 1    (wait for one)
  hello-chat listen --room lobby --user bot --json --history 20  (20 earlier first)

\b
"joined ROOM as USER" goes to stderr once the server acknowledged the join;
stdout has only messages. JSON lines have the keys id (the sender), room,
text, timestamp (RFC 3339, UTC) and seq (null from servers that do not number
messages) and name (the sender's display name, "" if none). A lost
connection is rejoined by itself, resuming after the last message printed:
no duplicate, and no gap while the server's history reaches back. Each loss
and return is one "hello-chat:" line on stderr, which says when messages
sent meanwhile may be missing (a restarted server, or too long away).
Exit codes: 0 done (--count reached), 1 refused or evicted, 2 usage error,
3 server unreachable or gone (5 minutes of failed reconnects), 4 --count
reached but messages may be missing, 130 interrupted (Ctrl-C).
"""


_WHO_EXAMPLES = """\b
Examples:
  hello-chat who --room lobby
  hello-chat who --room lobby --json | jq -r .id

\b
JSON lines have the keys id, name, sessions (how many joins the user has
open) and since (RFC 3339, UTC). Exit codes: 0 listed, 1 room not found
(nobody is in it) or invalid room id, 2 usage error, 3 server unreachable.
"""


def _checked_server(
    ctx: typer.Context, param: typer.CallbackParam, address: str | None
) -> str | None:
    """The option callback: ``host:port`` for gRPC, or a usage error saying what is wrong."""
    if address is None:
        return None
    try:
        return server_target(address)
    except ValueError as error:
        source = ctx.get_parameter_source(param.name or "")
        origin = SERVER_ENV if source is not None and source.name == "ENVIRONMENT" else "--server"
        raise typer.BadParameter(f"{address!r}: {error}", param_hint=origin) from None


def _show_version(wanted: bool) -> None:
    if wanted:
        try:
            version = metadata.version(_DISTRIBUTION)
        except metadata.PackageNotFoundError:  # run from a source tree, not installed
            version = "unknown"
        print(f"{PROG} {version}")
        raise typer.Exit(EXIT_OK)


RoomOption = Annotated[
    str | None,
    typer.Option("--room", "-r", metavar="ROOM", help="Room id.", show_default=False),
]
UserOption = Annotated[
    str | None,
    typer.Option(
        "--user", "-u", metavar="USER", help="Your user id in the room.", show_default=False
    ),
]
NameOption = Annotated[
    str | None,
    typer.Option(
        "--name",
        "-n",
        metavar="NAME",
        help="Display name shown with your messages (and sent with the join).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="One JSON object per line.")]
# After a command name, --server has no default of its own: the one before the
# command name (or HELLO_SERVER, or the default) applies.
CommandServerOption = Annotated[
    str | None,
    typer.Option(
        "--server",
        "-s",
        metavar="HOST:PORT",
        callback=_checked_server,
        help=f"Server as HOST[:PORT] (port 8080 if not given); ${SERVER_ENV} or "
        f"{DEFAULT_ADDRESS} if not given here or before the command name.",
        show_default=False,
    ),
]


@dataclass(frozen=True, slots=True)
class _BeforeCommand:
    """Options given before ``send``/``listen``, for the command to fall back on."""

    room: str | None
    user: str | None
    name: str | None
    server: modes.Server

    def server_at(self, target: str | None) -> modes.Server:
        """The server given before the command, or at ``target`` if the command named one."""
        return self.server if target is None else replace(self.server, target=target)


app = typer.Typer(
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback(invoke_without_command=True, epilog=_ROOM_EXAMPLES)
def room(
    ctx: typer.Context,
    room: RoomOption = None,
    user: UserOption = None,
    name: NameOption = None,
    server: Annotated[
        str,
        typer.Option(
            "--server",
            "-s",
            envvar=SERVER_ENV,
            metavar="HOST:PORT",
            callback=_checked_server,
            help="Server as HOST[:PORT]; the port defaults to 8080, IPv6 goes in brackets.",
        ),
    ] = DEFAULT_ADDRESS,
    history: Annotated[
        int,
        typer.Option(
            min=0,
            metavar="N",
            help="Show up to N earlier messages of the room on joining (interactive).",
        ),
    ] = modes.DEFAULT_ROOM_HISTORY,
    tls: Annotated[
        bool,
        typer.Option(
            "--tls",
            envvar="HELLO_TLS",
            help="Connect over TLS, trusting the system's CAs ($HELLO_TLS=1).",
        ),
    ] = False,
    ca: Annotated[
        Path | None,
        typer.Option(
            "--ca",
            envvar="HELLO_CA",
            metavar="PEM",
            help="Connect over TLS, trusting the CA certificates in this file.",
            show_default=False,
        ),
    ] = None,
    cert: Annotated[
        Path | None,
        typer.Option(
            "--cert",
            envvar="HELLO_CERT",
            metavar="PEM",
            help="Client certificate, for servers that require one (with --key; implies TLS).",
            show_default=False,
        ),
    ] = None,
    key: Annotated[
        Path | None,
        typer.Option(
            "--key",
            envvar="HELLO_KEY",
            metavar="PEM",
            help="The client certificate's private key.",
            show_default=False,
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="HELLO_TOKEN",
            metavar="JWT",
            help="Token for servers that require one (from hello-server token, or your issuer).",
            show_default=False,
        ),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            envvar="HELLO_TOKEN_FILE",
            metavar="FILE",
            help="As --token, read from a file (keeps it out of ps and the shell history).",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            is_eager=True,
            callback=_show_version,
            help="Print hello-chat's version and exit.",
        ),
    ] = False,
) -> None:
    """Chat in a room: interactive on a terminal, one message per input line when piped.

    On a terminal: messages appear above a prompt; Enter sends, Up recalls,
    /help lists the commands, /quit or Ctrl-D leaves.
    """
    try:
        connection = _connection(server, tls, ca, cert, key, token, token_file)
    except ValueError as error:
        ctx.fail(str(error))
    if ctx.invoked_subcommand is not None:
        ctx.obj = _BeforeCommand(room, user, name, connection)
        return
    room, user = _room_and_user(ctx, room, user)
    if not sys.stdin.isatty():
        raise typer.Exit(run_mode(modes.pipe_lines(connection, room, user, name or "")))
    if not sys.stdout.isatty():
        ctx.fail(
            f"the interactive room needs a terminal on stdout; to record a room use "
            f"{PROG} listen --room {room} --user {user} > FILE"
        )
    # Ctrl-C at the prompt is a way to leave, not an interruption.
    chatting = modes.interactive(connection, room, user, name or "", history)
    raise typer.Exit(run_mode(chatting, interrupted=0))


@app.command(epilog=_SEND_EXAMPLES)
def send(
    ctx: typer.Context,
    text: Annotated[
        list[str],
        typer.Argument(metavar="TEXT", help="The message; several words are joined by spaces."),
    ],
    room: RoomOption = None,
    user: UserOption = None,
    name: NameOption = None,
    server: CommandServerOption = None,
) -> None:
    """Send one message to a room that has members, then exit."""
    before = ctx.find_object(_BeforeCommand)
    assert before is not None
    room, user = _room_and_user(ctx, room or before.room, user or before.user)
    target = before.server_at(server)
    display_name = name if name is not None else before.name or ""
    raise typer.Exit(run_mode(modes.send_one(target, room, user, " ".join(text), display_name)))


@app.command(epilog=_LISTEN_EXAMPLES, short_help="Join a room and print its messages.")
def listen(
    ctx: typer.Context,
    room: RoomOption = None,
    user: UserOption = None,
    name: NameOption = None,
    json_lines: JsonOption = False,
    count: Annotated[
        int | None,
        typer.Option(min=1, metavar="N", help="Exit after this many messages.", show_default=False),
    ] = None,
    history: Annotated[
        int,
        typer.Option(min=0, metavar="N", help="First print up to N earlier messages."),
    ] = 0,
    server: CommandServerOption = None,
) -> None:
    """Join a room and print its messages until interrupted (or --count of them)."""
    before = ctx.find_object(_BeforeCommand)
    assert before is not None
    room, user = _room_and_user(ctx, room or before.room, user or before.user)
    target = before.server_at(server)
    display_name = name if name is not None else before.name or ""
    listening = modes.listen(
        target,
        room,
        user,
        display_name,
        json_lines=json_lines,
        count=count,
        history=history,
    )
    raise typer.Exit(run_mode(listening))


@app.command(name="who", epilog=_WHO_EXAMPLES, short_help="List the members of a room.")
def who_command(
    ctx: typer.Context,
    room: RoomOption = None,
    json_lines: JsonOption = False,
    server: CommandServerOption = None,
) -> None:
    """Print the users in a room, one a line: name (id) and their session count."""
    before = ctx.find_object(_BeforeCommand)
    assert before is not None
    room = room or before.room
    if room is None:
        ctx.fail("missing --room")
    target = before.server_at(server)
    raise typer.Exit(run_mode(modes.who(target, room, json_lines=json_lines)))


def main() -> None:
    """The ``hello-chat`` console script."""
    quiet_grpc_core()
    try:
        code = app(prog_name=PROG, standalone_mode=False)
    except typer.TyperException as error:  # usage errors (exit_code 2), and Typer's others
        print_error(_usage_line(error))
        code = error.exit_code
    except typer.Abort:
        code = EXIT_INTERRUPTED
    sys.exit(code if isinstance(code, int) else EXIT_OK)


def _connection(
    target: str,
    tls: bool,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    token: str | None,
    token_file: Path | None,
) -> modes.Server:
    """The server and how to reach it; ValueError naming the option that is wrong."""
    if token is not None and token_file is not None:
        raise ValueError("give --token or --token-file, not both")
    if token_file is not None:
        token = read_token(token_file)
    credentials = None
    if tls or ca is not None or cert is not None or key is not None:
        credentials = ClientTls.from_files(ca, cert, key)
    if token is not None:
        bearer_metadata(token)  # checked here, where a bad one is a usage error
    return modes.Server(target, credentials, token)


def _room_and_user(ctx: typer.Context, room: str | None, user: str | None) -> tuple[str, str]:
    if room is None or user is None:
        missing = " and ".join(opt for opt, v in (("--room", room), ("--user", user)) if v is None)
        ctx.fail(f"missing {missing}")
    return room, user


def _usage_line(error: typer.TyperException) -> str:
    """A usage error as one line, pointing at the --help of the command it concerns."""
    message = " ".join(error.format_message().split()).rstrip(".")
    if message[:1].isupper() and message[1:2].islower():  # "Missing ..." but not "TEXT"
        message = message[0].lower() + message[1:]
    # Usage errors carry the context of the command whose options were wrong.
    command = getattr(getattr(error, "ctx", None), "command_path", PROG)
    return f"{message} (see {command} --help)"
