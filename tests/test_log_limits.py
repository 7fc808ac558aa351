"""MalformedRequestLog on a real grpc.aio server: one line per interval, with the count."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from grpc_health.v1 import health, health_pb2_grpc

from hello_server.log_limits import MalformedRequestLog, RefusalLog
from tests.support import TIMEOUT

CHECK = "/grpc.health.v1.Health/Check"
INTERVAL = 1.0  # the 5 and 3 requests each take milliseconds


class Lines(logging.Handler):
    """Collects hello_server.log_limits's lines and lets a test wait for the next ones."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self._changed.set()

    async def wait_for(self, count: int) -> list[str]:
        async with asyncio.timeout(TIMEOUT):
            while len(self.lines) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.lines


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    logger = logging.getLogger("hello_server.log_limits")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@pytest.fixture
async def health_channel() -> AsyncIterator[grpc.aio.Channel]:
    """A channel to a plain grpc.aio server hosting the health service."""
    server = grpc.aio.server()
    # grpc-stubs predates grpc_health's asyncio servicer.
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)  # type: ignore[attr-defined]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(None)


async def garbage(channel: grpc.aio.Channel, count: int) -> None:
    check = channel.unary_unary(CHECK, request_serializer=None, response_deserializer=None)
    for _ in range(count):
        with pytest.raises(grpc.aio.AioRpcError):
            await check(b"\xff\xff", timeout=TIMEOUT)


class TestMalformedRequestLog:
    async def test_counts_per_interval_while_the_flood_lasts(
        self, health_channel: grpc.aio.Channel, lines: Lines
    ) -> None:
        """The first refusal is one line at once; the rest are one count per interval."""
        limiter = MalformedRequestLog(interval=INTERVAL)
        limiter.install()
        try:
            await garbage(health_channel, 5)
            first, summary = await lines.wait_for(2)
            assert first.startswith(f"malformed request refused: {CHECK}: Error parsing message")
            assert summary.startswith("4 malformed requests refused in the last ")
            assert summary.endswith("Wire format was corrupt")

            await garbage(health_channel, 3)  # a new interval: counted, then reported
            assert (await lines.wait_for(3))[2].startswith("3 malformed requests refused")
        finally:
            limiter.uninstall()
        assert len(lines.lines) == 3

    async def test_uninstall_reports_what_is_counted(
        self, health_channel: grpc.aio.Channel, lines: Lines
    ) -> None:
        """Removing the filter (the server stops) logs the count of the interval in progress."""
        limiter = MalformedRequestLog(interval=3600)
        limiter.install()
        await garbage(health_channel, 3)
        assert len(lines.lines) == 1
        limiter.uninstall()
        assert lines.lines[1].startswith("2 malformed requests refused in the last ")


class TestRefusalLog:
    async def test_once_per_client_and_bounded_by_max_clients(self, lines: Lines) -> None:
        """Each client's first refusal is a line; past max_clients the rest count together."""
        refusals = RefusalLog(interval=3600, max_clients=2)
        for client in ("a", "b", "c", "d"):
            for _ in range(3):
                refusals.refused("message", client, "too fast")
        assert len(refusals) == 3  # a, b and "other clients"
        assert [line.split(":")[0] for line in lines.lines] == [
            "message refused for a",
            "message refused for b",
            "message refused for other clients",
        ]
        refusals.flush()
        assert len(refusals) == 0
        assert sorted(line.split(" in the last")[0] for line in lines.lines[3:]) == [
            "2 messages refused for a",
            "2 messages refused for b",
            "5 messages refused for other clients",
        ]
