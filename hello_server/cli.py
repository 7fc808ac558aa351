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
from pathlib import Path
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
from hello_server import config_file, logs
from hello_server.auth import DEFAULT_TOKEN_TTL_SECONDS, TokenVerifier
from hello_server.config import (
    DEFAULT_CONNECTION_QUEUE_BYTES,
    DEFAULT_HISTORY_BUDGET,
    DEFAULT_HISTORY_BYTES,
    DEFAULT_HISTORY_MESSAGES,
    DEFAULT_LINGER_SECONDS,
    DEFAULT_MAX_CONCURRENT_RPCS,
    DEFAULT_MEMORY_BUDGET,
    DEFAULT_PRESENCE_TTL_SECONDS,
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
from hello_server.limits import (
    DEFAULT_MAX_ROOMS_PER_USER,
    DEFAULT_MAX_STREAMS_PER_USER,
    DEFAULT_SEND_BURST,
    DEFAULT_SEND_RATE,
    UserLimits,
)
from hello_server.server import BindError, ChatServer
from hello_server.stop_signals import STOP_SIGNALS, ignore_stop_signals
from hello_server.tls import ServerTls
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
  hello-server --config hello.toml           settings from a TOML file (port = 9000)
  hello-server --tls-cert c.pem --tls-key k.pem --auth-jwt-secret-file jwt.secret
  hello-server token --user alice --config hello.toml    mint a token (see token --help)
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


def _load_config_file(ctx: typer.Context, path: Path | None) -> Path | None:
    """The --config callback (eager): the file's settings become click's default_map.

    So a setting comes from the command line, else the environment, else the
    file, else its default. The keys are those of the serve command, also for
    ``hello-server token``, which takes the auth settings from the same file.
    """
    if path is None:
        return None
    try:
        settings = config_file.load(path, _setting_keys())
    except config_file.ConfigFileError as error:
        raise typer.BadParameter(str(error), param_hint="--config") from None
    ctx.default_map = {**(ctx.default_map or {}), **settings}
    return path


def _setting_keys() -> dict[str, str]:
    return config_file.option_keys(typer.main.get_command(app).params)


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar="HELLO_CONFIG",
        is_eager=True,
        callback=_load_config_file,
        metavar="FILE",
        help="TOML file of settings keyed by option name (port = 9000); "
        "the environment and the command line override it.",
        show_default=False,
    ),
]
AuthSecretOption = Annotated[
    str | None,
    typer.Option(
        envvar="HELLO_AUTH_JWT_SECRET",
        help="Require HS256 tokens signed with this secret (32 bytes or more).",
        show_default=False,
    ),
]
AuthSecretFileOption = Annotated[
    Path | None,
    typer.Option(
        envvar="HELLO_AUTH_JWT_SECRET_FILE",
        metavar="FILE",
        help="As --auth-jwt-secret, read from a file (keeps it out of ps and the shell history).",
        show_default=False,
    ),
]
AuthPublicKeyOption = Annotated[
    Path | None,
    typer.Option(
        envvar="HELLO_AUTH_JWT_PUBLIC_KEY",
        metavar="PEM",
        help="Require RS*/PS* (RSA key) or ES* (EC key) tokens verified with this public key.",
        show_default=False,
    ),
]
AuthAudienceOption = Annotated[
    str | None,
    typer.Option(
        envvar="HELLO_AUTH_AUDIENCE", help="Tokens must have this aud claim.", show_default=False
    ),
]
AuthIssuerOption = Annotated[
    str | None,
    typer.Option(
        envvar="HELLO_AUTH_ISSUER", help="Tokens must have this iss claim.", show_default=False
    ),
]


def _token_verifier(
    secret: str | None,
    secret_file: Path | None,
    public_key: Path | None,
    audience: str | None,
    issuer: str | None,
) -> TokenVerifier | None:
    """The verifier the auth options describe; None (open) without a key."""
    given = [
        option
        for option, value in (
            ("--auth-jwt-secret", secret),
            ("--auth-jwt-secret-file", secret_file),
            ("--auth-jwt-public-key", public_key),
        )
        if value is not None
    ]
    if len(given) > 1:
        raise ConfigError(f"give only one of {' and '.join(given)}")
    if secret_file is not None:
        try:
            secret = secret_file.read_text().strip()
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or "not text"
            raise ConfigError(
                f"--auth-jwt-secret-file {secret_file}: cannot read it ({reason})"
            ) from None
    if secret is not None:
        return TokenVerifier.from_secret(secret, audience=audience, issuer=issuer)
    if public_key is not None:
        return TokenVerifier.from_public_key(public_key, audience=audience, issuer=issuer)
    if audience or issuer:
        raise ConfigError("--auth-audience and --auth-issuer need a key: --auth-jwt-secret...")
    return None


def _server_tls(cert: Path | None, key: Path | None, client_ca: Path | None) -> ServerTls | None:
    if cert is None and key is None:
        if client_ca is not None:
            raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if cert is None or key is None:
        raise ConfigError("--tls-cert and --tls-key go together")
    return ServerTls.from_files(cert, key, client_ca)


@app.command(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
def serve(
    ctx: typer.Context,
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
    presence_ttl: Annotated[
        float,
        typer.Option(
            envvar="HELLO_PRESENCE_TTL",
            help="With --redis: seconds a server's members keep counting after it stops "
            "refreshing them (it died); refreshed every third of this.",
        ),
    ] = DEFAULT_PRESENCE_TTL_SECONDS,
    workers: Annotated[
        int,
        typer.Option(
            envvar="HELLO_WORKERS",
            help="Server processes sharing the port; more than 1 needs --redis.",
        ),
    ] = 1,
    send_rate: Annotated[
        float,
        typer.Option(
            envvar="HELLO_SEND_RATE",
            help="Messages per second one user may send, on average (0: no limit).",
        ),
    ] = DEFAULT_SEND_RATE,
    send_burst: Annotated[
        int,
        typer.Option(
            envvar="HELLO_SEND_BURST",
            help="Messages one user may send at once above --send-rate.",
        ),
    ] = DEFAULT_SEND_BURST,
    max_streams_per_user: Annotated[
        int,
        typer.Option(
            envvar="HELLO_MAX_STREAMS_PER_USER",
            help="Join and Subscribe streams one user may hold at once (0: no limit).",
        ),
    ] = DEFAULT_MAX_STREAMS_PER_USER,
    max_rooms_per_user: Annotated[
        int,
        typer.Option(
            envvar="HELLO_MAX_ROOMS_PER_USER",
            help="Rooms one user may be in at once (0: no limit).",
        ),
    ] = DEFAULT_MAX_ROOMS_PER_USER,
    max_concurrent_rpcs: Annotated[
        int,
        typer.Option(
            envvar="HELLO_MAX_CONCURRENT_RPCS",
            help="Calls in progress server-wide, open streams included (0: no limit).",
        ),
    ] = DEFAULT_MAX_CONCURRENT_RPCS,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            envvar="HELLO_METRICS_PORT",
            help="Serve Prometheus metrics at /metrics on this port of --host "
            "(0: any free port, logged) [default: off]",
            show_default=False,
        ),
    ] = None,
    log_format: Annotated[
        str,
        typer.Option(
            envvar="HELLO_LOG_FORMAT",
            help=f"One of {', '.join(logs.LOG_FORMATS)}: json is one object per line.",
        ),
    ] = "text",
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            envvar="HELLO_TLS_CERT",
            metavar="PEM",
            help="Serve TLS with this certificate chain (needs --tls-key).",
            show_default=False,
        ),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(
            envvar="HELLO_TLS_KEY",
            metavar="PEM",
            help="The certificate's private key (unencrypted PEM).",
            show_default=False,
        ),
    ] = None,
    tls_client_ca: Annotated[
        Path | None,
        typer.Option(
            envvar="HELLO_TLS_CLIENT_CA",
            metavar="PEM",
            help="Require client certificates signed by these CAs (mutual TLS).",
            show_default=False,
        ),
    ] = None,
    auth_jwt_secret: AuthSecretOption = None,
    auth_jwt_secret_file: AuthSecretFileOption = None,
    auth_jwt_public_key: AuthPublicKeyOption = None,
    auth_audience: AuthAudienceOption = None,
    auth_issuer: AuthIssuerOption = None,
    _config: ConfigOption = None,
    print_config: Annotated[
        bool,
        typer.Option(
            "--print-config",
            help="Print the effective settings as TOML (secrets masked) and exit.",
        ),
    ] = False,
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
            user_limits=UserLimits(
                send_rate=send_rate,
                send_burst=send_burst,
                max_streams_per_user=max_streams_per_user,
                max_rooms_per_user=max_rooms_per_user,
            ),
            max_concurrent_rpcs=max_concurrent_rpcs,
            metrics_port=metrics_port,
            log_format=log_format.lower(),
            tls=_server_tls(tls_cert, tls_key, tls_client_ca),
            auth=_token_verifier(
                auth_jwt_secret,
                auth_jwt_secret_file,
                auth_jwt_public_key,
                auth_audience,
                auth_issuer,
            ),
            presence_ttl_seconds=presence_ttl,
        )
    except (ConfigError, ValueError) as error:
        typer.echo(f"hello-server: error: {error}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    if print_config:
        typer.echo(config_file.dump(ctx, _setting_keys()))
        raise typer.Exit(EXIT_OK)
    link: WorkerLink | None = None
    if supervisor_fd is not None:
        try:
            link = WorkerLink(supervisor_fd)
        except OSError as error:
            typer.echo(f"hello-server: error: {SUPERVISOR_FD_OPTION}: {error}", err=True)
            raise typer.Exit(EXIT_USAGE) from None
    # With workers, every line names its process, so a line can be told to its worker.
    several = config.workers > 1 or link is not None
    logs.configure(config.log_format, config.logging_level, name_process=several)
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

    if server.metrics_address is not None:
        log.info("metrics on http://%s/metrics", server.metrics_address)
    if link is None:
        log.info("hello-server ready on %s (%s)", server.address, ready_detail(server))
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


def ready_detail(server: ChatServer) -> str:
    """What the ready line says of security and, with Redis, of the backend."""
    detail = server.config.security
    if server.config.redis_url is not None:
        # Not the URL itself: it may carry a password.
        backend = "available" if server.backend_healthy else "unavailable, retrying"
        detail += f"; rooms shared through Redis: {backend}"
    return detail


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


token_app = typer.Typer(add_completion=False, rich_markup_mode=None)

TOKEN_EXAMPLES = """\b
Examples:
  hello-server token --user alice --auth-jwt-secret-file jwt.secret
  HELLO_AUTH_JWT_SECRET=... hello-server token --user alice --name "Alice" --ttl 8h
  hello-server token --config hello.toml --user bot --ttl 30d

\b
The token goes to stdout; give it to hello-chat --token (or HELLO_TOKEN).
For development: in production, tokens come from your own identity service.
"""

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``30m``, ``8h`` or ``7d``."""
    number, unit = (text[:-1], text[-1]) if text[-1:] in _UNITS else (text, "s")
    try:
        seconds = float(number) * _UNITS[unit]
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a duration such as 90s, 30m, 8h or 7d") from None
    if not 0 < seconds < float("inf"):
        raise typer.BadParameter(f"{text!r} must be more than 0")
    return seconds


@token_app.command(epilog=TOKEN_EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
def token(
    user: Annotated[
        str, typer.Option("--user", "-u", help="The user id the token is for (sub claim).")
    ],
    name: Annotated[str, typer.Option(help="The display name (name claim); members see it.")] = "",
    ttl: Annotated[
        str, typer.Option(help="How long the token is valid: 90s, 30m, 8h, 7d.")
    ] = f"{DEFAULT_TOKEN_TTL_SECONDS // 3600}h",
    auth_jwt_secret: AuthSecretOption = None,
    auth_jwt_secret_file: AuthSecretFileOption = None,
    auth_jwt_public_key: AuthPublicKeyOption = None,
    auth_audience: AuthAudienceOption = None,
    auth_issuer: AuthIssuerOption = None,
    _config: ConfigOption = None,
) -> None:
    """Mint a token for a user with the server's HS256 secret (for development)."""
    seconds = _duration(ttl)
    if not user:
        raise typer.BadParameter("must not be empty", param_hint="--user")
    try:
        verifier = _token_verifier(
            auth_jwt_secret, auth_jwt_secret_file, auth_jwt_public_key, auth_audience, auth_issuer
        )
        if verifier is None:
            raise ConfigError(
                "no secret to sign with: give --auth-jwt-secret, --auth-jwt-secret-file "
                "or --config with the server's settings"
            )
        typer.echo(verifier.mint(user, name, seconds))
    except ConfigError as error:
        typer.echo(f"hello-server token: error: {error}", err=True)
        raise typer.Exit(EXIT_USAGE) from None


def main() -> None:
    """Run the command; a usage error is one line, ``hello-server: error: ...``, exit 2.

    ``hello-server token ...`` mints a token; anything else is the server's
    own options (a subcommand group would make ``hello-server --port 0``
    ambiguous with a command name).
    """
    command, prog, args = app, PROG, sys.argv[1:]
    if args[:1] == ["token"]:
        command, prog, args = token_app, f"{PROG} token", args[1:]
    try:
        code = command(args=args, prog_name=prog, standalone_mode=False)
    except typer.TyperException as error:  # Typer's (vendored click's) usage errors
        message = " ".join(error.format_message().split())
        typer.echo(f"{prog}: error: {message}", err=True)
        code = error.exit_code
    sys.exit(code)


if __name__ == "__main__":
    main()
