"""The transport limits of hello_server/transport.py, each pinned against a real server.

Quick and deterministic; the full attacks (and their figures) are the scripts
in tests/adversarial/, run by ``nox -s adversarial``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator

import grpc
import pytest
from hyperframe.frame import Frame, HeadersFrame, RstStreamFrame

from hello_protocol import hello_pb2 as pb
from hello_server import ChatServer, ServerConfig
from hello_server.transport import TransportLimits
from tests.adversarial.harness import RawConnection
from tests.support import TIMEOUT
from tests.support.calls import joined, open_stub, rpc_error

REFUSED_STREAM = 7  # HTTP/2 error code


def transport_config(**limits: float) -> ServerConfig:
    return ServerConfig(port=0, transport=TransportLimits(**limits))  # type: ignore[arg-type]


def stream_frames(frames: list[Frame], stream_id: int) -> list[Frame]:
    return [frame for frame in frames if frame.stream_id == stream_id]


class TestStreamsPerConnection:
    """``grpc.max_concurrent_streams``: what one connection can hold open."""

    @pytest.fixture
    def server_config(self) -> ServerConfig:
        return transport_config(max_streams_per_connection=2)

    async def test_stream_over_the_cap_is_refused(self, server: ChatServer) -> None:
        """Streams 1 and 2 join; stream 3 on the same connection gets REFUSED_STREAM at once."""
        conn = RawConnection(server.address, keep=True)
        try:
            conn.start()
            *admitted, over_cap = [conn.open_join("capped", "u") for _ in range(3)]

            def answered(frames: list[Frame]) -> bool:
                return all(stream_frames(frames, sid) for sid in (*admitted, over_cap))

            # In a thread: the server runs on this event loop.
            frames = await asyncio.to_thread(conn.wait_for_frames, answered, TIMEOUT)
        finally:
            conn.close()
        refused = stream_frames(frames, over_cap)
        assert [type(f) for f in refused] == [RstStreamFrame], refused
        assert isinstance(refused[0], RstStreamFrame)
        assert refused[0].error_code == REFUSED_STREAM
        for stream_id in admitted:  # the join acknowledgement, not a refusal
            assert isinstance(stream_frames(frames, stream_id)[0], HeadersFrame)
            assert not any(isinstance(f, RstStreamFrame) for f in stream_frames(frames, stream_id))

    async def test_grpc_client_waits_for_a_free_stream(self, server: ChatServer) -> None:
        """A gRPC client queues the call over the cap: it runs once a stream ends."""
        async with open_stub(server.address) as stub:
            first = await joined(stub, "capped", "a")
            await joined(stub, "capped", "b")
            queued = stub.Join(pb.JoinRequest(roomID="capped", user=pb.User(id="c")))
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    await asyncio.shield(queued.initial_metadata())
            first.cancel()
            async with asyncio.timeout(TIMEOUT):
                await queued.initial_metadata()
            assert not queued.done()
            queued.cancel()


class TestHandshakeTimeout:
    """``grpc.server_handshake_timeout_ms``: silent connections do not hold descriptors."""

    @pytest.fixture
    def server_config(self) -> ServerConfig:
        return transport_config(handshake_timeout_seconds=0.5)

    async def test_connection_without_preface_is_closed(self, server: ChatServer) -> None:
        """A TCP connection that never sends the HTTP/2 preface is closed by the server."""
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            async with asyncio.timeout(TIMEOUT):
                while await reader.read(4096):
                    pass  # the server's SETTINGS, then EOF when it gives up on us
        finally:
            writer.close()

    async def test_real_clients_still_connect(self, server: ChatServer) -> None:
        async with open_stub(server.address) as stub:
            call = await joined(stub, "room", "alice")
            call.cancel()


class TestConnectionCap:
    """``grpc.max_allowed_incoming_connections`` and the log line when it refuses."""

    @pytest.fixture
    def server_config(self) -> ServerConfig:
        return transport_config(max_connections=2)

    async def test_connection_over_the_cap_is_closed_and_logged(
        self, server: ChatServer, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Two clients are served; a third connection is closed at once, and the cap is logged."""
        async with open_stub(server.address) as one, open_stub(server.address) as two:
            calls = [await joined(one, "room", "a"), await joined(two, "room", "b")]
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            try:
                async with asyncio.timeout(TIMEOUT):
                    assert await reader.read(4096) == b""  # closed before any SETTINGS
            finally:
                writer.close()
            assert server.transport is not None
            assert server.transport.cap_watch is not None
            with caplog.at_level(logging.WARNING, logger="hello_server.transport"):
                assert server.transport.cap_watch.check(now=0.0)
                assert not server.transport.cap_watch.check(now=1.0)  # once per interval
            assert caplog.text.count("connection cap reached: 2 connections held") == 1
            for call in calls:
                call.cancel()

    async def test_below_the_cap_nothing_is_logged(self, server: ChatServer) -> None:
        assert server.transport is not None
        assert server.transport.cap_watch is not None
        async with open_stub(server.address) as stub:
            call = await joined(stub, "room", "a")
            assert not server.transport.cap_watch.at_cap()
            call.cancel()


class TestMetadataLimit:
    """``grpc.max_metadata_size`` and ``grpc.absolute_max_metadata_size``."""

    @pytest.fixture
    def server_config(self) -> ServerConfig:
        return transport_config(max_metadata_bytes=4096)

    async def test_metadata_over_the_limit_is_refused(self, server: ChatServer) -> None:
        """Over the limit: RESOURCE_EXHAUSTED naming the limit; under it, the call works."""
        async with open_stub(server.address) as stub:
            request = pb.Message(id="a", roomID="nowhere", message="hi")
            error = await rpc_error(stub.SendMessage(request, metadata=[("x-pad", "a" * 5000)]))
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "metadata size exceeds" in (error.details() or "")
            # Under the limit the request reaches the service, which answers for itself.
            error = await rpc_error(stub.SendMessage(request, metadata=[("x-pad", "a" * 1000)]))
            assert error.code() == grpc.StatusCode.NOT_FOUND


class TestDeadPeer:
    """Keepalive: a member whose process stopped is removed within time + timeout."""

    LIMITS = TransportLimits(keepalive_time_seconds=1.0, keepalive_timeout_seconds=1.0)
    SLACK = 3.0  # scheduling on a busy machine, and the removal itself

    @pytest.fixture
    def server_config(self) -> ServerConfig:
        return ServerConfig(port=0, transport=self.LIMITS)

    @pytest.fixture
    async def stopped_member(self, server: ChatServer) -> AsyncIterator[asyncio.subprocess.Process]:
        """A member in room "dead" in a child process, stopped once it joined."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.adversarial.member",
            server.address,
            "dead",
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert process.stdout is not None
            async with asyncio.timeout(TIMEOUT):
                assert (await process.stdout.readline()).strip() == b"joined"
            process.send_signal(signal.SIGSTOP)
            yield process
        finally:
            process.kill()  # works on a stopped process too
            await process.wait()

    @pytest.mark.parametrize("room", ["quiet", "busy"])
    async def test_stopped_member_is_removed_within_the_keepalive_bound(
        self, server: ChatServer, stopped_member: asyncio.subprocess.Process, room: str
    ) -> None:
        """Quiet: only the keepalive ping can tell; busy: writes queue behind the stopped reader."""
        bound = self.LIMITS.dead_peer_seconds + self.SLACK
        assert server.hub.member_count == 1

        async def keep_room_busy() -> None:
            async with open_stub(server.address) as stub:
                while server.hub.member_count:
                    request = pb.Message(id="sender", roomID="dead", message="x" * 60_000)
                    call = stub.SendMessage(request, timeout=TIMEOUT)
                    # NOT_FOUND once the room's only member was removed.
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        await call
                    await asyncio.sleep(0.01)

        busy = asyncio.create_task(keep_room_busy()) if room == "busy" else None
        try:
            async with asyncio.timeout(bound):
                await server.hub.wait_until(lambda: server.hub.member_count == 0)
        finally:
            if busy is not None:
                busy.cancel()
                await asyncio.gather(busy, return_exceptions=True)
