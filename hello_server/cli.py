"""The hello-server command: parse options, build a ServerConfig, serve.

The first SIGINT or SIGTERM drains (open streams end with UNAVAILABLE, calls
in flight get the grace period); a second one stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Annotated

import typer

from hello_protocol.wire import (
    DEFAULT_KEEPALIVE_TIME_SECONDS,
    DEFAULT_KEEPALIVE_TIMEOUT_SECONDS,
    DEFAULT_MAX_ID_CHARS,
    DEFAULT_MAX_TEXT_BYTES,
    DEFAULT_PORT,
)
from hello_server.config import (
    DEFAULT_LINGER_SECONDS,
    DEFAULT_QUEUE_BYTES,
    DEFAULT_QUEUE_MESSAGES,
    LOG_LEVELS,
    ConfigError,
    ServerConfig,
)
from hello_server.hub import QueueLimits
from hello_server.server import BindError, ChatServer
from hello_server.transport import (
    DEFAULT_HANDSHAKE_TIMEOUT_SECONDS,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_METADATA_BYTES,
    DEFAULT_MAX_STREAMS_PER_CONNECTION,
    TransportLimits,
)
from hello_server.validation import InputLimits

EXIT_OK = 0
EXIT_FORCED = 1  # a second signal cut the drain short
EXIT_USAGE = 2
EXIT_STARTUP_FAILURE = 3

log = logging.getLogger("hello_server")

app = typer.Typer(add_completion=False, rich_markup_mode=None)


@app.command(
    epilog="Examples:  hello-server  |  hello-server --port 0 --log-level debug  |  "
    "HELLO_PORT=9000 hello-server"
)
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
) -> None:
    """Serve hello chat rooms over gRPC (hello.ChatRoom, health, reflection)."""
    try:
        config = ServerConfig(
            host=host,
            port=port,
            limits=InputLimits(max_id_chars=max_id_chars, max_text_bytes=max_message_bytes),
            queue=QueueLimits(max_messages=queue_size, max_bytes=queue_bytes),
            grace_seconds=grace,
            batch_linger_seconds=batch_linger_ms / 1000,
            log_level=log_level.lower(),
            transport=TransportLimits(
                max_connections=max_connections,
                max_streams_per_connection=max_streams_per_connection,
                handshake_timeout_seconds=handshake_timeout,
                keepalive_time_seconds=keepalive_time,
                keepalive_timeout_seconds=keepalive_timeout,
                max_metadata_bytes=max_metadata_bytes,
            ),
        )
    except (ConfigError, ValueError) as error:
        typer.echo(f"hello-server: error: {error}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    # Other libraries (asyncio, grpc) stay at WARNING: --log-level debug is
    # about hello's own joins and leaves, not their internals.
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    log.setLevel(config.logging_level)
    raise typer.Exit(asyncio.run(run(config)))


async def run(config: ServerConfig) -> int:
    """Serve until a signal; return the process exit code."""
    server = ChatServer(config)
    try:
        await server.start()
    except BindError as error:
        typer.echo(f"hello-server: error: {error}", err=True)
        return EXIT_STARTUP_FAILURE

    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    forced = asyncio.Event()

    def on_signal(signum: signal.Signals) -> None:
        if stopping.is_set():
            forced.set()
            return
        log.info("%s: draining (signal again to stop at once)", signum.name)
        stopping.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)

    log.info("hello-server ready on %s", server.address)
    await stopping.wait()
    drain = asyncio.create_task(server.stop())
    cut_short = asyncio.create_task(forced.wait())
    await asyncio.wait((drain, cut_short), return_when=asyncio.FIRST_COMPLETED)
    if drain.done():
        cut_short.cancel()
        drain.result()
        log.info("hello-server stopped")
        return EXIT_OK
    log.warning("second signal: stopping now")
    await server.stop(grace=0)
    await drain
    return EXIT_FORCED


def main() -> None:
    app()


if __name__ == "__main__":
    main()
