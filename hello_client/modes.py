"""What hello-chat does once its options are parsed: one coroutine per mode.

Each mode takes a validated ``host:port`` target and raises a ``HelloError``
(or lets KeyboardInterrupt through) when it fails; ``runner`` turns that into
an error line and an exit code.
"""

from __future__ import annotations

import sys

from rich.console import Console

from hello_client.client import ChatClient
from hello_client.errors import HelloError, ServerUnavailable
from hello_client.render import inert, message_json, message_line, message_renderable
from hello_client.stdin_lines import stdin_lines
from hello_client.ui import run_room

__all__ = ["interactive", "listen", "pipe_lines", "send_one"]


async def interactive(target: str, room: str, user: str, name: str) -> None:
    """The room at a terminal: messages above a prompt (see ``ui``)."""
    async with (
        ChatClient(target) as client,
        await client.join(room, user, name, reconnect=None) as subscription,
    ):
        await run_room(client, subscription)


async def send_one(target: str, room: str, user: str, text: str) -> None:
    """Send one message to a room that has members."""
    async with ChatClient(target) as client:
        await client.send(room, user, text)


async def pipe_lines(target: str, room: str, user: str) -> None:
    """Send each non-blank stdin line, in order, each once the previous one was accepted.

    No join: like ``send``, this delivers to the room's members, so a room
    without members is an error rather than a message nobody will read. The
    server must be reachable even when the input has no line to send.
    """
    async with ChatClient(target) as client:
        await client.wait_connected()
        async for number, text in stdin_lines():
            try:
                await client.send(room, user, text)
            except HelloError as error:
                # Same class (so the same exit code), with the line number.
                raise type(error)(f"line {number} not sent: {error}") from None


async def listen(
    target: str, room: str, user: str, name: str, *, json_lines: bool, count: int | None
) -> None:
    """Join and print each message: JSON lines, Rich on a terminal, else plain lines."""
    console = None
    if not json_lines and sys.stdout.isatty():
        console = Console(markup=False, highlight=False, emoji=False)
    printed = 0
    async with (
        ChatClient(target) as client,
        await client.join(room, user, name, reconnect=None) as subscription,
    ):
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
