"""LoopLag: the event loop's timer lateness, which Subscribe uses as its load signal."""

from __future__ import annotations

import asyncio
import time

from hello_server.loop_lag import LoopLag


def _block_loop(seconds: float) -> None:
    """Hold the event loop, as a burst of work would (the load being measured)."""
    time.sleep(seconds)


class TestLoopLag:
    async def test_a_blocked_loop_reads_as_lag(self) -> None:
        """A timer that fires after the loop was held for 30 ms reports about that lateness."""
        lag = LoopLag(interval=0.001)
        sample = asyncio.create_task(lag.sample())
        await asyncio.sleep(0)  # the sample has armed its timer
        _block_loop(0.030)
        late = await sample
        assert late >= 0.020
        assert lag.seconds >= 0.020

    async def test_lag_decays_once_the_loop_is_free(self) -> None:
        """After a spike, each prompt sample halves the reported lag."""
        lag = LoopLag(interval=0.001)
        lag.seconds = 0.040
        lates = [await lag.sample() for _ in range(3)]
        assert lag.seconds <= 0.040 / 8 + max(lates)
