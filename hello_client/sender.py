"""StreamSender: many sends in flight over one SendStream call.

For bots and bridges that send at a high rate: a unary SendMessage costs a
whole RPC per message, a SendStream message only a stream write. Every
message is still acknowledged one by one, in order, so nothing is lost
silently: ``send`` returns the message's sequence number, or raises the
refusal for that message alone. Against a server without SendStream it falls
back to SendMessage.

One writer task owns the stream: it writes the queued messages in order and
notes, per stream, which send each acknowledgement belongs to; one reader
task per stream hands the acknowledgements out. So a cancelled ``send`` (a
``wait_for`` that timed out) touches nothing shared: a message it had not
written yet is dropped, and the acknowledgement of one already written is
read and discarded when it comes. When a stream ends, only the sends written
to it fail, and the next message opens a new one.
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

__all__ = ["StreamSender"]

_STATUS_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}

_SendCall = grpc.aio.StreamStreamCall[pb.Message, pb.Exit]
# A message to write and the future its acknowledgement resolves; None closes.
_Outgoing = tuple[pb.Message, "asyncio.Future[int]"] | None


class _Unimplemented(Exception):
    """The server has no SendStream: fall back to SendMessage."""


class _Stream:
    """One SendStream call, the task reading its acks, and the sends awaiting them."""

    def __init__(self, call: _SendCall, target: str) -> None:
        self.call = call
        self._target = target
        # Futures of the messages written, in write order (acks come in that order).
        self.unacknowledged: deque[asyncio.Future[int]] = deque()
        self.reader = asyncio.create_task(self._read_acks(), name="send-stream-acks")

    async def _read_acks(self) -> None:
        failure: Exception = ServerUnavailable(f"server {self._target} ended the send stream")
        try:
            async for reply in self.call:
                ack = self.unacknowledged.popleft()
                if ack.done():  # its send was cancelled: nobody wants the answer
                    continue
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
            # The call is over: whatever this stream still owes fails.
            while self.unacknowledged:
                ack = self.unacknowledged.popleft()
                if not ack.done():
                    ack.set_exception(failure)

    async def close(self) -> None:
        """Half-close, let the acks still due arrive, then make sure the call is over."""
        with contextlib.suppress(grpc.aio.AioRpcError, grpc.aio.UsageError):
            await self.call.done_writing()
        try:
            await asyncio.shield(self.reader)
        finally:
            # Only if the close itself was cancelled: end the call, and wait for
            # the reader to fail what is left, so nothing outlives the sender.
            if not self.reader.done():
                self.call.cancel()
                await asyncio.wait([self.reader])


class StreamSender(AsyncClosing):
    """Pipelined, individually acknowledged sends. Use ``async with``."""

    def __init__(self, client: ChatClient) -> None:
        """A sender over ``client``'s channel; falls back to ``client.send``."""
        self._client = client
        self._target = client.target
        self._open_call = client.channel.stream_stream(
            SEND_STREAM_METHOD,
            request_serializer=pb.Message.SerializeToString,
            response_deserializer=pb.Exit.FromString,
        )
        self._outbox: asyncio.Queue[_Outgoing] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self._unimplemented = False

    async def send(self, room: str, user: str, text: str, *, name: str = "") -> int:
        """Send one message; return its sequence number once the server accepted it.

        ``name`` is the sender's display name, as for ``ChatClient.send``.
        Input over the client's limits is refused before it is queued.
        Cancelling a send never affects the others.
        """
        if self._closed:
            raise RuntimeError("send() on a closed StreamSender")
        if self._unimplemented:
            return await self._client.send(room, user, text, name=name)
        self._client.check_message(room, user, text, name)
        ack: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        message = pb.Message(id=user, roomID=room, message=text, name=name)
        self._outbox.put_nowait((message, ack))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_all(), name="send-stream-writer")
        try:
            return await ack
        except _Unimplemented:
            self._unimplemented = True
            return await self._client.send(room, user, text, name=name)

    async def close(self) -> None:
        """Finish after the acknowledgements still due; no task or call outlives this."""
        self._closed = True
        if self._writer is None:
            return
        self._outbox.put_nowait(None)
        try:
            await asyncio.shield(self._writer)
        finally:
            if not self._writer.done():  # close() itself was cancelled
                self._writer.cancel()
                await asyncio.wait([self._writer])

    async def _write_all(self) -> None:
        """Write queued messages in order, opening a stream whenever the last one ended."""
        stream: _Stream | None = None
        try:
            while (outgoing := await self._outbox.get()) is not None:
                message, ack = outgoing
                if ack.done():  # cancelled before it was written: not sent at all
                    continue
                if self._unimplemented:
                    ack.set_exception(_Unimplemented())
                    continue
                if stream is None or stream.reader.done():
                    if stream is not None:
                        await stream.close()  # already over: this only reaps it
                    # No request iterator: messages are written one by one.
                    call = self._open_call(metadata=self._client.metadata)  # type: ignore[call-arg]
                    stream = _Stream(call, self._target)
                stream.unacknowledged.append(ack)
                # If the call has ended, its reader fails ``ack`` with the status.
                with contextlib.suppress(grpc.aio.AioRpcError, grpc.aio.UsageError):
                    await stream.call.write(message)
        finally:
            try:
                if stream is not None:
                    await stream.close()
            finally:
                # Only when the writer was cancelled (close() cancelled): the
                # sends still queued are not sent, and say so.
                while not self._outbox.empty():
                    if (left := self._outbox.get_nowait()) is not None and not left[1].done():
                        left[1].set_exception(
                            ServerUnavailable("the sender was closed before the message was sent")
                        )
