"""What hello-chat does once its options are parsed: one coroutine per mode.

Each mode takes the `Server` to connect to (a validated ``host:port``
target, TLS, token) and raises a ``HelloError``
(or lets KeyboardInterrupt through) when it fails; ``runner`` turns that into
an error line and an exit code.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from rich.console import Console

from hello_client.client import ChatClient
from hello_client.credentials import ClientTls
from hello_client.errors import HelloError, MessagesMissing, ServerUnavailable
from hello_client.events import ChatMessage, Reconnected, Reconnecting
from hello_client.render import (
    inert,
    member_json,
    member_line,
    message_json,
    message_line,
    message_renderable,
)
from hello_client.stdin_lines import stdin_lines
from hello_client.terminal import PROG
from hello_client.ui import run_room

__all__ = ["Server", "interactive", "listen", "pipe_lines", "send_one", "who"]

# The interactive room shows this many earlier messages on join unless told.
DEFAULT_ROOM_HISTORY = 50


@dataclass(frozen=True, slots=True)
class Server:
    """Where to connect and how: the ``host:port`` target, TLS (None: plaintext), a token."""

    target: str
    tls: ClientTls | None = None
    token: str | None = None

    def client(self) -> ChatClient:
        return ChatClient(self.target, tls=self.tls, token=self.token)


async def interactive(
    server: Server, room: str, user: str, name: str, history: int = DEFAULT_ROOM_HISTORY
) -> None:
    """The room at a terminal: messages above a prompt (see ``ui``)."""
    async with (
        server.client() as client,
        await client.join(room, user, name, history=history, presence=True) as subscription,
    ):
        await run_room(client, subscription, name)


async def send_one(server: Server, room: str, user: str, text: str, name: str = "") -> None:
    """Send one message to a room that has members."""
    async with server.client() as client:
        await client.send(room, user, text, name=name)


async def pipe_lines(server: Server, room: str, user: str, name: str = "") -> None:
    """Send each non-blank stdin line, in order, each once the previous one was accepted.

    No join: like ``send``, this delivers to the room's members, so a room
    without members is an error rather than a message nobody will read. The
    server must be reachable even when the input has no line to send.
    """
    async with server.client() as client:
        await client.wait_connected()
        async for number, text in stdin_lines():
            try:
                await client.send(room, user, text, name=name)
            except HelloError as error:
                # Same class (so the same exit code), with the line number.
                raise type(error)(f"line {number} not sent: {error}") from None


async def who(server: Server, room: str, *, json_lines: bool) -> None:
    """Print the room's members, one a line (JSON objects with ``json_lines``)."""
    async with server.client() as client:
        members = await client.members(room)
    for member in sorted(members, key=lambda m: m.user):
        print(member_json(member) if json_lines else member_line(member), flush=True)


async def listen(
    server: Server,
    room: str,
    user: str,
    name: str,
    *,
    json_lines: bool,
    count: int | None,
    history: int = 0,
) -> None:
    """Join and print each message: JSON lines, Rich on a terminal, else plain lines.

    A lost connection is rejoined by itself, resuming after the last message
    printed (no duplicates; no gap while the server's history reaches back).
    Each loss and return is one line on stderr; when messages may be missing,
    the line says so, and reaching ``count`` afterwards raises MessagesMissing.
    """
    console = None
    if not json_lines and sys.stdout.isatty():
        console = Console(markup=False, highlight=False, emoji=False)
    printed = 0
    missing = False
    async with (
        server.client() as client,
        await client.join(room, user, name, history=history) as subscription,
    ):
        print(f"joined {inert(room)} as {inert(user)}", file=sys.stderr, flush=True)
        async for event in subscription.events():
            if isinstance(event, Reconnecting):
                _status(f"lost {room} ({event.reason}); reconnecting")
                continue
            if isinstance(event, Reconnected):
                if event.recovered:
                    _status(f"rejoined {room}; no message missed")
                else:
                    missing = True
                    _status(f"warning: rejoined {room}; messages sent meanwhile may be missing")
                continue
            if not isinstance(event, ChatMessage):
                continue
            earlier = subscription.replayed(event)
            if json_lines:
                print(message_json(event, history=earlier), flush=True)
            elif console is not None:
                console.print(
                    message_renderable(event, me=user, width=console.width, earlier=earlier)
                )
            else:
                print(message_line(event, me=user), flush=True)
            printed += 1
            if count is not None and printed >= count:
                if missing:
                    raise MessagesMissing(
                        f"{printed} messages printed, but some sent to {room} while "
                        "reconnecting may be missing"
                    )
                return
    raise ServerUnavailable(f"server {server.target} ended the stream of room {room}")


def _status(text: str) -> None:
    """A line about the connection on stderr (stdout keeps only messages)."""
    print(f"{PROG}: {inert(text)}", file=sys.stderr, flush=True)
