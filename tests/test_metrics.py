"""Prometheus metrics: scrape /metrics over real HTTP after a known sequence of calls."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import pytest

from hello_protocol import hello_pb2 as pb
from hello_server import ChatServer, ServerConfig, run_server
from hello_server.limits import UserLimits
from tests.support.calls import (
    drain,
    final_status,
    hub_until,
    joined,
    member_users,
    open_stub,
    receive,
    rpc_error,
    send,
    subscribed,
)
from tests.support.metrics import http_get, scrape, value

if TYPE_CHECKING:
    from tests.support.calls import Stub


@pytest.fixture
def server_config() -> ServerConfig:
    # The send rate of the sequence below: mallory's sixth message is refused.
    return ServerConfig(
        port=0, metrics_port=0, user_limits=UserLimits(send_rate=0.01, send_burst=5)
    )


async def test_counters_after_a_known_sequence_of_calls(server: ChatServer, stub: Stub) -> None:
    before = await scrape(server)
    assert value(before, "hello_messages_total", rpc="SendMessage", code="OK") == 0
    assert value(before, "hello_rooms") == 0

    alice = await joined(stub, "r", "alice")
    bob = await subscribed(stub, "r", "bob")
    code, _ = await final_status(stub.Join(pb.JoinRequest(roomID="", user=pb.User(id="x"))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    for n in range(3):
        assert (await send(stub, "r", "carol", f"m{n}")).success
    requests = [pb.Message(id="carol", roomID="r", message=f"s{n}") for n in range(2)]
    replies = [reply async for reply in stub.SendStream(iter(requests))]
    assert [r.success for r in replies] == [True, True]
    assert (await rpc_error(send(stub, "nowhere", "dave", "lost"))).code() == (
        grpc.StatusCode.NOT_FOUND
    )
    assert (await rpc_error(send(stub, "r", "dave", ""))).code() == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    for _ in range(5):
        assert (await send(stub, "r", "mallory", "burst")).success
    assert (await rpc_error(send(stub, "r", "mallory", "over"))).code() == (
        grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    await receive(alice, 10)
    await receive(bob, 10)

    after = await scrape(server)
    messages = {
        ("SendMessage", "OK"): 8,
        ("SendStream", "OK"): 2,
        ("SendMessage", "NOT_FOUND"): 1,
        ("SendMessage", "INVALID_ARGUMENT"): 1,
        ("SendMessage", "RESOURCE_EXHAUSTED"): 1,
    }
    for (rpc, status), count in messages.items():
        assert value(after, "hello_messages_total", rpc=rpc, code=status) == count, (rpc, status)
    assert value(after, "hello_send_seconds_count") == 13
    assert value(after, "hello_deliveries_total") == 20  # 10 accepted x 2 members
    assert value(after, "hello_joins_total", rpc="Join", code="OK") == 1
    assert value(after, "hello_joins_total", rpc="Subscribe", code="OK") == 1
    assert value(after, "hello_joins_total", rpc="Join", code="INVALID_ARGUMENT") == 1
    assert value(after, "hello_limit_refusals_total", limit="send_rate") == 1
    assert value(after, "hello_limit_refusals_total", limit="streams_per_user") == 0
    assert value(after, "hello_open_streams", rpc="Join") == 1
    assert value(after, "hello_open_streams", rpc="Subscribe") == 1
    assert value(after, "hello_open_streams", rpc="SendStream") == 0
    assert value(after, "hello_rooms") == 1
    assert value(after, "hello_members") == 2
    assert value(after, "hello_queued_messages") == 0  # both read everything
    assert value(after, "hello_history_bytes") > 0
    assert value(after, "hello_send_rate_users") == 3  # carol, dave, mallory
    assert value(after, "hello_stream_users") == 2
    assert value(after, "hello_limit", limit="send_burst") == 5
    assert value(after, "hello_evictions_total") == 0
    assert value(after, "process_resident_memory_bytes") > 0
    assert ("process_cpu_seconds_total", ()) in after
    alice.cancel()
    bob.cancel()
    await hub_until(server, lambda: server.hub.member_count == 0)
    ended = await scrape(server)
    assert value(ended, "hello_open_streams", rpc="Join") == 0
    assert value(ended, "hello_open_streams", rpc="Subscribe") == 0
    assert value(ended, "hello_stream_users") == 0


async def test_only_metrics_is_served(server: ChatServer) -> None:
    metrics_port = server.metrics.port if server.metrics else None
    assert metrics_port is not None
    status, body = await http_get(metrics_port, "/")
    assert status == "HTTP/1.1 404 Not Found"
    assert "/metrics" in body


async def test_each_server_counts_its_own() -> None:
    """Two servers in one process: separate registries, no clash, separate counts."""
    async with (
        run_server(ServerConfig(port=0, metrics_port=0)) as one,
        run_server(ServerConfig(port=0, metrics_port=0)) as two,
        open_stub(one.address) as stub,
    ):
        member = await joined(stub, "r", "alice")
        assert (await send(stub, "r", "bob", "hi")).success
        assert value(await scrape(one), "hello_messages_total", rpc="SendMessage", code="OK") == 1
        assert value(await scrape(two), "hello_messages_total", rpc="SendMessage", code="OK") == 0
        member.cancel()


async def test_an_evicted_member_is_counted() -> None:
    """A member that never reads is evicted once its 1 MiB queue is full: counted once."""
    config = ServerConfig(port=0, metrics_port=0)
    async with run_server(config) as server, open_stub(server.address) as stub:
        sleeper = await joined(stub, "r", "sleeper")
        for _ in range(1000):  # at most ~60 MB: far past the queue and gRPC's windows
            if "sleeper" not in member_users(server, "r"):
                break
            assert (await send(stub, "r", "flood", "x" * 60_000)).success
        _, code, _ = await drain(sleeper)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert value(await scrape(server), "hello_evictions_total") == 1
