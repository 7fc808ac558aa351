"""ChatClient: the async hello library that hello-chat, scripts and bots use.

``join`` prefers the batched ``Subscribe`` RPC and falls back to the original
``Join`` when the server answers UNIMPLEMENTED, so it works against servers
that only speak the original protocol. Either way the subscription is handed
out only after the server acknowledged the join (the response headers).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import weakref
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import NamedTuple, Self

import grpc

from hello_client.backoff import NO_RECONNECT, ReconnectPolicy
from hello_client.credentials import ClientTls, bearer_metadata
from hello_client.errors import HelloError, InvalidInput, ServerUnavailable, from_rpc_error
from hello_client.events import (
    ChatMessage,
    Member,
    PresenceChange,
    Reconnected,
    Reconnecting,
    RoomEvent,
)
from hello_protocol import hello_pb2 as pb
from hello_protocol import validation
from hello_protocol.wire import (
    CLIENT_KEEPALIVE_OPTIONS,
    DEFAULT_ADDRESS,
    DEFAULT_MAX_ID_CHARS,
    DEFAULT_MAX_TEXT_BYTES,
    ENVELOPE_ALLOWANCE_BYTES,
    EPOCH_HEADER,
    JOIN_METHOD,
    MEMBERS_METHOD,
    RECOVERED_HEADER,
    SEND_METHOD,
    SEQ_HEADER,
    SUBSCRIBE_METHOD,
)

__all__ = ["ChatClient", "ChatMessage", "JoinCall", "Subscription"]

DEFAULT_RECONNECT = ReconnectPolicy()

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


class _Filled(enum.Enum):
    FILLED = "filled"


_FILLED = _Filled.FILLED


class _Opened(NamedTuple):
    """An acknowledged join: the call, which RPC it is, and the acknowledgement's headers."""

    call: JoinCall
    batched: bool
    epoch: str  # "" from a server that does not say (original protocol)
    seq: int  # the room's last seq at the join; 0 when not said
    recovered: bool | None  # None unless the join asked to resume


class Subscription(AsyncClosing):
    """A joined room: iterate it for messages; close it (or exit) to leave.

    ``async for message in subscription`` yields the room's ``ChatMessage``s;
    ``events()`` yields those and everything else that happens to the room
    (``PresenceChange``, ``Reconnecting``, ``Reconnected``).

    When the stream is lost (UNAVAILABLE: the connection dropped, the server
    restarted or is draining), the subscription joins again by itself, as
    ``ReconnectPolicy`` says, resuming after the last message it received, and
    drops any message it already had: each message is yielded once. Whether
    messages were lost in between is told by ``Reconnected.recovered`` (and
    ``recovered``). Other endings (eviction, refusals) raise as they are.
    """

    def __init__(
        self,
        client: ChatClient,
        request: pb.JoinRequest,
        opened: _Opened,
        policy: ReconnectPolicy,
    ) -> None:
        self._client = client
        self._request = request
        self._policy = policy
        self._pending: deque[RoomEvent] = deque()
        self._closed = asyncio.Event()
        self.room = request.roomID
        self.user = request.user.id
        self.last_seq = 0  # the seq of the last message yielded (0: none yet)
        self.recovered: bool | None = None  # after a reconnect: nothing was missed
        self.reconnects = 0
        self._install(opened)
        # What the first join asked for: the replay, if any, follows this seq.
        self._accepted_seq = max(0, opened.seq - request.history) if request.history else opened.seq
        # ...and ends with this one (0: none asked for, or another epoch since).
        self._history_end = opened.seq if request.history else 0

    def _install(self, opened: _Opened) -> None:
        self._call: JoinCall | None = opened.call
        self._batched = opened.batched
        self.epoch = opened.epoch
        self.joined_seq = opened.seq

    def replayed(self, message: ChatMessage) -> bool:
        """Whether ``message`` is from the history the join asked for, not a live one.

        Known by its seq: the replay ends with the room's seq at the first
        join (``hello-seq``). Messages recovered by a reconnect were sent
        while away, so they count as live; after a reconnect that could not
        recover (a new epoch), nothing is history any more.
        """
        return 0 < message.seq <= self._history_end

    @property
    def batched(self) -> bool:
        """True when the server speaks Subscribe, False on the original Join."""
        return self._batched

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ChatMessage:
        # The hot path of every reader: no coroutine call per message.
        pending = self._pending
        while True:
            while pending:
                event = pending.popleft()
                if type(event) is ChatMessage:
                    if event.seq:
                        self.last_seq = event.seq
                    return event
            if await self._fill() is None:
                raise StopAsyncIteration

    async def events(self) -> AsyncIterator[RoomEvent]:
        """Every event of the room, in order, until the server ends the stream."""
        while (event := await self.next_event()) is not None:
            yield event

    async def next_event(self) -> RoomEvent | None:
        """The next event; None when the stream ended (or the subscription was closed)."""
        while not self._pending:
            outcome = await self._fill()
            if outcome is not _FILLED:
                return outcome
        event = self._pending.popleft()
        if type(event) is ChatMessage and event.seq:
            self.last_seq = event.seq
        return event

    async def _fill(self) -> _Filled | Reconnecting | Reconnected | None:
        """Read the next delivery into ``_pending``, or say what happened instead.

        ``_FILLED`` when something was read (it may all have been dropped as
        already seen), a connection change, or None at the end of the stream.
        """
        if self._call is None:
            return await self._reconnect()
        try:
            item = await self._call.read()
        except grpc.aio.AioRpcError as error:
            failure = from_rpc_error(error, self._client.target)
            if self._retried(error.code()):
                self._call = None
                return Reconnecting(str(failure))
            raise failure from None
        if item is _EOF:
            return None
        if isinstance(item, pb.MessageBatch):
            self._accept(item.messages)
            if item.presence:
                self._pending.extend(map(PresenceChange.from_proto, item.presence))
        else:
            assert isinstance(item, pb.Message)
            self._accept((item,))
        return _FILLED

    def _accept(self, messages: Iterable[pb.Message]) -> None:
        """Queue ``messages`` as ChatMessages, dropping those already had."""
        from_proto = ChatMessage.from_proto
        if not self.epoch:
            # Seqs are comparable only within an epoch, and only a server
            # that says its epoch numbers messages: elsewhere nothing is dropped.
            self._pending.extend(map(from_proto, messages))
            return
        append = self._pending.append
        floor = self._accepted_seq
        for message in messages:
            seq = message.seq
            if seq > floor:  # else already had (a resume's replay overlapping)
                append(from_proto(message))
                floor = seq
        self._accepted_seq = floor

    def _retried(self, code: grpc.StatusCode) -> bool:
        return (
            code == grpc.StatusCode.UNAVAILABLE
            and self._policy.give_up_seconds > 0
            and not self._closed.is_set()
        )

    async def _reconnect(self) -> Reconnected | None:
        """Join again until it works; None if the subscription was closed meanwhile."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        request = pb.JoinRequest()
        request.CopyFrom(self._request)
        request.history = 0
        if self.epoch:  # resume after the last message this subscription had
            request.since_seq = self._accepted_seq
            request.epoch = self.epoch
        attempt = 0
        while True:
            attempt += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._policy.delay(attempt)):
                    await self._closed.wait()
            if self._closed.is_set():
                return None
            try:
                opened = await self._client.open_join(request)
            except ServerUnavailable as error:
                waited = loop.time() - started
                if waited >= self._policy.give_up_seconds:
                    raise ServerUnavailable(
                        f"gave up rejoining {self.room} after {waited:.0f} s: {error}"
                    ) from None
                continue
            if self._closed.is_set():  # closed while the join was on its way
                opened.call.cancel()
                return None
            break
        recovered = bool(opened.recovered) and opened.epoch == self.epoch
        if not recovered:
            # Nothing is replayed: what follows is live, after the room's seq now.
            self._accepted_seq = opened.seq
            self._history_end = 0
        self._install(opened)
        self.recovered = recovered
        self.reconnects += 1
        return Reconnected(recovered, attempt)

    async def close(self) -> None:
        """Leave the room: the server removes the member when the call ends."""
        self._closed.set()
        if self._call is not None:
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
        tls: ClientTls | None = None,
        token: str | None = None,
    ) -> None:
        """A channel to ``target`` (``host:port``); no connection is made until needed.

        ``max_text_bytes`` and ``max_id_chars`` are the server's input limits
        (its defaults unless told otherwise): input over them is refused
        before it is sent, and received messages may be as large as the
        text limit allows. ``batched=False`` always uses the original Join
        RPC (one message per read). ``channel_options`` are extra gRPC channel
        arguments, e.g. ``("grpc.use_local_subchannel_pool", 1)`` for a
        connection of its own.

        ``tls``: connect over TLS (``ClientTls()`` trusts the system's CAs).
        ``token``: sent as ``authorization: Bearer <token>`` with every call,
        for servers that require authentication. ValueError if it is not
        one word of printable characters.
        """
        self.target = target
        self.limits = validation.InputLimits(
            max_id_chars=max_id_chars, max_text_bytes=max_text_bytes
        )
        largest_message = max_text_bytes + ENVELOPE_ALLOWANCE_BYTES
        self.metadata = bearer_metadata(token)
        self.tls = tls
        options = [
            # gRPC's default, raised only as far as the largest message
            # the server may deliver: never unlimited.
            (
                "grpc.max_receive_message_length",
                max(_GRPC_DEFAULT_RECEIVE_BYTES, largest_message),
            ),
            ("grpc.max_send_message_length", largest_message),
            *CLIENT_KEEPALIVE_OPTIONS,
            # Reconnect to a restarted server within seconds: gRPC's own
            # backoff grows to two minutes, longer than a subscription waits.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 5000),
            *channel_options,
        ]
        if tls is None:
            self._channel = grpc.aio.insecure_channel(target, options=options)
        else:
            self._channel = grpc.aio.secure_channel(target, tls.credentials(), options=options)
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
        self._members = self._channel.unary_unary(
            MEMBERS_METHOD,
            request_serializer=pb.RoomRequest.SerializeToString,
            response_deserializer=pb.MemberList.FromString,
        )
        self._send = self._channel.unary_unary(
            SEND_METHOD,
            request_serializer=pb.Message.SerializeToString,
            response_deserializer=pb.Exit.FromString,
        )
        self._subscribe_unimplemented = not batched
        # Open subscriptions, so that closing the client ends them too (one
        # waiting to reconnect would otherwise wait out its backoff first).
        self._subscriptions: weakref.WeakSet[Subscription] = weakref.WeakSet()

    async def close(self) -> None:
        """Close the channel, ending every subscription of this client (as their ``close``)."""
        for subscription in list(self._subscriptions):
            await subscription.close()
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

    async def join(
        self,
        room: str,
        user: str,
        name: str = "",
        *,
        history: int = 0,
        presence: bool = False,
        reconnect: ReconnectPolicy | None = DEFAULT_RECONNECT,
    ) -> Subscription:
        """Join ``room`` as ``user``; return once the server acknowledged it.

        ``history``: first replay up to that many of the room's latest
        messages (servers that keep no history replay none). ``presence``:
        also yield ``PresenceChange`` events from ``Subscription.events()``
        (Subscribe servers only). ``reconnect``: how the subscription joins
        again when the stream is lost; None never does (the loss raises
        ServerUnavailable, as before).
        """
        with _refused_here():
            validation.check_id("room id", room, self.limits)
            validation.check_id("user id", user, self.limits)
            validation.check_name(name, self.limits)
        if history < 0:
            raise InvalidInput(f"history must be 0 or more, not {history}")
        request = pb.JoinRequest(
            roomID=room, user=pb.User(id=user, name=name), history=history, presence=presence
        )
        opened = await self.open_join(request)
        subscription = Subscription(self, request, opened, reconnect or NO_RECONNECT)
        self._subscriptions.add(subscription)
        return subscription

    async def open_join(self, request: pb.JoinRequest) -> _Opened:
        """One acknowledged Subscribe (or, on servers without it, Join) call."""
        if not self._subscribe_unimplemented:
            try:
                return await self._open(self._subscribe(request, metadata=self.metadata), True)
            except _Unimplemented:
                self._subscribe_unimplemented = True
        return await self._open(self._join(request, metadata=self.metadata), False)

    async def members(self, room: str) -> list[Member]:
        """The users in ``room`` now; RoomNotFound when nobody is in it."""
        with _refused_here():
            validation.check_id("room id", room, self.limits)
        try:
            reply: pb.MemberList = await self._members(
                pb.RoomRequest(roomID=room), metadata=self.metadata
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error, self.target, tls=self.tls is not None) from None
        return [Member.from_proto(member) for member in reply.members]

    async def send(self, room: str, user: str, text: str, *, name: str = "") -> int:
        """Send ``text`` to ``room`` as ``user``; return the message's sequence number.

        ``name`` is the display name members see (empty: they see ``user``).
        Input over the limits is refused with InvalidInput before it is sent.
        """
        self.check_message(room, user, text, name)
        message = pb.Message(id=user, roomID=room, message=text, name=name)
        try:
            reply: pb.Exit = await self._send(message, metadata=self.metadata)
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error, self.target, tls=self.tls is not None) from None
        if not reply.success:
            raise HelloError(reply.message or "the server did not accept the message")
        return reply.seq

    def check_message(self, room: str, user: str, text: str, name: str = "") -> None:
        """Raise InvalidInput, in the server's words, if the server would refuse this message."""
        with _refused_here():
            validation.check_id("room id", room, self.limits)
            validation.check_id("sender id", user, self.limits)
            validation.check_text(text, self.limits)
            validation.check_name(name, self.limits)

    async def _open(self, call: JoinCall, batched: bool) -> _Opened:
        try:
            headers = await call.initial_metadata()
            # A refusal arrives as headers and status together ("trailers
            # only"); a real acknowledgement leaves the call running.
            if call.done():
                await call.read()  # raises the call's error
                raise ServerUnavailable(f"server {self.target} ended the join at once")
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNIMPLEMENTED and batched:
                raise _Unimplemented from None
            raise from_rpc_error(error, self.target, tls=self.tls is not None) from None
        except BaseException:
            call.cancel()
            raise
        return _acknowledged(call, batched, headers)


def _acknowledged(call: JoinCall, batched: bool, headers: grpc.aio.Metadata | None) -> _Opened:
    """The join acknowledgement's headers, read leniently: a server may send none."""
    values: dict[str, str] = {}
    for key, value in headers or ():
        if isinstance(value, str):
            values[key] = value
    try:
        seq = int(values.get(SEQ_HEADER, "0"))
    except ValueError:
        seq = 0
    recovered = values.get(RECOVERED_HEADER)
    return _Opened(
        call,
        batched,
        values.get(EPOCH_HEADER, ""),
        max(seq, 0),
        None if recovered is None else recovered == "true",
    )


@contextmanager
def _refused_here() -> Iterator[None]:
    """The shared checks' refusal as the library's InvalidInput, in the same words."""
    try:
        yield
    except validation.InvalidInput as error:
        raise InvalidInput(str(error)) from None


class _Unimplemented(Exception):
    """The server has no Subscribe RPC: use Join."""
