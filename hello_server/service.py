"""The hello.ChatRoom gRPC service: validation, status codes, hub calls.

Requests arrive as raw bytes and are parsed here, so a malformed request is
answered with INVALID_ARGUMENT rather than gRPC's generic deserialisation
error. Deliveries leave as the bytes the hub queued: the stream handlers use a
pass-through serializer, so no message is serialised once per member.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import TypeVar, assert_never

import grpc
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage
from google.protobuf.timestamp_pb2 import Timestamp

from hello_protocol import hello_pb2 as pb
from hello_protocol.validation import InputLimits, InvalidInput, check_id, check_name, check_text
from hello_protocol.wire import (
    EPOCH_HEADER,
    RECOVERED_HEADER,
    RETRY_AFTER_HEADER,
    SEQ_HEADER,
    SERVICE_NAME,
    PresenceRecord,
    frame_batch,
)
from hello_server.auth import Forbidden, authorized_name
from hello_server.guard import Guard
from hello_server.hub import (
    BackendUnavailable,
    Catchup,
    Envelope,
    HubClosed,
    Joined,
    Member,
    PresenceChange,
    RoomHub,
    RoomNotFound,
)
from hello_server.limits import LimitExceeded
from hello_server.loop_lag import LoopLag
from hello_server.mailbox import CloseReason, Mailbox, MailboxClosed
from hello_server.reaper import StalledConnections
from hello_server.waves import Waves

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[bytes, bytes]
_Deliver = Callable[[Mailbox, Context], Awaitable[None]]
_Request = TypeVar("_Request")
_Response = TypeVar("_Response")

# What a client is told when the server fails for a reason of its own (a bug):
# not a status that invites a retry, and nothing of the server's internals.
INTERNAL_ERROR = "internal error"

# A Join stream writes at most this many queued messages before it lets the
# event loop run other work; a Subscribe batch carries at most this many.
MAX_BATCH = 512
# ...and at most this many bytes (a single larger message goes alone), so that
# every stream message fits a default gRPC client's 4 MiB receive limit with
# room to spare, and a stalled stream holds little in one write: the frame,
# gRPC's copy of it and gRPC's copy of the previous one count in the member's
# 1 MiB queue bound (below).
MAX_BATCH_BYTES = 128 * 1024

# While the event loop runs its timers late by more than LAG_THRESHOLD (it is
# saturated, and each write costs far more than its bytes), or while the last
# wave of writes held it (waves.py), Subscribe streams write in waves: all
# together, then a pause in which calls are accepted and messages gather.
LAG_THRESHOLD = 0.002

_CLOSE_STATUS = {
    CloseReason.EVICTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    CloseReason.SHUTDOWN: grpc.StatusCode.UNAVAILABLE,
    CloseReason.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
}


def encode_message(envelope: Envelope) -> bytes:
    """Serialise an accepted message as the ``hello.Message`` every member gets."""
    seconds, nanos = divmod(envelope.timestamp_ns, 1_000_000_000)
    return pb.Message(
        id=envelope.sender_id,
        roomID=envelope.room_id,
        message=envelope.text,
        timestamp=Timestamp(seconds=seconds, nanos=nanos),
        seq=envelope.seq,
        name=envelope.name,
    ).SerializeToString()


def _timestamp(ns: int) -> Timestamp:
    seconds, nanos = divmod(ns, 1_000_000_000)
    return Timestamp(seconds=seconds, nanos=nanos)


def encode_presence(change: PresenceChange) -> bytes:
    """Serialise a presence change as the ``hello.PresenceEvent`` watchers get."""
    kind = pb.PresenceEvent.JOINED if change.joined else pb.PresenceEvent.LEFT
    event = pb.PresenceEvent(
        user=pb.User(id=change.user_id, name=change.name),
        kind=kind,
        at=_timestamp(change.timestamp_ns),
    )
    return PresenceRecord(event.SerializeToString())


def acknowledgement(joined: Joined) -> tuple[tuple[str, str], ...]:
    """The join acknowledgement's headers (../shared/protocol.md)."""
    headers = ((EPOCH_HEADER, joined.epoch), (SEQ_HEADER, str(joined.seq)))
    if joined.recovered is None:
        return headers
    return (*headers, (RECOVERED_HEADER, "true" if joined.recovered else "false"))


class ChatRoomService:
    """Maps the ChatRoom RPCs onto a `RoomHub`."""

    def __init__(
        self,
        hub: RoomHub,
        limits: InputLimits,
        linger: float,
        lag: LoopLag | None = None,
        stalls: StalledConnections | None = None,
        guard: Guard | None = None,
        waves: Waves | None = None,
    ) -> None:
        self._hub = hub
        self._limits = limits
        self._linger = linger
        self._lag = lag or LoopLag()
        self._stalls = stalls
        self._guard = guard or Guard()
        self._waves = waves or Waves()

    def rpc_handler(self) -> grpc.GenericRpcHandler[bytes, bytes]:
        """The handler to register on a grpc.aio server."""
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "Join": grpc.unary_stream_rpc_method_handler(_internal_errors(self.join)),
                "Subscribe": grpc.unary_stream_rpc_method_handler(_internal_errors(self.subscribe)),
                "SendMessage": grpc.unary_unary_rpc_method_handler(
                    _internal_errors(self.send_message),
                    response_serializer=pb.Exit.SerializeToString,
                ),
                "SendStream": grpc.stream_stream_rpc_method_handler(
                    _internal_errors(self.send_stream)
                ),
                "Members": grpc.unary_unary_rpc_method_handler(
                    _internal_errors(self.members),
                    response_serializer=pb.MemberList.SerializeToString,
                ),
            },
        )

    # -- RPCs -----------------------------------------------------------------

    # Join and Subscribe return `_serve_member`'s coroutine rather than await
    # it: one coroutine frame less for every open stream (about 240 bytes).
    # So they are not coroutine functions: grpc.aio needs them wrapped in one
    # (as `rpc_handler` does with `_internal_errors`).

    def join(self, raw: bytes, context: Context) -> Coroutine[None, None, None]:
        """Stream each of the room's messages as one ``hello.Message``."""
        return self._serve_member(raw, context, self._write_each, watches=False)

    def subscribe(self, raw: bytes, context: Context) -> Coroutine[None, None, None]:
        """Stream the room's messages (and presence, if asked) as ``hello.MessageBatch``es."""
        return self._serve_member(raw, context, self._write_batches, watches=True)

    async def members(self, raw: bytes, context: Context) -> pb.MemberList:
        """List the users in a room: one entry per user, however many sessions."""
        try:
            request = pb.RoomRequest.FromString(raw)
            check_id("room id", request.roomID, self._limits)
            users = await self._hub.presence(request.roomID)
        except _REFUSABLE as error:
            refusal = Refusal.of(error, pb.RoomRequest)
            await context.abort(refusal.code, refusal.detail)
        return pb.MemberList(
            members=[
                pb.Member(
                    user=pb.User(id=user.user_id, name=user.name),
                    sessions=user.sessions,
                    since=_timestamp(user.since_ns),
                )
                for user in users
            ]
        )

    async def send_message(self, raw: bytes, context: Context) -> pb.Exit:
        """Deliver a message to every member of an existing room."""
        try:
            envelope = await self._accept(raw, "SendMessage", context)
        except Refusal as refusal:
            await context.abort(refusal.code, refusal.detail, refusal.trailers)
        return pb.Exit(success=True, seq=envelope.seq)

    async def send_stream(self, requests: AsyncIterator[bytes], context: Context) -> None:
        """Accept a stream of messages, answering each with one Exit, in order.

        A message the server fails on (a bug) is answered INTERNAL on its own,
        like a refusal: ending the stream would leave the fate of every other
        message in flight unknown to the client, and its retries would
        duplicate the ones that were accepted. A message over the send rate
        is refused alone too (RESOURCE_EXHAUSTED, the wait in its text): the
        stream stays open for the next one.
        """
        with self._guard.stream("SendStream"):
            async for raw in requests:
                try:
                    envelope = await self._accept(raw, "SendStream", context)
                except Refusal as refusal:
                    reply = pb.Exit(
                        success=False, message=refusal.detail, code=refusal.code.value[0]
                    )
                except Exception:
                    log.exception("internal error in SendStream; the message was answered INTERNAL")
                    reply = pb.Exit(
                        success=False,
                        message=INTERNAL_ERROR,
                        code=grpc.StatusCode.INTERNAL.value[0],
                    )
                else:
                    reply = pb.Exit(success=True, seq=envelope.seq)
                await context.write(reply.SerializeToString())

    # -- helpers --------------------------------------------------------------

    async def _serve_member(
        self, raw: bytes, context: Context, deliver: _Deliver, *, watches: bool
    ) -> None:
        """Register the caller, acknowledge, deliver until the call ends, remove."""
        joined, departure = await self._enter(raw, context, watches)
        member = joined.member
        try:
            await context.send_initial_metadata(acknowledgement(joined))
            del joined  # sent: an idle stream keeps its member and nothing more
            await deliver(member.mailbox, context)
        except MailboxClosed as closed:
            # If the client ended the call just as the hub closed the mailbox,
            # gRPC core refuses the status (InternalError): nobody is left to tell.
            with contextlib.suppress(grpc.aio.InternalError):
                await context.abort(_CLOSE_STATUS[closed.reason], closed.detail)
        except grpc.aio.InternalError:
            # A write failed because the call had already ended (the peer went
            # away while flow control held the write): nobody is left to tell.
            return
        finally:
            departure(context)

    def _gone(self, member: Member, rpc: str | None) -> None:
        """``member``'s stream ended; ``rpc`` (Join/Subscribe) the first time, to uncount it."""
        if rpc is not None:
            self._guard.release(rpc, member.user_id, member.room_id)
        self._hub.leave(member)
        if self._stalls is not None:
            self._stalls.done(member)

    @staticmethod
    async def _write_each(mailbox: Mailbox, context: Context) -> None:
        """Write each queued message as one ``hello.Message``; stop at once when evicted.

        What a write pins counts in the member's bytes until gRPC is surely
        done with it: gRPC copies each message, and the copy of one written
        into a closed flow-control window may wait in its buffer until the
        next write completes, so each copy is released one write later (or
        when the stream goes idle).
        """
        while True:
            previous = 0
            batch = await mailbox.take(MAX_BATCH, MAX_BATCH_BYTES)
            batch.reverse()  # popped from the end, each message is let go once written
            while batch:
                if mailbox.closed:
                    break  # the next take raises why
                payload = batch.pop()
                size = len(payload)
                mailbox.writing(size)
                await context.write(payload)
                mailbox.wrote(shared=size, private=previous)
                previous = size
            mailbox.wrote(private=previous)

    async def _write_batches(self, mailbox: Mailbox, context: Context) -> None:
        """Write everything queued as one batch, coalescing only when busy.

        A message that finds the stream idle goes out at once, alone; one that
        arrives within a linger period of the previous write means the room is
        busy, so the stream gathers for one linger period first; and while the
        whole server is saturated (its loop runs late), every stream writes in
        the next wave, with all the others. Busy rooms and a busy server get
        fewer, larger writes, and a saturated server still accepts sends
        between waves; a quiet room on a quiet server gets no added delay.
        """
        loop = asyncio.get_running_loop()
        linger = self._linger
        lag = self._lag
        waves = self._waves
        last_write = -linger
        previous = 0  # gRPC's copy of the last batch, counted until the next is written
        while True:
            if previous and not len(mailbox):
                mailbox.wrote(private=previous)
                previous = 0
            await mailbox.wait()
            now = loop.time()
            if len(mailbox) >= MAX_BATCH or mailbox.queued_bytes >= MAX_BATCH_BYTES:
                pass  # a full batch goes at once
            elif lag.seconds > LAG_THRESHOLD or waves.busy(now):
                # A saturated loop: write with every other stream in the next
                # wave, so that calls get the passes in between (waves.py).
                # Scheduler jitter is not load.
                await waves.join()
            elif now - last_write < linger:
                await asyncio.sleep(linger)
            batch = frame_batch(mailbox.take_nowait(MAX_BATCH, MAX_BATCH_BYTES))
            size = len(batch)
            mailbox.framed(size)  # the frame is this member's own copy...
            mailbox.writing(size)  # ...and so is gRPC's
            await context.write(batch)
            del batch  # not kept alive while the stream waits
            mailbox.wrote(private=size + previous)
            previous = size
            last_write = loop.time()
            lag.want()

    async def _enter(
        self, raw: bytes, context: Context, watches: bool
    ) -> tuple[Joined, _Departure]:
        """Register the caller as a member, or end the call with the refusal."""
        try:
            # Interned: the members on one connection share one peer string.
            joined = await self._admit(raw, sys.intern(context.peer()), watches)
        except Refusal as refusal:
            await context.abort(refusal.code, refusal.detail, refusal.trailers)
        # The stream's task is cancelled when the call ends, which runs the
        # handler's ``finally``; the callback also covers a call that ends
        # before the handler resumes. ``leave`` is idempotent.
        # grpc-stubs types the callback as its own DoneCallback class; any
        # callable taking the context is what grpc.aio actually accepts.
        departure = _Departure(self, joined.member, "Subscribe" if watches else "Join")
        context.add_done_callback(departure)  # type: ignore[arg-type]
        if self._stalls is not None:
            self._stalls.serving(joined.member)
        return joined, departure

    async def _admit(self, raw: bytes, connection: str, watches: bool) -> Joined:
        """Validate a serialised JoinRequest and join; raise `Refusal` if refused.

        ``watches``: the stream can carry presence events (Subscribe), so
        it gets them if it asked. The stream counts in its user's limits
        until its `_Departure` releases it.
        """
        rpc = "Subscribe" if watches else "Join"
        try:
            request = pb.JoinRequest.FromString(raw)
            check_id("room id", request.roomID, self._limits)
            check_id("user id", request.user.id, self._limits)
            name = authorized_name("user id", request.user.id, request.user.name)
            check_name(name, self._limits)
            catchup = None
            if request.history or request.since_seq or request.epoch:
                catchup = Catchup(request.history, request.since_seq, request.epoch)
            # Each read of a protobuf string field makes a new str: read once,
            # so that the limits and the member share one user id; the room id
            # is interned so that the limits share the hub's room's string.
            user, room = request.user.id, sys.intern(request.roomID)
            self._guard.admit(rpc, user, room, connection)
            try:
                joined = await self._hub.enter(
                    room,
                    user,
                    name,
                    connection,
                    catchup,
                    presence=watches and request.presence,
                )
            except BaseException:
                self._guard.release(rpc, user, room)
                raise
        except _REFUSABLE as error:
            if isinstance(error, Forbidden):
                self._guard.forbidden(
                    "join", request.user.id, request.roomID, connection, str(error)
                )
            refusal = Refusal.of(error, pb.JoinRequest)
            self._guard.joined(rpc, refusal.code)
            raise refusal from None
        self._guard.joined(rpc, grpc.StatusCode.OK)
        return joined

    async def _accept(self, raw: bytes, rpc: str, context: Context) -> Envelope:
        """Validate a serialised Message and publish it; raise `Refusal` if refused."""
        started = time.perf_counter()
        try:
            request = pb.Message.FromString(raw)
            check_id("room id", request.roomID, self._limits)
            check_id("sender id", request.id, self._limits)
            name = authorized_name("sender id", request.id, request.name)
            check_text(request.message, self._limits)
            check_name(name, self._limits)
            self._guard.sending(request.id, request.roomID, context.peer)
            envelope = await self._hub.publish(request.roomID, request.id, request.message, name)
        except _REFUSABLE as error:
            if isinstance(error, Forbidden):
                peer = context.peer()
                self._guard.forbidden("message", request.id, request.roomID, peer, str(error))
            refusal = Refusal.of(error, pb.Message)
            self._guard.sent(rpc, refusal.code, started, None)
            raise refusal from None
        self._guard.sent(rpc, grpc.StatusCode.OK, started, request.roomID)
        return envelope


class _Departure:
    """A member stream's done-callback: the member leaves when its call ends.

    A slotted object rather than a lambda because every open stream holds
    one: it saves about 140 bytes per stream (tracemalloc, 1,000 streams).
    The handler's ``finally`` calls it too; whichever runs first uncounts
    the stream in the limits and metrics (``rpc`` then becomes None), so no
    per-stream seat object is needed to make that once-only.
    """

    __slots__ = ("_member", "_rpc", "_service")

    def __init__(self, service: ChatRoomService, member: Member, rpc: str) -> None:
        self._service = service
        self._member = member
        self._rpc: str | None = rpc

    def __call__(self, _context: object) -> None:
        rpc, self._rpc = self._rpc, None
        self._service._gone(self._member, rpc)


# What a request can be refused for; `Refusal.of` gives each its status.
# Anything else is a bug: `_internal_errors` answers it INTERNAL, logged.
_REFUSABLE = (
    DecodeError,
    InvalidInput,
    RoomNotFound,
    HubClosed,
    LimitExceeded,
    Forbidden,
    BackendUnavailable,
)
_Refusable = (
    DecodeError
    | InvalidInput
    | RoomNotFound
    | HubClosed
    | LimitExceeded
    | Forbidden
    | BackendUnavailable
)


class Refusal(Exception):
    """A request the service turns down with a gRPC status, a reason and trailers."""

    def __init__(
        self, code: grpc.StatusCode, detail: str, trailers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.trailers = trailers

    @classmethod
    def of(cls, error: _Refusable, kind: type[ProtoMessage]) -> Refusal:
        """The status for one of the `_REFUSABLE` errors, met handling a ``kind``."""
        if isinstance(error, DecodeError):
            return cls(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the request is not a valid {kind.DESCRIPTOR.full_name}",
            )
        if isinstance(error, InvalidInput):
            return cls(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        if isinstance(error, RoomNotFound):
            return cls(grpc.StatusCode.NOT_FOUND, str(error))
        if isinstance(error, HubClosed | BackendUnavailable):
            return cls(grpc.StatusCode.UNAVAILABLE, str(error))
        if isinstance(error, LimitExceeded):
            trailers: tuple[tuple[str, str], ...] = ()
            if error.retry_after is not None:
                trailers = ((RETRY_AFTER_HEADER, str(math.ceil(error.retry_after * 1000))),)
            return cls(grpc.StatusCode.RESOURCE_EXHAUSTED, error.detail, trailers)
        if isinstance(error, Forbidden):
            return cls(grpc.StatusCode.PERMISSION_DENIED, str(error))
        assert_never(error)


def _internal_errors(
    rpc: Callable[[_Request, Context], Awaitable[_Response]],
) -> Callable[[_Request, Context], Awaitable[_Response]]:
    """End a call that fails unexpectedly with INTERNAL "internal error", logged once.

    Left alone, grpc.aio would answer UNKNOWN with the exception's text; a
    bug is INTERNAL, never a status that invites a retry, and its traceback
    goes to our log, not the client.
    """

    @functools.wraps(rpc)
    async def guarded(request: _Request, context: Context) -> _Response:
        try:
            return await rpc(request, context)
        except grpc.aio.AbortError:
            raise  # the call already ended with the status it was given
        except Exception:
            log.exception("internal error in %s; the call ended INTERNAL", rpc.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_ERROR)

    return guarded
