"""hello-server as operators run it: a real child process, its options, logs and signals."""

from __future__ import annotations

import asyncio
import importlib.metadata
import re
import signal
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor_pb2 import FileDescriptorProto
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from hello_protocol import hello_pb2 as pb
from hello_protocol import hello_pb2_grpc
from hello_protocol.wire import SERVICE_NAME
from tests.support import TIMEOUT
from tests.support.calls import (
    count_until_end,
    final_status,
    joined,
    open_channel,
    read_messages,
    subscribed,
)
from tests.support.processes import ServerProcess, run_server_command, server_process

SHUTDOWN_DETAILS = "server shutting down"

Channel = grpc.aio.Channel


@pytest.fixture
async def daemon_channel(daemon: ServerProcess) -> AsyncIterator[Channel]:
    """A channel to the module's shared `daemon`."""
    async with open_channel(daemon.address) as channel:
        yield channel


# A queue big enough that flooding a member who never reads blocks the
# server's write to it (HTTP/2 and TCP buffers fill up) instead of evicting it.
STALL_ARGS = ["--queue-bytes", str(64 << 20), "--queue-size", "100000"]
STALL_TEXT = "x" * 60_000
STALL_MESSAGES = 600  # 36 MB: far beyond what loopback TCP and HTTP/2 windows hold


async def watch_health(channel: Channel) -> Any:
    """A Health/Watch call that has seen SERVING, to observe a drain."""
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
    first = await asyncio.wait_for(watch.read(), TIMEOUT)
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    return watch


async def stall_a_member(
    channel: Channel, messages: int = STALL_MESSAGES
) -> grpc.aio.UnaryStreamCall[pb.JoinRequest, pb.Message]:
    """Join without reading, then flood the room so the server blocks writing to it.

    Returns the member's call: the caller must keep it, as a call that is
    garbage-collected is cancelled, and the member would leave.
    """
    stub = hello_pb2_grpc.ChatRoomStub(channel)
    member = await joined(stub, "stalled", "sleeper")
    async with asyncio.timeout(TIMEOUT * 3):
        for _ in range(messages):
            await stub.SendMessage(pb.Message(id="flood", roomID="stalled", message=STALL_TEXT))
    return member


def assert_no_traceback(text: str) -> None:
    assert "Traceback" not in text, text


class TestStartup:
    """The ready line and the first requests against a freshly started daemon."""

    def test_ready_line_shows_the_real_port(self, daemon: ServerProcess) -> None:
        """With --port 0 the ready line names 127.0.0.1 and the port the kernel picked."""
        host, port = daemon.address.rsplit(":", 1)
        assert host == "127.0.0.1"
        assert 0 < int(port) <= 65535
        with socket.create_connection((host, int(port)), timeout=TIMEOUT):
            pass

    async def test_join_and_send_round_trip(self, daemon_channel: Channel) -> None:
        """A member joined on the child receives a message sent to its room, server-stamped."""
        stub = hello_pb2_grpc.ChatRoomStub(daemon_channel)
        call = await joined(stub, "round-trip", "alice")
        before = time.time_ns()
        reply = await stub.SendMessage(
            pb.Message(id="bob", roomID="round-trip", message="hi alice"), timeout=TIMEOUT
        )
        after = time.time_ns()
        assert reply.success
        assert reply.seq == 1
        (message,) = await read_messages(call, 1)
        assert (message.id, message.roomID, message.message, message.seq) == (
            "bob",
            "round-trip",
            "hi alice",
            1,
        )
        assert before <= message.timestamp.ToNanoseconds() <= after
        call.cancel()


class TestEnvironment:
    """Every option can be set with HELLO_<NAME>."""

    async def test_max_message_bytes(self) -> None:
        """HELLO_MAX_MESSAGE_BYTES=10 accepts a 10-byte text and refuses an 11-byte one."""
        with server_process(env={"HELLO_MAX_MESSAGE_BYTES": "10"}) as server:
            async with open_channel(server.address) as channel:
                stub = hello_pb2_grpc.ChatRoomStub(channel)
                call = await joined(stub, "env", "alice")
                ok = await stub.SendMessage(
                    pb.Message(id="alice", roomID="env", message="x" * 10), timeout=TIMEOUT
                )
                assert ok.success
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.SendMessage(
                        pb.Message(id="alice", roomID="env", message="x" * 11), timeout=TIMEOUT
                    )
                assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "11 bytes" in (refused.value.details() or "")
                assert "10 bytes" in (refused.value.details() or "")
                call.cancel()

    async def test_queue_size(self) -> None:
        """HELLO_QUEUE_SIZE=2 evicts a member that does not read once 3 messages wait for it."""
        with server_process(env={"HELLO_QUEUE_SIZE": "2"}) as server:
            server.follow_log()
            async with (
                open_channel(server.address) as slow_channel,
                open_channel(server.address) as channel,
            ):
                slow = await joined(hello_pb2_grpc.ChatRoomStub(slow_channel), "q", "slow")
                stub = hello_pb2_grpc.ChatRoomStub(channel)
                # The slow member never reads: once gRPC flow control stops its
                # writes (a few MB), its mailbox fills and the third message
                # waiting in it evicts the member. It is the room's only
                # member, so the room goes with it: NOT_FOUND from then on.
                text = "x" * 60_000
                sent = 0
                while sent < 500 and not any("evicted" in line for line in server.log):
                    try:
                        await stub.SendMessage(
                            pb.Message(id="fast", roomID="q", message=text), timeout=TIMEOUT
                        )
                    except grpc.aio.AioRpcError as error:
                        if error.code() != grpc.StatusCode.NOT_FOUND:
                            raise
                        break
                    sent += 1
                await server.await_log(r"evicted Member\(\d+, room='q', user='slow'\)")
                received = await count_until_end(slow)
                code, details = await final_status(slow)
                assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "more than 2 messages" in details
                assert received < sent

    async def test_debug_log_level_logs_joins_and_leaves(self) -> None:
        """HELLO_LOG_LEVEL=debug logs a join, the leave on cancel, and the room's deletion."""
        with server_process(env={"HELLO_LOG_LEVEL": "debug"}) as server:
            server.follow_log()
            async with open_channel(server.address) as channel:
                call = await joined(hello_pb2_grpc.ChatRoomStub(channel), "lobby", "alice")
                await server.await_log(r"alice joined room 'lobby' \(1 members\)")
                call.cancel()
                await server.await_log(r"alice left room 'lobby' \(0 members\)")
                await server.await_log(r"room 'lobby' deleted")

    async def test_info_level_logs_no_line_per_message(self) -> None:
        """At the default info level, joining, sending and delivering messages log nothing."""
        count = 20
        with server_process() as server:
            async with open_channel(server.address) as channel:
                stub = hello_pb2_grpc.ChatRoomStub(channel)
                call = await joined(stub, "quiet-room", "quiet-user")
                for index in range(count):
                    await stub.SendMessage(
                        pb.Message(id="quiet-user", roomID="quiet-room", message=f"text {index}"),
                        timeout=TIMEOUT,
                    )
                for _ in range(count):
                    await asyncio.wait_for(call.read(), TIMEOUT)
                call.cancel()
            server.signal(signal.SIGTERM)
            assert await server.await_exit(TIMEOUT) == 0
            log = server.rest_of_log()
        lines = log.splitlines()
        assert len(lines) < count, log
        for word in ("quiet-room", "quiet-user", "text "):
            assert word not in log


class TestBadOptions:
    """A setting the daemon cannot use stops it with exit code 2 and one line saying why."""

    @pytest.mark.parametrize(
        ("args", "env", "reason"),
        [
            (["--port", "70000"], {}, "port 70000 is not in 0..65535"),
            ([], {"HELLO_PORT": "70000"}, "port 70000 is not in 0..65535"),
            (["--port", "0", "--log-level", "nope"], {}, "log level must be one of"),
            (["--port", "0"], {"HELLO_LOG_LEVEL": "nope"}, "log level must be one of"),
            (["--port", "0", "--queue-bytes", "1000"], {}, "queue byte bound (1000)"),
            (
                ["--port", "0", "--queue-bytes", "65536"],
                {},
                "queue byte bound (65536) must hold at least one largest delivered message (70695",
            ),
            (["--port", "0", "--queue-size", "0"], {}, "queue size must be at least 1"),
            (["--port", "0", "--grace", "-1"], {}, "grace period must not be negative"),
            (
                ["--port", "0", "--max-message-bytes", "0"],
                {},
                "message size limit must be at least 1 byte",
            ),
            (["--port", "0", "--max-id-chars", "0"], {}, "id length limit must be at least 1"),
            (["--port", "0"], {"HELLO_HISTORY_SIZE": "-1"}, "history size must not be negative"),
            (
                ["--port", "0"],
                {"HELLO_HISTORY_BUDGET": "1000"},
                "history budget (1000) must hold at least one room's full history",
            ),
            (["--port", "0", "--room-ttl", "-1"], {}, "room TTL must be between 0 and"),
            (["--port", "0"], {"HELLO_PRESENCE_TTL": "0"}, "presence TTL must be between 0.3"),
        ],
        ids=[
            "port",
            "HELLO_PORT",
            "log-level",
            "HELLO_LOG_LEVEL",
            "queue-bytes",
            "queue-bytes-of-the-text-limit",
            "queue-size",
            "grace",
            "max-message-bytes",
            "max-id-chars",
            "HELLO_HISTORY_SIZE",
            "HELLO_HISTORY_BUDGET",
            "room-ttl",
            "HELLO_PRESENCE_TTL",
        ],
    )
    def test_out_of_range_value(self, args: list[str], env: dict[str, str], reason: str) -> None:
        """An out-of-range option or HELLO_ variable exits 2 with one 'hello-server: error:'."""
        result = run_server_command(args, env, timeout=TIMEOUT)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("hello-server: error: ")
        assert reason in lines[0]
        assert result.stdout == ""

    @pytest.mark.parametrize(
        ("args", "reason"),
        [
            (["--port", "abc"], "Invalid value for '--port'"),
            (["--bogus"], "No such option: --bogus"),
            (["--port"], "Option '--port' requires an argument"),
            (["extra"], "unexpected extra argument"),
        ],
        ids=["wrong-type", "unknown-option", "missing-value", "extra-argument"],
    )
    def test_usage_error_is_one_line(self, args: list[str], reason: str) -> None:
        """A usage error exits 2 with one 'hello-server: error:' line naming it, no usage block."""
        result = run_server_command(args, timeout=TIMEOUT)
        assert result.returncode == 2, result.stderr
        assert result.stderr.splitlines() == [result.stderr.strip()], result.stderr
        assert result.stderr.startswith("hello-server: error: ")
        assert reason in result.stderr
        assert result.stdout == ""


class TestHelpAndVersion:
    """What a new user types first."""

    def test_version(self) -> None:
        """--version prints 'hello-server' and the installed hello-chat version, exit 0."""
        result = run_server_command(["--version"], timeout=TIMEOUT)
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"hello-server {importlib.metadata.version('hello-chat')}\n"

    def test_short_and_long_help_are_the_same(self) -> None:
        """-h works like --help and names the command hello-server."""
        short = run_server_command(["-h"], timeout=TIMEOUT)
        long = run_server_command(["--help"], timeout=TIMEOUT)
        assert (short.returncode, long.returncode) == (0, 0)
        assert short.stdout == long.stdout
        assert short.stdout.startswith("Usage: hello-server [OPTIONS]")
        assert "-h, --help" in short.stdout

    def test_each_example_is_a_line_of_its_own(self) -> None:
        """The examples in --help are not run together on one line."""
        lines = run_server_command(["--help"], timeout=TIMEOUT).stdout.splitlines()
        examples = [line.strip() for line in lines if "hello-server" in line]
        starts = [line.split("  ")[0] for line in examples if not line.startswith("Usage")]
        assert starts == [
            "hello-server",
            "hello-server --port 0 --log-level debug",
            "HELLO_PORT=9000 hello-server",
            "hello-server --config hello.toml",
            "hello-server --tls-cert c.pem --tls-key k.pem --auth-jwt-secret-file jwt.secret",
            "hello-server token --user alice --config hello.toml",
            "hello-server --redis redis://127.0.0.1:6379 --workers 2",
        ]


class TestPortInUse:
    """A port that another socket listens on is a startup failure, not a crash."""

    def test_exits_3_with_one_line(self) -> None:
        """Exit code 3 and exactly one 'hello-server: error:' line naming the address."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            result = run_server_command(
                ["--host", "127.0.0.1", "--port", str(port)], timeout=TIMEOUT
            )
        assert result.returncode == 3, result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("hello-server: error:")
        assert f"127.0.0.1:{port}" in lines[0]
        assert_no_traceback(result.stderr)


class TestHealthAndReflection:
    """The standard services that grpcurl and orchestrators use."""

    @pytest.mark.parametrize("service", ["", SERVICE_NAME])
    async def test_health_check_serving(self, daemon_channel: Channel, service: str) -> None:
        """grpc.health.v1.Health/Check reports SERVING for the server and for hello.ChatRoom."""
        health = health_pb2_grpc.HealthStub(daemon_channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

    async def test_reflection_lists_services(self, daemon_channel: Channel) -> None:
        """Reflection's list_services names hello.ChatRoom and grpc.health.v1.Health."""
        reply = await self._reflect(
            daemon_channel, reflection_pb2.ServerReflectionRequest(list_services="")
        )
        names = {service.name for service in reply.list_services_response.service}
        assert {"hello.ChatRoom", "grpc.health.v1.Health"} <= names

    async def test_reflection_describes_chat_room(self, daemon_channel: Channel) -> None:
        """file_containing_symbol 'hello.ChatRoom' returns the descriptor with its RPCs."""
        reply = await self._reflect(
            daemon_channel,
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="hello.ChatRoom"),
        )
        assert reply.WhichOneof("message_response") == "file_descriptor_response"
        files = [
            FileDescriptorProto.FromString(raw)
            for raw in reply.file_descriptor_response.file_descriptor_proto
        ]
        hello = next(f for f in files if f.package == "hello")
        (service,) = [s for s in hello.service if s.name == "ChatRoom"]
        assert {"Join", "SendMessage", "Subscribe"} <= {m.name for m in service.method}

    @staticmethod
    async def _reflect(
        channel: Channel, request: reflection_pb2.ServerReflectionRequest
    ) -> reflection_pb2.ServerReflectionResponse:
        call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            timeout=TIMEOUT
        )
        await call.write(request)
        await call.done_writing()
        reply = await asyncio.wait_for(call.read(), TIMEOUT)
        assert isinstance(reply, reflection_pb2.ServerReflectionResponse)
        return reply


GARBAGE = b"\xff\xff\xff\xff"  # not a valid protobuf encoding of anything


async def send_garbage(channel: Channel, method: str) -> grpc.StatusCode:
    """Call ``method`` with a request that does not parse; return the status it ends with."""
    identity = {"request_serializer": None, "response_deserializer": None}
    try:
        async with asyncio.timeout(TIMEOUT):
            if method.endswith("/Check"):
                await channel.unary_unary(method, **identity)(GARBAGE)
            elif method.endswith("/Watch"):
                async for _ in channel.unary_stream(method, **identity)(GARBAGE):
                    pass
            else:
                async for _ in channel.stream_stream(method, **identity)(iter([GARBAGE])):
                    pass
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


class TestMalformedRequests:
    """Garbage sent to the services gRPC parses for us costs one log line per interval."""

    METHODS = (
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    )
    PER_METHOD = 200

    async def test_garbage_is_logged_as_a_count_not_a_traceback_each(self) -> None:
        """600 unparsable health and reflection requests log two lines; good requests still work."""
        with server_process() as server:
            server.follow_log()
            async with open_channel(server.address) as channel:
                for method in self.METHODS:
                    for _ in range(self.PER_METHOD):
                        assert await send_garbage(channel, method) != grpc.StatusCode.OK
                health = health_pb2_grpc.HealthStub(channel)
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
                listed = await TestHealthAndReflection._reflect(
                    channel, reflection_pb2.ServerReflectionRequest(list_services="")
                )
                assert listed.list_services_response.service
            server.signal(signal.SIGTERM)
            assert await server.await_exit(TIMEOUT) == 0
            log = server.rest_of_log()
        assert_no_traceback(log)
        first, *counts = [line for line in log.splitlines() if "malformed request" in line]
        assert "malformed request refused: /grpc.health.v1.Health/Check: " in first
        # One count per 10 s interval (normally just the one flushed at the exit).
        assert 1 <= len(counts) <= 2, log
        counted = [re.search(r"(\d+) malformed requests refused in the last", c) for c in counts]
        assert sum(int(m[1]) for m in counted if m) == len(self.METHODS) * self.PER_METHOD - 1
        assert "last: /grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo" in counts[-1]
        assert len(log.splitlines()) < 10, log


class TestMessageSize:
    """The gRPC receive limit guards the daemon without harming it."""

    async def test_one_mebibyte_request_is_refused(self, daemon_channel: Channel) -> None:
        """A 1 MiB text is refused with RESOURCE_EXHAUSTED and the next request works."""
        stub = hello_pb2_grpc.ChatRoomStub(daemon_channel)
        call = await joined(stub, "big", "alice")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.SendMessage(
                pb.Message(id="alice", roomID="big", message="x" * (1 << 20)), timeout=TIMEOUT
            )
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        reply = await stub.SendMessage(
            pb.Message(id="alice", roomID="big", message="still here"), timeout=TIMEOUT
        )
        assert reply.success
        (message,) = await read_messages(call, 1)
        assert message.message == "still here"
        call.cancel()

    async def test_largest_allowed_text_fits_the_receive_limit(
        self, daemon_channel: Channel
    ) -> None:
        """A text of exactly --max-message-bytes (64 KiB) passes the gRPC limit and is delivered."""
        stub = hello_pb2_grpc.ChatRoomStub(daemon_channel)
        call = await joined(stub, "largest", "alice")
        text = "é" * (65536 // 2)
        reply = await stub.SendMessage(
            pb.Message(id="a" * 128, roomID="largest", message=text), timeout=TIMEOUT
        )
        assert reply.success
        (message,) = await read_messages(call, 1)
        assert message.message == text
        call.cancel()


class TestShutdown:
    """The first SIGINT or SIGTERM drains; a second one stops at once."""

    @pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
    async def test_signal_ends_every_stream_and_exits_0(self, signum: signal.Signals) -> None:
        """Join and Subscribe streams in two rooms end UNAVAILABLE; the daemon exits 0 at once."""
        grace = 30.0
        with server_process(["--grace", str(grace)]) as server:
            server.follow_log()
            async with open_channel(server.address) as one, open_channel(server.address) as two:
                stub_one = hello_pb2_grpc.ChatRoomStub(one)
                stub_two = hello_pb2_grpc.ChatRoomStub(two)
                streams: list[grpc.aio.Call] = [
                    await joined(stub_one, "red", "alice"),
                    await joined(stub_two, "red", "bob"),
                    await joined(stub_two, "red", "bob"),  # a second device
                    await joined(stub_one, "blue", "carol"),
                    await subscribed(stub_two, "blue", "dave"),
                ]
                started = time.monotonic()
                server.signal(signum)
                statuses = await asyncio.gather(*(final_status(call) for call in streams))
                code = await server.await_exit(TIMEOUT)
                elapsed = time.monotonic() - started
            log = server.rest_of_log()
        assert statuses == [(grpc.StatusCode.UNAVAILABLE, SHUTDOWN_DETAILS)] * len(streams)
        assert code == 0, log
        assert elapsed < grace / 3, f"took {elapsed:.1f}s of a {grace}s grace period"
        assert f"{signum.name}: draining" in log
        assert "hello-server stopped" in log
        assert_no_traceback(log)

    async def test_health_watcher_does_not_hold_the_drain(self) -> None:
        """A Health/Watch stream, which never ends by itself, does not delay the exit."""
        grace = 60.0
        with server_process(["--grace", str(grace)]) as server:
            async with open_channel(server.address) as channel:
                watch = health_pb2_grpc.HealthStub(channel).Watch(
                    health_pb2.HealthCheckRequest(service="")
                )
                first = await asyncio.wait_for(watch.read(), TIMEOUT)
                assert first.status == health_pb2.HealthCheckResponse.SERVING
                member = await joined(hello_pb2_grpc.ChatRoomStub(channel), "room", "alice")
                server.signal(signal.SIGTERM)
                draining = await asyncio.wait_for(watch.read(), TIMEOUT)
                assert draining.status == health_pb2.HealthCheckResponse.NOT_SERVING
                code = await server.await_exit(TIMEOUT)  # far less than the grace period
                assert await final_status(member) == (
                    grpc.StatusCode.UNAVAILABLE,
                    SHUTDOWN_DETAILS,
                )
                watch_code, _ = await final_status(watch)
            log = server.rest_of_log()
        assert code == 0, log
        assert watch_code != grpc.StatusCode.OK
        assert "hello-server stopped" in log
        assert_no_traceback(log)

    # The second signal used to start a second stop of the gRPC server while
    # the first was pending, which crashed the process (SIGSEGV) in 5 of 40
    # runs of this scenario here (1 in 4 where the issue was filed): 25 runs
    # miss a 1-in-8 crash with probability 3.5%.
    CUT_SHORT_RUNS = 25

    async def test_second_signal_cuts_the_drain_short(self) -> None:
        """A second signal while a stuck stream holds the drain open stops at once, exit 1."""
        for run in range(1, self.CUT_SHORT_RUNS + 1):
            with server_process([*STALL_ARGS, "--grace", "30"]) as server:
                server.follow_log()
                async with open_channel(server.address) as channel:
                    member = await stall_a_member(channel, messages=300)
                    server.signal(signal.SIGTERM)
                    await server.await_log("SIGTERM: draining", TIMEOUT)
                    assert server.process.poll() is None, "the drain ended early"
                    server.signal(signal.SIGINT)
                    code = await server.await_exit(TIMEOUT)
                    member.cancel()
                log = server.rest_of_log()
            assert code == 1, f"run {run}: exit code {code}\n{log}"
            assert "second signal: stopping now" in log
            assert "hello-server stopped" not in log
            assert_no_traceback(log)

    async def test_drain_is_bounded_by_the_grace_period(self) -> None:
        """A stream stuck writing to a client that stopped reading is cut off at --grace; exit 0."""
        grace = 1.0
        with server_process([*STALL_ARGS, "--grace", str(grace)]) as server:
            async with open_channel(server.address) as channel:
                watch = await watch_health(channel)
                member = await stall_a_member(channel)
                started = time.monotonic()
                server.signal(signal.SIGTERM)
                draining = await asyncio.wait_for(watch.read(), TIMEOUT)
                assert draining.status == health_pb2.HealthCheckResponse.NOT_SERVING
                code = await server.await_exit(TIMEOUT)
                elapsed = time.monotonic() - started
                member.cancel()
            log = server.rest_of_log()
        assert code == 0, log
        assert grace * 0.9 <= elapsed < grace + 5.0
        assert "hello-server stopped" in log
        assert_no_traceback(log)

    async def test_two_quick_sigints_exit_promptly(self) -> None:
        """Two SIGINTs back to back (impatient Ctrl-C) exit promptly with 0 or 1, no traceback."""
        with server_process(["--grace", "30"]) as server:
            server.follow_log()
            async with open_channel(server.address) as channel:
                member = await joined(hello_pb2_grpc.ChatRoomStub(channel), "room", "alice")
                server.signal(signal.SIGINT)
                server.signal(signal.SIGINT)
                code = await server.await_exit(TIMEOUT)
                member_code, _ = await final_status(member)
            log = server.rest_of_log()
        assert code in (0, 1), log
        assert member_code == grpc.StatusCode.UNAVAILABLE
        assert_no_traceback(log)
