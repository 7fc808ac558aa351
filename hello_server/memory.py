"""How many bytes of queued messages the members pin, counted honestly. Pure Python.

The hub puts ONE bytes object into every member's mailbox, and every member
of a room receives the same sequence of payloads, so what each member still
holds of them (queued, or taken and not yet written) is a suffix of the
room's stream: the distinct bytes a room pins are its largest member's share,
not the sum. Copies made for one member alone (a framed Subscribe batch) add
up per member. Evicted members still stuck in a write count in full.

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
    """One measurement: bytes pinned in all, and per connection."""

    total: int = 0
    by_connection: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    @property
    def largest_connection(self) -> tuple[str, int]:
        """The connection pinning the most bytes, and how many ("", 0 if none)."""
        if not self.by_connection:
            return "", 0
        connection = max(self.by_connection, key=self.by_connection.__getitem__)
        return connection, self.by_connection[connection]


def measure(rooms: Iterable[Collection[Holder]], evicted: Iterable[Holder]) -> Usage:
    """Count the distinct bytes pinned by the members of ``rooms`` and by ``evicted`` ones."""
    usage = Usage()
    by_connection = usage.by_connection
    for members in rooms:
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
        for connection, shared in shared_by_connection.items():
            by_connection[connection] += shared
    for member in evicted:
        pinned = member.mailbox.pending_bytes
        if pinned:
            usage.total += pinned
            by_connection[member.connection] += pinned
    return usage
