"""StreamSender: many sends in flight over one SendStream call.

For bots and bridges that send at a high rate: a unary SendMessage costs a
whole RPC per message, a SendStream message only a stream write. Every
message is still acknowledged one by one, in order, so nothing is lost
silently: ``send`` returns the message's sequence number, or raises the
refusal for that message alone. Against a server without SendStream it falls
back to SendMessage.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

import grpc

from hello_client.client import AsyncClosing, ChatClient
from hello_client.errors import ServerUnavailable, from_rpc_error, from_status
from hello_protocol import hello_pb2 as pb
from hello_protocol.wire import SEND_STREAM_METHOD

_STATUS_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}

SendCall = grpc.aio.StreamStreamCall[pb.Message, pb.Exit]


class _Unimplemented(Exception):
    """The server has no SendStream: fall back to SendMessage."""


class StreamSender(AsyncClosing):
    """Pipelined, individually acknowledged sends. Use ``async with``."""

    def __init__(self, client: ChatClient) -> None:
        """A sender over ``client``'s channel; falls back to ``client.send``."""
        self._client = client
        self._target = client.target
        self._open_stream = client.channel.stream_stream(
            SEND_STREAM_METHOD,
            request_serializer=pb.Message.SerializeToString,
            response_deserializer=pb.Exit.FromString,
        )
        self._call: SendCall | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: deque[asyncio.Future[int]] = deque()
        self._write_lock = asyncio.Lock()
        self._unimplemented = False

    async def send(self, room: str, user: str, text: str) -> int:
        """Send one message; return its sequence number once the server accepted it."""
        if self._unimplemented:
            return await self._client.send(room, user, text)
        message = pb.Message(id=user, roomID=room, message=text)
        ack: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        # Acks come back in write order, so queue the future and write under one lock.
        async with self._write_lock:
            call = self._stream()
            self._pending.append(ack)
            # If the call has ended, the reader fails ``ack`` with its status.
            with contextlib.suppress(grpc.aio.AioRpcError, grpc.aio.UsageError):
                await call.write(message)
        try:
            return await ack
        except _Unimplemented:
            self._unimplemented = True
            return await self._client.send(room, user, text)

    async def close(self) -> None:
        """Finish the stream after the acknowledgements still due."""
        call, reader = self._call, self._reader
        if call is None or reader is None:
            return
        async with self._write_lock:
            with contextlib.suppress(grpc.aio.AioRpcError, grpc.aio.UsageError):
                await call.done_writing()
        await reader

    def _stream(self) -> SendCall:
        if self._call is None:
            # No request iterator: messages are written one by one with write().
            call: SendCall = self._open_stream()  # type: ignore[call-arg]
            self._call = call
            self._reader = asyncio.create_task(self._read_acks(call))
        return self._call

    async def _read_acks(self, call: SendCall) -> None:
        failure: Exception = ServerUnavailable(f"server {self._target} ended the send stream")
        try:
            async for reply in call:
                ack = self._pending.popleft()
                if reply.success:
                    ack.set_result(reply.seq)
                else:
                    code = _STATUS_BY_NUMBER.get(reply.code, grpc.StatusCode.UNKNOWN)
                    ack.set_exception(from_status(code, reply.message, self._target))
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNIMPLEMENTED:
                failure = _Unimplemented()
            else:
                failure = from_rpc_error(error, self._target)
        finally:
            # The call is over: whatever is still unacknowledged fails, and
            # the next send opens a new stream.
            self._call = None
            self._reader = None
            while self._pending:
                ack = self._pending.popleft()
                if not ack.done():
                    ack.set_exception(failure)
