"""Waves: the cadence Subscribe streams write in while writes load the event loop."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from hello_server import ChatServer
from hello_server.waves import Waves
from tests.support import within
from tests.support.calls import open_stub, receive, send, subscribed

if TYPE_CHECKING:
    from tests.support.calls import Stub


def _write_cost(seconds: float) -> None:
    """Hold the event loop, as a wave's writes would (the cost being measured)."""
    time.sleep(seconds)


async def _wave(waves: Waves, writers: int, cost_each: float = 0.0) -> list[float]:
    """``writers`` join the next wave and each 'writes' for ``cost_each``; their wake times."""
    loop = asyncio.get_running_loop()
    woke: list[float] = []

    async def writer() -> None:
        await waves.join()
        woke.append(loop.time())
        _write_cost(cost_each)

    await asyncio.gather(*(writer() for _ in range(writers)))
    return woke


class TestWaves:
    async def test_every_waiting_writer_goes_in_the_same_wave(self) -> None:
        """Writers that joined before the wave opened are all woken by it, in one pass."""
        loop = asyncio.get_running_loop()
        waves = Waves()
        woken = 0
        woken_by_next_pass: list[int] = []

        async def writer() -> None:
            nonlocal woken
            await waves.join()
            if not woken:  # runs in the next pass, after every wake-up of this one
                loop.call_soon(lambda: woken_by_next_pass.append(woken))
            woken += 1

        await within(asyncio.gather(*(writer() for _ in range(5))))
        assert woken_by_next_pass == [5]

    async def test_a_cheap_wave_leaves_the_loop_free_and_the_next_opens_at_once(self) -> None:
        """Writes that cost nothing to speak of do not turn waves on."""
        waves = Waves(threshold=0.010)
        await _wave(waves, 3)
        await asyncio.sleep(0)  # the wave's cost is measured after its writers
        assert not waves.busy(asyncio.get_running_loop().time())

    async def test_a_costly_wave_makes_the_next_wait_a_multiple_of_its_cost(self) -> None:
        """After a wave whose writes held the loop, the loop gets a pause before the next.

        The pause is a lower bound by design (the wave opens on a timer), so
        a slow machine can only lengthen it.
        """
        loop = asyncio.get_running_loop()
        waves = Waves(threshold=0.002, pause_factor=2.0, max_pause=1.0)
        first = await _wave(waves, 4, cost_each=0.005)  # about 20 ms of writes in one pass
        await asyncio.sleep(0)
        assert waves.busy(loop.time())
        second = await _wave(waves, 1)
        cost = 4 * 0.005
        resolution = time.get_clock_info("monotonic").resolution
        assert second[0] - first[0] >= cost + 2.0 * cost - resolution

    async def test_waves_open_at_most_once_per_min_period(self) -> None:
        """A busy wave that cost little still leaves ``min_period`` before the next opens.

        Like the pause, a lower bound (the wave opens on a timer).
        """
        loop = asyncio.get_running_loop()
        waves = Waves(threshold=0.002, pause_factor=1.0, max_pause=1.0, min_period=0.050)
        first = await _wave(waves, 1, cost_each=0.005)
        await asyncio.sleep(0)
        assert waves.busy(loop.time())
        second = await _wave(waves, 1)
        resolution = time.get_clock_info("monotonic").resolution
        assert second[0] - first[0] >= 0.050 - resolution

    async def test_the_pause_is_bounded(self) -> None:
        """However costly a wave, the next opens at most ``max_pause`` after it ended."""
        loop = asyncio.get_running_loop()
        # Unbounded, the pause would be 1e6 x 50 ms: hours.
        waves = Waves(threshold=0.002, pause_factor=1e6, max_pause=0.030)
        await _wave(waves, 1, cost_each=0.050)
        await asyncio.sleep(0)
        assert waves.busy(loop.time())
        await within(_wave(waves, 1))

    async def test_a_cancelled_writer_does_not_cancel_the_wave(self) -> None:
        """A stream that ends while waiting leaves the others' wave intact."""
        waves = Waves()
        leaving = asyncio.create_task(waves.join())
        staying = asyncio.create_task(waves.join())
        await asyncio.sleep(0)  # both are waiting
        leaving.cancel()
        await within(staying)


class TestSubscribeInWaves:
    async def test_a_saturated_loop_still_delivers_one_order_exactly_once(
        self, server: ChatServer, stub: Stub
    ) -> None:
        """With the server's loop held busy, streams write in waves and lose nothing.

        The test shares the server's event loop, so a task that holds it for
        a few ms at a time saturates it for real: the loop-lag sampler sees
        it and the Subscribe streams switch to waves.
        """
        readers, senders, per_sender = 20, 3, 15
        total = senders * per_sender
        calls = [await subscribed(stub, "busy", f"reader{i}") for i in range(readers)]
        reading = [asyncio.create_task(receive(call, total)) for call in calls]
        hogging = asyncio.create_task(_hog_the_loop())

        async def sender(index: int) -> None:
            async with open_stub(server.address) as own:
                for n in range(per_sender):
                    await send(own, "busy", f"sender{index}", f"{index}:{n}")

        try:
            await within(asyncio.gather(*(sender(i) for i in range(senders))))
            received = await within(asyncio.gather(*reading))
        finally:
            hogging.cancel()
        assert server.waves.opened > 0, "the streams never wrote in waves"
        expected = {(f"sender{i}", f"{i}:{n}") for i in range(senders) for n in range(per_sender)}
        first = [(m.id, m.message) for m in received[0]]
        assert set(first) == expected, "a message was lost or duplicated"
        for messages in received:
            assert [m.seq for m in messages] == list(range(1, total + 1))
            assert [(m.id, m.message) for m in messages] == first
        for call in calls:
            call.cancel()


async def _hog_the_loop() -> None:
    """Hold the event loop 3 ms in every pass, as a saturating load would."""
    while True:
        _write_cost(0.003)
        await asyncio.sleep(0)
