"""Waves: Subscribe streams write together, in rounds, while writes load the loop.

grpc.aio moves each call on (accepting it, reading its request, sending its
reply) by callbacks on the event loop, one step per pass of the loop. When a
thousand streams each time their own writes, every pass carries a share of
those writes, each pass is long, and a SendMessage that needs several passes
waits behind all of them: sends crawl, so every batch carries one message
and the writes never get cheaper. Measured on a 2-core machine with 1,000
readers in one room: 4-12 sends/s accepted, each waiting about 2 s, 1.1-2.1
messages per write, 3,300-6,200 writes/s.

A wave gathers every stream that has something to write into one pass; the
next wave opens only after a pause of a few times what the last one cost (and
never sooner than `MIN_PERIOD` after the last one opened), so that between
waves the loop runs many short passes in which calls are accepted and
messages published. Messages gather meanwhile, so each write
carries many of them and the writes themselves fall by the same factor (the
same room: 40-60 sends/s, 16-28 messages per write, about 2,000-3,000
writes/s, and sends answered in about 30 ms).

Waves are only used while writes load the loop (`busy`); a quiet server
writes each message as it comes.
"""

from __future__ import annotations

import asyncio

# A wave that held the loop longer than this means writes load it.
BUSY_THRESHOLD = 0.002
# The pause after a wave, as a multiple of what its wake-up pass cost (the
# completions of its writes come after, in the pause): writes get at most
# about a quarter of a saturated loop, calls and publishing the rest...
PAUSE_FACTOR = 3.0
# ...but never more than this, the most a message waits for its wave beyond
# the wave's own cost. Measured with 1,000 readers on a loaded machine, where
# a wave cost 100-200 ms: a 100 ms bound left sends waiting 0.4-0.8 s and
# 5-8 messages per write; 250 ms, sends answered in about 30 ms (most runs),
# 16-28 messages per write and twice the deliveries per server CPU-second.
MAX_PAUSE = 0.250
# And a wave opens at least this long after the previous one opened. A wave's
# cost, and so its pause, shrinks with the streams it writes and the messages
# it carries, but each write costs about the same however many messages it
# carries: without a floor, writes carried 18.8 messages each in-process,
# 10.2 in a room fed more slowly through Redis, and 6.9 with two workers
# holding half the readers each (counted in one `fanout` run of each).
# Measured in `fanout` (50 readers, 16 sends in flight, 2-core machine), 25 ms
# against none: deliveries per server CPU-second +12 % in-process, +19 % with
# Redis and +26 % with 2 workers, p50 latency +3 ms, p99 not higher; 40 ms
# gained a few % more for +15 ms of p99.
MIN_PERIOD = 0.025


class Waves:
    """A server-wide cadence for stream writes under load."""

    def __init__(
        self,
        *,
        threshold: float = BUSY_THRESHOLD,
        pause_factor: float = PAUSE_FACTOR,
        max_pause: float = MAX_PAUSE,
        min_period: float = MIN_PERIOD,
    ) -> None:
        # A wave whose wake-up pass took longer than ``threshold`` means writes
        # load the loop; the next opens ``pause_factor`` times its cost after it,
        # at most ``max_pause`` (the most a message waits for its wave), and at
        # least ``min_period`` after it opened.
        self._threshold = threshold
        self._pause_factor = pause_factor
        self._max_pause = max_pause
        self._min_period = min_period
        self._next: asyncio.Event | None = None
        self._opened = -1.0  # loop time the last wave opened
        self._cost = 0.0  # how long the last wave's wake-up pass took
        self._ready_at = 0.0  # loop time the next wave may open
        self.opened = 0  # waves so far (for tests and metrics)

    def busy(self, now: float) -> bool:
        """True while the last wave was costly and recent: keep writing in waves."""
        return (
            self._cost > self._threshold and now - self._opened < 2 * self._max_pause + self._cost
        )

    async def join(self) -> None:
        """Wait for the next wave to open (scheduling it if none is)."""
        event = self._next
        if event is None:
            loop = asyncio.get_running_loop()
            event = self._next = asyncio.Event()
            loop.call_at(max(loop.time(), self._ready_at), self._open)
        await event.wait()

    def _open(self) -> None:
        event = self._next
        assert event is not None
        self._next = None
        loop = asyncio.get_running_loop()
        self._opened = loop.time()
        self.opened += 1
        event.set()
        # The writers' wake-ups run in the next pass, in order; this runs
        # right after them, so it measures what waking and writing cost.
        loop.call_soon(self._measure)

    def _measure(self) -> None:
        now = asyncio.get_running_loop().time()
        self._cost = now - self._opened
        pause = min(self._max_pause, self._pause_factor * self._cost)
        self._ready_at = max(now + pause, self._opened + self._min_period)
