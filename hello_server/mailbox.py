"""A member's bounded outbox: the only buffer between the hub and one stream.

``asyncio.Queue`` cannot drain everything queued in one step, report a byte
bound, or be closed with a reason while full (``shutdown`` is Python 3.13+),
and all three are needed here: batched delivery, eviction by bytes as well as
by count, and ending a reader at once with a cause.
"""

from __future__ import annotations

import asyncio
import enum


class CloseReason(enum.Enum):
    """Why a mailbox was closed by the hub rather than by its own reader."""

    EVICTED = "evicted"  # the reader fell too far behind
    SHUTDOWN = "shutdown"  # the server is draining


class MailboxClosed(Exception):
    """Raised by `Mailbox.take` once the hub has closed the mailbox."""

    def __init__(self, reason: CloseReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class Mailbox:
    """A FIFO of serialised messages, bounded by count and by bytes.

    ``put`` never waits: it refuses instead, and the hub then evicts the
    member. ``take`` waits for at least one message and returns all that are
    queued (up to a limit), so a reader that fell behind catches up in batches.
    """

    __slots__ = ("_bytes", "_closed", "_items", "_max_bytes", "_max_items", "_waiter")

    def __init__(self, max_items: int, max_bytes: int) -> None:
        # A plain list: an idle member's empty list costs 56 bytes where an
        # empty deque costs 600, and readers take whole batches, never one.
        self._items: list[bytes] = []
        self._bytes = 0
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._waiter: asyncio.Future[None] | None = None
        self._closed: MailboxClosed | None = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def put(self, payload: bytes) -> bool:
        """Queue ``payload``; return False, queuing nothing, if a bound would be passed."""
        if len(self._items) >= self._max_items or self._bytes + len(payload) > self._max_bytes:
            return False
        self._items.append(payload)
        self._bytes += len(payload)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return True

    def close(self, reason: CloseReason, detail: str) -> None:
        """End the mailbox now: queued messages are dropped and the reader is woken."""
        if self._closed is not None:
            return
        self._closed = MailboxClosed(reason, detail)
        self._items.clear()
        self._bytes = 0
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Wait until a message is queued; raise `MailboxClosed` once closed."""
        while not self._items:
            if self._closed is not None:
                raise self._closed
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._closed is not None:
            raise self._closed

    def take_nowait(self, limit: int) -> list[bytes]:
        """Remove and return up to ``limit`` queued messages, oldest first.

        Raises `MailboxClosed` once closed, so a reader never sends an empty batch.
        """
        if self._closed is not None:
            raise self._closed
        batch = self._items
        if len(batch) <= limit:
            self._items = []
            self._bytes = 0
            return batch
        batch, self._items = batch[:limit], batch[limit:]
        self._bytes -= sum(map(len, batch))
        return batch

    async def take(self, limit: int) -> list[bytes]:
        """Wait for at least one message and return up to ``limit`` of them."""
        await self.wait()
        return self.take_nowait(limit)
