"""Draining in-process: what a SIGTERM does, without a child process or a signal."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

from hello_protocol import hello_pb2 as pb
from hello_server import ChatServer
from tests.support.calls import (
    drain,
    final_status,
    join_request,
    joined,
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
