"""The room hub: rooms, their members, ordering and fan-out. Pure asyncio.

The hub knows nothing of gRPC or protobuf. It stamps each accepted message
with the server time and the room's next sequence number, has it encoded once
by the injected `Encoder`, and puts that same bytes object into every
member's `Mailbox` without awaiting. Everything in `publish` runs without a
suspension point, so every member sees one order per room.

Memory: each member's mailbox is bounded, and with a `MemoryBudget` so are
the bytes all members pin together and those of one connection (counted as
`hello_server.memory` explains). Past a budget the member pinning the most
is evicted first, until usage is back under it.

`Hub` is the in-process backend; other backends (a shared store for several
nodes) implement the same `RoomHub` protocol.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from hello_server.mailbox import CloseReason, Ledger, Mailbox
from hello_server.memory import MemoryBudget, Usage, measure

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Envelope:
    """An accepted message, as the hub numbered and timed it."""

    room_id: str
    sender_id: str
    text: str
    seq: int
    timestamp_ns: int


Encoder = Callable[[Envelope], bytes]


@dataclass(frozen=True, slots=True)
class QueueLimits:
    """How far one member may fall behind before it is evicted."""

    max_messages: int
    max_bytes: int


class RoomNotFound(LookupError):
    """The room has no members, so it does not exist."""

    def __init__(self, room_id: str) -> None:
        super().__init__(f"room {room_id!r} does not exist: nobody has joined it")
        self.room_id = room_id


class HubClosed(RuntimeError):
    """The hub is shutting down and takes no more joins or messages."""

    def __init__(self) -> None:
        super().__init__("server shutting down")


class Member:
    """One joined stream. The same user may be several members at once.

    ``connection`` names the client connection the stream runs on (gRPC's
    peer address), so that one connection's members share one budget.
    """

    __slots__ = ("connection", "mailbox", "member_id", "name", "room_id", "user_id")

    def __init__(
        self,
        member_id: int,
        room_id: str,
        user_id: str,
        name: str,
        mailbox: Mailbox,
        connection: str = "",
    ) -> None:
        self.member_id = member_id
        self.room_id = room_id
        self.user_id = user_id
        self.name = name
        self.mailbox = mailbox
        self.connection = connection

    def __repr__(self) -> str:
        return f"Member({self.member_id}, room={self.room_id!r}, user={self.user_id!r})"


class _Room:
    __slots__ = ("last_seq", "members", "room_id")

    def __init__(self, room_id: str) -> None:
        self.room_id = room_id
        self.members: dict[int, Member] = {}
        self.last_seq = 0


class RoomHub(Protocol):
    """What the gRPC service needs from a room backend."""

    def join(self, room_id: str, user_id: str, name: str = "", connection: str = "") -> Member: ...

    def leave(self, member: Member) -> None: ...

    def publish(self, room_id: str, sender_id: str, text: str) -> Envelope: ...

    def close(self) -> None: ...


class Hub:
    """In-process rooms for one server."""

    def __init__(
        self,
        encode: Encoder,
        limits: QueueLimits,
        budget: MemoryBudget | None = None,
        on_evict: Callable[[Member], None] | None = None,
    ) -> None:
        self._encode = encode
        self._limits = limits
        self._budget = budget
        self._on_evict = on_evict
        self._rooms: dict[str, _Room] = {}
        # Evicted members whose stream has not ended yet: what they still
        # hold in a write counts until they leave.
        self._evicted: dict[int, Member] = {}
        self._ids = itertools.count(1)
        self._closed = False
        self._member_count = 0
        self._changed = asyncio.Event()
        # Bytes published or copied since the last measurement, and how many
        # may be before the next one (see `_check_memory`).
        self._ledger = Ledger()
        self._headroom = sys.maxsize if budget is None else budget.headroom(Usage())

    # -- membership ---------------------------------------------------------

    def join(self, room_id: str, user_id: str, name: str = "", connection: str = "") -> Member:
        """Add a member to ``room_id``, creating the room if it does not exist."""
        if self._closed:
            raise HubClosed
        room = self._rooms.get(room_id)
        if room is None:
            room = self._rooms[room_id] = _Room(room_id)
        mailbox = Mailbox(self._limits.max_messages, self._limits.max_bytes, self._ledger)
        member = Member(next(self._ids), room_id, user_id, name, mailbox, connection)
        room.members[member.member_id] = member
        self._member_count += 1
        log.debug("%s joined room %r (%d members)", user_id, room_id, len(room.members))
        self._notify()
        return member

    def leave(self, member: Member) -> None:
        """Remove ``member``, whose stream ended; the room goes with its last member.

        Whatever its stream held is released. Idempotent.
        """
        member.mailbox.release()
        if self._evicted.pop(member.member_id, None) is not None:
            self._notify()
        self._remove(member)

    def _remove(self, member: Member) -> None:
        room = self._rooms.get(member.room_id)
        if room is None or room.members.pop(member.member_id, None) is None:
            return
        self._member_count -= 1
        log.debug("%s left room %r (%d members)", member.user_id, member.room_id, len(room.members))
        if not room.members:
            del self._rooms[member.room_id]
            log.debug("room %r deleted", member.room_id)
        self._notify()

    # -- messages -------------------------------------------------------------

    def publish(self, room_id: str, sender_id: str, text: str) -> Envelope:
        """Number, time and queue a message for every member of ``room_id``.

        Never waits for a member: one whose mailbox is full is evicted.
        """
        if self._closed:
            raise HubClosed
        room = self._rooms.get(room_id)
        if room is None:
            raise RoomNotFound(room_id)
        room.last_seq += 1
        envelope = Envelope(room_id, sender_id, text, room.last_seq, time.time_ns())
        payload = self._encode(envelope)
        overflowed = [m for m in room.members.values() if not m.mailbox.put(payload)]
        for member in overflowed:
            limits = self._limits
            self._evict(
                member,
                f"disconnected: too slow to read room {member.room_id!r} "
                f"(more than {limits.max_messages} messages or {limits.max_bytes} bytes "
                "waiting); reconnect to rejoin",
            )
        ledger = self._ledger
        ledger.growth += len(payload)
        if ledger.growth > self._headroom:
            self._check_memory()
        return envelope

    def _evict(self, member: Member, detail: str) -> None:
        member.mailbox.close(CloseReason.EVICTED, detail)
        log.info("evicted %r: %s", member, detail)
        self._evicted[member.member_id] = member
        self._remove(member)
        if self._on_evict is not None:
            self._on_evict(member)

    # -- memory ---------------------------------------------------------------

    def _check_memory(self) -> None:
        """Measure exactly; past a budget, evict the worst offender until back under it.

        Runs only when the cheap upper bound crossed a limit, so the send
        path stays one room deep. Members already evicted cannot give back
        what they hold in a write; the connection reaper ends those.
        """
        budget = self._budget
        if budget is None:
            return
        usage = self.memory_usage()
        while True:
            over = {c for c, held in usage.by_connection.items() if held > budget.connection_bytes}
            victim = self._worst_offender(over) if over else None
            if victim is not None:
                held = victim.mailbox.pending_bytes
                detail = (
                    f"disconnected: this connection had more than {budget.connection_bytes} "
                    f"bytes of messages waiting for it, and this stream the most ({held} bytes "
                    f"in room {victim.room_id!r}); read faster or join fewer rooms, "
                    "then reconnect to rejoin"
                )
            elif usage.total > budget.total_bytes:
                victim = self._worst_offender(None)
                if victim is None:
                    break
                held = victim.mailbox.pending_bytes
                detail = (
                    f"disconnected: the server's memory for waiting messages "
                    f"({budget.total_bytes} bytes) is full, and this stream held the most "
                    f"({held} bytes in room {victim.room_id!r}); reconnect to rejoin"
                )
            else:
                break
            self._evict(victim, detail)
            usage = self.memory_usage()
        self._ledger.growth = 0
        self._headroom = budget.headroom(usage)

    def _worst_offender(self, connections: set[str] | None) -> Member | None:
        """The member pinning the most bytes (on one of ``connections``, if given)."""
        worst: Member | None = None
        most = 0
        for room in self._rooms.values():
            for member in room.members.values():
                held = member.mailbox.pending_bytes
                if held > most and (connections is None or member.connection in connections):
                    worst, most = member, held
        return worst

    def memory_usage(self) -> Usage:
        """Measure the distinct bytes all members pin, in all and per connection."""
        rooms = (room.members.values() for room in self._rooms.values())
        return measure(rooms, self._evicted.values())

    # -- lifecycle ------------------------------------------------------------

    def close(self) -> None:
        """Refuse new joins and messages, and end every member's stream."""
        self._closed = True
        for room in list(self._rooms.values()):
            for member in list(room.members.values()):
                member.mailbox.close(CloseReason.SHUTDOWN, "server shutting down")

    # -- observation ----------------------------------------------------------

    @property
    def room_count(self) -> int:
        return len(self._rooms)

    @property
    def member_count(self) -> int:
        return self._member_count

    @property
    def evicted_count(self) -> int:
        """Evicted members whose stream has not ended yet."""
        return len(self._evicted)

    def has_room(self, room_id: str) -> bool:
        return room_id in self._rooms

    def members(self, room_id: str) -> Iterator[Member]:
        room = self._rooms.get(room_id)
        return iter(()) if room is None else iter(list(room.members.values()))

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds, re-checking after each join or leave."""
        while not predicate():
            await self._changed.wait()

    def _notify(self) -> None:
        # Wake everyone waiting on the current event, then arm a fresh one.
        self._changed.set()
        self._changed = asyncio.Event()
