"""Piped input, line by line, without blocking the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import AsyncIterator

from hello_client.errors import HelloError, InvalidInput

__all__ = ["stdin_lines"]

_READ_AHEAD = 256  # lines read but not yet taken


async def stdin_lines() -> AsyncIterator[tuple[int, str]]:
    """Number and text of each non-blank line of stdin (any line ending).

    A daemon thread reads, so that a slow producer (``tail -f log | ...``)
    never blocks the event loop and Ctrl-C is not held up by a pending read;
    a semaphore keeps it at most ``_READ_AHEAD`` lines ahead of the consumer.
    A line that is not UTF-8 raises InvalidInput with its number.
    """
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[bytes | OSError | None] = asyncio.Queue()
    slots = threading.Semaphore(_READ_AHEAD)

    def read() -> None:
        item: bytes | OSError | None = None
        try:
            for raw in sys.stdin.buffer:
                slots.acquire()
                loop.call_soon_threadsafe(lines.put_nowait, raw)
        except OSError as error:
            item = error
        with contextlib.suppress(RuntimeError):  # the loop is closed: hello-chat is exiting
            loop.call_soon_threadsafe(lines.put_nowait, item)

    threading.Thread(target=read, name="stdin-lines", daemon=True).start()
    number = 0
    while (raw := await lines.get()) is not None:
        slots.release()
        if isinstance(raw, OSError):
            raise HelloError(f"cannot read the input after line {number}: {raw.strerror}")
        number += 1
        raw = raw.removesuffix(b"\n").removesuffix(b"\r")
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            raise InvalidInput(f"line {number} not sent: it is not valid UTF-8 text") from None
        if text.strip():
            yield number, text
