"""LoopLag: how late the event loop runs a timer, as a measure of how busy it is.

When the loop is saturated, every ready callback waits its turn, so a short
timer fires late by about one pass over the ready queue. Subscribe streams
use that delay as the sign to write in waves (`hello_server.waves`), which
gathers larger batches exactly when writes are the bottleneck, and not at
all when the loop is idle.

It only measures while Subscribe streams are writing (each write calls
`want`): an idle server takes no timer wake-ups for it.
"""

from __future__ import annotations

import asyncio


class LoopLag:
    """A sampler of the running loop's timer lateness, in seconds."""

    def __init__(self, interval: float = 0.005, samples_per_want: int = 20) -> None:
        self._interval = interval
        self._samples_per_want = samples_per_want
        self._wanted = asyncio.Event()
        self.seconds = 0.0

    def want(self) -> None:
        """A stream is writing: measure (again) for the next few samples."""
        self._wanted.set()

    async def run(self) -> None:
        """Sample while wanted, park while not (cancel to stop)."""
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            for _ in range(self._samples_per_want):
                await self.sample()
            if not self._wanted.is_set():
                self.seconds = 0.0  # nobody is writing: there is no load to report

    async def sample(self) -> float:
        """Time one short timer; fold its lateness into ``seconds`` and return it."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.sleep(self._interval)
        late = max(0.0, loop.time() - start - self._interval)
        # Quick to rise, so a burst is caught at once; halves per quiet sample.
        self.seconds = max(late, 0.5 * self.seconds + 0.5 * late)
        return late
