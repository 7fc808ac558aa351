"""What input a hello server accepts, and the words used to refuse the rest.

Both ends use these checks: the server to refuse a request, a client to refuse
it before sending, with the same words, so a person reads one message whichever
end caught the problem.
"""

from __future__ import annotations

from dataclasses import dataclass

from hello_protocol.wire import DEFAULT_MAX_ID_CHARS, DEFAULT_MAX_TEXT_BYTES

__all__ = ["InputLimits", "InvalidInput", "check_id", "check_name", "check_text", "text_bytes"]


@dataclass(frozen=True, slots=True)
class InputLimits:
    """Bounds on ids, display names and message text."""

    max_id_chars: int = DEFAULT_MAX_ID_CHARS
    max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES

    def __post_init__(self) -> None:
        if self.max_id_chars < 1:
            raise ValueError("the id length limit must be at least 1 character")
        if self.max_text_bytes < 1:
            raise ValueError("the message size limit must be at least 1 byte")


class InvalidInput(ValueError):
    """A request field is unacceptable; the text says which and why."""


def check_id(what: str, value: str, limits: InputLimits) -> None:
    """Room and user ids: 1..max characters, printable, no outer whitespace."""
    if not value:
        raise InvalidInput(f"{what} is empty")
    if len(value) > limits.max_id_chars:
        raise InvalidInput(
            f"{what} is {len(value)} characters long; the limit is {limits.max_id_chars}"
        )
    # isprintable() is False for control, format and separator characters
    # (other than the ASCII space): no escape sequences or invisible tricks.
    if not value.isprintable():
        raise InvalidInput(f"{what} {value!r} contains control or invisible characters")
    if value != value.strip():
        raise InvalidInput(f"{what} {value!r} starts or ends with whitespace")


def check_name(value: str, limits: InputLimits) -> None:
    """Display names are optional; when given they follow the id rules."""
    if value:
        check_id("display name", value, limits)


def text_bytes(value: str) -> int:
    """The UTF-8 size of ``value``, without encoding it when it is ASCII."""
    return len(value) if value.isascii() else len(value.encode())


def check_text(value: str, limits: InputLimits) -> None:
    """Message text: 1 byte up to the configured limit, UTF-8 encoded."""
    size = text_bytes(value)
    if size == 0:
        raise InvalidInput("message text is empty")
    if size > limits.max_text_bytes:
        raise InvalidInput(
            f"message text is {size} bytes; the limit is {limits.max_text_bytes} bytes"
        )
