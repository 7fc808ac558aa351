"""The interactive room: a prompt at the bottom, the room's messages above it.

prompt_toolkit owns the bottom of the terminal. Inside ``patch_stdout(raw=True)``
every write to stdout is put above the prompt, after which the half-typed line
is redrawn as it was; ``raw=True`` lets Rich's colour codes through. Rich
renders each message (see ``render``) into that patched stdout.

Three tasks run side by side: one reads the room's events and prints them
(messages, earlier ones dimmed; join/leave notices; a one-line status when
the connection is lost and when the subscription rejoined by itself); the
prompt, which stays up for the whole session (Enter queues the line and
clears the input); and one that takes the queued lines in order and sends
each once the previous one was accepted (a line that cannot be sent while
disconnected is reported as not sent, and stays in the history). The room
ends when the user leaves (/quit, Ctrl-D, Ctrl-C) or when the stream ends for
good (eviction, refusal, reconnecting given up), in which case that error is
raised.

Long input stays cheap. prompt_toolkit matches every key against every key
binding (about 0.2 ms a key), so 70,000 characters pasted into a terminal
without bracketed paste cost 15-25 s of CPU; here a run of plain characters
read in one go is inserted as one paste. And the line cannot grow past the
message limit: what would go over it is not kept, and a notice says why.
"""

from __future__ import annotations

import asyncio
import enum
import sys
from asyncio import FIRST_COMPLETED
from collections.abc import Sequence

from prompt_toolkit import PromptSession
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.input.vt100 import Vt100Input
from prompt_toolkit.key_binding import KeyBindings, KeyPress, KeyPressEvent
from prompt_toolkit.keys import Keys
from prompt_toolkit.patch_stdout import patch_stdout
from rich.console import Console
from rich.text import Text

from hello_client.client import ChatClient, Subscription
from hello_client.errors import HelloError, ServerUnavailable
from hello_client.events import ChatMessage, PresenceChange, Reconnected, Reconnecting
from hello_client.render import (
    display_name,
    inert,
    member_line,
    message_renderable,
    notice,
    user_colour,
)
from hello_protocol.validation import text_bytes

__all__ = ["COMMANDS", "run_room"]

COMMANDS: Sequence[tuple[str, str]] = (
    ("/help", "list these commands"),
    ("/who", "list who is in the room"),
    ("/quit", "leave the room (so do Ctrl-D and Ctrl-C)"),
    ("//text", "send /text (a line starting with a slash)"),
)
QUIT_COMMANDS = frozenset({"/quit", "/exit"})


class _Screen:
    """Prints above the prompt: messages and hello-chat's own notices."""

    def __init__(self, console: Console, me: str) -> None:
        self._console = console
        self._me = me

    def message(self, message: ChatMessage, *, earlier: bool = False) -> None:
        self._console.print(
            message_renderable(message, me=self._me, width=self._console.width, earlier=earlier),
            crop=False,
        )

    def notice(self, text: str, *, error: bool = False) -> None:
        self._console.print(notice(text, error=error))

    def help(self) -> None:
        lines = Text("commands:", style="italic")
        for command, meaning in COMMANDS:
            lines.append(f"\n  {command:<8} {meaning}")
        lines.append("\nEnter sends the line; Up and Down recall earlier lines.")
        self._console.print(lines)


async def run_room(client: ChatClient, subscription: Subscription, name: str = "") -> None:
    """Chat in the joined room until the user leaves.

    Returns when the user leaves (``/quit``, Ctrl-D, Ctrl-C); raises the
    ``HelloError`` that ended the room otherwise. The caller closes
    ``subscription`` (which ends the Join call) afterwards.
    """
    room, me = subscription.room, subscription.user
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    session: PromptSession[str] = PromptSession(
        history=InMemoryHistory(),
        key_bindings=_enter_queues_the_line(lines),
        erase_when_done=True,
        enable_suspend=False,
        input=_BurstsAsPaste(sys.stdin),
    )
    prompt = FormattedText(
        [("", f"[{inert(room)}] "), (f"fg:{user_colour(me)} bold", inert(me)), ("", "> ")]
    )
    # Printed before the prompt exists, so it is always the first line: through
    # patch_stdout it could reach the terminal after the first prompt.
    _Screen(_console(), me).notice(f"joined {room} as {me}; /help lists the commands")
    with patch_stdout(raw=True):
        # Created inside patch_stdout so that it writes to the patched stdout;
        # its width is read from the terminal at every print.
        screen = _Screen(_console(), me)
        _cap_the_line(session.default_buffer, client.limits.max_text_bytes, screen)
        reading = asyncio.create_task(_read_room(subscription, screen))
        sending = asyncio.create_task(
            _send_lines(lines, client, subscription, name, screen, session)
        )
        prompting = asyncio.create_task(_prompt(session, prompt, lines))
        tasks = (reading, sending, prompting)
        try:
            done, _ = await asyncio.wait(tasks, return_when=FIRST_COMPLETED)
            if prompting in done and prompting.result() is _Leave.AFTER_SENDING:
                done, _ = await asyncio.wait((reading, sending), return_when=FIRST_COMPLETED)
        finally:
            _end_prompt(session, prompting)
            reading.cancel()
            sending.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if reading in done:
            reading.result()  # raises what ended the room
        if sending in done:
            sending.result()  # raises a lost connection
        screen.notice(f"left {room}")


def _end_prompt(session: PromptSession[str], prompting: asyncio.Task[_Leave]) -> None:
    """End the prompt the way /quit does, so prompt_toolkit erases it whole.

    Cancelling a running prompt can leave half of it on the screen (the text
    typed so far, without the prompt), and the error line printed next would
    then run on from it.
    """
    app = session.app
    if app.is_running and not app.is_done:
        app.exit()
    else:
        prompting.cancel()


class _BurstsAsPaste(Vt100Input):
    """Terminal input that hands a run of plain characters read at once over as one paste.

    What a terminal without bracketed paste delivers for a paste (and what
    fast typing delivers at times): inserting it in one go is the same edit,
    without a key-binding lookup per character. Other keys (Enter, arrows,
    control keys) keep their place in the sequence.
    """

    def read_keys(self) -> list[KeyPress]:
        keys: list[KeyPress] = []
        run: list[str] = []

        def end_run() -> None:
            if len(run) == 1:
                keys.append(KeyPress(run[0], run[0]))
            elif run:
                keys.append(KeyPress(Keys.BracketedPaste, "".join(run)))
            run.clear()

        for key_press in super().read_keys():
            key = key_press.key
            if not isinstance(key, Keys) and len(key) == 1 and key.isprintable():
                run.append(key)
            else:
                end_run()
                keys.append(key_press)
        end_run()
        return keys


def _cap_the_line(buffer: Buffer, max_bytes: int, screen: _Screen) -> None:
    """Keep the input line within ``max_bytes`` of UTF-8; say so when it reaches the limit.

    A longer line could not be sent anyway, and refusing as the user types
    says why at once rather than after Enter.
    """
    at_limit = False

    def on_change(buffer: Buffer) -> None:
        nonlocal at_limit
        text = buffer.text
        if text_bytes(text) <= max_bytes:
            at_limit = False
            return
        kept = text.encode()[:max_bytes].decode(errors="ignore")
        buffer.document = Document(kept, min(buffer.cursor_position, len(kept)))
        if not at_limit:  # once each time the line reaches the limit
            at_limit = True
            screen.notice(
                f"the message limit is {max_bytes} bytes; the line stops there", error=True
            )

    buffer.on_text_changed += on_change


def _console() -> Console:
    """A Rich console on the current stdout that never parses text as markup."""
    return Console(force_terminal=True, markup=False, highlight=False, emoji=False)


class _Leave(enum.Enum):
    NOW = "now"  # Ctrl-C: lines typed but not yet sent are dropped
    AFTER_SENDING = "after sending"  # Ctrl-D: the lines typed before it go first


def _enter_queues_the_line(lines: asyncio.Queue[str | None]) -> KeyBindings:
    """Enter hands the line to the sending task and clears the prompt at once.

    The prompt never ends between lines, so the terminal stays in raw mode
    and keys typed while a send is in flight are never echoed by the tty.
    """
    bindings = KeyBindings()

    @bindings.add("enter")
    def _(event: KeyPressEvent) -> None:
        buffer = event.current_buffer
        lines.put_nowait(buffer.text)
        buffer.reset(append_to_history=True)

    return bindings


async def _prompt(
    session: PromptSession[str], prompt: FormattedText, lines: asyncio.Queue[str | None]
) -> _Leave:
    try:
        await session.prompt_async(prompt)  # ends by app.exit() on /quit
    except EOFError:  # Ctrl-D on an empty line
        lines.put_nowait(None)
        return _Leave.AFTER_SENDING
    except KeyboardInterrupt:  # Ctrl-C
        return _Leave.NOW
    return _Leave.AFTER_SENDING


async def _read_room(subscription: Subscription, screen: _Screen) -> None:
    """Print the room's events until its stream ends for good."""
    shown_earlier = False
    try:
        async for event in subscription.events():
            if isinstance(event, ChatMessage):
                earlier = subscription.replayed(event)
                if earlier and not shown_earlier:
                    shown_earlier = True
                    screen.notice("earlier messages:")
                elif not earlier and shown_earlier:
                    shown_earlier = False
                    screen.notice("now:")
                screen.message(event, earlier=earlier)
            elif isinstance(event, PresenceChange):
                if event.user != subscription.user:
                    who = display_name(event.user, event.name)
                    screen.notice(f"{who} {'joined' if event.joined else 'left'}")
            elif isinstance(event, Reconnecting):
                screen.notice(f"connection lost ({event.reason}); reconnecting…", error=True)
            elif isinstance(event, Reconnected):
                if event.recovered:
                    screen.notice("reconnected, nothing missed")
                else:
                    screen.notice("reconnected, some messages may be missing", error=True)
    except ServerUnavailable as error:
        raise ServerUnavailable(f"left {subscription.room}: {error}") from None
    raise ServerUnavailable(f"left {subscription.room}: the server ended the room's stream")


async def _show_members(client: ChatClient, room: str, screen: _Screen) -> None:
    try:
        members = await client.members(room)
    except HelloError as error:
        screen.notice(f"/who failed: {error}", error=True)
        return
    listed = ", ".join(member_line(m) for m in sorted(members, key=lambda m: m.user))
    screen.notice(f"in {room} ({len(members)}): {listed}")


async def _send_lines(
    lines: asyncio.Queue[str | None],
    client: ChatClient,
    subscription: Subscription,
    name: str,
    screen: _Screen,
    session: PromptSession[str],
) -> None:
    """Act on each entered line in order: a command, or a message sent once the last one was."""
    room, me = subscription.room, subscription.user
    while (line := await lines.get()) is not None:
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("/") and not stripped.startswith("//"):
            command = stripped.split()[0]
            if command in QUIT_COMMANDS:
                if session.app.is_running:
                    session.app.exit()
                return
            if command == "/help":
                screen.help()
            elif command == "/who":
                await _show_members(client, room, screen)
            else:
                screen.notice(f"unknown command {command}; /help lists the commands", error=True)
            continue
        text = line.lstrip()[1:] if stripped.startswith("//") else line
        try:
            await client.send(room, me, text, name=name)
        except ServerUnavailable as error:
            # The room's reader rejoins (or gives up and ends the room); this
            # line is not retried, since it may have arrived after all.
            screen.notice(f"not sent (disconnected: {error}); Up recalls it", error=True)
        except HelloError as error:
            # The line was refused (too long, or a race with leaving); the
            # room goes on and the line is still in the history (Up).
            screen.notice(f"not sent: {error}", error=True)
