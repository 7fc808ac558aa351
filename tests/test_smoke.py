from __future__ import annotations

from hello_protocol import hello_pb2 as pb
from hello_protocol import hello_pb2_grpc
from hello_server import ChatServer
from tests.conftest import joined


async def test_send_reaches_member(server: ChatServer, stub: hello_pb2_grpc.ChatRoomStub) -> None:
    call = await joined(stub, "r", "alice")
    reply = await stub.SendMessage(pb.Message(id="bob", roomID="r", message="hi"))
    assert reply.success
    assert reply.seq == 1
    msg = await call.read()
    assert (msg.id, msg.roomID, msg.message, msg.seq) == ("bob", "r", "hi", 1)
    call.cancel()
    await server.hub.wait_until(lambda: not server.hub.has_room("r"))
