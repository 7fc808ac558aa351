"""What the chat service asks before and tells after each request: limits, metrics, logs.

The service calls a `Guard` at four points (a message arrives, a message
was handled, a stream is admitted, a stream ended) and knows nothing of
the per-user limits, the metrics or the refusal log behind it. With no
limit configured and metrics off, each call is an attribute test.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import grpc

from hello_server.limits import LimitExceeded, SendRate, UserLimits, UserStreams
from hello_server.log_limits import RefusalLog
from hello_server.logs import fields
from hello_server.metrics import ServerMetrics

OK = grpc.StatusCode.OK


class Guard:
    """Per-user limits, metrics and refusal logs for one `ChatRoomService`."""

    def __init__(
        self,
        limits: UserLimits | None = None,
        metrics: ServerMetrics | None = None,
        room_size: Callable[[str], int] = lambda room: 0,
        refusals: RefusalLog | None = None,
    ) -> None:
        limits = limits or UserLimits()
        self.limits = limits
        self.send_rate = SendRate(limits.send_rate, limits.send_burst) if limits.send_rate else None
        self.streams = UserStreams(limits.max_streams_per_user, limits.max_rooms_per_user)
        self.metrics = metrics
        self._room_size = room_size
        self.refusals = RefusalLog() if refusals is None else refusals

    # -- messages ----------------------------------------------------------------

    def sending(self, user: str, room: str, peer: Callable[[], str]) -> None:
        """A valid message from ``user``: raise `LimitExceeded` if it is over the send rate."""
        rate = self.send_rate
        if rate is None:
            return
        try:
            rate.take(user)
        except LimitExceeded as refused:
            self._refused("message", refused, user, room, peer())
            raise

    def sent(self, rpc: str, code: grpc.StatusCode, started: float, room: str | None) -> None:
        """A message was handled (``code`` OK: published to ``room``); ``started``: perf_counter."""
        metrics = self.metrics
        if metrics is None:
            return
        delivered = self._room_size(room) if room is not None and code is OK else 0
        metrics.sent(rpc, code, time.perf_counter() - started, delivered)

    # -- streams -----------------------------------------------------------------

    def admit(self, rpc: str, user: str, room: str, peer: str) -> None:
        """Count a new ``rpc`` stream of ``user`` in ``room``, or raise `LimitExceeded`.

        Nothing is kept per stream: `release` is told the same ``rpc``,
        ``user`` and ``room`` (the member carries them) once the stream ends.
        """
        try:
            self.streams.admit(user, room)
        except LimitExceeded as refused:
            self._refused("join", refused, user, room, peer)
            raise
        if self.metrics is not None:
            self.metrics.stream_opened(rpc)

    def release(self, rpc: str, user: str, room: str) -> None:
        """An admitted stream ended: uncount it. Exactly once per admitted stream."""
        self.streams.release(user, room)
        if self.metrics is not None:
            self.metrics.stream_closed(rpc)

    def joined(self, rpc: str, code: grpc.StatusCode) -> None:
        """A Join or Subscribe was admitted (OK) or refused with ``code``."""
        if self.metrics is not None:
            self.metrics.joined(rpc, code)

    @contextlib.contextmanager
    def stream(self, rpc: str) -> Iterator[None]:
        """Count a stream that is not a member (SendStream) as open for the block."""
        if self.metrics is None:
            yield
            return
        with self.metrics.stream(rpc):
            yield

    def evicted(self) -> None:
        if self.metrics is not None:
            self.metrics.evicted()

    # -- refusals ----------------------------------------------------------------

    def forbidden(self, what: str, user: str, room: str, peer: str, detail: str) -> None:
        """A ``what`` ("join", "message") for ``user`` that the caller's token may not make."""
        self.refusals.refused(
            what,
            f"caller of {user!r}",
            detail,
            fields(room=room, user=user, peer=peer, status="PERMISSION_DENIED"),
        )

    def _refused(self, what: str, refused: LimitExceeded, user: str, room: str, peer: str) -> None:
        if self.metrics is not None:
            self.metrics.refused(refused.limit)
        self.refusals.refused(
            what,
            f"user {user!r}",
            refused.detail,
            fields(room=room, user=user, peer=peer, status="RESOURCE_EXHAUSTED"),
        )
