"""Several servers on one Redis: one room across processes, and its faults (issue 9).

Most tests run two or three in-process `ChatServer`s on their own ports, each
with its own hub and Redis connections, exactly as separate processes would
be; the kill -9 test runs real hello-server processes. The behaviour suite
itself runs on both backends (``BACKENDS = BOTH`` in its modules).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import grpc
import pytest
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hello_protocol import hello_pb2 as pb
from hello_protocol import hello_pb2_grpc
from hello_server import ChatServer, ServerConfig, redis_hub, run_server
from hello_server import redis_scripts as scripts
from hello_server.hub import Envelope, HistoryLimits
from hello_server.service import encode_message
from tests.support import TIMEOUT, within
from tests.support.calls import (
    EOF,
    acknowledged,
    drain,
    hub_until,
    joined,
    open_channel,
    receive,
    rpc_error,
    send,
    unbatch,
)
from tests.support.metrics import scrape, value
from tests.support.network import TcpProxy
from tests.support.processes import server_process
from tests.support.redis import EXTERNAL_URL, RedisServer, flush, redis_server

if TYPE_CHECKING:
    from tests.support.calls import Stub

JOINED = pb.PresenceEvent.JOINED
LEFT = pb.PresenceEvent.LEFT
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


RUNNING: dict[int, ChatServer] = {}  # id(stub) -> its server, for `leave`


@contextlib.asynccontextmanager
async def servers(url: str, count: int, **settings: Any) -> AsyncIterator[list[Stub]]:
    """``count`` servers on one Redis, and a stub (own connection) to each."""
    config = ServerConfig(port=0, redis_url=url, **settings)
    async with contextlib.AsyncExitStack() as stack:
        stubs = []
        for _ in range(count):
            server = await stack.enter_async_context(run_server(config))
            channel = await stack.enter_async_context(
                open_channel(server.address, own_connection=True)
            )
            stub = hello_pb2_grpc.ChatRoomStub(channel)
            RUNNING[id(stub)] = server
            stubs.append(stub)
        try:
            yield stubs
        finally:
            for stub in stubs:
                del RUNNING[id(stub)]


async def leave(stub: Stub, call: Any) -> None:
    """End a member's stream and wait until its server has removed it."""
    server = RUNNING[id(stub)]
    before = server.hub.member_count
    call.cancel()
    await hub_until(server, lambda: server.hub.member_count < before)


@contextlib.asynccontextmanager
async def relayed(url: str) -> AsyncIterator[tuple[TcpProxy, Stub, Stub]]:
    """A relay in front of Redis, a server behind it and one straight on Redis.

    Yields (relay, the relayed server's stub, the direct server's stub).
    """
    relay = TcpProxy("127.0.0.1", int(url.rsplit(":", 1)[1].split("/")[0]))
    await relay.start()
    try:
        async with (
            servers(f"redis://{relay.address}/0", 1) as (through,),
            servers(url, 1) as (direct,),
        ):
            yield relay, through, direct
    finally:
        await relay.cut()


@pytest.fixture
async def shared(redis: str) -> str:
    """The session's Redis, emptied for this test."""
    await flush(redis)
    return redis


def join(room: str, user: str) -> pb.JoinRequest:
    return pb.JoinRequest(roomID=room, user=pb.User(id=user))


async def resume_request(room: str, user: str, since: int, epoch: str) -> pb.JoinRequest:
    return pb.JoinRequest(roomID=room, user=pb.User(id=user), since_seq=since, epoch=epoch)


class TestOneRoomAcrossServers:
    async def test_one_order_exactly_once_for_members_on_three_servers(self, shared: str) -> None:
        """Senders on every server; every member anywhere sees seq 1..N once, in one order."""
        async with servers(shared, 3) as stubs:
            readers = [await joined(stub, "hall", f"r{i}") for i, stub in enumerate(stubs)]
            readers += [
                (await acknowledged(stub, "Subscribe", join("hall", f"b{i}")))[0]
                for i, stub in enumerate(stubs)
            ]
            per_sender = 40

            async def talk(stub: Stub, sender: str) -> None:
                for i in range(per_sender):
                    await send(stub, "hall", sender, f"{sender} {i}")

            await within(asyncio.gather(*(talk(stub, f"s{i}") for i, stub in enumerate(stubs))))
            total = per_sender * len(stubs)
            seen = [await receive(call, total) for call in readers]
            orders = [[(m.seq, m.id, m.message) for m in messages] for messages in seen]
            assert [seq for seq, _, _ in orders[0]] == list(range(1, total + 1))
            assert all(order == orders[0] for order in orders)
            for i in range(len(stubs)):  # each sender's own order is kept
                own = [text for _, sender, text in orders[0] if sender == f"s{i}"]
                assert own == [f"s{i} {n}" for n in range(per_sender)]
            for call in readers:
                call.cancel()

    async def test_sends_queued_together_go_in_one_script_in_call_order(self, shared: str) -> None:
        """Sends that queue before the room's send script goes share it, numbered in call order.

        One whose caller gives up before its batch goes is not sent at all;
        the history bound trims a batch as it trims single sends.
        """
        history = HistoryLimits(max_messages=3, max_bytes=1 << 20)
        config = ServerConfig(port=0, redis_url=shared, metrics_port=0, history=history)
        async with (
            run_server(config) as server,
            open_channel(server.address, own_connection=True) as channel,
        ):
            stub = hello_pb2_grpc.ChatRoomStub(channel)
            reader = await joined(stub, "batch", "reader")
            rooms = server.rooms
            assert rooms is not None
            texts = [f"m{i}" for i in range(1, 7)]
            calls = [asyncio.create_task(rooms.publish("batch", "bot", text)) for text in texts]
            # One pass of the loop, for its order, not its time: each publish
            # has queued its message, and the room's send task, which the
            # first one created, has not run yet.
            await asyncio.sleep(0)
            calls[2].cancel()
            results = await within(asyncio.gather(*calls, return_exceptions=True))
            assert isinstance(results[2], asyncio.CancelledError)
            sent = [text for i, text in enumerate(texts) if i != 2]
            accepted = [r for r in results if isinstance(r, Envelope)]
            assert [(e.seq, e.text) for e in accepted] == list(enumerate(sent, 1))
            got = await receive(reader, len(sent))
            assert [(m.seq, m.message) for m in got] == list(enumerate(sent, 1))
            samples = await scrape(server)
            assert value(samples, "hello_redis_send_seconds_count") == 1
            assert value(samples, "hello_redis_sent_messages_total") == len(sent)
            request = pb.JoinRequest(roomID="batch", user=pb.User(id="late"), history=10)
            late, _ = await acknowledged(stub, "Join", request)
            kept = await receive(late, 3)
            assert [(m.seq, m.message) for m in kept] == [(3, "m4"), (4, "m5"), (5, "m6")]
            late.cancel()
            reader.cancel()

    async def test_concurrent_sends_on_two_servers_each_get_their_own_seq(
        self, shared: str
    ) -> None:
        """A burst on both servers (batched on each): every ack names its own message's seq."""
        async with servers(shared, 2, metrics_port=0) as stubs:
            readers = [await joined(stub, "burst", f"r{i}") for i, stub in enumerate(stubs)]
            sends = [
                (stub, f"s{i}", f"s{i} {n}") for i, stub in enumerate(stubs) for n in range(50)
            ]
            acks = await within(
                asyncio.gather(*(send(stub, "burst", who, text) for stub, who, text in sends))
            )
            total = len(sends)
            text_of = {ack.seq: text for ack, (_, _, text) in zip(acks, sends, strict=True)}
            assert sorted(text_of) == list(range(1, total + 1))
            orders = [[(m.seq, m.message) for m in await receive(r, total)] for r in readers]
            assert orders[0] == sorted(text_of.items())
            assert orders[1] == orders[0]
            counted = [
                value(await scrape(RUNNING[id(stub)]), "hello_redis_sent_messages_total")
                for stub in stubs
            ]
            assert counted == [50, 50]
            for call in readers:
                call.cancel()

    async def test_the_room_ends_only_when_its_last_member_anywhere_leaves(
        self, shared: str
    ) -> None:
        async with servers(shared, 3) as (one, two, three):
            error = await rpc_error(send(three, "brief", "x", "anyone?"))
            assert error.code() is grpc.StatusCode.NOT_FOUND  # nobody anywhere
            alice = await joined(one, "brief", "alice")
            bob = await joined(two, "brief", "bob")
            assert (await send(three, "brief", "carol", "first")).seq == 1
            await leave(one, alice)
            # Sent through the server alice left: bob on the other still makes the room.
            assert (await send(one, "brief", "carol", "second")).seq == 2
            assert [m.message for m in await receive(bob, 2)] == ["first", "second"]
            await leave(two, bob)
            # Through bob's own server first: it sees its own leave.
            for stub in (two, one, three):
                error = await rpc_error(send(stub, "brief", "carol", "late"))
                assert error.code() is grpc.StatusCode.NOT_FOUND
            # Created afresh: a new epoch, seq from 1.
            again, headers = await acknowledged(one, "Join", join("brief", "dave"))
            assert headers["hello-seq"] == "0"
            assert (await send(two, "brief", "carol", "new")).seq == 1
            again.cancel()

    async def test_joins_during_a_flood_from_another_server_miss_nothing(self, shared: str) -> None:
        """Joiners arriving together while another server sends: history then live, each once."""
        async with servers(shared, 2) as (one, two):
            anchor = await joined(two, "seam", "anchor")
            total = 200

            async def flood() -> None:
                for i in range(total):
                    await send(two, "seam", "bob", f"m{i}")

            async def join_and_read(n: int) -> list[int]:
                request = pb.JoinRequest(roomID="seam", user=pb.User(id=f"j{n}"), history=500)
                call, _ = await acknowledged(one, "Subscribe" if n % 2 else "Join", request)
                seqs: list[int] = []
                async with asyncio.timeout(TIMEOUT):
                    while not seqs or seqs[-1] < total:
                        response = await call.read()
                        assert response is not EOF, "the stream ended"
                        seqs.extend(m.seq for m in unbatch(response))
                call.cancel()
                return seqs

            sending = asyncio.create_task(flood())
            results = await within(asyncio.gather(*(join_and_read(n) for n in range(8))))
            await within(sending)
            for seqs in results:
                assert seqs == list(range(1, total + 1))
            anchor.cancel()

    async def test_presence_across_servers(self, shared: str) -> None:
        """JOINED on a user's first session anywhere, LEFT on its last; Members from any server."""
        async with servers(shared, 3) as (one, two, three):
            watcher, _ = await acknowledged(
                one,
                "Subscribe",
                pb.JoinRequest(roomID="p", user=pb.User(id="w"), presence=True),
            )
            bob1 = await joined(two, "p", "bob", "Bob")
            bob2 = await joined(three, "p", "bob", "Bob")
            listing = await three.Members(pb.RoomRequest(roomID="p"), timeout=TIMEOUT)
            assert [(m.user.id, m.sessions) for m in listing.members] == [("w", 1), ("bob", 2)]
            await leave(two, bob1)
            await leave(three, bob2)
            await send(three, "p", "w", "after")
            events = await presence_until(watcher, "after")
            assert events == [("bob", "Bob", JOINED), ("bob", "Bob", LEFT)]
            listing = await two.Members(pb.RoomRequest(roomID="p"), timeout=TIMEOUT)
            assert [m.user.id for m in listing.members] == ["w"]
            watcher.cancel()

    async def test_a_member_resumes_on_another_server_without_losing_anything(
        self, shared: str
    ) -> None:
        async with servers(shared, 2) as (one, two):
            anchor = await joined(two, "move", "anchor")  # keeps the room while alice moves
            alice, headers = await acknowledged(one, "Join", join("move", "alice"))
            for i in range(5):
                await send(two, "move", "bob", f"m{i}")
            got = await receive(alice, 3)
            await leave(one, alice)
            for i in range(5, 8):  # sent while alice is away
                await send(one, "move", "bob", f"m{i}")
            request = await resume_request("move", "alice", got[-1].seq, headers["hello-epoch"])
            back, back_headers = await acknowledged(two, "Join", request)
            assert back_headers["hello-recovered"] == "true"
            await send(one, "move", "bob", "m8")
            rest = await receive(back, 6)
            assert [m.message for m in got + rest] == [f"m{i}" for i in range(9)]
            assert [m.seq for m in got + rest] == list(range(1, 10))
            back.cancel()
            anchor.cancel()

    async def test_history_and_room_ttl_are_shared(self, shared: str) -> None:
        """A room kept after its last member left is resumed through another server."""
        async with servers(shared, 2, room_ttl_seconds=60.0) as (one, two):
            alice, headers = await acknowledged(one, "Join", join("kept", "alice"))
            await send(one, "kept", "alice", "before")
            await receive(alice, 1)
            await leave(one, alice)
            error = await rpc_error(send(one, "kept", "x", "nobody is in it"))
            assert error.code() is grpc.StatusCode.NOT_FOUND
            request = pb.JoinRequest(roomID="kept", user=pb.User(id="late"), history=10)
            late, late_headers = await acknowledged(two, "Join", request)
            assert late_headers["hello-epoch"] == headers["hello-epoch"]
            assert [m.message for m in await receive(late, 1)] == ["before"]
            late.cancel()


async def presence_until(call: Any, text: str) -> list[tuple[str, str, int]]:
    """Presence events (user, name, kind) on a Subscribe stream before the message ``text``."""
    events: list[tuple[str, str, int]] = []
    async with asyncio.timeout(TIMEOUT):
        while True:
            batch = await call.read()
            assert batch is not EOF, "the stream ended"
            events += [(e.user.id, e.user.name, e.kind) for e in batch.presence]
            if any(m.message == text for m in batch.messages):
                return events


class Follower:
    """A client that reads a room and resumes (since_seq + epoch) whenever its stream ends."""

    def __init__(self, stub: Stub, room: str) -> None:
        self.stub = stub
        self.room = room
        self.seqs: list[int] = []
        self.epoch = ""
        self.failures: list[grpc.StatusCode] = []  # each one made it resume
        self.recovered: list[str] = []
        self.ready = asyncio.Event()

    async def run(self, until: int) -> None:
        while not self.seqs or self.seqs[-1] < until:
            request = pb.JoinRequest(roomID=self.room, user=pb.User(id="follower"))
            if self.epoch:
                request.epoch = self.epoch
                request.since_seq = self.seqs[-1] if self.seqs else 0
            try:
                call, headers = await acknowledged(self.stub, "Join", request)
            except grpc.aio.AioRpcError as error:
                self.failures.append(error.code())
                continue  # the backend is reconnecting; try again
            if "hello-recovered" in headers:
                self.recovered.append(headers["hello-recovered"])
            self.epoch = headers["hello-epoch"]
            self.ready.set()
            try:
                while not self.seqs or self.seqs[-1] < until:
                    response = await call.read()
                    assert response is not EOF
                    self.seqs.extend(m.seq for m in unbatch(response))
            except grpc.aio.AioRpcError as error:
                self.failures.append(error.code())
            call.cancel()


class TestFaults:
    async def test_a_dropped_pubsub_connection_never_leaves_a_silent_gap(
        self, shared: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """CLIENT KILL TYPE pubsub mid-stream: refilled from history or resumed, never a gap."""
        caplog.set_level(logging.INFO, "hello_server.redis_hub")
        async with servers(shared, 2) as (one, two):
            anchor = await joined(two, "gap", "anchor")
            follower = Follower(one, "gap")
            total = 300
            reading = asyncio.create_task(follower.run(total))
            await within(follower.ready.wait())
            admin = aioredis.Redis.from_url(shared)
            try:
                for i in range(total):
                    await send(two, "gap", "bob", f"m{i}")
                    if i in (50, 150):
                        killed = await admin.client_kill_filter(_type="pubsub")
                        assert killed >= 2  # both servers' pub/sub connections
            finally:
                await admin.aclose()
            await within(reading)
            assert follower.seqs == list(range(1, total + 1))  # each once, none missing
            assert "false" not in follower.recovered
            assert set(follower.failures) <= {grpc.StatusCode.UNAVAILABLE}
            assert "pub/sub connection to Redis lost" in caplog.text
            anchor.cancel()

    async def test_a_hung_pubsub_connection_is_found_and_refilled(
        self, shared: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A connection that stops relaying without closing: PING unanswered, reconnect, refill."""
        caplog.set_level(logging.INFO, "hello_server.redis_hub")
        async with relayed(shared) as (relay, one, two):
            anchor = await joined(two, "hung", "anchor")
            follower = Follower(one, "hung")
            reading = asyncio.create_task(follower.run(5))
            await within(follower.ready.wait())
            await relay.freeze()  # server one's connections to Redis hang from now on
            for i in range(5):
                await send(two, "hung", "bob", f"m{i}")
            await within(reading)
            # Refilled, or resumed with everything: each once, none missing.
            assert follower.seqs == [1, 2, 3, 4, 5]
            assert "false" not in follower.recovered
            assert set(follower.failures) <= {grpc.StatusCode.UNAVAILABLE}
            assert "pub/sub connection to Redis does not answer" in caplog.text
            anchor.cancel()

    async def test_a_send_on_a_hung_connection_fails_and_the_next_reconnects(
        self, shared: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The send script's own connection hangs: UNAVAILABLE at the timeout, then a new one."""
        monkeypatch.setattr(redis_hub, "COMMAND_TIMEOUT", 0.5)
        async with relayed(shared) as (relay, one, two):
            reader = await joined(two, "stuck", "reader")
            await send(one, "stuck", "bob", "m1")
            await relay.freeze()  # what server one sends to Redis from now on is held
            error = await rpc_error(send(one, "stuck", "bob", "m2"))
            assert error.code() is grpc.StatusCode.UNAVAILABLE
            assert "no reply from Redis in time" in (error.details() or "")
            assert (await send(one, "stuck", "bob", "m3")).seq == 2
            got = await receive(reader, 2)
            assert [(m.seq, m.message) for m in got] == [(1, "m1"), (2, "m3")]
            reader.cancel()

    async def test_sends_after_a_dropped_connection_are_accepted_once(self, shared: str) -> None:
        """Redis connections reset under a sender: at most one send fails; none is doubled."""
        async with relayed(shared) as (relay, one, two):
            reader = await joined(two, "reset", "reader")
            accepted = [(await send(one, "reset", "bob", "before")).seq]
            await relay.drop()
            failures = []
            async with asyncio.timeout(TIMEOUT):
                while len(accepted) < 3:
                    try:
                        ack = await send(one, "reset", "bob", f"after {len(accepted)}")
                    except grpc.aio.AioRpcError as error:
                        failures.append(error.code())
                    else:
                        accepted.append(ack.seq)
            assert failures in ([], [grpc.StatusCode.UNAVAILABLE])
            assert accepted == [1, 2, 3]
            got = await receive(reader, 3)
            assert [m.message for m in got] == ["before", "after 1", "after 2"]
            reader.cancel()

    async def test_a_message_published_alone_as_before_batching_is_delivered(
        self, shared: str
    ) -> None:
        """A server before batching publishes ``m<epoch><seq>\\n<payload>``: read at once."""
        async with servers(shared, 1) as (stub,):
            reader, headers = await acknowledged(stub, "Join", join("old", "reader"))
            await send(stub, "old", "bob", "m1")
            await receive(reader, 1)
            seq, payload = await accept_unpublished(shared, "old", "from an old server")
            client = aioredis.Redis.from_url(shared)
            try:
                message = b"m" + headers["hello-epoch"].encode() + b"%d\n" % seq + payload
                await client.publish(scripts.channel("old"), message)
            finally:
                await client.aclose()
            got = await receive(reader, 1)  # no later message needed to find it
            assert [(m.seq, m.id, m.message) for m in got] == [(2, "ghost", "from an old server")]
            reader.cancel()

    async def test_a_missed_publish_is_refilled_from_history(self, shared: str) -> None:
        """A seq that jumps (a publish this server never got) is fetched from history, in order."""
        async with servers(shared, 1) as (stub,):
            reader = await joined(stub, "g", "reader")
            await send(stub, "g", "bob", "m1")
            await receive(reader, 1)
            await accept_unpublished(shared, "g", "m2")  # seq 2: in history, never published
            await send(stub, "g", "bob", "m3")
            got = await receive(reader, 2)
            assert [(m.seq, m.message) for m in got] == [(2, "m2"), (3, "m3")]
            reader.cancel()

    async def test_a_gap_history_cannot_fill_ends_streams_for_a_resume(self, shared: str) -> None:
        """Missed and gone from history: UNAVAILABLE, and the resume says recovered=false."""
        async with servers(shared, 1) as (stub,):
            reader, headers = await acknowledged(stub, "Join", join("h", "reader"))
            await send(stub, "h", "bob", "m1")
            await receive(reader, 1)
            await accept_unpublished(shared, "h", "m2", keep=False)
            await send(stub, "h", "bob", "m3")
            messages, code, detail = await drain(reader)
            assert (messages, code) == ([], grpc.StatusCode.UNAVAILABLE)
            assert "missed messages" in detail
            request = await resume_request("h", "reader", 1, headers["hello-epoch"])
            again, again_headers = await acknowledged(stub, "Join", request)
            assert again_headers["hello-recovered"] == "false"
            again.cancel()

    @pytest.mark.skipif(bool(EXTERNAL_URL), reason="restarts its own redis-server")
    async def test_redis_restart_unavailable_then_recovery(self) -> None:
        """Redis down: health NOT_SERVING, sends UNAVAILABLE; back: SERVING, clients rejoin.

        The metrics count what happened: sends, failed commands, the
        reconnection and the room whose streams had to resume.
        """
        with own_redis() as store:
            config = ServerConfig(port=0, redis_url=store.url, metrics_port=0)
            async with (
                run_server(config) as server,
                open_channel(server.address, own_connection=True) as channel,
            ):
                stub = hello_pb2_grpc.ChatRoomStub(channel)
                health = health_pb2_grpc.HealthStub(channel)
                watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
                await health_becomes(watch, SERVING)
                member, headers = await acknowledged(stub, "Join", join("r", "alice"))
                await send(stub, "r", "bob", "before")
                await receive(member, 1)
                samples = await scrape(server)
                assert value(samples, "hello_redis_send_seconds_count") == 1
                assert value(samples, "hello_redis_send_seconds_sum") > 0
                assert value(samples, "hello_redis_errors_total") == 0
                assert value(samples, "hello_redis_pubsub_reconnects_total") == 0

                store.stop()
                await health_becomes(watch, NOT_SERVING)
                error = await rpc_error(send(stub, "r", "bob", "while down"))
                assert error.code() is grpc.StatusCode.UNAVAILABLE
                assert "chat backend unavailable" in (error.details() or "")
                error = await rpc_error(within(stub.Join(join("r", "alice")).read()))
                assert error.code() is grpc.StatusCode.UNAVAILABLE

                store.start()  # empty: the room is gone with the old Redis
                await health_becomes(watch, SERVING)
                _, code, detail = await drain(member)
                assert code is grpc.StatusCode.UNAVAILABLE, detail
                request = await resume_request("r", "alice", 1, headers["hello-epoch"])
                again, again_headers = await acknowledged(stub, "Join", request)
                assert again_headers["hello-recovered"] == "false"  # told, not silent
                assert (await send(stub, "r", "bob", "after")).seq == 1
                assert [m.message for m in await receive(again, 1)] == ["after"]
                again.cancel()
                watch.cancel()
                samples = await scrape(server)
                assert value(samples, "hello_redis_send_seconds_count") == 2
                assert value(samples, "hello_redis_errors_total") >= 1  # at least the send
                assert value(samples, "hello_redis_pubsub_reconnects_total") == 1
                assert value(samples, "hello_redis_rooms_lost_total") == 1

    async def test_a_killed_server_stops_counting_and_never_stalls_the_others(
        self, shared: str
    ) -> None:
        """kill -9 one of two hello-server processes: its users LEFT after the TTL."""
        args = ["--redis", shared, "--presence-ttl", "1"]
        with server_process(args) as alive, server_process(args) as doomed:
            async with (
                open_channel(alive.address, own_connection=True) as near,
                open_channel(doomed.address, own_connection=True) as far,
            ):
                stub = hello_pb2_grpc.ChatRoomStub(near)
                watcher, _ = await acknowledged(
                    stub,
                    "Subscribe",
                    pb.JoinRequest(roomID="k", user=pb.User(id="w"), presence=True),
                )
                victim = await joined(hello_pb2_grpc.ChatRoomStub(far), "k", "victim", "V")
                await send(stub, "k", "w", "both here")
                assert await presence_until(watcher, "both here") == [("victim", "V", JOINED)]
                doomed.process.send_signal(signal.SIGKILL)
                doomed.process.wait(TIMEOUT)
                sent = 0
                events: list[tuple[str, str, int]] = []
                async with asyncio.timeout(TIMEOUT):
                    while ("victim", "V", LEFT) not in events:
                        sent += 1
                        await send(stub, "k", "w", f"tick {sent}")  # never stalls
                        events += await presence_until(watcher, f"tick {sent}")
                listing = await stub.Members(pb.RoomRequest(roomID="k"), timeout=TIMEOUT)
                assert [m.user.id for m in listing.members] == ["w"]
                victim.cancel()
                watcher.cancel()


async def accept_unpublished(
    url: str, room: str, text: str, keep: bool = True
) -> tuple[int, bytes]:
    """Take the room's next seq as SEND would, but publish nothing: a lost publish.

    With ``keep`` the message goes to the history; without, the history is
    emptied, as if its bound had dropped the message before anyone fetched it.
    Returns the seq and the message's payload.
    """
    meta, hist = scripts.room_keys(room)[:2]
    client = aioredis.Redis.from_url(url)
    try:
        seq = await client.hincrby(meta, "seq", 1)
        payload = encode_message(Envelope(room, "ghost", text, seq, time.time_ns()))
        if keep:
            await client.rpush(hist, payload)
            await client.hincrby(meta, "bytes", len(payload))
        else:
            await client.delete(hist)
            await client.hset(meta, "bytes", 0)
    finally:
        await client.aclose()
    return seq, payload


@contextlib.contextmanager
def own_redis() -> Iterator[RedisServer]:
    with redis_server() as store:
        yield store


async def health_becomes(watch: Any, status: int) -> None:
    async with asyncio.timeout(TIMEOUT):
        async for reply in watch:
            if reply.status == status:
                return
    raise AssertionError("the health watch ended")
