"""What a room subscription yields besides messages: presence and connection changes.

``Subscription.events()`` yields ``RoomEvent``: a ``ChatMessage``, a
``PresenceChange`` (someone joined or left, when the join asked for presence),
``Reconnecting`` (the stream was lost; a new join is being tried) or
``Reconnected`` (back in the room; ``recovered`` says whether every message
sent meanwhile was delivered).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple

from hello_protocol import hello_pb2 as pb

__all__ = [
    "ChatMessage",
    "Member",
    "PresenceChange",
    "Reconnected",
    "Reconnecting",
    "RoomEvent",
]


def _datetime(timestamp_ns: int) -> datetime:
    seconds, nanos = divmod(timestamp_ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=nanos // 1000)


def _ns(stamp: object) -> int:
    seconds: int = getattr(stamp, "seconds", 0)
    nanos: int = getattr(stamp, "nanos", 0)
    return seconds * 1_000_000_000 + nanos


class ChatMessage(NamedTuple):
    """A message as delivered by the server.

    A named tuple: high-rate readers build one per delivery, and a tuple is
    several times cheaper to make than a frozen dataclass. The datetime is
    built only when asked for.
    """

    sender: str
    room: str
    text: str
    timestamp_ns: int  # the server's acceptance time, ns since the Unix epoch
    seq: int
    name: str = ""  # the sender's display name; empty: show the sender id

    @property
    def timestamp(self) -> datetime:
        """The server's acceptance time, timezone-aware (UTC), to the microsecond."""
        return _datetime(self.timestamp_ns)

    @classmethod
    def from_proto(cls, message: pb.Message) -> ChatMessage:
        stamp = message.timestamp
        return cls(
            message.id,
            message.roomID,
            message.message,
            stamp.seconds * 1_000_000_000 + stamp.nanos,
            message.seq,
            message.name,
        )


class PresenceChange(NamedTuple):
    """A user's first session joined the room (``joined``) or its last one left."""

    user: str
    name: str
    joined: bool
    timestamp_ns: int

    @property
    def timestamp(self) -> datetime:
        return _datetime(self.timestamp_ns)

    @classmethod
    def from_proto(cls, event: pb.PresenceEvent) -> PresenceChange:
        return cls(
            event.user.id,
            event.user.name,
            event.kind == pb.PresenceEvent.JOINED,
            _ns(event.at),
        )


class Reconnecting(NamedTuple):
    """The room's stream was lost (``reason``); the subscription is joining again."""

    reason: str


class Reconnected(NamedTuple):
    """Back in the room after ``attempts`` tries.

    ``recovered`` is True when the server confirmed that every message sent
    meanwhile follows (none lost), False when some may be missing: the room
    started afresh (a restarted server: a new epoch), its history no longer
    reached back far enough, or the server does not say (original protocol).
    """

    recovered: bool
    attempts: int


class Member(NamedTuple):
    """A user in a room, as ``ChatClient.members`` lists them."""

    user: str
    name: str
    sessions: int
    since_ns: int

    @property
    def since(self) -> datetime:
        return _datetime(self.since_ns)

    @classmethod
    def from_proto(cls, member: pb.Member) -> Member:
        return cls(member.user.id, member.user.name, member.sessions, _ns(member.since))


RoomEvent = ChatMessage | PresenceChange | Reconnecting | Reconnected
