"""ChatClient: the async hello library that hello-chat, scripts and bots use.

``join`` prefers the batched ``Subscribe`` RPC and falls back to the original
``Join`` when the server answers UNIMPLEMENTED, so it works against servers
that only speak the original protocol. Either way the subscription is handed
out only after the server acknowledged the join (the response headers).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from types import TracebackType
from typing import NamedTuple, Self

import grpc

from hello_client.errors import HelloError, InvalidInput, ServerUnavailable, from_rpc_error
from hello_protocol import hello_pb2 as pb
from hello_protocol import validation
from hello_protocol.wire import (
    CLIENT_KEEPALIVE_OPTIONS,
    DEFAULT_ADDRESS,
    DEFAULT_MAX_ID_CHARS,
    DEFAULT_MAX_TEXT_BYTES,
    ENVELOPE_ALLOWANCE_BYTES,
    JOIN_METHOD,
    SEND_METHOD,
    SUBSCRIBE_METHOD,
)

__all__ = ["ChatClient", "ChatMessage", "JoinCall", "Subscription"]

# gRPC's own default receive limit, which every gRPC client (grpc-go, grpc-js)
# has unless told otherwise; a server keeps each stream message under it.
_GRPC_DEFAULT_RECEIVE_BYTES = 4 * 1024 * 1024
# How long ``wait_connected`` waits for a first connection by default: longer
# than a loaded server takes to accept, shorter than a person's patience.
CONNECT_TIMEOUT_SECONDS = 10.0

# grpc-stubs does not declare the end-of-stream marker that read() returns.
_EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]


# A Join (one Message per read) or Subscribe (one MessageBatch per read) call.
JoinCall = (
    grpc.aio.UnaryStreamCall[pb.JoinRequest, pb.Message]
    | grpc.aio.UnaryStreamCall[pb.JoinRequest, pb.MessageBatch]
)


class ChatMessage(NamedTuple):
    """A message as delivered by the server.

    A named tuple: high-rate readers build one per delivery, and a tuple is
    several times cheaper to make than a frozen dataclass. The datetime is
    built only when asked for.
    """

    sender: str
    room: str
    text: str
    timestamp_ns: int  # the server's acceptance time, ns since the Unix epoch
    seq: int

    @property
    def timestamp(self) -> datetime:
        """The server's acceptance time, timezone-aware (UTC), to the microsecond."""
        seconds, nanos = divmod(self.timestamp_ns, 1_000_000_000)
        return datetime.fromtimestamp(seconds, UTC).replace(microsecond=nanos // 1000)

    @classmethod
    def from_proto(cls, message: pb.Message) -> ChatMessage:
        stamp = message.timestamp
        return cls(
            message.id,
            message.roomID,
            message.message,
            stamp.seconds * 1_000_000_000 + stamp.nanos,
            message.seq,
        )


class AsyncClosing:
    """``async with`` for an object with an async ``close()``: closes on exit."""

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class Subscription(AsyncClosing):
    """A joined room: iterate it for messages; close it (or exit) to leave."""

    def __init__(
        self,
        call: JoinCall,
        *,
        batched: bool,
        target: str,
        room: str,
        user: str,
    ) -> None:
        self._call = call
        self._batched = batched
        self._target = target
        self._pending: deque[pb.Message] = deque()
        self.room = room
        self.user = user

    @property
    def batched(self) -> bool:
        """True when the server speaks Subscribe, False on the original Join."""
        return self._batched

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ChatMessage:
        while not self._pending:
            try:
                item = await self._call.read()
            except grpc.aio.AioRpcError as error:
                raise from_rpc_error(error, self._target) from None
            if item is _EOF:
                raise StopAsyncIteration
            if isinstance(item, pb.MessageBatch):
                self._pending.extend(item.messages)
            else:
                assert isinstance(item, pb.Message)
                self._pending.append(item)
        return ChatMessage.from_proto(self._pending.popleft())

    async def close(self) -> None:
        """Leave the room: the server removes the member when the call ends."""
        self._call.cancel()


class ChatClient(AsyncClosing):
    """One channel to a hello server. Use as ``async with ChatClient(...)``."""

    def __init__(
        self,
        target: str = DEFAULT_ADDRESS,
        *,
        max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES,
        max_id_chars: int = DEFAULT_MAX_ID_CHARS,
        batched: bool = True,
        channel_options: Sequence[tuple[str, int]] = (),
    ) -> None:
        """A channel to ``target`` (``host:port``); no connection is made until needed.

        ``max_text_bytes`` and ``max_id_chars`` are the server's input limits
        (its defaults unless told otherwise): input over them is refused
        before it is sent, and received messages may be as large as the
        text limit allows. ``batched=False`` always uses the original Join
        RPC (one message per read). ``channel_options`` are extra gRPC channel
        arguments, e.g. ``("grpc.use_local_subchannel_pool", 1)`` for a
        connection of its own.
        """
        self.target = target
        self.limits = validation.InputLimits(
            max_id_chars=max_id_chars, max_text_bytes=max_text_bytes
        )
        largest_message = max_text_bytes + ENVELOPE_ALLOWANCE_BYTES
        self._channel = grpc.aio.insecure_channel(
            target,
            options=[
                # gRPC's default, raised only as far as the largest message
                # the server may deliver: never unlimited.
                (
                    "grpc.max_receive_message_length",
                    max(_GRPC_DEFAULT_RECEIVE_BYTES, largest_message),
                ),
                ("grpc.max_send_message_length", largest_message),
                *CLIENT_KEEPALIVE_OPTIONS,
                *channel_options,
            ],
        )
        # Typed multicallables rather than the untyped generated stub.
        self._join = self._channel.unary_stream(
            JOIN_METHOD,
            request_serializer=pb.JoinRequest.SerializeToString,
            response_deserializer=pb.Message.FromString,
        )
        self._subscribe = self._channel.unary_stream(
            SUBSCRIBE_METHOD,
            request_serializer=pb.JoinRequest.SerializeToString,
            response_deserializer=pb.MessageBatch.FromString,
        )
        self._send = self._channel.unary_unary(
            SEND_METHOD,
            request_serializer=pb.Message.SerializeToString,
            response_deserializer=pb.Exit.FromString,
        )
        self._subscribe_unimplemented = not batched

    async def close(self) -> None:
        await self._channel.close(None)

    @property
    def channel(self) -> grpc.aio.Channel:
        """The underlying channel, for RPCs the client does not wrap."""
        return self._channel

    async def wait_connected(self, seconds: float = CONNECT_TIMEOUT_SECONDS) -> None:
        """Return once the channel is connected; raise ServerUnavailable if it cannot be.

        For callers that may never make a call (piped input that turns out
        empty) but must still learn that the server is not there. A failed
        connection attempt ends the wait at once; a silent network, after
        ``seconds``.
        """
        state = self._channel.get_state(try_to_connect=True)
        try:
            async with asyncio.timeout(seconds):
                while state != grpc.ChannelConnectivity.READY:
                    if state == grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                        raise ServerUnavailable(
                            f"cannot reach server {self.target}: "
                            "the connection failed (is hello-server running there?)"
                        )
                    await self._channel.wait_for_state_change(state)
                    state = self._channel.get_state(try_to_connect=True)
        except TimeoutError:
            raise ServerUnavailable(
                f"cannot reach server {self.target}: no connection within {seconds:g} s"
            ) from None

    async def join(self, room: str, user: str, name: str = "") -> Subscription:
        """Join ``room`` as ``user``; return once the server acknowledged it."""
        with _refused_here():
            validation.check_id("room id", room, self.limits)
            validation.check_id("user id", user, self.limits)
            validation.check_name(name, self.limits)
        request = pb.JoinRequest(roomID=room, user=pb.User(id=user, name=name))
        if not self._subscribe_unimplemented:
            try:
                return await self._open(self._subscribe(request), True, room, user)
            except _Unimplemented:
                self._subscribe_unimplemented = True
        return await self._open(self._join(request), False, room, user)

    async def send(self, room: str, user: str, text: str) -> int:
        """Send ``text`` to ``room`` as ``user``; return the message's sequence number.

        Input over the limits is refused with InvalidInput before it is sent.
        """
        self.check_message(room, user, text)
        try:
            reply: pb.Exit = await self._send(pb.Message(id=user, roomID=room, message=text))
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error, self.target) from None
        if not reply.success:
            raise HelloError(reply.message or "the server did not accept the message")
        return reply.seq

    def check_message(self, room: str, user: str, text: str) -> None:
        """Raise InvalidInput, in the server's words, if the server would refuse this message."""
        with _refused_here():
            validation.check_id("room id", room, self.limits)
            validation.check_id("sender id", user, self.limits)
            validation.check_text(text, self.limits)

    async def _open(
        self,
        call: JoinCall,
        batched: bool,
        room: str,
        user: str,
    ) -> Subscription:
        try:
            await call.initial_metadata()
            # A refusal arrives as headers and status together ("trailers
            # only"); a real acknowledgement leaves the call running.
            if call.done():
                await call.read()  # raises the call's error
                raise ServerUnavailable(f"server {self.target} ended the join at once")
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNIMPLEMENTED and batched:
                raise _Unimplemented from None
            raise from_rpc_error(error, self.target) from None
        except BaseException:
            call.cancel()
            raise
        return Subscription(call, batched=batched, target=self.target, room=room, user=user)


@contextmanager
def _refused_here() -> Iterator[None]:
    """The shared checks' refusal as the library's InvalidInput, in the same words."""
    try:
        yield
    except validation.InvalidInput as error:
        raise InvalidInput(str(error)) from None


class _Unimplemented(Exception):
    """The server has no Subscribe RPC: use Join."""
