"""The hello-server command: parse options, build a ServerConfig, serve.

The first SIGINT or SIGTERM drains (open streams end with UNAVAILABLE, calls
in flight get the grace period); a second one cuts that drain short (exit 1).
A usage error is one line, ``hello-server: error: ...``, and exit code 2.
With ``--workers N`` (N > 1) the process is a supervisor of N such servers
(hello_server.workers); each of them runs `run` with a `WorkerLink`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer

from hello_protocol.validation import InputLimits
from hello_protocol.wire import (
    DEFAULT_KEEPALIVE_TIME_SECONDS,
    DEFAULT_KEEPALIVE_TIMEOUT_SECONDS,
    DEFAULT_MAX_ID_CHARS,
    DEFAULT_MAX_TEXT_BYTES,
    DEFAULT_PORT,
)
from hello_server.config import (
    DEFAULT_CONNECTION_QUEUE_BYTES,
    DEFAULT_HISTORY_BUDGET,
    DEFAULT_HISTORY_BYTES,
    DEFAULT_HISTORY_MESSAGES,
    DEFAULT_LINGER_SECONDS,
    DEFAULT_MEMORY_BUDGET,
    DEFAULT_QUEUE_BYTES,
    DEFAULT_QUEUE_MESSAGES,
    DEFAULT_ROOM_TTL_SECONDS,
    DEFAULT_STALLED_CLOSE_SECONDS,
    LOG_LEVELS,
    ConfigError,
    ServerConfig,
)
from hello_server.exit_codes import (
    EXIT_FORCED,
    EXIT_OK,
    EXIT_STARTUP_FAILURE,
    EXIT_USAGE,
)
from hello_server.hub import HistoryLimits, QueueLimits
from hello_server.server import BindError, ChatServer
from hello_server.stop_signals import STOP_SIGNALS, ignore_stop_signals
from hello_server.transport import (
    DEFAULT_HANDSHAKE_TIMEOUT_SECONDS,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_METADATA_BYTES,
    DEFAULT_MAX_STREAMS_PER_CONNECTION,
    TransportLimits,
)
from hello_server.workers import (
    RESTART_LIMIT,
    RESTART_WINDOW_SECONDS,
    SUPERVISOR_FD_OPTION,
    Supervisor,
    WorkerLink,
)

PROG = "hello-server"
DISTRIBUTION = "hello-chat"

log = logging.getLogger("hello_server")

app = typer.Typer(add_completion=False, rich_markup_mode=None)

# "\b" keeps click from re-wrapping the paragraph that follows it.
EXAMPLES = f"""\b
Examples:
  hello-server                               serve on 127.0.0.1:8080
  hello-server --port 0 --log-level debug    any free port; log joins and leaves
  HELLO_PORT=9000 hello-server               any option from the environment
  hello-server --redis redis://127.0.0.1:6379 --workers 2
                                             two processes on one port, one Redis

\b
The first SIGINT or SIGTERM drains, a second one stops at once. Exit codes:
0 stopped after a drain, 1 a second signal cut the drain short, 2 usage error,
3 cannot listen on the address, 4 (--workers) workers kept dying.

\b
--workers N runs N server processes on one port, sharing rooms through
--redis; each signal goes to all of them. A worker that dies is logged (PID,
exit code or signal) and restarted after a backoff; at the {RESTART_LIMIT + 1}th death within
{RESTART_WINDOW_SECONDS:.0f} s the others are drained and the exit code is 4.
"""


def _show_version(wanted: bool) -> None:
    if not wanted:
        return
    try:
        typer.echo(f"{PROG} {version(DISTRIBUTION)}")
    except PackageNotFoundError:
        typer.echo(f"{PROG} (version unknown: the {DISTRIBUTION} distribution is not installed)")
    raise typer.Exit(EXIT_OK)


@app.command(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
def serve(
    host: Annotated[str, typer.Option(envvar="HELLO_HOST", help="Address to listen on.")] = (
        "127.0.0.1"
    ),
    port: Annotated[
        int, typer.Option(envvar="HELLO_PORT", help="TCP port; 0 picks a free one.")
    ] = DEFAULT_PORT,
    max_message_bytes: Annotated[
        int,
        typer.Option(envvar="HELLO_MAX_MESSAGE_BYTES", help="Largest message text, in bytes."),
    ] = DEFAULT_MAX_TEXT_BYTES,
    max_id_chars: Annotated[
        int, typer.Option(envvar="HELLO_MAX_ID_CHARS", help="Longest room or user id.")
    ] = DEFAULT_MAX_ID_CHARS,
    queue_size: Annotated[
        int,
        typer.Option(
            envvar="HELLO_QUEUE_SIZE",
            help="Messages a member may have waiting before it is evicted.",
        ),
    ] = DEFAULT_QUEUE_MESSAGES,
    queue_bytes: Annotated[
        int,
        typer.Option(
            envvar="HELLO_QUEUE_BYTES", help="Bytes a member may have waiting before eviction."
        ),
    ] = DEFAULT_QUEUE_BYTES,
    memory_budget: Annotated[
        int | None,
        typer.Option(
            envvar="HELLO_MEMORY_BUDGET",
            help="Bytes waiting for all members together before the largest is evicted "
            f"[default: {DEFAULT_MEMORY_BUDGET}, or the connection budget if larger]",
            show_default=False,
        ),
    ] = None,
    connection_queue_bytes: Annotated[
        int | None,
        typer.Option(
            envvar="HELLO_CONNECTION_QUEUE_BYTES",
            help="Bytes waiting for one connection's members before its largest is evicted "
            f"[default: {DEFAULT_CONNECTION_QUEUE_BYTES}, or --queue-bytes if larger]",
            show_default=False,
        ),
    ] = None,
    history_size: Annotated[
        int,
        typer.Option(
            envvar="HELLO_HISTORY_SIZE",
            help="Latest messages each room keeps for replay and resume (0: none).",
        ),
    ] = DEFAULT_HISTORY_MESSAGES,
    history_bytes: Annotated[
        int,
        typer.Option(
            envvar="HELLO_HISTORY_BYTES", help="Bytes of messages each room keeps at most."
        ),
    ] = DEFAULT_HISTORY_BYTES,
    history_budget: Annotated[
        int,
        typer.Option(
            envvar="HELLO_HISTORY_BUDGET",
            help="Bytes of messages all rooms keep together; past it the largest lose the oldest.",
        ),
    ] = DEFAULT_HISTORY_BUDGET,
    room_ttl: Annotated[
        float,
        typer.Option(
            envvar="HELLO_ROOM_TTL",
            help="Seconds an empty room keeps its history for members coming back (0: none).",
        ),
    ] = DEFAULT_ROOM_TTL_SECONDS,
    stalled_close_seconds: Annotated[
        float,
        typer.Option(
            envvar="HELLO_STALLED_CLOSE_SECONDS",
            help="Seconds before closing a connection whose evicted streams all stopped reading.",
        ),
    ] = DEFAULT_STALLED_CLOSE_SECONDS,
    batch_linger_ms: Annotated[
        float,
        typer.Option(
            envvar="HELLO_BATCH_LINGER_MS",
            help="How long a busy Subscribe stream gathers messages per batch.",
        ),
    ] = DEFAULT_LINGER_SECONDS * 1000,
    grace: Annotated[
        float,
        typer.Option(envvar="HELLO_GRACE", help="Seconds to drain on SIGINT/SIGTERM."),
    ] = 5.0,
    log_level: Annotated[
        str, typer.Option(envvar="HELLO_LOG_LEVEL", help=f"One of {', '.join(LOG_LEVELS)}.")
    ] = "info",
    max_connections: Annotated[
        int,
        typer.Option(
            envvar="HELLO_MAX_CONNECTIONS",
            help="Connections served at once; more are closed at accept.",
        ),
    ] = DEFAULT_MAX_CONNECTIONS,
    max_streams_per_connection: Annotated[
        int,
        typer.Option(
            envvar="HELLO_MAX_STREAMS_PER_CONNECTION",
            help="Calls open at once on one connection (HTTP/2 MAX_CONCURRENT_STREAMS).",
        ),
    ] = DEFAULT_MAX_STREAMS_PER_CONNECTION,
    handshake_timeout: Annotated[
        float,
        typer.Option(
            envvar="HELLO_HANDSHAKE_TIMEOUT",
            help="Seconds a new connection has to start HTTP/2 before it is closed.",
        ),
    ] = DEFAULT_HANDSHAKE_TIMEOUT_SECONDS,
    keepalive_time: Annotated[
        float,
        typer.Option(envvar="HELLO_KEEPALIVE_TIME", help="Seconds between keepalive pings."),
    ] = DEFAULT_KEEPALIVE_TIME_SECONDS,
    keepalive_timeout: Annotated[
        float,
        typer.Option(
            envvar="HELLO_KEEPALIVE_TIMEOUT",
            help="Seconds a ping may go unanswered before the connection is closed.",
        ),
    ] = DEFAULT_KEEPALIVE_TIMEOUT_SECONDS,
    max_metadata_bytes: Annotated[
        int,
        typer.Option(
            envvar="HELLO_MAX_METADATA_BYTES", help="Largest header block of one request."
        ),
    ] = DEFAULT_MAX_METADATA_BYTES,
    redis: Annotated[
        str | None,
        typer.Option(
            envvar="HELLO_REDIS_URL",
            help="Share rooms with other servers through Redis "
            "(redis://, rediss:// or unix:// URL) [default: rooms in this process only]",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            envvar="HELLO_WORKERS",
            help="Server processes sharing the port; more than 1 needs --redis.",
        ),
    ] = 1,
    supervisor_fd: Annotated[
        int | None,
        typer.Option(
            SUPERVISOR_FD_OPTION,
            hidden=True,
            help="Run as a worker of the --workers supervisor holding the other end of this "
            "socket pair.",
        ),
    ] = None,
    _version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Serve hello chat rooms over gRPC (hello.ChatRoom, health, reflection)."""
    try:
        config = ServerConfig(
            host=host,
            port=port,
            limits=InputLimits(max_id_chars=max_id_chars, max_text_bytes=max_message_bytes),
            queue=QueueLimits(max_messages=queue_size, max_bytes=queue_bytes),
            memory_budget_bytes=memory_budget,
            connection_queue_bytes=connection_queue_bytes,
            stalled_close_seconds=stalled_close_seconds,
            history=HistoryLimits(max_messages=history_size, max_bytes=history_bytes),
            room_ttl_seconds=room_ttl,
            history_budget_bytes=history_budget,
            transport=TransportLimits(
                max_connections=max_connections,
                max_streams_per_connection=max_streams_per_connection,
                handshake_timeout_seconds=handshake_timeout,
                keepalive_time_seconds=keepalive_time,
                keepalive_timeout_seconds=keepalive_timeout,
                max_metadata_bytes=max_metadata_bytes,
            ),
            grace_seconds=grace,
            batch_linger_seconds=batch_linger_ms / 1000,
            log_level=log_level.lower(),
            redis_url=redis,
            workers=workers,
        )
    except (ConfigError, ValueError) as error:
        typer.echo(f"hello-server: error: {error}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    link: WorkerLink | None = None
    if supervisor_fd is not None:
        try:
            link = WorkerLink(supervisor_fd)
        except OSError as error:
            typer.echo(f"hello-server: error: {SUPERVISOR_FD_OPTION}: {error}", err=True)
            raise typer.Exit(EXIT_USAGE) from None
    several = config.workers > 1 or link is not None
    # Other libraries (asyncio, grpc) stay at WARNING: --log-level debug is
    # about hello's own joins and leaves, not their internals. With workers,
    # every line names its process, so a line can be told to its worker.
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s"
        + ("[%(process)d]" if several else "")
        + ": %(message)s",
        stream=sys.stderr,
    )
    log.setLevel(config.logging_level)
    if config.workers > 1:
        # The workers get the options this process was started with, as parsed.
        raise typer.Exit(asyncio.run(Supervisor(config, sys.argv[1:]).run()))
    raise typer.Exit(asyncio.run(run(config, link)))


async def run(config: ServerConfig, link: WorkerLink | None = None) -> int:
    """Serve until a signal; return the process exit code.

    A worker (``link`` set) shares its port with the supervisor's other
    workers, tells the supervisor once it serves, and drains, as on a signal,
    when the supervisor is gone.
    """
    server = ChatServer(config, share_port=link is not None)
    try:
        await server.start()
    except BindError as error:
        typer.echo(f"hello-server: error: {error}", err=True)
        return EXIT_STARTUP_FAILURE

    loop = asyncio.get_running_loop()
    draining = asyncio.Event()
    cut_short = asyncio.Event()

    def on_signal(signum: signal.Signals) -> None:
        if not draining.is_set():
            log.info("%s: draining (signal again to stop at once)", signum.name)
            draining.set()
        elif not cut_short.is_set():
            log.warning("second signal: stopping now")
            cut_short.set()

    def on_supervisor_gone() -> None:
        if not draining.is_set():
            log.warning("the supervisor is gone: draining")
            draining.set()

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)

    if link is None:
        log.info("hello-server ready on %s", server.address)
    else:
        log.info("worker ready on %s", server.address)  # before the supervisor's ready line
        link.ready()
        link.on_supervisor_gone(on_supervisor_gone)
    try:
        return await _serve_until_stopped(server, draining, cut_short, worker=link is not None)
    finally:
        ignore_stop_signals(loop)
        if link is not None:
            link.close()


async def _serve_until_stopped(
    server: ChatServer, draining: asyncio.Event, cut_short: asyncio.Event, *, worker: bool
) -> int:
    """Wait for the first stop, drain; a second stop cuts the drain short (`EXIT_FORCED`)."""
    await draining.wait()
    drain = asyncio.create_task(server.stop())
    second_signal = asyncio.create_task(cut_short.wait())
    try:
        await asyncio.wait((drain, second_signal), return_when=asyncio.FIRST_COMPLETED)
        if second_signal.done():
            await server.stop(grace=0)  # ends the drain in progress; never a second stop
        await drain
    finally:
        second_signal.cancel()
        await asyncio.wait((second_signal,))
    if cut_short.is_set():
        return EXIT_FORCED
    log.info("worker stopped" if worker else "hello-server stopped")
    return EXIT_OK


def main() -> None:
    """Run the command; a usage error is one line, ``hello-server: error: ...``, exit 2."""
    try:
        code = app(prog_name=PROG, standalone_mode=False)
    except typer.TyperException as error:  # Typer's (vendored click's) usage errors
        message = " ".join(error.format_message().split())
        typer.echo(f"{PROG}: error: {message}", err=True)
        code = error.exit_code
    sys.exit(code)


if __name__ == "__main__":
    main()
