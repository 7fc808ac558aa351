"""--log-format json on the real daemon, and the command line of the new options."""

from __future__ import annotations

import json
import re
import socket
import subprocess

import grpc

from hello_protocol import hello_pb2 as pb
from tests.support.calls import joined, open_stub, rpc_error, send
from tests.support.processes import run_server_command, server_process


def assert_one_server_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("hello-server: error: "), result.stderr
    assert fragment in lines[0], result.stderr


async def test_json_lines_parse_and_carry_the_context() -> None:
    args = ["--log-level", "debug", "--send-rate", "0.01", "--send-burst", "1"]
    args += ["--metrics-port", "0"]
    with server_process(args, env={"HELLO_LOG_FORMAT": "json"}) as server:
        async with open_stub(server.address) as stub:
            call = await joined(stub, "r", "alice")
            assert (await send(stub, "r", "mallory", "first")).success
            for _ in range(3):
                error = await rpc_error(send(stub, "r", "mallory", "again"))
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            await server.await_log(r"message refused for user 'mallory'")
            await server.await_log(r"alice joined room")
            call.cancel()
            await server.await_log(r"alice left room")
        entries = [json.loads(line) for line in server.log]  # every line is one JSON object
    for entry in entries:
        assert {"time", "level", "logger", "event"} <= entry.keys(), entry
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", entry["time"])
    events = [entry["event"] for entry in entries]
    assert any(re.fullmatch(r"metrics on http://127\.0\.0\.1:\d+/metrics", e) for e in events)
    joined_line = next(e for e in entries if e["event"].startswith("alice joined room"))
    assert joined_line["level"] == "debug"
    assert (joined_line["room"], joined_line["user"]) == ("r", "alice")
    assert joined_line["peer"].startswith("ipv4:127.0.0.1:")
    refused = [e for e in entries if e["event"].startswith("message refused for user")]
    assert len(refused) == 1  # three refusals, one line in this interval
    assert refused[0]["level"] == "warning"
    assert (refused[0]["room"], refused[0]["user"]) == ("r", "mallory")
    assert refused[0]["status"] == "RESOURCE_EXHAUSTED"
    assert refused[0]["peer"].startswith("ipv4:127.0.0.1:")


def test_text_format_is_the_default() -> None:
    with server_process() as server:
        assert re.match(
            r"\d{4}-\d\d-\d\d \S+ INFO hello_server: hello-server ready on ", server.log[-1]
        )


def test_an_unknown_log_format_is_one_error_line() -> None:
    result = run_server_command(["--port", "0", "--log-format", "xml"])
    assert result.returncode == 2
    assert_one_server_error(result, "log format must be one of text, json")


def test_bad_limits_are_one_error_line() -> None:
    for args, fragment in (
        (["--send-rate", "-1"], "send rate must be between 0"),
        (["--send-burst", "0"], "send burst must be between 1"),
        (["--max-streams-per-user", "-1"], "max streams per user must not be negative"),
        (["--max-rooms-per-user", "-2"], "max rooms per user must not be negative"),
        (["--max-concurrent-rpcs", "-1"], "max concurrent RPCs must not be negative"),
        (["--metrics-port", "70000"], "metrics port 70000 is not in 0..65535"),
    ):
        result = run_server_command(["--port", "0", *args])
        assert result.returncode == 2, args
        assert_one_server_error(result, fragment)


def test_a_taken_metrics_port_is_a_startup_failure() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_server_command(["--port", "0", "--metrics-port", str(port)])
    assert result.returncode == 3
    assert_one_server_error(result, f"cannot serve metrics on 127.0.0.1:{port}")


async def test_limits_from_the_environment() -> None:
    env = {"HELLO_MAX_ROOMS_PER_USER": "1"}
    with server_process(env=env) as server:
        async with open_stub(server.address) as stub:
            call = await joined(stub, "a", "alice")
            refused = stub.Join(pb.JoinRequest(roomID="b", user=pb.User(id="alice")))
            error = await rpc_error(refused.read())
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "too many rooms" in (error.details() or "")
            call.cancel()
