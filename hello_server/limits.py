"""Per-user limits: how fast a user may send, how many streams and rooms it may hold.

Pure bookkeeping (no gRPC, no hub): the service asks before it publishes or
joins, and gets a `LimitExceeded` with a reason a person understands when the
answer is no. "User" is the sender or member id of the request; with
authentication on it equals the token's subject (the auth layer refuses any
other), so these limits follow the authenticated user.

Transport-level limits (connections, streams per connection, metadata size,
message size) are gRPC core's and live in transport.py; memory and queue
budgets live in the hub. These are the ones gRPC cannot know: they need the
user id inside the request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

# Sending is unlimited by default: a fair rate depends on the deployment (a
# person types about one line a second, a bot or a bridge posts thousands),
# hello-bench and the tests send tens of thousands a second from one user
# id, and what one sender costs others is already bounded by the queue and
# memory budgets (a slow reader is evicted, not waited for). Operators of
# public servers set it (the README suggests 10/s, burst 20).
DEFAULT_SEND_RATE = 0.0  # messages per second; 0: no limit
# Lines a person pastes at once, or a client flushing its outbox on reconnect.
DEFAULT_SEND_BURST = 20
# One user's Join and Subscribe streams on all its connections together: as
# many as one connection may open (transport.DEFAULT_MAX_STREAMS_PER_CONNECTION),
# so a user cannot multiply its share by opening connections. A person has a
# few devices in a few dozen rooms; hello-bench's `rooms` scenario has one
# reader id in 100 rooms.
DEFAULT_MAX_STREAMS_PER_USER = 1000
# Distinct rooms one user is in at once (several sessions in one room count
# once). IRC networks allow 20-120 channels; 256 leaves room for bots.
DEFAULT_MAX_ROOMS_PER_USER = 256

# A refused message is told to wait at least this long (a retry-after hint of
# 0 ms would invite an immediate retry that is refused again).
MIN_RETRY_AFTER_SECONDS = 0.001


@dataclass(frozen=True, slots=True)
class UserLimits:
    """The per-user limits; 0 turns one off."""

    send_rate: float = DEFAULT_SEND_RATE
    send_burst: int = DEFAULT_SEND_BURST
    max_streams_per_user: int = DEFAULT_MAX_STREAMS_PER_USER
    max_rooms_per_user: int = DEFAULT_MAX_ROOMS_PER_USER

    def __post_init__(self) -> None:
        if not 0 <= self.send_rate <= 1_000_000:
            raise ValueError("send rate must be between 0 (no limit) and 1000000 messages/s")
        if not 1 <= self.send_burst <= 1_000_000:
            raise ValueError("send burst must be between 1 and 1000000 messages")
        if self.max_streams_per_user < 0:
            raise ValueError("max streams per user must not be negative (0: no limit)")
        if self.max_rooms_per_user < 0:
            raise ValueError("max rooms per user must not be negative (0: no limit)")


class LimitExceeded(Exception):
    """A request over a per-user limit; ``limit`` names it for metrics and logs.

    ``retry_after`` (seconds) is set when waiting that long will let the
    request through (the send rate), None when something must be released first.
    """

    def __init__(self, limit: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.limit = limit
        self.detail = detail
        self.retry_after = retry_after


class SendRate:
    """One token bucket per user: ``rate`` tokens a second, at most ``burst`` saved.

    A bucket that has refilled completely is the same as no bucket, so it is
    forgotten: the state is the users who sent within the last ``burst / rate``
    seconds, whatever the number of user ids seen. Forgetting is a sweep over
    the buckets, at most once per refill period, amortised over the sends.
    """

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0:
            raise ValueError("a SendRate needs a positive rate")
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._refill_seconds = burst / rate
        # user -> (tokens left, when counted): a tuple per user, no object.
        self._buckets: dict[str, tuple[float, float]] = {}
        self._next_sweep = clock() + self._refill_seconds

    def __len__(self) -> int:
        """Users with a bucket that is not full (the state held)."""
        return len(self._buckets)

    def take(self, user: str) -> None:
        """Spend one token of ``user``'s bucket, or raise `LimitExceeded` (spends nothing)."""
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        bucket = self._buckets.get(user)
        if bucket is None:
            tokens = self.burst
        else:
            tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        if tokens < 1.0:
            wait = max((1.0 - tokens) / self.rate, MIN_RETRY_AFTER_SECONDS)
            raise LimitExceeded(
                "send_rate",
                f"sending too fast: at most {self.rate:g} messages per second "
                f"(bursts of {self.burst:g}); retry in {wait * 1000:.0f} ms",
                wait,
            )
        self._buckets[user] = (tokens - 1.0, now)

    def _sweep(self, now: float) -> None:
        """Forget every bucket that has refilled completely by ``now``."""
        horizon = now - self._refill_seconds
        self._buckets = {
            user: bucket
            for user, bucket in self._buckets.items()
            if bucket[1] > horizon and bucket[0] + (now - bucket[1]) * self.rate < self.burst
        }
        self._next_sweep = now + self._refill_seconds


class _UserCount:
    """A user with more than one stream: how many, and how many in each of its rooms."""

    __slots__ = ("rooms", "streams")

    def __init__(self, streams: int, rooms: dict[str, int]) -> None:
        self.streams = streams
        self.rooms = rooms  # room -> this user's streams in it


class UserStreams:
    """Counts each user's Join/Subscribe streams and rooms; refuses past the caps.

    A user with no stream left is forgotten, so the state is the users
    connected now. A user with one stream (the usual case: a person in a room)
    is held as that stream's room id, which the hub holds anyway: one dict
    entry and no object per stream. With both caps off nothing is counted.
    The caller releases each admitted stream exactly once, with the same
    user and room.
    """

    def __init__(self, max_streams: int, max_rooms: int) -> None:
        self.max_streams = max_streams
        self.max_rooms = max_rooms
        self._users: dict[str, str | _UserCount] = {}

    def __len__(self) -> int:
        return len(self._users)

    def admit(self, user: str, room: str) -> None:
        """Count a new stream of ``user`` in ``room``, or raise `LimitExceeded`."""
        if not (self.max_streams or self.max_rooms):
            return
        held = self._users.get(user)
        if held is None:
            self._users[user] = room
            return
        if isinstance(held, str):
            streams, rooms, new_room = 1, 1, room != held
        else:
            streams, rooms, new_room = held.streams, len(held.rooms), room not in held.rooms
        if self.max_streams and streams >= self.max_streams:
            raise LimitExceeded(
                "streams_per_user",
                f"too many streams: user {user!r} already has {streams} open "
                f"(at most {self.max_streams}); close one first",
            )
        if self.max_rooms and new_room and rooms >= self.max_rooms:
            raise LimitExceeded(
                "rooms_per_user",
                f"too many rooms: user {user!r} is already in {rooms} rooms "
                f"(at most {self.max_rooms}); leave one first",
            )
        if isinstance(held, str):
            held = self._users[user] = _UserCount(1, {held: 1})
        held.streams += 1
        held.rooms[room] = held.rooms.get(room, 0) + 1

    def release(self, user: str, room: str) -> None:
        """Uncount a stream that `admit` counted, once it has ended."""
        if not (self.max_streams or self.max_rooms):
            return
        held = self._users[user]
        if isinstance(held, str):
            del self._users[user]
            return
        held.streams -= 1
        left = held.rooms[room] - 1
        if left:
            held.rooms[room] = left
        else:
            del held.rooms[room]
        if held.streams == 1:  # back to a single stream: just its room
            (self._users[user],) = held.rooms
