"""Concurrency over real gRPC: one order per room, exactly-once delivery, churn."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from hello_server import ChatServer
from tests.support import within
from tests.support.calls import (
    JoinCall,
    hub_until,
    join_request,
    joined,
    open_stub,
    read_messages,
    send,
)
from tests.support.redis import BOTH

BACKENDS = BOTH

if TYPE_CHECKING:
    from tests.support.calls import Stub


class SendCounter:
    """Counts a sequential sender's started sends; lets others wait for a count."""

    def __init__(self) -> None:
        self.started = 0
        self._changed = asyncio.Condition()

    async def start_one(self) -> None:
        async with self._changed:
            self.started += 1
            self._changed.notify_all()

    async def wait_for(self, count: int) -> None:
        async with self._changed:
            await within(self._changed.wait_for(lambda: self.started >= count))


async def seqs_until(call: JoinCall, last: int) -> list[int]:
    """Read a stream's seqs from whatever comes first up to ``last``."""
    first = (await read_messages(call, 1))[0].seq
    rest = await read_messages(call, last - first)
    return [first, *(m.seq for m in rest)]


class TestOneOrder:
    async def test_concurrent_senders_give_every_receiver_one_identical_order(
        self, server: ChatServer, stub: Stub
    ) -> None:
        """3 senders x 5 receivers: one order everywhere, each message once, senders' order kept."""
        senders, receivers, per_sender = 3, 5, 200
        total = senders * per_sender
        calls = [await joined(stub, "busy", f"reader{i}") for i in range(receivers)]
        readers = [asyncio.create_task(read_messages(call, total)) for call in calls]

        async def sender(index: int) -> list[int]:
            async with open_stub(server.address) as own:
                return [
                    (await send(own, "busy", f"sender{index}", f"{index}:{n}")).seq
                    for n in range(per_sender)
                ]

        reply_seqs = await within(asyncio.gather(*(sender(i) for i in range(senders))))
        received = await within(asyncio.gather(*readers))

        orders = [[(m.id, m.message) for m in messages] for messages in received]
        for order in orders[1:]:
            assert order == orders[0], "two receivers saw different orders"
        for messages in received:
            assert [m.seq for m in messages] == list(range(1, total + 1))
        expected = {(f"sender{i}", f"{i}:{n}") for i in range(senders) for n in range(per_sender)}
        assert len(orders[0]) == total
        assert set(orders[0]) == expected, "a message was lost or duplicated"
        by_seq = {m.seq: m for m in received[0]}
        for index, seqs in enumerate(reply_seqs):
            # Each sender waited for each reply: its messages keep their order...
            assert seqs == sorted(seqs)
            texts = [m.message for _, m in sorted(by_seq.items()) if m.id == f"sender{index}"]
            assert texts == [f"{index}:{n}" for n in range(per_sender)]
            # ...and the seq in each reply is the one its message was delivered with.
            assert [by_seq[seq].message for seq in seqs] == texts
        for call in calls:
            call.cancel()

    async def test_members_registered_before_a_send_returned_receive_it_exactly_once(
        self, server: ChatServer, stub: Stub
    ) -> None:
        """Members joining mid-stream get every message sent after their ack, no gap, no repeat."""
        total, joiners = 300, 10
        anchor = await joined(stub, "live", "anchor")  # keeps the room alive from seq 1
        counter = SendCounter()
        all_joined = asyncio.Event()

        async def sender() -> None:
            async with open_stub(server.address) as own:
                for n in range(total):
                    if n == total - 10:  # however slow the joins, every joiner gets some
                        await within(all_joined.wait())
                    await counter.start_one()
                    assert (await send(own, "live", "talker", str(n))).seq == n + 1

        sending = asyncio.create_task(sender())
        late: list[tuple[int, asyncio.Task[list[int]]]] = []
        for j in range(joiners):
            await counter.wait_for(j * total // joiners)
            call = await joined(stub, "live", f"late{j}")
            # Every send started from here on returns after this member registered.
            must_start_by = counter.started + 1
            late.append((must_start_by, asyncio.create_task(seqs_until(call, total))))
        all_joined.set()
        await within(sending)

        for must_start_by, reading in late:
            seqs = await within(reading)
            assert seqs[0] <= must_start_by, f"missed messages sent after the ack: {seqs[:3]}"
            assert seqs == list(range(seqs[0], total + 1)), "a gap or a repeat"
        assert [m.seq for m in await read_messages(anchor, total)] == list(range(1, total + 1))
        anchor.cancel()


class TestChurn:
    async def test_concurrent_joins_and_cancels_while_sending_leave_no_trace(
        self, server: ChatServer, stub: Stub
    ) -> None:
        """50 tasks joining and leaving 10 times each during sends end with no rooms or members."""
        tasks, rounds = 50, 10
        anchor = await joined(stub, "churn", "anchor")
        done = asyncio.Event()
        sent: list[int] = []

        async def sender() -> None:
            async with open_stub(server.address) as own:
                while not done.is_set():
                    sent.append((await send(own, "churn", "talker", "tick")).seq)

        async def churner(index: int, own: Stub) -> None:
            for n in range(rounds):
                mode = (index + n) % 3
                if mode == 0:  # leave without waiting for the acknowledgement
                    own.Join(join_request("churn", f"c{index}")).cancel()
                    continue
                call = await joined(own, "churn", f"c{index}")
                if mode == 2:  # get a message first
                    await read_messages(call, 1)
                call.cancel()

        sending = asyncio.create_task(sender())
        async with open_stub(server.address) as a, open_stub(server.address) as b:
            await within(asyncio.gather(*(churner(i, (a, b)[i % 2]) for i in range(tasks))))
        done.set()
        await within(sending)

        # The anchor, a member throughout, got every message once and in order.
        assert [m.seq for m in await read_messages(anchor, len(sent))] == sent
        assert sent == list(range(1, len(sent) + 1))
        await hub_until(server, lambda: server.hub.member_count == 1)
        anchor.cancel()
        await hub_until(server, lambda: server.hub.room_count == 0)
        assert server.hub.member_count == 0
