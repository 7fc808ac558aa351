"""How many bytes of queued messages the members pin, counted honestly. Pure Python.

The hub puts ONE bytes object into every member's mailbox, and every member
of a room receives the same sequence of payloads, so what each member still
holds of them (queued, or taken and not yet written) is a suffix of the
room's stream: the distinct bytes a room pins are its largest member's share,
not the sum. Copies made for one member alone (a framed Subscribe batch) add
up per member. Evicted members still stuck in a write count in full.

A room also pins its history (`hello_server.hub.HistoryLimits`): the same
payload objects, the room's latest ones, so again a suffix of its stream: the
room pins the larger of its history and its largest member's share
(`Usage.pinned`). History is bounded per room by its own limits, and all
rooms' together by the history budget (`Hub.history_bytes`, a running
total); neither is what the member budgets are for: they bound how far
members fall behind, together and per connection, and compare what members
pin counted as if there were no history (`Usage.total`), so that they evict
exactly as without history; a member evicted within the history frees its
bytes when the history moves past them.

Measuring visits every member, so the hub does it only when a cheap upper
bound (last measurement plus everything published or copied since) crosses
a limit; see `Hub._check_memory`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from hello_server.mailbox import Mailbox


@dataclass(frozen=True, slots=True)
class MemoryBudget:
    """Bytes of messages waiting for members: for the whole server, and per connection."""

    total_bytes: int
    connection_bytes: int

    def headroom(self, usage: Usage) -> int:
        """Bytes that may be published or copied before the next measurement.

        The distance to the nearer limit, but at least 1/32 of it: measuring
        is O(members), and this keeps it off the send path even while usage
        sits at a limit, at the price of passing a limit by at most 1/32.
        """
        _, largest = usage.largest_connection
        return min(
            max(self.total_bytes - usage.total, self.total_bytes // 32, 1),
            max(self.connection_bytes - largest, self.connection_bytes // 32, 1),
        )


class Holder(Protocol):
    """A member as far as memory is concerned."""

    @property
    def connection(self) -> str: ...

    @property
    def mailbox(self) -> Mailbox: ...


@dataclass(slots=True)
class Usage:
    """One measurement: what members pin, in all and per connection; what histories hold."""

    total: int = 0  # what members pin, counted as if rooms kept no history
    by_connection: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    history: int = 0  # what room histories hold
    pinned: int = 0  # distinct bytes of members and histories together

    @property
    def largest_connection(self) -> tuple[str, int]:
        """The connection pinning the most bytes, and how many ("", 0 if none)."""
        if not self.by_connection:
            return "", 0
        connection = max(self.by_connection, key=self.by_connection.__getitem__)
        return connection, self.by_connection[connection]


def measure(rooms: Iterable[tuple[Collection[Holder], int]], evicted: Iterable[Holder]) -> Usage:
    """Count the distinct bytes pinned by ``rooms`` and by ``evicted`` members.

    Each room is its members and the bytes of its history.
    """
    usage = Usage()
    by_connection = usage.by_connection
    for members, history in rooms:
        usage.history += history
        room_shared = 0
        shared_by_connection: dict[str, int] = {}
        for member in members:
            box = member.mailbox
            if not box.pending_bytes:
                continue  # most members, most of the time
            shared = box.shared_bytes
            private = box.private_bytes
            connection = member.connection
            room_shared = max(room_shared, shared)
            if shared > shared_by_connection.get(connection, 0):
                shared_by_connection[connection] = shared
            usage.total += private
            by_connection[connection] += private
        usage.total += room_shared
        usage.pinned += max(room_shared, history) - room_shared
        for connection, shared in shared_by_connection.items():
            by_connection[connection] += shared
    for member in evicted:
        pinned = member.mailbox.pending_bytes
        if pinned:
            usage.total += pinned
            by_connection[member.connection] += pinned
    usage.pinned += usage.total
    return usage
