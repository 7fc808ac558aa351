"""Clients generated from the ORIGINAL hello.ChatRoom schema keep working unchanged.

The original schema is compiled at test time into a temporary directory. The
client built from it runs in a subprocess (tests/original_client.py), so its
``hello_pb2`` never shares a descriptor pool with the project's.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from google.protobuf.descriptor_pb2 import FieldDescriptorProto, FileDescriptorSet

from hello_protocol import hello_pb2 as pb
from hello_server import ChatServer
from tests.support.calls import joined

# Exactly as written in the protocol contract ("The original schema").
ORIGINAL_SCHEMA = """\
syntax = "proto3";
package hello;
import "google/protobuf/timestamp.proto";

service ChatRoom {
  rpc Join(JoinRequest) returns (stream Message) {}
  rpc SendMessage(Message) returns (Exit) {}
}

message User { string id = 1; string name = 2; }
message Message {
  string id = 1;         // the sender's user id
  string roomID = 2;
  string message = 3;    // the text
  google.protobuf.Timestamp timestamp = 4;
}
message JoinRequest { string roomID = 1; User user = 2; }
message Exit { bool success = 1; string message = 2; }
"""

CLIENT = Path(__file__).with_name("original_client.py")
TIMEOUT = 10.0
DESCRIPTOR_SET = "original.pb"

if TYPE_CHECKING:
    from tests.support.calls import Stub


@pytest.fixture(scope="module")
def original_schema(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding hello_pb2 and hello_pb2_grpc generated from the original schema."""
    out = tmp_path_factory.mktemp("original_schema")
    (out / "hello.proto").write_text(ORIGINAL_SCHEMA)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{out}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            f"--descriptor_set_out={out / DESCRIPTOR_SET}",
            str(out / "hello.proto"),
        ],
        check=True,
        timeout=60,
    )
    return out


class OriginalClient:
    """The original-schema client subprocess and the JSON lines it prints."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def next_event(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), TIMEOUT)
        if not line:
            assert self.process.stderr is not None
            errors = await asyncio.wait_for(self.process.stderr.read(), TIMEOUT)
            raise AssertionError(f"the original client ended early:\n{errors.decode()}")
        event: dict[str, Any] = json.loads(line)
        return event


StartClient = Callable[[str, str, str], Awaitable[OriginalClient]]


@pytest.fixture
async def start_original_client(original_schema: Path) -> AsyncIterator[StartClient]:
    """Starts the original-schema client; kills it by PID if it outlives the test."""
    started: list[asyncio.subprocess.Process] = []

    async def start(address: str, room: str, user: str) -> OriginalClient:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(CLIENT),
            address,
            room,
            user,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(original_schema)},
        )
        started.append(process)
        return OriginalClient(process)

    yield start
    for process in started:
        if process.returncode is None:
            process.kill()
            await process.wait()


class TestOriginalClient:
    """A program generated from the original schema against today's server."""

    async def test_join_send_and_receive(
        self,
        server: ChatServer,
        stub: Stub,
        start_original_client: StartClient,
    ) -> None:
        """It joins, sends, and receives its own and another's message: id, room, text, time."""
        room, user = "compat", "old-client"
        before = time.time_ns()
        client = await start_original_client(server.address, room, user)

        assert await client.next_event() == {"event": "joined"}
        assert await client.next_event() == {"event": "sent", "success": True, "message": ""}
        own = await client.next_event()
        assert own["event"] == "received"
        assert (own["id"], own["roomID"], own["message"]) == (
            user,
            room,
            "hello from the original schema",
        )
        assert own["has_timestamp"]
        assert before <= own["timestamp_ns"] <= time.time_ns()

        # A message from a client of today's schema reaches the original one.
        watcher = await asyncio.wait_for(joined(stub, room, "today"), TIMEOUT)
        reply = await stub.SendMessage(
            pb.Message(id="today", roomID=room, message="from today's schema"), timeout=TIMEOUT
        )
        assert reply.success
        other = await client.next_event()
        assert (other["event"], other["id"], other["roomID"], other["message"]) == (
            "received",
            "today",
            room,
            "from today's schema",
        )
        assert own["timestamp_ns"] <= other["timestamp_ns"] <= time.time_ns()

        assert await client.next_event() == {
            "event": "error",
            "rpc": "SendMessage",
            "code": "NOT_FOUND",
        }
        assert await asyncio.wait_for(client.process.wait(), TIMEOUT) == 0
        # The original client's leaving leaves today's member alone in the room.
        await asyncio.wait_for(server.hub.wait_until(lambda: server.hub.member_count == 1), TIMEOUT)
        watcher.cancel()


class TestOriginalSchemaOnTheWire:
    """Today's schema is the original one plus additions only."""

    def test_every_original_field_and_rpc_is_unchanged(self, original_schema: Path) -> None:
        """Each original message field keeps its number, type and label; each RPC its shape."""
        (original,) = FileDescriptorSet.FromString(
            (original_schema / DESCRIPTOR_SET).read_bytes()
        ).file
        today = pb.DESCRIPTOR
        assert original.package == today.package == "hello"
        for message in original.message_type:
            current = today.message_types_by_name[message.name]
            for field in message.field:
                now = current.fields_by_number[field.number]
                assert now.name == field.name
                assert now.type == field.type
                assert now.is_repeated == (field.label == FieldDescriptorProto.LABEL_REPEATED)
                if field.type_name:
                    assert now.message_type is not None
                    assert now.message_type.full_name == field.type_name.lstrip(".")
        (service,) = original.service
        current_service = today.services_by_name[service.name]
        for method in service.method:
            now_method = current_service.methods_by_name[method.name]
            assert now_method.input_type.full_name == method.input_type.lstrip(".")
            assert now_method.output_type.full_name == method.output_type.lstrip(".")
            assert now_method.client_streaming == method.client_streaming
            assert now_method.server_streaming == method.server_streaming
