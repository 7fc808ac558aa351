"""A member's bounded outbox: the only buffer between the hub and one stream.

``asyncio.Queue`` cannot drain everything queued in one step, report a byte
bound, or be closed with a reason while full (``shutdown`` is Python 3.13+),
and all three are needed here: batched delivery, eviction by bytes as well as
by count, and ending a reader at once with a cause.

The mailbox also counts what its reader took but has not finished writing
(the reader may sit in a write for as long as its client does not read), so
that the member's bound and the server's memory budgets see every byte the
member pins, until the write completes.
"""

from __future__ import annotations

import asyncio
import enum


class Ledger:
    """How much memory in use may have grown since the hub last measured it.

    One per hub, shared by its mailboxes: it grows by what is published and
    by what readers copy, and shrinks by the copies written since.
    """

    __slots__ = ("growth",)

    def __init__(self) -> None:
        self.growth = 0


class CloseReason(enum.Enum):
    """Why a mailbox was closed by the hub rather than by its own reader."""

    EVICTED = "evicted"  # the reader fell too far behind
    SHUTDOWN = "shutdown"  # the server is draining
    UNAVAILABLE = "unavailable"  # the shared backend cannot vouch for the next message


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

    __slots__ = (
        "_bytes",
        "_closed",
        "_held_private",
        "_items",
        "_ledger",
        "_max_bytes",
        "_max_items",
        "_pending",
        "_waiter",
    )

    def __init__(self, max_items: int, max_bytes: int, ledger: Ledger | None = None) -> None:
        # A plain list: an idle member's empty list costs 56 bytes where an
        # empty deque costs 600, and readers take whole batches, never one.
        self._items: list[bytes] = []
        self._bytes = 0
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._waiter: asyncio.Future[None] | None = None
        self._closed: MailboxClosed | None = None
        # Queued, plus taken by the reader and not yet written: payloads the
        # room's other members may hold too, and copies made for this member
        # alone (``_held_private``). One sum, so that `put` checks one number.
        self._pending = 0
        self._held_private = 0
        self._ledger = ledger or Ledger()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    @property
    def held_bytes(self) -> int:
        """Bytes the reader took and has not finished writing."""
        return self._pending - self._bytes

    @property
    def pending_bytes(self) -> int:
        """Everything this member pins: queued plus taken and not yet written."""
        return self._pending

    @property
    def shared_bytes(self) -> int:
        """The pending payloads that are the room's own objects, shared with other members.

        Each member's are a suffix of the room's stream, so a room pins the
        largest of its members' shared bytes, not their sum.
        """
        return self._pending - self._held_private

    @property
    def private_bytes(self) -> int:
        """Pending bytes copied for this member alone (a framed batch)."""
        return self._held_private

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def put(self, payload: bytes) -> bool:
        """Queue ``payload``; return False, queuing nothing, if a bound would be passed.

        The byte bound covers what the reader holds in a write as well.
        """
        size = len(payload)
        if len(self._items) >= self._max_items or self._pending + size > self._max_bytes:
            return False
        self._items.append(payload)
        self._bytes += size
        self._pending += size
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return True

    def close(self, reason: CloseReason, detail: str) -> None:
        """End the mailbox now: queued messages are dropped and the reader is woken.

        What the reader holds in a write stays counted until it is written or released.
        """
        if self._closed is not None:
            return
        self._closed = MailboxClosed(reason, detail)
        self._items.clear()
        self._pending -= self._bytes
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

    def take_nowait(self, limit: int, byte_limit: int | None = None) -> list[bytes]:
        """Remove and return up to ``limit`` queued messages, oldest first.

        With ``byte_limit``, stop before the batch would pass that many bytes,
        but always return at least one message. What is returned counts as
        held until `wrote` (or `release`) says it is gone. Raises
        `MailboxClosed` once closed, so a reader never sends an empty batch.
        """
        if self._closed is not None:
            raise self._closed
        items = self._items
        if byte_limit is not None and self._bytes > byte_limit:
            size = 0
            count = 0
            for payload in items:
                if count == limit or (count and size + len(payload) > byte_limit):
                    break
                size += len(payload)
                count += 1
            batch, self._items = items[:count], items[count:]
        elif len(items) <= limit:
            self._items = []
            self._bytes = 0
            return items
        else:
            batch, self._items = items[:limit], items[limit:]
            size = sum(map(len, batch))
        self._bytes -= size
        return batch

    async def take(self, limit: int, byte_limit: int | None = None) -> list[bytes]:
        """Wait for at least one message and return up to ``limit`` of them."""
        await self.wait()
        return self.take_nowait(limit, byte_limit)

    def writing(self, copy: int) -> None:
        """gRPC copied ``copy`` bytes for a write: they are this member's until released."""
        self._held_private += copy
        self._pending += copy
        self._ledger.growth += copy

    def framed(self, copy: int) -> None:
        """The reader replaced everything it took by a ``copy``-byte frame of its own."""
        self._held_private += copy
        self._pending = self._bytes + self._held_private
        self._ledger.growth += copy

    def wrote(self, shared: int = 0, private: int = 0) -> None:
        """The reader finished writing these held bytes: they are no longer pinned."""
        self._pending -= shared + private
        self._held_private -= private
        # Net: a copy written at once never brings the next measurement nearer.
        self._ledger.growth -= private

    def release(self) -> None:
        """The reader is gone: nothing it took is held any more."""
        self._pending = self._bytes
        self._held_private = 0


class ReplayMailbox(Mailbox):
    """A mailbox that starts with a replay queued on top of its bounds.

    A joiner that asks for history gets it whole (up to the room's history
    bounds, which may exceed a member's queue bounds) without being evicted
    for it: the bounds are raised by the replay and lowered again as the
    reader takes the replayed messages, so live messages always get the
    member's full bounds. Only members that asked for a replay pay for the
    extra slot.
    """

    __slots__ = ("_replay_left",)

    def __init__(self, max_items: int, max_bytes: int, ledger: Ledger | None = None) -> None:
        super().__init__(max_items, max_bytes, ledger)
        self._replay_left = 0

    def preload(self, payloads: list[bytes]) -> None:
        """Queue ``payloads`` (oldest first) before anything else, beyond the bounds."""
        size = sum(map(len, payloads))
        self._items.extend(payloads)
        self._bytes += size
        self._pending += size
        self._max_items += len(payloads)
        self._max_bytes += size
        self._replay_left += len(payloads)

    def take_nowait(self, limit: int, byte_limit: int | None = None) -> list[bytes]:
        batch = super().take_nowait(limit, byte_limit)
        if self._replay_left:
            replayed = min(len(batch), self._replay_left)
            self._replay_left -= replayed
            self._max_items -= replayed
            self._max_bytes -= sum(map(len, batch[:replayed]))
        return batch
