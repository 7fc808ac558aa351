"""Draining in-process: what a SIGTERM does, without a child process or a signal."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hello_protocol import hello_pb2 as pb
from hello_server import ChatServer, QueueLimits, ServerConfig, run_server
from hello_server.server import BindError
from tests.support import TIMEOUT, within
from tests.support.calls import (
    drain,
    final_status,
    join_request,
    joined,
    open_stub,
    read_messages,
    rpc_error,
    send,
    subscribed,
)

if TYPE_CHECKING:
    from tests.support.calls import Stub


class TestStop:
    async def test_stop_ends_open_streams_with_unavailable(
        self, server: ChatServer, stub: Stub
    ) -> None:
        """stop() ends every Join and Subscribe stream with UNAVAILABLE "server shutting down"."""
        calls: list[grpc.aio.UnaryStreamCall[pb.JoinRequest, Any]] = [
            await joined(stub, "a", "alice"),
            await joined(stub, "a", "bob"),
            await subscribed(stub, "b", "bot"),
        ]
        await send(stub, "a", "alice", "last words")
        assert [m.message for m in await read_messages(calls[0], 1)] == ["last words"]

        await server.stop()

        # A client sees a stream's status after the messages already sent to it.
        received = [await drain(call) for call in calls]
        assert [(code, details) for _, code, details in received] == [
            (grpc.StatusCode.UNAVAILABLE, "server shutting down")
        ] * 3
        assert [[m.message for m in messages] for messages, _, _ in received] == [
            [],
            ["last words"],
            [],
        ]
        assert (server.hub.room_count, server.hub.member_count) == (0, 0)

    async def test_a_stopped_server_is_unavailable(self, server: ChatServer, stub: Stub) -> None:
        """After stop(), calls fail UNAVAILABLE, so clients know to reconnect."""
        await server.stop()
        error = await rpc_error(send(stub, "a", "alice", "hello?"))
        assert error.code() is grpc.StatusCode.UNAVAILABLE


class TestDraining:
    """While draining (the hub closed, gRPC still serving), nothing new is accepted."""

    async def test_draining_ends_streams_and_refuses_joins_and_sends(
        self, server: ChatServer, stub: Stub
    ) -> None:
        """Once the hub closes, streams end and new Join, Subscribe, SendMessage get UNAVAILABLE."""
        member = await joined(stub, "a", "alice")
        server.hub.close()  # the first step of ChatServer.stop

        assert await final_status(member) == (
            grpc.StatusCode.UNAVAILABLE,
            "server shutting down",
        )
        for open_stream in (stub.Join, stub.Subscribe):
            late = open_stream(join_request("a", "bob"))
            assert await final_status(late) == (
                grpc.StatusCode.UNAVAILABLE,
                "server shutting down",
            )
        error = await rpc_error(send(stub, "a", "alice", "anyone?"))
        assert error.code() is grpc.StatusCode.UNAVAILABLE
        assert error.details() == "server shutting down"


# Far longer than any test waits: a drain that ends has been cut short.
LONG_GRACE = 600.0


@pytest.fixture
async def stalling_server() -> AsyncIterator[ChatServer]:
    """A server whose member queues are big enough that a non-reading member stalls a write."""
    config = ServerConfig(port=0, queue=QueueLimits(100_000, 64 << 20), grace_seconds=LONG_GRACE)
    async with run_server(config) as running:
        yield running


async def stall_a_member(stub: Stub) -> grpc.aio.UnaryStreamCall[pb.JoinRequest, pb.Message]:
    """Join without reading and flood the room (18 MB) until the server's write to it blocks."""
    member = await joined(stub, "stalled", "sleeper")
    async with asyncio.timeout(TIMEOUT):
        for _ in range(300):
            await send(stub, "stalled", "flood", "x" * 60_000)
    return member


async def health_status(channel: grpc.aio.Channel) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT
    )
    return int(reply.status)


@pytest.fixture
async def stalling_stub(stalling_server: ChatServer) -> AsyncIterator[Stub]:
    async with open_stub(stalling_server.address) as stub:
        yield stub


@pytest.fixture
async def health_channel(stalling_server: ChatServer) -> AsyncIterator[grpc.aio.Channel]:
    """A connection of its own for health checks: a stalled member's has no window left."""
    async with grpc.aio.insecure_channel(stalling_server.address) as channel:
        assert await health_status(channel) == health_pb2.HealthCheckResponse.SERVING
        yield channel


async def drain_started(health_channel: grpc.aio.Channel) -> None:
    """Wait until the server's health turns NOT_SERVING, the drain's first step."""
    async with asyncio.timeout(TIMEOUT):
        while await health_status(health_channel) != health_pb2.HealthCheckResponse.NOT_SERVING:
            pass  # each Check is a round trip to the server


class TestLifecycleRunsOnce:
    """start once, one drain, one stop of the gRPC server, whoever calls stop and how often."""

    async def test_second_start_is_refused(self, server: ChatServer) -> None:
        """start() on a started server raises RuntimeError and leaves it serving."""
        with pytest.raises(RuntimeError, match="only once"):
            await server.start()
        async with grpc.aio.insecure_channel(server.address) as channel:
            assert await health_status(channel) == health_pb2.HealthCheckResponse.SERVING

    async def test_start_after_stop_is_refused(self, server: ChatServer) -> None:
        """A stopped server cannot be started again: make a new one."""
        await server.stop()
        with pytest.raises(RuntimeError, match="only once"):
            await server.start()

    async def test_stop_twice_is_safe(self, server: ChatServer, stub: Stub) -> None:
        """A second stop() after the first finished returns at once and changes nothing."""
        member = await joined(stub, "a", "alice")
        await within(server.stop())
        await within(server.stop(grace=0))
        assert await final_status(member) == (grpc.StatusCode.UNAVAILABLE, "server shutting down")

    async def test_stop_awaits_the_loop_lag_task(self, server: ChatServer) -> None:
        """When stop() returns, the loop-lag sampler it cancelled has finished."""
        await server.stop()
        assert [t for t in asyncio.all_tasks() if t.get_name() == "loop-lag"] == []

    async def test_second_stop_cuts_a_stalled_drain_short(
        self, stalling_server: ChatServer, stalling_stub: Stub, health_channel: grpc.aio.Channel
    ) -> None:
        """stop(0) during a drain held open by a stuck member ends that drain; both calls return."""
        member = await stall_a_member(stalling_stub)
        first = asyncio.create_task(stalling_server.stop())
        await drain_started(health_channel)
        assert stalling_server.hub.member_count == 1, "the member should be stuck in a write"
        assert not first.done()

        await within(stalling_server.stop(grace=0))
        assert first.done()
        await first
        member.cancel()

    async def test_concurrent_stops_share_one_drain(
        self, stalling_server: ChatServer, stalling_stub: Stub
    ) -> None:
        """Several stop() calls at once all return once the shortest grace ends the one drain."""
        member = await stall_a_member(stalling_stub)
        await within(
            asyncio.gather(
                stalling_server.stop(),
                stalling_server.stop(grace=LONG_GRACE / 2),
                stalling_server.stop(grace=0),
            )
        )
        await within(stalling_server.stop())
        member.cancel()

    async def test_cancelling_a_stop_call_does_not_cancel_the_drain(
        self, stalling_server: ChatServer, stalling_stub: Stub, health_channel: grpc.aio.Channel
    ) -> None:
        """A stop() caller that gives up leaves the drain running; a later stop() ends it."""
        member = await stall_a_member(stalling_stub)
        impatient = asyncio.create_task(stalling_server.stop())
        await drain_started(health_channel)
        impatient.cancel()
        with pytest.raises(asyncio.CancelledError):
            await impatient
        assert await health_status(health_channel) == health_pb2.HealthCheckResponse.NOT_SERVING
        await within(stalling_server.stop(grace=0))
        member.cancel()


# The host resolves for the system but not for gRPC, so binding fails after
# the gRPC server was built. The script prints the process's thread count
# before and after: gRPC core's threads only go away once it is released.
_FAILED_BIND_SCRIPT = textwrap.dedent(
    """
    import asyncio, gc, os
    from hello_server import ChatServer, ServerConfig
    from hello_server.server import BindError

    def threads():
        return len(os.listdir("/proc/self/task"))

    async def main():
        before = threads()
        server = ChatServer(ServerConfig(host="127.1", port=0))
        try:
            await server.start()
        except BindError:
            pass
        del server
        gc.collect()
        print(before, threads())

    asyncio.run(main())
    """
)


class TestFailedStart:
    async def test_bind_failure_leaves_nothing_running(self) -> None:
        """A start that fails to bind refuses a retry, and stop() is a no-op."""
        server = ChatServer(ServerConfig(host="127.1", port=0))
        with pytest.raises(BindError):
            await server.start()
        with pytest.raises(RuntimeError, match="not started"):
            _ = server.port
        await within(server.stop())
        with pytest.raises(RuntimeError, match="only once"):
            await server.start()
        assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []

    def test_bind_failure_releases_grpc_core(self) -> None:
        """After a failed bind the process runs no more threads than before (gRPC core is freed)."""
        result = subprocess.run(
            [sys.executable, "-c", _FAILED_BIND_SCRIPT],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env={**os.environ, "GRPC_VERBOSITY": "NONE"},
            check=False,
        )
        assert result.returncode == 0, result.stderr
        before, after = map(int, result.stdout.split())
        assert after == before, f"{after - before} threads left running after a failed start"
