"""How hello-chat shows messages: inert text, a stable colour per user, JSON lines.

Everything that came from the server (texts, sender ids, room ids, error
details) passes through ``inert`` before it reaches a terminal: control
characters and the bidi overrides are shown as visible escapes such as
``\\x1b``, so another user cannot clear the screen, set the window title, move
the cursor or reorder what you read. Received text is only ever wrapped in a
``rich.text.Text``, never parsed as Rich markup, so ``[red]`` stays ``[red]``.
"""

from __future__ import annotations

import json
import re
import zlib
from datetime import UTC, datetime

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from hello_client.events import ChatMessage, Member

__all__ = [
    "ESCAPE_STYLE",
    "display_name",
    "inert",
    "member_json",
    "member_line",
    "message_json",
    "message_line",
    "message_renderable",
    "notice",
    "user_colour",
]

# C0 controls except tab and newline, DEL, C1 controls, the Unicode line and
# paragraph separators, and the bidi embedding/override/isolate controls that
# can make text display in a different order than it was written.
_UNSAFE_CHARS = "\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_UNSAFE = re.compile(f"[{_UNSAFE_CHARS}]")
_UNSAFE_OR_NEWLINE = re.compile(f"[\n{_UNSAFE_CHARS}]")
# One match per run of safe text or one unsafe character (newline kept apart).
_PIECES = re.compile(f"([^\n{_UNSAFE_CHARS}]+)|(\n)|([{_UNSAFE_CHARS}])")
# JSON: raw DEL/C1/bidi characters are valid JSON but not safe on a terminal.
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")

ESCAPE_STYLE = "reverse"
TIME_STYLE = "dim"
NOTICE_STYLE = "italic"
ERROR_STYLE = "bold red"

# Readable on dark and light backgrounds; Rich and prompt_toolkit both
# downgrade these to 256 or 16 colours when the terminal has fewer.
PALETTE = (
    "#e06c75",
    "#d19a66",
    "#c0a000",
    "#98c379",
    "#56b6c2",
    "#61afef",
    "#c678dd",
    "#e5739f",
    "#2aa198",
    "#859900",
    "#cb4b16",
    "#6c71c4",
)

# Below this many columns for the text, the time/sender/text grid gives way to
# one flowing paragraph, so a narrow terminal still shows whole words.
MIN_TEXT_COLUMNS = 20


_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r"}


def _escape(char: str) -> str:
    if char in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[char]
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def inert(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every control character shown as a visible escape.

    Newlines become ``\\n`` unless ``keep_newlines``; tabs are kept (a
    terminal only moves the cursor right for them).
    """
    pattern = _UNSAFE if keep_newlines else _UNSAFE_OR_NEWLINE
    return pattern.sub(lambda match: _escape(match.group()), text)


def inert_text(text: str, style: str = "") -> Text:
    """A Rich ``Text`` of ``text``: escapes highlighted, newlines kept, no markup."""
    result = Text(style=style, end="")
    for match in _PIECES.finditer(text):
        safe, newline, unsafe = match.groups()
        if safe is not None:
            result.append(safe.expandtabs(8))
        elif newline is not None:
            result.append("\n")
        else:
            result.append(_escape(unsafe), ESCAPE_STYLE)
    return result


def user_colour(user: str) -> str:
    """The colour of ``user``: the same in every run and on every machine."""
    return PALETTE[zlib.crc32(user.encode()) % len(PALETTE)]


def _clock(timestamp: datetime) -> str:
    return timestamp.astimezone().strftime("%H:%M:%S")


def display_name(user: str, name: str) -> str:
    """``name (user)`` when a display name was given, else the id: two Bobs stay apart."""
    if name and name != user:
        return f"{inert(name)} ({inert(user)})"
    return inert(user)


def _sender_label(message: ChatMessage, me: str | None) -> Text:
    colour = user_colour(message.sender)
    if message.name and message.name != message.sender:
        label = Text(inert(message.name), style=f"bold {colour}")
        label.append(f" ({inert(message.sender)})", style=colour)
    else:
        label = Text(inert(message.sender), style=f"bold {colour}")
    if message.sender == me:
        label.append(" (you)", style="bold")
    label.append(":")
    return label


def message_renderable(
    message: ChatMessage, *, me: str | None, width: int, earlier: bool = False
) -> RenderableType:
    """One message for a Rich console ``width`` columns wide.

    Long text wraps at word boundaries (words longer than a line are folded)
    under the text column, leaving the time and sender clear. When the
    terminal is too narrow for that, the message flows as one paragraph.
    An ``earlier`` message (history replayed on join) is dimmed, its time
    given as a date as well.
    """
    if earlier:
        stamp = message.timestamp.astimezone().strftime("%m-%d %H:%M")
        clock = Text(stamp, style=f"{TIME_STYLE} italic")
    else:
        clock = Text(_clock(message.timestamp), style=TIME_STYLE)
    sender = _sender_label(message, me)
    body = inert_text(message.text)
    sender_width = min(sender.cell_len, max(8, width // 4))
    if width - len(clock) - sender_width - 2 < MIN_TEXT_COLUMNS:
        return Text.assemble(
            clock, " ", sender, " ", body, overflow="fold", style="dim" if earlier else ""
        )
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(max_width=sender_width, overflow="fold")
    grid.add_column(ratio=1, overflow="fold")
    grid.add_row(clock, sender, body, style="dim" if earlier else "")
    return grid


def message_line(message: ChatMessage, *, me: str | None = None) -> str:
    """One message as one line of plain text, for pipes and log files."""
    mark = " (you)" if message.sender == me else ""
    sender = display_name(message.sender, message.name)
    return f"{_clock(message.timestamp)} {sender}{mark}: {inert(message.text)}"


def message_json(message: ChatMessage, *, history: bool = False) -> str:
    """One message as one JSON object: id, name, room, text, timestamp, seq.

    ``timestamp`` is RFC 3339 in UTC; ``seq`` is null when the server does not
    number messages (servers speaking only the original protocol). A message
    replayed from the room's history (``history``) also has ``"history": true``;
    live ones have no such key, so their lines are as they always were.
    """
    timestamp = message.timestamp.astimezone(UTC).isoformat(timespec="microseconds")
    fields: dict[str, object] = {
        "id": message.sender,
        "name": message.name,
        "room": message.room,
        "text": message.text,
        "timestamp": timestamp.replace("+00:00", "Z"),
        "seq": message.seq or None,
    }
    if history:
        fields["history"] = True
    encoded = json.dumps(fields, ensure_ascii=False)
    return _json_safe(encoded)


def _json_safe(encoded: str) -> str:
    return _JSON_UNSAFE.sub(lambda match: f"\\u{ord(match.group()):04x}", encoded)


def member_line(member: Member) -> str:
    """One member as a line of plain text: name, id, sessions."""
    sessions = f", {member.sessions} sessions" if member.sessions > 1 else ""
    return f"{display_name(member.user, member.name)}{sessions}"


def member_json(member: Member) -> str:
    """One member as one JSON object: id, name, sessions, since (RFC 3339, UTC)."""
    since = member.since.astimezone(UTC).isoformat(timespec="microseconds")
    encoded = json.dumps(
        {
            "id": member.user,
            "name": member.name,
            "sessions": member.sessions,
            "since": since.replace("+00:00", "Z"),
        },
        ensure_ascii=False,
    )
    return _json_safe(encoded)


def notice(text: str, *, error: bool = False) -> Text:
    """A line from hello-chat itself (joined, help, errors), set apart by style."""
    return Text(inert(text, keep_newlines=True), style=ERROR_STYLE if error else NOTICE_STYLE)
