"""Hub: rooms, membership, ordering and fan-out, tested without gRPC."""

from __future__ import annotations

import asyncio
import time

import pytest

from hello_server.hub import (
    Catchup,
    Envelope,
    HistoryLimits,
    Hub,
    HubClosed,
    Member,
    Presence,
    PresenceChange,
    QueueLimits,
    RoomNotFound,
)
from hello_server.mailbox import CloseReason, MailboxClosed
from hello_server.memory import MemoryBudget
from tests.support import within


class RecordingEncoder:
    """An `Encoder` that remembers every envelope and every bytes object it returned."""

    def __init__(self, padding: int = 0) -> None:
        self.envelopes: list[Envelope] = []
        self.payloads: list[bytes] = []
        self._padding = padding

    def __call__(self, envelope: Envelope) -> bytes:
        self.envelopes.append(envelope)
        # A fresh object per call, never an interned constant, so `is` means "the same encode".
        payload = b"%d:%s:" % (envelope.seq, envelope.text.encode()) + b"." * self._padding
        self.payloads.append(payload)
        return payload


ROOMY = QueueLimits(max_messages=1000, max_bytes=1 << 20)


@pytest.fixture
def encoder() -> RecordingEncoder:
    return RecordingEncoder()


@pytest.fixture
def hub(encoder: RecordingEncoder) -> Hub:
    return Hub(encoder, ROOMY)


def queued(member: Member) -> list[bytes]:
    """Everything waiting in a member's mailbox, removed from it as a reader that wrote it."""
    batch = member.mailbox.take_nowait(1 << 30)
    member.mailbox.wrote(shared=sum(map(len, batch)))
    return batch


def close_cause(member: Member) -> MailboxClosed:
    """Why the member's mailbox was closed: what its reader's next take() raises."""
    assert member.mailbox.closed
    with pytest.raises(MailboxClosed) as closed:
        member.mailbox.wait().send(None)  # a closed mailbox raises before suspending
    return closed.value


def assert_evicted(member: Member) -> MailboxClosed:
    """The member's mailbox was closed by eviction; return the close cause."""
    cause = close_cause(member)
    assert cause.reason is CloseReason.EVICTED
    return cause


class TestMembership:
    def test_join_creates_the_room_and_registers_the_member(self, hub: Hub) -> None:
        """The first join creates the room; each join is a member with its user, name and room."""
        assert not hub.has_room("lobby")
        member = hub.join("lobby", "alice", "Alice")
        assert hub.has_room("lobby")
        assert (member.room_id, member.user_id, member.name) == ("lobby", "alice", "Alice")
        assert list(hub.members("lobby")) == [member]
        assert (hub.room_count, hub.member_count) == (1, 1)

    def test_same_user_may_join_several_times_as_distinct_members(self, hub: Hub) -> None:
        """Each join of the same user is its own member; one leaving keeps the others."""
        phone = hub.join("lobby", "alice")
        laptop = hub.join("lobby", "alice")
        assert phone.member_id != laptop.member_id
        assert hub.member_count == 2
        hub.leave(phone)
        assert list(hub.members("lobby")) == [laptop]

    def test_leave_is_idempotent(self, hub: Hub) -> None:
        """Leaving twice is harmless and does not disturb other members."""
        alice = hub.join("lobby", "alice")
        bob = hub.join("lobby", "bob")
        hub.leave(alice)
        hub.leave(alice)
        assert list(hub.members("lobby")) == [bob]
        assert hub.member_count == 1

    def test_last_leave_deletes_the_room(self, hub: Hub) -> None:
        """The room exists while it has members and goes with the last one."""
        alice = hub.join("lobby", "alice")
        bob = hub.join("lobby", "bob")
        hub.leave(alice)
        assert hub.has_room("lobby")
        hub.leave(bob)
        assert not hub.has_room("lobby")
        assert (hub.room_count, hub.member_count) == (0, 0)
        assert list(hub.members("lobby")) == []

    def test_stale_leave_does_not_touch_a_recreated_room(self, hub: Hub) -> None:
        """A late leave of an old member does not remove a new member of a room with the same id."""
        old = hub.join("lobby", "alice")
        hub.leave(old)
        new = hub.join("lobby", "alice")
        hub.leave(old)
        assert list(hub.members("lobby")) == [new]

    def test_rooms_are_independent(self, hub: Hub) -> None:
        """Members of one room do not receive another room's messages."""
        alice = hub.join("a", "alice")
        bob = hub.join("b", "bob")
        hub.publish("a", "alice", "for a")
        assert len(queued(alice)) == 1
        assert queued(bob) == []


class TestPublish:
    def test_publish_to_a_missing_room_raises_room_not_found(self, hub: Hub) -> None:
        """Publishing where nobody joined raises RoomNotFound naming the room."""
        with pytest.raises(RoomNotFound, match="'nowhere' does not exist") as missing:
            hub.publish("nowhere", "alice", "hello?")
        assert missing.value.room_id == "nowhere"

    def test_publish_to_a_deleted_room_raises_room_not_found(self, hub: Hub) -> None:
        """Once the last member left, the room is gone for publishers too."""
        hub.leave(hub.join("lobby", "alice"))
        with pytest.raises(RoomNotFound):
            hub.publish("lobby", "alice", "anyone?")

    def test_envelope_carries_room_sender_text_seq_and_server_time(self, hub: Hub) -> None:
        """The returned envelope carries the room, sender, text, seq and the current time."""
        hub.join("lobby", "alice")
        before = time.time_ns()
        envelope = hub.publish("lobby", "bob", "hi")
        after = time.time_ns()
        assert (envelope.room_id, envelope.sender_id, envelope.text) == ("lobby", "bob", "hi")
        assert envelope.seq == 1
        assert before <= envelope.timestamp_ns <= after

    def test_seq_starts_at_one_per_room_and_restarts_for_a_recreated_room(self, hub: Hub) -> None:
        """Each new room numbers from 1; a room deleted and created again starts over."""
        alice = hub.join("a", "alice")
        hub.join("b", "bob")
        assert [hub.publish("a", "x", str(i)).seq for i in range(3)] == [1, 2, 3]
        assert hub.publish("b", "x", "first in b").seq == 1
        hub.leave(alice)
        hub.join("a", "carol")
        assert hub.publish("a", "x", "again").seq == 1

    def test_one_encode_per_publish_and_the_same_bytes_for_every_member(
        self, hub: Hub, encoder: RecordingEncoder
    ) -> None:
        """Each publish encodes once and queues that very bytes object for every member."""
        members = [hub.join("lobby", f"user{i}") for i in range(5)]
        hub.join("elsewhere", "zed")
        hub.publish("lobby", "user0", "one")
        hub.publish("lobby", "user1", "two")
        assert len(encoder.payloads) == 2
        for member in members:
            got = queued(member)
            assert len(got) == 2
            assert all(a is b for a, b in zip(got, encoder.payloads, strict=True))

    def test_every_member_gets_every_message_in_publish_order(
        self, hub: Hub, encoder: RecordingEncoder
    ) -> None:
        """All members see the same sequence of payloads, in the order they were published."""
        members = [hub.join("lobby", f"user{i}") for i in range(3)]
        for i in range(20):
            hub.publish("lobby", f"user{i % 3}", f"text {i}")
        assert [e.seq for e in encoder.envelopes] == list(range(1, 21))
        for member in members:
            assert queued(member) == encoder.payloads

    def test_a_member_joining_later_gets_only_later_messages(self, hub: Hub) -> None:
        """Membership starts at join: nothing published before it is delivered."""
        alice = hub.join("lobby", "alice")
        hub.publish("lobby", "alice", "before")
        bob = hub.join("lobby", "bob")
        hub.publish("lobby", "alice", "after")
        assert len(queued(alice)) == 2
        assert [p.split(b":")[1] for p in queued(bob)] == [b"after"]


class TestEviction:
    def test_overflow_by_count_evicts_only_that_member(self, encoder: RecordingEncoder) -> None:
        """A member with max_messages waiting is evicted on the next publish; readers go on."""
        hub = Hub(encoder, QueueLimits(max_messages=3, max_bytes=1 << 20))
        slow = hub.join("lobby", "slow")
        fast = hub.join("lobby", "fast")
        received: list[bytes] = []
        for i in range(3):
            hub.publish("lobby", "fast", str(i))
            received += queued(fast)
        assert not slow.mailbox.closed
        hub.publish("lobby", "fast", "overflow")  # the 4th message for slow
        received += queued(fast)
        closed = assert_evicted(slow)
        assert "too slow" in closed.detail
        assert list(hub.members("lobby")) == [fast]
        assert not fast.mailbox.closed
        assert received == encoder.payloads
        hub.publish("lobby", "fast", "still works")
        assert queued(fast) == [encoder.payloads[-1]]

    def test_overflow_by_bytes_evicts_only_that_member(self) -> None:
        """A member whose queued bytes would pass max_bytes is evicted, though under the count."""
        encoder = RecordingEncoder(padding=400)
        hub = Hub(encoder, QueueLimits(max_messages=1000, max_bytes=1000))
        slow = hub.join("lobby", "slow")
        fast = hub.join("lobby", "fast")
        hub.publish("lobby", "fast", "a")
        hub.publish("lobby", "fast", "b")  # ~810 bytes queued for slow
        assert not slow.mailbox.closed
        assert len(queued(fast)) == 2
        hub.publish("lobby", "fast", "c")  # would pass 1000 bytes for slow
        assert_evicted(slow)
        assert list(hub.members("lobby")) == [fast]
        assert queued(fast) == [encoder.payloads[-1]]

    def test_evicting_the_last_member_deletes_the_room(self, encoder: RecordingEncoder) -> None:
        """If the evicted member was the room's only member, the room is deleted."""
        hub = Hub(encoder, QueueLimits(max_messages=1, max_bytes=1 << 20))
        only = hub.join("lobby", "alone")
        envelope = hub.publish("lobby", "alone", "1")
        assert envelope.seq == 1
        hub.publish("lobby", "alone", "2")  # returns: eviction is not an error for the sender
        assert_evicted(only)
        assert not hub.has_room("lobby")
        assert (hub.room_count, hub.member_count) == (0, 0)

    def test_eviction_message_says_the_member_was_too_slow(self, encoder: RecordingEncoder) -> None:
        """The close detail tells a person what happened and what to do."""
        hub = Hub(encoder, QueueLimits(max_messages=1, max_bytes=1 << 20))
        slow = hub.join("lobby", "slow")
        hub.join("lobby", "other")
        hub.publish("lobby", "other", "1")
        hub.publish("lobby", "other", "2")
        detail = assert_evicted(slow).detail
        assert "too slow" in detail
        assert "'lobby'" in detail
        assert "reconnect" in detail


class TestMemoryBudget:
    def test_a_payload_shared_by_a_room_counts_once(self) -> None:
        """A 1 MiB message queued for 1,000 members pins 1 MiB, and no budget of 2 MiB evicts."""
        encoder = RecordingEncoder(padding=1 << 20)
        budget = MemoryBudget(total_bytes=2 << 20, connection_bytes=2 << 20)
        hub = Hub(encoder, QueueLimits(max_messages=10, max_bytes=2 << 20), budget)
        members = [hub.join("big", f"u{i}", connection=f"c{i}") for i in range(1000)]
        hub.publish("big", "u0", "hello")
        [payload] = encoder.payloads
        usage = hub.memory_usage()
        assert usage.total == len(payload)
        assert usage.largest_connection[1] == len(payload)
        assert not any(m.mailbox.closed for m in members)

    def test_past_the_server_budget_the_member_holding_most_is_evicted(self) -> None:
        """The server budget evicts the worst offender first, with a reason, and only it."""
        encoder = RecordingEncoder(padding=1000)
        evicted: list[Member] = []
        budget = MemoryBudget(total_bytes=5000, connection_bytes=5000)
        hub = Hub(encoder, ROOMY, budget, on_evict=evicted.append)
        worst = hub.join("a", "worst", connection="c1")
        other = hub.join("b", "other", connection="c2")
        for text in ("1", "2", "3"):
            hub.publish("a", "x", text)
        hub.publish("b", "x", "4")
        assert not evicted
        hub.publish("b", "x", "5")  # 5 x ~1005 bytes > 5000
        assert evicted == [worst]
        detail = assert_evicted(worst).detail
        assert "server's memory" in detail
        assert "'a'" in detail
        assert not other.mailbox.closed
        assert hub.memory_usage().total == other.mailbox.pending_bytes < 5000

    def test_past_the_connection_budget_only_that_connection_loses_a_stream(self) -> None:
        """A connection over its budget loses its largest stream; another connection keeps its."""
        encoder = RecordingEncoder(padding=1000)
        budget = MemoryBudget(total_bytes=1 << 20, connection_bytes=3000)
        hub = Hub(encoder, ROOMY, budget)
        stalled = [hub.join(f"r{i}", "zero", connection="zero-window") for i in range(3)]
        reader = hub.join("r0", "reader", connection="healthy")
        hub.publish("r0", "x", "first")
        hub.publish("r1", "x", "second")
        queued(reader)
        hub.publish("r2", "x", "third")  # the stalled connection now holds 3 x ~1005
        closed = [m for m in stalled if m.mailbox.closed]
        assert len(closed) == 1
        assert "this connection" in assert_evicted(closed[0]).detail
        assert not reader.mailbox.closed
        usage = hub.memory_usage()
        assert usage.by_connection["zero-window"] <= 3000

    def test_a_write_in_progress_counts_until_the_stream_leaves(self) -> None:
        """Bytes an evicted member's reader still holds count in the budget until leave()."""
        encoder = RecordingEncoder(padding=1000)
        budget = MemoryBudget(total_bytes=2500, connection_bytes=2500)
        hub = Hub(encoder, ROOMY, budget)
        parked = hub.join("a", "parked", connection="c1")
        hub.publish("a", "x", "1")
        [taken] = parked.mailbox.take_nowait(10)  # its reader is stuck writing this one
        hub.publish("a", "x", "2")
        hub.publish("a", "x", "3")  # over 2500 counting what is being written
        assert_evicted(parked)
        assert hub.evicted_count == 1
        assert hub.memory_usage().total == len(taken)
        hub.leave(parked)
        assert (hub.evicted_count, hub.memory_usage().total) == (0, 0)


class TestClose:
    def test_close_ends_every_mailbox_with_shutdown(self, hub: Hub) -> None:
        """close() closes every member's mailbox in every room with SHUTDOWN."""
        members = [hub.join(room, user) for room in ("a", "b") for user in ("x", "y")]
        hub.publish("a", "x", "queued, then dropped")
        hub.close()
        for member in members:
            cause = close_cause(member)
            assert cause.reason is CloseReason.SHUTDOWN
            assert cause.detail == "server shutting down"

    def test_closed_hub_refuses_joins_and_publishes(self, hub: Hub) -> None:
        """After close(), join and publish raise HubClosed, even for an existing room."""
        member = hub.join("lobby", "alice")
        hub.close()
        with pytest.raises(HubClosed, match="server shutting down"):
            hub.join("lobby", "bob")
        with pytest.raises(HubClosed):
            hub.join("new room", "bob")
        with pytest.raises(HubClosed):
            hub.publish("lobby", "alice", "hello")
        hub.leave(member)  # streams ending during the drain still leave cleanly
        assert hub.member_count == 0


class TestWaitUntil:
    async def test_returns_at_once_when_the_predicate_already_holds(self, hub: Hub) -> None:
        """wait_until does not wait for a change if the condition is already true."""
        await within(hub.wait_until(lambda: hub.room_count == 0))

    async def test_wakes_on_join_and_leave(self, hub: Hub) -> None:
        """wait_until re-checks after each join and leave, and returns once the predicate holds."""
        loop = asyncio.get_running_loop()
        loop.call_soon(hub.join, "lobby", "alice")
        await within(hub.wait_until(lambda: hub.has_room("lobby")))
        member = next(hub.members("lobby"))
        loop.call_soon(hub.leave, member)
        await within(hub.wait_until(lambda: not hub.has_room("lobby")))

    async def test_keeps_waiting_through_changes_that_do_not_satisfy_it(self, hub: Hub) -> None:
        """Several waiters each wake only when their own condition holds."""
        two = asyncio.create_task(hub.wait_until(lambda: hub.member_count >= 2))
        three = asyncio.create_task(hub.wait_until(lambda: hub.member_count >= 3))
        hub.join("lobby", "a")
        hub.join("lobby", "b")
        await within(two)
        assert not three.done()
        hub.join("lobby", "c")
        await within(three)

    async def test_wakes_on_eviction(self, encoder: RecordingEncoder) -> None:
        """An eviction is a leave: waiters on membership see it."""
        hub = Hub(encoder, QueueLimits(max_messages=1, max_bytes=1 << 20))
        hub.join("lobby", "slow")
        asyncio.get_running_loop().call_soon(hub.publish, "lobby", "x", "1")
        asyncio.get_running_loop().call_soon(hub.publish, "lobby", "x", "2")
        await within(hub.wait_until(lambda: hub.member_count == 0))


class TestHistoryAndPresence:
    """Issue 8 in the hub alone: history bounds, the replay bound credit, presence evictions."""

    def test_history_holds_the_members_own_payload_objects(self, encoder: RecordingEncoder) -> None:
        hub = Hub(encoder, ROOMY)
        hub.join("lobby", "ann")
        for n in range(3):
            hub.publish("lobby", "ann", str(n))
        late = hub.enter("lobby", "bob", catchup=Catchup(history=2))
        replay = queued(late.member)
        assert late.seq == 3
        assert replay == encoder.payloads[1:]
        assert all(a is b for a, b in zip(replay, encoder.payloads[1:], strict=True))  # no copies

    def test_a_replay_does_not_shrink_the_live_bound(self, encoder: RecordingEncoder) -> None:
        """After its replay is taken, a member may again queue its full bound of live messages."""
        hub = Hub(encoder, QueueLimits(max_messages=2, max_bytes=1 << 20))
        anchor = hub.join("lobby", "anchor")
        for n in range(2):
            hub.publish("lobby", "anchor", str(n))
        queued(anchor)
        late = hub.enter("lobby", "bob", catchup=Catchup(history=5)).member
        hub.publish("lobby", "anchor", "live1")  # 3 queued, bound 2 + replay 2
        assert len(queued(late)) == 3
        queued(anchor)
        hub.publish("lobby", "anchor", "live2")
        hub.publish("lobby", "anchor", "live3")
        assert not late.mailbox.closed
        hub.publish("lobby", "anchor", "live4")  # the third live one waiting: past the bound
        assert_evicted(late)

    def test_a_watcher_evicted_by_an_announcement_leaves_the_joiner_registered(
        self, encoder: RecordingEncoder
    ) -> None:
        hub = Hub(encoder, QueueLimits(max_messages=1, max_bytes=1 << 20), encode_presence=repr_b)
        watcher = hub.enter("lobby", "w", presence=True).member
        hub.publish("lobby", "w", "fills the watcher's one slot")
        comer = hub.enter("lobby", "bob", presence=True).member  # JOINED does not fit: evicted
        assert_evicted(watcher)
        assert [m.user_id for m in hub.members("lobby")] == ["bob"]
        assert [p.user_id for p in hub.presence("lobby")] == ["bob"]
        assert not comer.mailbox.closed

    def test_presence_is_per_user_and_not_for_the_arrival_itself(
        self, encoder: RecordingEncoder
    ) -> None:
        hub = Hub(encoder, ROOMY, encode_presence=repr_b)
        watcher = hub.enter("lobby", "w", presence=True).member
        one = hub.join("lobby", "bob", "Bob")
        two = hub.join("lobby", "bob", "Bob")
        assert queued(watcher) == [b"bob+"]
        hub.leave(one)
        assert queued(watcher) == []
        hub.leave(two)
        assert queued(watcher) == [b"bob-"]

    def test_a_users_presence_keeps_its_first_sessions_name_and_arrival(
        self, encoder: RecordingEncoder
    ) -> None:
        """Later sessions, and the first one leaving, change neither the name nor the since."""
        changes: list[PresenceChange] = []

        def record(change: PresenceChange) -> bytes:
            changes.append(change)
            return b"presence"

        hub = Hub(encoder, ROOMY, encode_presence=record)
        hub.enter("lobby", "w", presence=True)
        one = hub.join("lobby", "bob", "Bob")
        [arrival] = changes
        bob = Presence("bob", "Bob", 1, arrival.timestamp_ns)
        assert hub.presence("lobby")[1] == bob
        two = hub.join("lobby", "bob", "Robert")
        assert hub.presence("lobby")[1] == Presence("bob", "Bob", 2, arrival.timestamp_ns)
        hub.leave(one)
        assert hub.presence("lobby")[1] == bob
        three = hub.join("lobby", "bob", "Bobby")
        hub.leave(two)
        hub.leave(three)
        assert [(c.user_id, c.name, c.joined) for c in changes] == [
            ("bob", "Bob", True),
            ("bob", "Bob", False),
        ]
        assert [p.user_id for p in hub.presence("lobby")] == ["w"]

    def test_a_single_sessions_departure_carries_its_name(self, encoder: RecordingEncoder) -> None:
        changes: list[PresenceChange] = []

        def record(change: PresenceChange) -> bytes:
            changes.append(change)
            return b"presence"

        hub = Hub(encoder, ROOMY, encode_presence=record)
        hub.enter("lobby", "w", presence=True)
        hub.leave(hub.join("lobby", "ann", "Ann"))
        assert [(c.user_id, c.name, c.joined) for c in changes] == [
            ("ann", "Ann", True),
            ("ann", "Ann", False),
        ]

    async def test_empty_rooms_are_kept_for_the_ttl_then_freed(
        self, encoder: RecordingEncoder
    ) -> None:
        hub = Hub(encoder, ROOMY, room_ttl=0.01)
        for n in range(500):
            member = hub.join(f"r{n}", "ann")
            hub.publish(f"r{n}", "ann", "hi")
            hub.leave(member)
        assert (hub.room_count, hub.member_count) == (500, 0)
        with pytest.raises(RoomNotFound):
            hub.publish("r0", "ann", "nobody is here")
        await within(hub.wait_until(lambda: hub.room_count == 0))


def repr_b(change: PresenceChange) -> bytes:
    return f"{change.user_id}{'+' if change.joined else '-'}".encode()


def test_history_drops_its_oldest_and_stays_compact(encoder: RecordingEncoder) -> None:
    """Past its count bound the history keeps exactly the latest; dropped slots are reclaimed."""
    hub = Hub(encoder, ROOMY, history=HistoryLimits(max_messages=10, max_bytes=1 << 20))
    hub.join("lobby", "ann")
    for n in range(1000):
        hub.publish("lobby", "ann", str(n))
        late = hub.enter("lobby", "bob", catchup=Catchup(history=100))
        assert queued(late.member) == encoder.payloads[-10:]
        hub.leave(late.member)
    room = hub._rooms["lobby"]  # the list itself: it must not grow with the message count
    assert len(room.history) <= 2 * 10 + 17


class TestHistoryBudget:
    """Issue 8, "Memory stays bounded": all rooms' histories together stay under a budget."""

    @staticmethod
    def fill(hub: Hub, room: str, count: int, size: int) -> Member:
        """Join ``room``, publish ``count`` messages of ``size`` characters; return the member."""
        member = hub.join(room, "ann")
        for _ in range(count):
            hub.publish(room, "ann", "x" * size)
        return member

    def test_the_total_never_exceeds_the_budget_across_many_rooms(
        self, encoder: RecordingEncoder
    ) -> None:
        budget = 20_000
        hub = Hub(encoder, ROOMY, history=HistoryLimits(50, 4096), history_budget=budget)
        for n in range(200):
            hub.join(f"r{n}", "ann")
        most = 0
        for turn in range(20):
            for n in range(200):
                hub.publish(f"r{n}", "ann", "x" * (n % 40 + turn))
                assert hub.history_bytes <= budget
                most = max(most, hub.history_bytes)
        assert most > budget * 7 // 8  # the budget was reached, so it was enforced
        assert hub.history_bytes == hub.memory_usage().history  # the running total is exact

    def test_the_largest_history_is_trimmed_first(self, encoder: RecordingEncoder) -> None:
        hub = Hub(encoder, ROOMY, history=HistoryLimits(500, 1 << 20), history_budget=10_000)
        self.fill(hub, "big", 40, 200)  # ~8.2 KB
        self.fill(hub, "small", 10, 10)  # ~150 bytes
        small = hub._rooms["small"]
        kept, small_bytes = small.kept, small.history_bytes
        self.fill(hub, "medium", 10, 200)  # passes 10,000: "big" pays
        big, medium = hub._rooms["big"], hub._rooms["medium"]
        assert hub.history_bytes <= 10_000
        assert (small.kept, small.history_bytes) == (kept, small_bytes)
        assert medium.kept == 10
        assert 0 < big.kept < 40
        late = hub.enter("big", "bob", catchup=Catchup(history=100))
        assert queued(late.member) == big.latest(big.kept)  # the latest, so the oldest went

    def test_a_resume_into_trimmed_history_is_not_recovered(
        self, encoder: RecordingEncoder
    ) -> None:
        hub = Hub(encoder, ROOMY, history=HistoryLimits(500, 1 << 20), history_budget=10_000)
        self.fill(hub, "lobby", 40, 200)
        self.fill(hub, "other", 10, 200)  # passes the budget: "lobby" loses its oldest
        room = hub._rooms["lobby"]
        epoch, first_kept = room.epoch, room.last_seq - room.kept + 1
        assert first_kept > 1
        gone = hub.enter("lobby", "bob", catchup=Catchup(since_seq=first_kept - 2, epoch=epoch))
        assert gone.recovered is False
        assert queued(gone.member) == []
        back = hub.enter("lobby", "cy", catchup=Catchup(since_seq=first_kept - 1, epoch=epoch))
        assert back.recovered is True
        assert queued(back.member) == encoder.payloads[first_kept - 1 : 40]

    def test_the_total_returns_to_zero_when_rooms_are_freed(
        self, encoder: RecordingEncoder
    ) -> None:
        hub = Hub(encoder, ROOMY, history_budget=1 << 20)
        members = [self.fill(hub, f"r{n}", 5, 20) for n in range(50)]
        assert hub.history_bytes > 0
        for member in members:
            hub.leave(member)
        assert (hub.room_count, hub.history_bytes) == (0, 0)

    async def test_the_total_returns_to_zero_when_retained_rooms_expire(
        self, encoder: RecordingEncoder
    ) -> None:
        hub = Hub(encoder, ROOMY, room_ttl=0.01, history_budget=1 << 20)
        members = [self.fill(hub, f"r{n}", 5, 20) for n in range(50)]
        for member in members:
            hub.leave(member)
        assert hub.history_bytes == hub.memory_usage().history > 0  # kept for the TTL
        await within(hub.wait_until(lambda: hub.room_count == 0))
        assert hub.history_bytes == 0
