"""The interactive room: a prompt at the bottom, the room's messages above it.

prompt_toolkit owns the bottom of the terminal. Inside ``patch_stdout(raw=True)``
every write to stdout is put above the prompt, after which the half-typed line
is redrawn as it was; ``raw=True`` lets Rich's colour codes through. Rich
renders each message (see ``render``) into that patched stdout.

Two tasks run side by side: one reads the room's stream and prints, one reads
lines at the prompt and sends them, each after the previous one was accepted.
The first to finish ends the room: the typing task when the user leaves, the
reading task when the server ends the stream (shutdown, eviction, lost
connection), in which case its error is raised to the caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from prompt_toolkit import PromptSession
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.patch_stdout import patch_stdout
from rich.console import Console
from rich.text import Text

from hello_client.client import ChatClient, ChatMessage, Subscription
from hello_client.errors import HelloError, ServerUnavailable
from hello_client.render import inert, message_renderable, notice, user_colour

__all__ = ["COMMANDS", "run_room"]

COMMANDS: Sequence[tuple[str, str]] = (
    ("/help", "list these commands"),
    ("/quit", "leave the room (so do Ctrl-D and Ctrl-C)"),
    ("//text", "send /text (a line starting with a slash)"),
)
QUIT_COMMANDS = frozenset({"/quit", "/exit"})


class _Screen:
    """Prints above the prompt: messages and hello-chat's own notices."""

    def __init__(self, console: Console, me: str) -> None:
        self._console = console
        self._me = me

    def message(self, message: ChatMessage) -> None:
        self._console.print(
            message_renderable(message, me=self._me, width=self._console.width), crop=False
        )

    def notice(self, text: str, *, error: bool = False) -> None:
        self._console.print(notice(text, error=error))

    def help(self) -> None:
        lines = Text("commands:", style="italic")
        for command, meaning in COMMANDS:
            lines.append(f"\n  {command:<8} {meaning}")
        lines.append("\nEnter sends the line; Up and Down recall earlier lines.")
        self._console.print(lines)


async def run_room(client: ChatClient, subscription: Subscription) -> None:
    """Chat in the joined room until the user leaves.

    Returns when the user leaves (``/quit``, Ctrl-D, Ctrl-C); raises the
    ``HelloError`` that ended the room otherwise. The caller closes
    ``subscription`` (which ends the Join call) afterwards.
    """
    room, me = subscription.room, subscription.user
    session: PromptSession[str] = PromptSession(
        history=InMemoryHistory(), erase_when_done=True, enable_suspend=False
    )
    prompt = FormattedText(
        [("", f"[{inert(room)}] "), (f"fg:{user_colour(me)} bold", inert(me)), ("", "> ")]
    )
    with patch_stdout(raw=True):
        # Created inside patch_stdout so that it writes to the patched stdout;
        # its width is read from the terminal at every print.
        console = Console(force_terminal=True, markup=False, highlight=False, emoji=False)
        screen = _Screen(console, me)
        screen.notice(f"joined {room} as {me}; /help lists the commands")
        reading = asyncio.create_task(_read_room(subscription, screen))
        typing = asyncio.create_task(_type_lines(session, prompt, client, subscription, screen))
        try:
            done, _ = await asyncio.wait({reading, typing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reading, typing):
                task.cancel()
            await asyncio.gather(reading, typing, return_exceptions=True)
        finished = done.pop()
        if finished is typing and typing.exception() is None:
            screen.notice(f"left {room}")
        finished.result()  # raises what ended the room


async def _read_room(subscription: Subscription, screen: _Screen) -> None:
    try:
        async for message in subscription:
            screen.message(message)
    except ServerUnavailable as error:
        raise ServerUnavailable(f"left {subscription.room}: {error}") from None
    raise ServerUnavailable(f"left {subscription.room}: the server ended the room's stream")


async def _type_lines(
    session: PromptSession[str],
    prompt: FormattedText,
    client: ChatClient,
    subscription: Subscription,
    screen: _Screen,
) -> None:
    room, me = subscription.room, subscription.user
    while True:
        try:
            line = await session.prompt_async(prompt)
        except (EOFError, KeyboardInterrupt):  # Ctrl-D, Ctrl-C
            return
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("/") and not stripped.startswith("//"):
            command = stripped.split()[0]
            if command in QUIT_COMMANDS:
                return
            if command == "/help":
                screen.help()
            else:
                screen.notice(f"unknown command {command}; /help lists the commands", error=True)
            continue
        text = line.lstrip()[1:] if stripped.startswith("//") else line
        try:
            await client.send(room, me, text)
        except ServerUnavailable as error:
            raise ServerUnavailable(f"left {room}: {error}") from None
        except HelloError as error:
            # The line was refused (too long, or a race with leaving); the
            # room goes on and the line is still in the history (Up).
            screen.notice(f"not sent: {error}", error=True)
