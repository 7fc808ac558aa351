"""Mailbox: a member's bounded FIFO of serialised messages. No gRPC here."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from hello_server.mailbox import CloseReason, Mailbox, MailboxClosed
from tests.support import within

SUSPENDED = object()


def step(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` up to its first suspension; return the value if it finished instead.

    Lets a test prove that a coroutine *waits* without sleeping: the coroutine
    is driven by hand, so no scheduling or timing is involved. Returns
    `SUSPENDED` if it is waiting.
    """
    try:
        coro.send(None)
    except StopIteration as finished:
        return finished.value
    return SUSPENDED


class TestPut:
    def test_put_queues_in_order_and_counts_bytes(self) -> None:
        """Accepted payloads are kept in order, and their bytes are counted."""
        box = Mailbox(max_items=10, max_bytes=100)
        assert box.put(b"one")
        assert box.put(b"two!")
        assert len(box) == 2
        assert box.queued_bytes == 7
        assert box.take_nowait(10) == [b"one", b"two!"]
        assert box.queued_bytes == 0

    def test_put_refuses_past_the_count_bound_and_queues_nothing(self) -> None:
        """A put that would exceed the message count returns False and changes nothing."""
        box = Mailbox(max_items=2, max_bytes=1000)
        assert box.put(b"a")
        assert box.put(b"b")
        assert not box.put(b"c")
        assert len(box) == 2
        assert box.queued_bytes == 2

    def test_put_refuses_past_the_byte_bound_and_queues_nothing(self) -> None:
        """A put that would exceed the byte bound returns False; filling it exactly is allowed."""
        box = Mailbox(max_items=100, max_bytes=10)
        assert box.put(b"x" * 6)
        assert not box.put(b"y" * 5)
        assert box.put(b"z" * 4)  # exactly at the bound
        assert box.queued_bytes == 10
        assert box.take_nowait(10) == [b"x" * 6, b"z" * 4]


class TestTake:
    async def test_take_returns_batches_up_to_the_limit_in_order(self) -> None:
        """take() returns at most ``limit`` payloads per call, oldest first, until empty."""
        box = Mailbox(max_items=100, max_bytes=10_000)
        payloads = [f"m{i}".encode() for i in range(7)]
        for payload in payloads:
            assert box.put(payload)
        assert await within(box.take(3)) == payloads[0:3]
        assert box.queued_bytes == sum(map(len, payloads[3:]))
        assert await within(box.take(3)) == payloads[3:6]
        assert await within(box.take(3)) == payloads[6:]
        assert len(box) == 0
        assert box.queued_bytes == 0

    async def test_take_returns_everything_queued_when_under_the_limit(self) -> None:
        """A reader that fell behind gets everything queued in one batch."""
        box = Mailbox(max_items=100, max_bytes=10_000)
        for i in range(5):
            box.put(bytes([i]))
        assert await within(box.take(512)) == [bytes([i]) for i in range(5)]

    async def test_take_waits_for_a_message_and_wakes_on_put(self) -> None:
        """take() on an empty mailbox suspends, and the next put() hands it that message."""
        box = Mailbox(max_items=10, max_bytes=100)
        taking = box.take(10)
        assert step(taking) is SUSPENDED, "take() returned from an empty mailbox"
        box.put(b"hello")
        assert step(taking) == [b"hello"]

    async def test_take_frees_the_count_and_writing_frees_the_bytes(self) -> None:
        """A taken message leaves the count at once, but its bytes only once written."""
        box = Mailbox(max_items=2, max_bytes=4)
        assert box.put(b"ab")
        assert box.put(b"cd")
        assert not box.put(b"e")
        assert await within(box.take(1)) == [b"ab"]
        assert (box.queued_bytes, box.held_bytes, box.pending_bytes) == (2, 2, 4)
        assert not box.put(b"e"), "bytes the reader is still writing must count"
        box.wrote(shared=2)
        assert box.put(b"e")
        assert box.take_nowait(10) == [b"cd", b"e"]

    def test_take_stops_at_the_byte_limit_but_takes_at_least_one(self) -> None:
        """take_nowait with a byte limit returns whole messages up to it; a larger one alone."""
        box = Mailbox(max_items=100, max_bytes=10_000)
        for payload in (b"a" * 40, b"b" * 40, b"c" * 40, b"d" * 500, b"e" * 10):
            assert box.put(payload)
        assert box.take_nowait(100, byte_limit=100) == [b"a" * 40, b"b" * 40]
        assert box.take_nowait(100, byte_limit=100) == [b"c" * 40]
        assert box.take_nowait(100, byte_limit=100) == [b"d" * 500]
        assert box.take_nowait(100, byte_limit=100) == [b"e" * 10]
        assert box.held_bytes == 630

    def test_held_bytes_are_shared_until_framed_then_private_until_written(self) -> None:
        """Taken payloads count as the room's shared bytes; a frame as this member's own."""
        box = Mailbox(max_items=100, max_bytes=10_000)
        box.put(b"x" * 100)
        box.put(b"y" * 50)
        box.take_nowait(1)
        assert (box.shared_bytes, box.private_bytes) == (150, 0)
        box.framed(104)
        assert (box.shared_bytes, box.private_bytes) == (50, 104)
        box.wrote(private=104)
        assert (box.shared_bytes, box.private_bytes, box.pending_bytes) == (50, 0, 50)

    def test_close_keeps_what_the_reader_holds_until_released(self) -> None:
        """Eviction drops the queue, but a write in progress stays counted until release()."""
        box = Mailbox(max_items=100, max_bytes=10_000)
        box.put(b"x" * 100)
        box.take_nowait(1)
        box.put(b"y" * 50)
        box.close(CloseReason.EVICTED, "too slow")
        assert (box.queued_bytes, box.held_bytes) == (0, 100)
        box.release()
        assert box.pending_bytes == 0


class TestClose:
    @pytest.mark.parametrize("reason", list(CloseReason))
    async def test_close_drops_queued_messages_and_take_raises_the_reason(
        self, reason: CloseReason
    ) -> None:
        """After close(), queued messages are gone and take() raises the cause."""
        box = Mailbox(max_items=10, max_bytes=100)
        box.put(b"queued")
        box.close(reason, "why it ended")
        assert box.closed
        assert len(box) == 0
        assert box.queued_bytes == 0
        with pytest.raises(MailboxClosed) as closed:
            await within(box.take(10))
        assert closed.value.reason is reason
        assert closed.value.detail == "why it ended"

    def test_take_nowait_raises_once_closed(self) -> None:
        """A closed mailbox never hands out an empty batch: take_nowait raises the cause."""
        box = Mailbox(max_items=10, max_bytes=100)
        box.put(b"queued")
        box.close(CloseReason.SHUTDOWN, "server shutting down")
        with pytest.raises(MailboxClosed) as closed:
            box.take_nowait(10)
        assert closed.value.reason is CloseReason.SHUTDOWN

    async def test_close_wakes_a_waiting_reader(self) -> None:
        """A reader suspended in take() is woken by close() and gets MailboxClosed."""
        box = Mailbox(max_items=10, max_bytes=100)
        reader = asyncio.create_task(box.take(10))
        asyncio.get_running_loop().call_soon(box.close, CloseReason.EVICTED, "too slow")
        with pytest.raises(MailboxClosed) as closed:
            await within(reader)
        assert closed.value.reason is CloseReason.EVICTED

    async def test_close_is_idempotent_and_keeps_the_first_reason(self) -> None:
        """A second close() changes nothing: the first reason and detail stand."""
        box = Mailbox(max_items=10, max_bytes=100)
        box.close(CloseReason.EVICTED, "first")
        box.close(CloseReason.SHUTDOWN, "second")
        with pytest.raises(MailboxClosed) as closed:
            await within(box.take(1))
        assert (closed.value.reason, closed.value.detail) == (CloseReason.EVICTED, "first")
