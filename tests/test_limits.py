"""Per-user limits on real servers: send rate, streams and rooms per user, concurrent RPCs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from hello_protocol import hello_pb2 as pb
from hello_protocol.wire import EPOCH_HEADER, RETRY_AFTER_HEADER
from hello_server import ChatServer, ServerConfig, run_server
from hello_server.limits import LimitExceeded, SendRate, UserLimits, UserStreams
from tests.support import TIMEOUT, within
from tests.support.calls import (
    final_status,
    hub_until,
    joined,
    member,
    open_stub,
    receive,
    rpc_error,
    send,
    subscribed,
)

if TYPE_CHECKING:
    from tests.support.calls import JoinCall, Stub

RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


class Clock:
    """A clock the test moves by hand (the buckets' time source)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestSendRate:
    def test_a_burst_then_one_message_per_interval(self) -> None:
        clock = Clock()
        rate = SendRate(rate=2.0, burst=3, clock=clock)
        for _ in range(3):
            rate.take("alice")
        with pytest.raises(LimitExceeded) as refused:
            rate.take("alice")
        assert refused.value.limit == "send_rate"
        assert refused.value.retry_after == pytest.approx(0.5)
        assert "at most 2 messages per second" in refused.value.detail
        rate.take("bob")  # another user has a bucket of its own
        clock.now += 0.5
        rate.take("alice")
        with pytest.raises(LimitExceeded):
            rate.take("alice")

    def test_buckets_of_users_gone_quiet_are_freed(self) -> None:
        """100,000 user ids send once; a refill period later only the active one is kept."""
        clock = Clock()
        rate = SendRate(rate=10.0, burst=20, clock=clock)  # refills in 2 s
        for n in range(100_000):
            rate.take(f"user-{n}")
        assert len(rate) == 100_000
        clock.now += 1.0
        rate.take("active")
        clock.now += 1.5  # the others refilled; "active" has not
        rate.take("active")
        assert len(rate) == 1
        clock.now += 10
        rate.take("late")
        assert len(rate) == 1  # "active" refilled and was forgotten too

    def test_a_refused_message_spends_nothing(self) -> None:
        clock = Clock()
        rate = SendRate(rate=1.0, burst=1, clock=clock)
        rate.take("alice")
        for _ in range(10):
            with pytest.raises(LimitExceeded):
                rate.take("alice")
        clock.now += 1.0
        rate.take("alice")


class TestUserStreamCounts:
    def test_a_user_with_no_stream_left_is_forgotten(self) -> None:
        streams = UserStreams(max_streams=2, max_rooms=2)
        for n in range(1000):
            streams.admit(f"user-{n}", "r")
        assert len(streams) == 1000
        for n in range(1000):
            streams.release(f"user-{n}", "r")
        assert len(streams) == 0
        streams.admit("x", "r1")
        streams.admit("x", "r2")
        with pytest.raises(LimitExceeded):
            streams.admit("x", "r3")
        assert len(streams) == 1

    def test_counts_follow_streams_as_they_end(self) -> None:
        streams = UserStreams(max_streams=3, max_rooms=2)
        for room in ("r1", "r1", "r2"):
            streams.admit("x", room)
        with pytest.raises(LimitExceeded, match="already has 3 open"):
            streams.admit("x", "r1")
        streams.release("x", "r2")  # x: two streams, both in r1
        streams.admit("x", "r3")
        streams.release("x", "r1")  # x: r1 and r3
        with pytest.raises(LimitExceeded, match="already in 2 rooms"):
            streams.admit("x", "r4")
        streams.admit("x", "r1")  # a room it is in already
        for room in ("r3", "r1"):
            streams.release("x", room)
        streams.admit("x", "r4")  # x had one stream left, in r1
        with pytest.raises(LimitExceeded, match="already in 2 rooms"):
            streams.admit("x", "r5")
        for room in ("r4", "r1"):
            streams.release("x", room)
        assert len(streams) == 0

    def test_nothing_is_counted_with_both_caps_off(self) -> None:
        streams = UserStreams(max_streams=0, max_rooms=0)
        for _ in range(10):
            streams.admit("x", "r")
        assert len(streams) == 0


# -- on a real server --------------------------------------------------------------


def limited(**limits: Any) -> ServerConfig:
    return ServerConfig(port=0, user_limits=UserLimits(**limits))


@pytest.fixture
async def other_stub(server: ChatServer) -> AsyncIterator[Stub]:
    """A stub on a connection of its own (another client)."""
    async with open_stub(server.address) as stub:
        yield stub


class TestSendRateOnTheServer:
    @pytest.fixture
    def server_config(self) -> ServerConfig:
        # Slow enough that no token comes back while a test runs.
        return limited(send_rate=0.01, send_burst=5)

    async def test_send_message_over_the_rate_is_refused_with_a_retry_hint(
        self, server: ChatServer, stub: Stub
    ) -> None:
        call = await joined(stub, "r", "reader")
        for n in range(5):
            assert (await send(stub, "r", "alice", f"m{n}")).success
        error = await rpc_error(send(stub, "r", "alice", "one too many"))
        assert error.code() == RESOURCE_EXHAUSTED
        assert "sending too fast: at most 0.01 messages per second" in (error.details() or "")
        # grpc-stubs types metadata entries loosely; they are (key, value) pairs.
        trailers: dict[str, str] = dict(error.trailing_metadata() or ())  # type: ignore[arg-type]
        assert int(trailers[RETRY_AFTER_HEADER]) > 0
        # Another user is not affected.
        assert (await send(stub, "r", "bob", "hello")).success
        assert [m.message for m in await receive(call, 6)][-1] == "hello"
        call.cancel()

    async def test_a_flooding_sender_is_throttled_while_another_room_is_served(
        self, server: ChatServer, stub: Stub, other_stub: Stub
    ) -> None:
        """The flood's stream answers every message and stays open; the other room gets all."""
        flood_reader = await subscribed(stub, "flood", "watcher")
        calm_reader = await subscribed(other_stub, "calm", "bob")
        refused = asyncio.Event()
        go_on = asyncio.Event()

        async def flood() -> AsyncIterator[pb.Message]:
            for n in range(200):
                if n == 100:
                    await go_on.wait()  # half now, half after the calm room was served
                yield pb.Message(id="mallory", roomID="flood", message=f"f{n}")

        replies: list[pb.Exit] = []

        async def read_flood() -> None:
            async for reply in stub.SendStream(flood()):
                replies.append(reply)
                if reply.code == RESOURCE_EXHAUSTED.value[0]:
                    refused.set()

        flooding = asyncio.create_task(read_flood())
        await within(refused.wait())
        for n in range(3):
            assert (await send(other_stub, "calm", "alice", f"c{n}")).success
        # Delivered before the deadline, while the flood goes on.
        assert [m.message for m in await receive(calm_reader, 3)] == ["c0", "c1", "c2"]
        go_on.set()
        await within(flooding)
        assert len(replies) == 200
        assert [r.success for r in replies] == [True] * 5 + [False] * 195
        assert {r.code for r in replies[5:]} == {RESOURCE_EXHAUSTED.value[0]}
        assert "retry in" in replies[-1].message
        assert len(await receive(flood_reader, 5)) == 5
        flood_reader.cancel()
        calm_reader.cancel()


class TestStreamAndRoomCaps:
    @pytest.fixture
    def server_config(self) -> ServerConfig:
        return limited(max_streams_per_user=3, max_rooms_per_user=2)

    @pytest.mark.parametrize("rpc", ["Join", "Subscribe"])
    async def test_streams_per_user_refuse_then_admit_once_one_ends(
        self, server: ChatServer, stub: Stub, rpc: str
    ) -> None:
        calls = [await member(stub, rpc, room, "alice") for room in ("a", "a", "b")]
        refused = stub.Join(pb.JoinRequest(roomID="a", user=pb.User(id="alice")))
        code, detail = await final_status(refused)
        assert code == RESOURCE_EXHAUSTED
        assert (
            detail
            == "too many streams: user 'alice' already has 3 open (at most 3); close one first"
        )
        other = await member(stub, rpc, "a", "bob")  # other users are not counted with alice
        calls[0].cancel()
        await hub_until(server, lambda: server.hub.member_count == 3)
        calls.append(await member(stub, rpc, "a", "alice"))
        for call in [*calls, other]:
            call.cancel()
        await hub_until(server, lambda: server.hub.member_count == 0)
        assert len(server.guard.streams) == 0  # nothing kept for users who left

    async def test_rooms_per_user_refuse_a_third_room_not_a_second_session(
        self, server: ChatServer, stub: Stub
    ) -> None:
        in_a = await joined(stub, "a", "alice")
        in_b = await subscribed(stub, "b", "alice")
        code, detail = await final_status(
            stub.Subscribe(pb.JoinRequest(roomID="c", user=pb.User(id="alice")))
        )
        assert code == RESOURCE_EXHAUSTED
        assert (
            detail
            == "too many rooms: user 'alice' is already in 2 rooms (at most 2); leave one first"
        )
        again_in_a = await joined(stub, "a", "alice")  # a room it is in already
        in_b.cancel()
        await hub_until(server, lambda: not server.hub.has_room("b"))
        in_c = await joined(stub, "c", "alice")
        for call in (in_a, again_in_a, in_c):
            call.cancel()


class TestConcurrentRpcs:
    @pytest.fixture
    def server_config(self) -> ServerConfig:
        return ServerConfig(port=0, max_concurrent_rpcs=3)

    async def test_open_streams_count_and_refusals_free_nothing(
        self, server: ChatServer, stub: Stub
    ) -> None:
        """gRPC's cap counts open streams; refused calls must not free slots (grpc#41531)."""
        calls = [await joined(stub, "r", f"u{n}") for n in range(3)]
        for _ in range(3):
            code, detail = await final_status(
                stub.Join(pb.JoinRequest(roomID="r", user=pb.User(id="x")))
            )
            assert code == RESOURCE_EXHAUSTED
            assert "Concurrent RPC limit exceeded" in detail
        error = await rpc_error(send(stub, "r", "u0", "no room for a unary call either"))
        assert error.code() == RESOURCE_EXHAUSTED
        calls[0].cancel()
        await hub_until(server, lambda: server.hub.member_count == 2)
        # The slot is freed when gRPC's call task ends, just after the member
        # left: try until admitted (each try is a refused round trip, no sleep).
        async with asyncio.timeout(TIMEOUT):
            while (call := await admitted(stub, "r", "u3")) is None:
                pass
        code, _ = await final_status(stub.Join(pb.JoinRequest(roomID="r", user=pb.User(id="y"))))
        assert code == RESOURCE_EXHAUSTED
        for c in [*calls[1:], call]:
            c.cancel()


async def admitted(stub: Stub, room: str, user: str) -> JoinCall | None:
    """A Join stream if the server admitted it (its acknowledgement), else None."""
    call = stub.Join(pb.JoinRequest(roomID=room, user=pb.User(id=user)))
    headers = await call.initial_metadata()
    if any(key == EPOCH_HEADER for key, _ in headers):
        return call
    assert await call.code() == RESOURCE_EXHAUSTED
    return None


class RefusalLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def refusal_lines() -> Iterator[RefusalLines]:
    handler = RefusalLines()
    logger = logging.getLogger("hello_server.log_limits")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


async def test_refusals_are_logged_once_per_user_per_interval(
    refusal_lines: RefusalLines,
) -> None:
    """50 refused messages of one user: one line now, the count when the server stops."""
    config = limited(send_rate=0.01, send_burst=1)
    async with run_server(config) as server, open_stub(server.address) as stub:
        call = await joined(stub, "r", "reader")
        for user in ("mallory", "eve"):
            assert (await send(stub, "r", user, "first")).success
        for _ in range(50):
            assert (
                await rpc_error(send(stub, "r", "mallory", "more"))
            ).code() == RESOURCE_EXHAUSTED
        assert (await rpc_error(send(stub, "r", "eve", "more"))).code() == RESOURCE_EXHAUSTED
        first_lines = [line for line in refusal_lines.lines if not line[0].isdigit()]
        assert [line.split(":")[0] for line in first_lines] == [
            "message refused for user 'mallory'",
            "message refused for user 'eve'",
        ]
        call.cancel()
    counted = sum(
        int(line.split()[0])
        for line in refusal_lines.lines
        if line.split()[0].isdigit() and "user 'mallory'" in line
    )
    assert counted == 49, refusal_lines.lines
