"""LoopLag: how late the event loop runs a timer, as a measure of how busy it is.

When the loop is saturated, every ready callback waits its turn, so a short
timer fires late by about one pass over the ready queue. Subscribe streams
use that delay to gather larger batches exactly when writes are the
bottleneck, and not at all when the loop is idle.
"""

from __future__ import annotations

import asyncio


class LoopLag:
    """A background sampler of the running loop's timer lateness, in seconds."""

    def __init__(self, interval: float = 0.005) -> None:
        self._interval = interval
        self.seconds = 0.0

    async def run(self) -> None:
        """Sample forever (cancel to stop)."""
        while True:
            await self.sample()

    async def sample(self) -> float:
        """Time one short timer; fold its lateness into ``seconds`` and return it."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.sleep(self._interval)
        late = max(0.0, loop.time() - start - self._interval)
        # Quick to rise, so a burst is caught at once; halves per quiet sample.
        self.seconds = max(late, 0.5 * self.seconds + 0.5 * late)
        return late
