"""The room hub: rooms, their members, ordering and fan-out. Pure asyncio.

The hub knows nothing of gRPC or protobuf. It stamps each accepted message
with the server time and the room's next sequence number, has it encoded once
by the injected `Encoder`, and puts that same bytes object into every
member's `Mailbox` without awaiting. Everything in `publish` runs without a
suspension point, so every member sees one order per room.

History: each room keeps its latest payloads (the same bytes objects the
members got, bounded by `HistoryLimits`) under a random epoch, so that a
joiner can ask for the latest ones (``history``) or for everything after a
seq it saw (resume: ``since_seq`` + ``epoch``). `join` queues that replay in
the new member's mailbox before it returns, without awaiting, so the replay
ends exactly where live delivery starts. With a room TTL, a room whose last
member left keeps its epoch, seq and history for that long (one timer per
empty room), then is freed. A server-wide history budget bounds what all
rooms keep together: past it, the largest histories lose their oldest
messages first (see `_enforce_history_budget`).

Presence: the hub counts each user's sessions per room and, when a user's
first session joins or its last leaves, queues a presence record for the
members that asked for them (Subscribe streams only).

Memory: each member's mailbox is bounded, and with a `MemoryBudget` so are
the bytes all members pin together and those of one connection (counted as
`hello_server.memory` explains). Past a budget the member pinning the most
is evicted first, until usage is back under it.

`Hub` is the in-process backend; other backends (a shared store for several
nodes) implement the same `RoomHub` protocol.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import secrets
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, cast

from hello_server.logs import fields
from hello_server.mailbox import CloseReason, Ledger, Mailbox, ReplayMailbox
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
    name: str = ""


@dataclass(frozen=True, slots=True)
class PresenceChange:
    """A user's first session joined a room (``joined``), or its last one left."""

    room_id: str
    user_id: str
    name: str
    joined: bool
    timestamp_ns: int


Encoder = Callable[[Envelope], bytes]
PresenceEncoder = Callable[[PresenceChange], bytes]


@dataclass(frozen=True, slots=True)
class HistoryLimits:
    """How many of its latest messages a room keeps for replay, by count and bytes."""

    max_messages: int = 500
    max_bytes: int = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Catchup:
    """What a joiner asks to be replayed before live messages.

    A resume (``since_seq`` and/or ``epoch`` given) asks for every message
    after ``since_seq`` in ``epoch`` and takes precedence over ``history``,
    which asks for up to that many of the latest messages.
    """

    history: int = 0
    since_seq: int = 0
    epoch: str = ""

    @property
    def resume(self) -> bool:
        return self.since_seq > 0 or bool(self.epoch)


@dataclass(frozen=True, slots=True)
class Joined:
    """A registered member and what its join acknowledgement tells the client."""

    member: Member
    epoch: str
    seq: int  # the room's last seq at registration: the replay ends with it
    recovered: bool | None  # None unless a resume was asked for


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


class BackendUnavailable(RuntimeError):
    """A shared backend (Redis) cannot be reached; the client should retry."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"chat backend unavailable: {detail}")


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


class _Presence:
    """The sessions in one room of a user who has had more than one there.

    A user with a single session is just the time it arrived (`_Room.users`).
    ``name`` is the first session's.
    """

    __slots__ = ("name", "sessions", "since_ns")

    def __init__(self, name: str, sessions: int, since_ns: int) -> None:
        self.name = name
        self.sessions = sessions
        self.since_ns = since_ns


@dataclass(frozen=True, slots=True)
class Presence:
    """A user in a room, as the Members RPC lists it."""

    user_id: str
    name: str
    sessions: int
    since_ns: int


class _Room:
    __slots__ = (
        "epoch",
        "expiry",
        "history",
        "history_bytes",
        "history_start",
        "last_seq",
        "members",
        "room_id",
        "users",
        "watchers",
    )

    def __init__(self, room_id: str) -> None:
        self.room_id = room_id
        self.members: dict[int, Member] = {}
        self.last_seq = 0
        # A fresh history, so a fresh epoch: seqs of another epoch mean nothing here.
        self.epoch = secrets.token_hex(8)
        # The latest payloads, oldest first, from ``history_start`` on; the last
        # one has seq ``last_seq``. A list with a start offset rather than a
        # deque: an empty deque costs 600 bytes per room, and dropping the
        # oldest stays O(1) amortised (slots before the start are None, and
        # compacted once they are half the list).
        self.history: list[bytes | None] = []
        self.history_start = 0
        self.history_bytes = 0
        # Who is present, in arrival order: for a user with one session (most
        # users) just when it arrived, its name being that member's, so that
        # an idle member costs no record of its own; a `_Presence` from a
        # user's second session on (it keeps the first session's name).
        self.users: dict[str, int | _Presence] = {}
        # Members that asked for presence events; most rooms have none.
        self.watchers: dict[int, Member] | None = None
        self.expiry: asyncio.TimerHandle | None = None

    @property
    def kept(self) -> int:
        """How many messages the history holds."""
        return len(self.history) - self.history_start

    def latest(self, count: int) -> list[bytes]:
        """The ``count`` latest payloads of the history, oldest first."""
        if count <= 0:
            return []
        return cast("list[bytes]", self.history[len(self.history) - count :])


class RoomHub(Protocol):
    """What the gRPC service needs from a room backend.

    ``enter``, ``publish`` and ``presence`` are coroutines so that a backend
    may do I/O (Redis); the in-process `Hub` answers them without suspending.
    ``leave`` stays synchronous (it runs from gRPC's done callbacks): a
    backend that must do I/O to leave starts it and finishes it by
    `wait_closed`. ``close`` ends every local stream at once.
    """

    async def enter(
        self,
        room_id: str,
        user_id: str,
        name: str = "",
        connection: str = "",
        catchup: Catchup | None = None,
        presence: bool = False,
    ) -> Joined: ...

    def leave(self, member: Member) -> None: ...

    async def publish(
        self, room_id: str, sender_id: str, text: str, name: str = ""
    ) -> Envelope: ...

    async def presence(self, room_id: str) -> list[Presence]: ...

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


class LocalRooms:
    """The `RoomHub` of one process: `Hub`'s synchronous calls, awaitable.

    Each coroutine returns without suspending, so awaiting one costs a call
    and nothing else, and what `Hub` guarantees by running without a
    suspension point (one order per room, gapless joins) still holds.
    """

    __slots__ = ("hub",)

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def enter(
        self,
        room_id: str,
        user_id: str,
        name: str = "",
        connection: str = "",
        catchup: Catchup | None = None,
        presence: bool = False,
    ) -> Joined:
        return self.hub.enter(room_id, user_id, name, connection, catchup, presence)

    def leave(self, member: Member) -> None:
        self.hub.leave(member)

    async def publish(self, room_id: str, sender_id: str, text: str, name: str = "") -> Envelope:
        return self.hub.publish(room_id, sender_id, text, name)

    async def presence(self, room_id: str) -> list[Presence]:
        return self.hub.presence(room_id)

    def close(self) -> None:
        self.hub.close()

    async def wait_closed(self) -> None:
        return


class Hub:
    """In-process rooms for one server."""

    def __init__(
        self,
        encode: Encoder,
        limits: QueueLimits,
        budget: MemoryBudget | None = None,
        on_evict: Callable[[Member], None] | None = None,
        *,
        history: HistoryLimits | None = None,
        room_ttl: float = 0.0,
        encode_presence: PresenceEncoder | None = None,
        history_budget: int | None = None,
    ) -> None:
        self._encode = encode
        self._encode_presence = encode_presence
        self._limits = limits
        self._history = history or HistoryLimits()
        self._room_ttl = room_ttl
        # Bytes all rooms' histories hold together (the sum of their
        # ``history_bytes``), kept up to date on append, trim and free, and
        # the most they may hold (None: no server-wide bound).
        self._history_total = 0
        self._history_budget = history_budget
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
        """`enter` without a replay or presence, returning just the member (for embedding)."""
        return self.enter(room_id, user_id, name, connection).member

    def enter(
        self,
        room_id: str,
        user_id: str,
        name: str = "",
        connection: str = "",
        catchup: Catchup | None = None,
        presence: bool = False,
    ) -> Joined:
        """Add a member, queue its replay, and say what its acknowledgement carries.

        Runs without a suspension point: the replay ends with the room's
        last seq, and every later message is queued live, so the member
        gets each message exactly once, in order. The replay is queued on
        top of the mailbox bounds (see `ReplayMailbox`): a member is never
        evicted for the replay it asked for, only for falling behind after it.
        """
        if self._closed:
            raise HubClosed
        room = self._room(room_id)
        replay, recovered = self._replay(room, catchup)
        member = self.admit(room_id, user_id, name, connection, replay, presence)
        return Joined(member, room.epoch, room.last_seq, recovered)

    def _room(self, room_id: str) -> _Room:
        """The room, created if need be; a retained room gets a member again."""
        room = self._rooms.get(room_id)
        if room is None:
            room = self._rooms[room_id] = _Room(room_id)
        elif room.expiry is not None:
            room.expiry.cancel()
            room.expiry = None
        return room

    def next_member_id(self) -> int:
        """An id for a member about to be admitted (a backend may need it first)."""
        return next(self._ids)

    def admit(
        self,
        room_id: str,
        user_id: str,
        name: str = "",
        connection: str = "",
        replay: list[bytes] | None = None,
        presence: bool = False,
        member_id: int | None = None,
    ) -> Member:
        """Register a member with ``replay`` queued first; no suspension point.

        The replay is queued on top of the mailbox bounds (see
        `ReplayMailbox`): a member is never evicted for the replay it asked
        for, only for falling behind after it. `enter` uses this with the
        room's own history; a shared backend with the history it fetched.
        """
        if self._closed:
            raise HubClosed
        room = self._room(room_id)
        limits = self._limits
        mailbox: Mailbox
        if replay:
            mailbox = ReplayMailbox(limits.max_messages, limits.max_bytes, self._ledger)
            mailbox.preload(replay)
        else:
            mailbox = Mailbox(limits.max_messages, limits.max_bytes, self._ledger)
        if member_id is None:
            member_id = next(self._ids)
        # The room's own id string, not the request's copy: one per room, not per member.
        member = Member(member_id, room.room_id, user_id, name, mailbox, connection)
        room.members[member.member_id] = member
        self._member_count += 1
        present = room.users.get(user_id)
        if present is None:
            since_ns = time.time_ns()
            room.users[user_id] = since_ns
            # Announced with the member registered, so that evicting a watcher
            # cannot empty (and drop) the room, and before it watches: a
            # member is not told of its own arrival.
            self._announce(room, PresenceChange(room_id, user_id, name, True, since_ns))
        elif isinstance(present, int):  # the user's second session
            # Members are in join order, so the first of the user's is the one
            # before. A scan of the room, but only when a user goes from one
            # session to two; Members lists the room in one pass anyway.
            first = next(m for m in room.members.values() if m.user_id == user_id)
            room.users[user_id] = _Presence(first.name, 2, present)
        else:
            present.sessions += 1
        # Still a member, unless a memory check while announcing evicted it.
        if presence and member.member_id in room.members:
            if room.watchers is None:
                room.watchers = {}
            room.watchers[member.member_id] = member
        log.debug(
            "%s joined room %r (%d members)",
            user_id,
            room_id,
            len(room.members),
            extra=fields(room=room_id, user=user_id, peer=connection),
        )
        self._notify()
        return member

    def fan_out(self, room_id: str, payload: bytes) -> None:
        """Queue ``payload`` (numbered elsewhere) for every local member of ``room_id``."""
        room = self._rooms.get(room_id)
        if room is not None and room.members:
            self._deliver(payload, list(room.members.values()))

    def tell_watchers(self, room_id: str, record: bytes, about: str) -> None:
        """Queue a presence ``record`` for the room's watchers, except user ``about``'s own.

        A member is never told of its own user's arrival or departure: that
        user is present for as long as the member is.
        """
        room = self._rooms.get(room_id)
        if room is None or not room.watchers:
            return
        watchers = [m for m in room.watchers.values() if m.user_id != about]
        if watchers:
            self._deliver(record, watchers)

    def end_room(self, room_id: str, detail: str, keep: Member | None = None) -> None:
        """End every local stream of ``room_id`` (but ``keep``) with UNAVAILABLE ``detail``.

        Clients resume, so this is how a backend that cannot guarantee a
        stream's next message says so instead of leaving a silent gap.
        """
        for member in self.members(room_id):
            if member is not keep:
                member.mailbox.close(CloseReason.UNAVAILABLE, detail)

    def local_members(self, room_id: str) -> int:
        room = self._rooms.get(room_id)
        return 0 if room is None else len(room.members)

    @staticmethod
    def _replay(room: _Room, catchup: Catchup | None) -> tuple[list[bytes], bool | None]:
        """The payloads to queue before live ones, and whether a resume recovered."""
        if catchup is None:
            return [], None
        if catchup.resume:
            missed = room.last_seq - catchup.since_seq
            if catchup.epoch != room.epoch or not 0 <= missed <= room.kept:
                return [], False
            return room.latest(missed), True
        return room.latest(min(catchup.history, room.kept)), None

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
        if room.watchers is not None:
            room.watchers.pop(member.member_id, None)
        self._member_count -= 1
        log.debug(
            "%s left room %r (%d members)",
            member.user_id,
            member.room_id,
            len(room.members),
            extra=fields(room=member.room_id, user=member.user_id, peer=member.connection),
        )
        present = room.users.get(member.user_id)
        if isinstance(present, _Presence) and present.sessions > 1:
            present.sessions -= 1
        elif present is not None:  # the user's last session
            del room.users[member.user_id]
            # A single session's name is the member's own; several keep the first one's.
            name = present.name if isinstance(present, _Presence) else member.name
            change = PresenceChange(room.room_id, member.user_id, name, False, time.time_ns())
            self._announce(room, change)
        # Evictions while announcing may have emptied, kept or dropped the room already.
        if not room.members and room.expiry is None and self._rooms.get(room.room_id) is room:
            if self._room_ttl > 0 and not self._closed:
                loop = asyncio.get_running_loop()
                room.expiry = loop.call_later(self._room_ttl, self._expire, room)
                log.debug("room %r empty; kept for %g s", member.room_id, self._room_ttl)
            else:
                self._drop(room)
        self._notify()

    def _expire(self, room: _Room) -> None:
        """A retained room's TTL ran out with nobody back: free it."""
        room.expiry = None
        if self._rooms.get(room.room_id) is room and not room.members:
            self._drop(room)
            self._notify()

    def _drop(self, room: _Room) -> None:
        if room.expiry is not None:
            room.expiry.cancel()
            room.expiry = None
        del self._rooms[room.room_id]
        self._history_total -= room.history_bytes
        log.debug("room %r deleted", room.room_id)

    def _announce(self, room: _Room, change: PresenceChange) -> None:
        """Queue a presence record for the room's watchers; live only, at most once."""
        watchers = room.watchers
        if not watchers or self._encode_presence is None or self._closed:
            return
        record = self._encode_presence(change)
        self._deliver(record, list(watchers.values()))

    def _deliver(self, payload: bytes, members: Iterable[Member]) -> None:
        """Queue ``payload`` for ``members``; evict those it does not fit."""
        overflowed = [m for m in members if not m.mailbox.put(payload)]
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

    # -- messages -------------------------------------------------------------

    def publish(self, room_id: str, sender_id: str, text: str, name: str = "") -> Envelope:
        """Number, time, remember and queue a message for every member of ``room_id``.

        Never waits for a member: one whose mailbox is full is evicted. A
        room kept after its last member left (room TTL) takes no messages.
        """
        if self._closed:
            raise HubClosed
        room = self._rooms.get(room_id)
        if room is None or not room.members:
            raise RoomNotFound(room_id)
        room.last_seq += 1
        envelope = Envelope(room_id, sender_id, text, room.last_seq, time.time_ns(), name)
        payload = self._encode(envelope)
        self._remember(room, payload)
        self._deliver(payload, room.members.values())
        return envelope

    def _remember(self, room: _Room, payload: bytes) -> None:
        """Keep ``payload`` in the room's history, dropping the oldest past a bound."""
        limits = self._history
        if limits.max_messages <= 0:
            return
        room.history.append(payload)
        room.history_bytes += len(payload)
        self._history_total += len(payload)
        while room.kept > limits.max_messages or room.history_bytes > limits.max_bytes:
            self._drop_oldest(room)
        self._compact(room)
        budget = self._history_budget
        if budget is not None and self._history_total > budget:
            self._enforce_history_budget(budget)

    def _drop_oldest(self, room: _Room) -> None:
        """Forget the room's oldest kept payload; its slot goes at the next compaction."""
        start = room.history_start
        dropped = room.history[start]
        assert dropped is not None  # slots from the start on are kept payloads
        room.history[start] = None
        room.history_start = start + 1
        room.history_bytes -= len(dropped)
        self._history_total -= len(dropped)

    @staticmethod
    def _compact(room: _Room) -> None:
        start = room.history_start
        if start > 16 and 2 * start > len(room.history):
            del room.history[:start]
            room.history_start = 0

    def _enforce_history_budget(self, budget: int) -> None:
        """Past the budget, trim the largest histories, oldest first, to 7/8 of it.

        Finding the largest visits every room, so it runs only past the
        budget, and trims to 7/8 so that the next run is at least budget/8
        appended bytes away: the scan is amortised over those appends. The
        heap hands out the largest history each time, so the largest rooms
        shrink towards one another; small rooms keep theirs.
        """
        target = budget - budget // 8
        heap = [
            (-room.history_bytes, room.room_id, room)
            for room in self._rooms.values()
            if room.history_bytes
        ]
        heapq.heapify(heap)
        trimmed = len(heap)
        while self._history_total > target and heap:
            _, room_id, room = heapq.heappop(heap)
            self._drop_oldest(room)
            self._compact(room)
            if room.history_bytes:
                heapq.heappush(heap, (-room.history_bytes, room_id, room))
        log.debug("histories over %d bytes: trimmed the largest of %d", budget, trimmed)

    def _evict(self, member: Member, detail: str) -> None:
        member.mailbox.close(CloseReason.EVICTED, detail)
        log.info(
            "evicted %r: %s",
            member,
            detail,
            extra=fields(
                room=member.room_id,
                user=member.user_id,
                peer=member.connection,
                status="RESOURCE_EXHAUSTED",
            ),
        )
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

    @property
    def history_bytes(self) -> int:
        """Bytes all rooms' histories hold together (`Usage.history`, without a scan)."""
        return self._history_total

    def memory_usage(self) -> Usage:
        """Measure the distinct bytes rooms and members pin, in all and per connection."""
        rooms = ((room.members.values(), room.history_bytes) for room in self._rooms.values())
        return measure(rooms, self._evicted.values())

    # -- lifecycle ------------------------------------------------------------

    def close(self) -> None:
        """Refuse new joins and messages, and end every member's stream."""
        self._closed = True
        for room in list(self._rooms.values()):
            if not room.members:
                self._drop(room)  # retained, and nobody will come back to it
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

    def room_size(self, room_id: str) -> int:
        """Members (streams) in ``room_id`` now; 0 if it has none."""
        room = self._rooms.get(room_id)
        return 0 if room is None else len(room.members)

    def queue_depth(self) -> tuple[int, int]:
        """Messages and bytes queued for all members, summed (a shared payload per member)."""
        messages = queued = 0
        for room in self._rooms.values():
            for member in room.members.values():
                box = member.mailbox
                messages += len(box)
                queued += box.queued_bytes
        return messages, queued

    def presence(self, room_id: str) -> list[Presence]:
        """The users in ``room_id``, in the order they arrived; `RoomNotFound` if it has none."""
        room = self._rooms.get(room_id)
        if room is None or not room.members:
            raise RoomNotFound(room_id)
        names = {m.user_id: m.name for m in room.members.values()}  # of single sessions
        return [
            Presence(u, p.name, p.sessions, p.since_ns)
            if isinstance(p, _Presence)
            else Presence(u, names[u], 1, p)
            for u, p in room.users.items()
        ]

    def epoch(self, room_id: str) -> str | None:
        """The room's current epoch, or None if the hub holds no such room."""
        room = self._rooms.get(room_id)
        return None if room is None else room.epoch

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
