"""The Redis backend: one room across many server processes.

Redis holds what all nodes share: each room's epoch, seq, history and
sessions (see `hello_server.redis_scripts` for the keys and scripts). This
process's members are held by the in-process `Hub`, used here as the local
fan-out engine only (mailboxes, bounds, eviction, memory budgets, presence
watchers): it keeps no history and announces nothing itself.

A message is accepted by one script (room live? seq, history, PUBLISH), so
every node sees one order per room. The sends a node gets for a room while
its previous script for that room is in flight go together in the next one
(one round trip, one pub/sub message for all of them): under load a busy
room's cost per message falls with the batch, and an idle room's message
goes at once. Each node holds one pub/sub connection, subscribed to the
channel of every room it has members in, and puts each payload, as the same
bytes, into its members' mailboxes.

Per room the node tracks the last seq it fanned out (`_Feed.last`). Pub/sub
is at most once: a seq jump, or a reconnection, makes the node refill the gap
from the room's history, holding later live messages meanwhile; if the
history no longer has it, the room's local streams end with UNAVAILABLE so
that their clients resume. Never a silent gap, never a duplicate.

A join subscribes first (and waits for Redis to confirm), then runs the join
script, which reads the epoch, seq and history atomically with registering
the session; live messages that the node fanned out meanwhile are recorded
for the joiner, so its replay is the history up to the script's seq and then
those, and everything later comes live.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from hello_server import redis_scripts as scripts
from hello_server.hub import (
    BackendUnavailable,
    Catchup,
    Encoder,
    Envelope,
    HistoryLimits,
    Hub,
    HubClosed,
    Joined,
    Member,
    Presence,
    PresenceChange,
    PresenceEncoder,
    RoomNotFound,
)
from hello_server.metrics import BackendStats
from hello_server.redis_pipe import ScriptPipe

log = logging.getLogger(__name__)

# What a Redis call can fail with when Redis is down, slow or restarting.
_FAILURES = (RedisError, OSError, asyncio.TimeoutError)

# A command gets this long before it fails (and the call with UNAVAILABLE).
COMMAND_TIMEOUT = 5.0
CONNECT_TIMEOUT = 2.0
# Connections for commands; callers beyond wait for one (up to the timeout).
MAX_CONNECTIONS = 32
# Live messages a room holds while it refills a gap or waits for a join to
# fix its position; past it the room's streams end with UNAVAILABLE instead
# of buffering without bound.
MAX_HELD = 10_000
# The most messages (and bytes of them) one send script takes; more wait for
# the next. Bounds the script's run (Redis runs nothing else meanwhile).
MAX_BATCH = 256
MAX_BATCH_BYTES = 1 << 20
# Pub/sub reconnection backoff, and how often an unhealthy node retries Redis.
# The pub/sub connection is PINGed this often; one unanswered this long hangs.
PUBSUB_PING_INTERVAL = 1.0
PUBSUB_PING_TIMEOUT = COMMAND_TIMEOUT
RECONNECT_MIN = 0.05
RECONNECT_MAX = 1.0

_MISSED = "missed messages from the chat backend; resume to catch up"


class _Feed:
    """This node's subscription to one room's channel, and its position in it."""

    __slots__ = (
        "channel",
        "confirmed",
        "epoch",
        "establishing",
        "generation",
        "held",
        "joining",
        "last",
        "pending",
        "refilling",
    )

    def __init__(self, channel: bytes, confirmed: asyncio.Future[None]) -> None:
        self.channel = channel
        self.confirmed = confirmed
        self.epoch: str | None = None  # unknown until a join script tells it
        self.last = -1  # last seq fanned out; -1: unknown, so live ones are held
        self.held: dict[int, bytes] = {}  # live messages past a gap, by seq
        # What each join in flight (by member id) missed while its script ran.
        # Keyed, not a list of lists: list.remove compares by value, and two
        # joins' empty lists are equal.
        self.joining: dict[int, list[tuple[int, bytes]]] = {}
        self.pending = 0  # joins in flight
        self.refilling = False
        # While ``last`` is unknown, one join at a time learns it: a second
        # join whose script ran before the first's reply would otherwise miss
        # what the first one skipped as history.
        self.establishing = asyncio.Lock()
        # Bumped whenever the node's position is reset (it lost track): a
        # join in flight across a reset cannot know what it missed, so it
        # fails UNAVAILABLE and the client retries.
        self.generation = 0


class _Outbox:
    """A room's sends waiting for this node's next send script."""

    __slots__ = ("running", "waiting")

    def __init__(self) -> None:
        self.waiting: collections.deque[tuple[bytes, asyncio.Future[int]]] = collections.deque()
        self.running = False  # a task is sending this room's batches


class RedisHub:
    """A `RoomHub` whose rooms are shared through Redis with other servers."""

    def __init__(
        self,
        local: Hub,
        url: str,
        *,
        encode: Encoder,
        encode_presence: PresenceEncoder,
        history: HistoryLimits,
        room_ttl: float = 0.0,
        presence_ttl: float = 15.0,
        on_health: Callable[[bool], None] | None = None,
        as_presence: Callable[[bytes], bytes] = bytes,
    ) -> None:
        self._local = local
        self._encode = encode
        self._encode_presence = encode_presence
        self._history = history
        self._room_ttl_ms = round(room_ttl * 1000)
        self._presence_ttl = presence_ttl
        self._on_health = on_health
        # Presence records come back from Redis as plain bytes: this makes
        # them what the service frames as presence again (PresenceRecord).
        self._as_presence = as_presence
        # Removals from Redis in flight, per room: a send or Members call on
        # this node waits for them, so that it sees its own node's leaves.
        self._removing: dict[str, set[asyncio.Task[None]]] = {}
        self.node = secrets.token_hex(8)
        # No retries: a script that may have run must not run twice (a
        # duplicate message); the caller gets UNAVAILABLE and decides.
        no_retry = Retry(NoBackoff(), 0)
        self._pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=COMMAND_TIMEOUT,
            socket_timeout=COMMAND_TIMEOUT,
            socket_connect_timeout=CONNECT_TIMEOUT,
            retry=no_retry,
            # RESP2: pub/sub messages are plain replies that the listener reads.
            protocol=2,
        )
        self._redis = aioredis.Redis(connection_pool=self._pool, retry=no_retry)
        self._join = self._redis.register_script(scripts.JOIN)
        self._send = self._redis.register_script(scripts.SEND)
        self._leave = self._redis.register_script(scripts.LEAVE)
        self._sweep = self._redis.register_script(scripts.SWEEP)
        self._members = self._redis.register_script(scripts.MEMBERS)
        self._fetch = self._redis.register_script(scripts.FETCH)
        # The send script, once per batch, skips the pool: see redis_pipe.py.
        self._pipe = ScriptPipe(self._pipe_connection, COMMAND_TIMEOUT)
        self._feeds: dict[str, _Feed] = {}
        self._outboxes: dict[str, _Outbox] = {}
        self._rooms_by_channel: dict[bytes, str] = {}
        # This node's sessions in Redis, by member id: (room, session field).
        self._sessions: dict[int, tuple[str, str, str]] = {}
        # Sessions whose removal from Redis failed; retried by the heartbeat.
        self._unfinished: list[tuple[str, str, str, str]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._conn: AbstractConnection | None = None  # the pub/sub connection, when up
        self._confirmations: dict[bytes, collections.deque[asyncio.Future[None]]] = {}
        self._send_lock = asyncio.Lock()
        self._pubsub_up = False
        self._ping_sent: float | None = None  # loop time of the unanswered PING
        self.stats = BackendStats()
        self._commands_ok = False
        self._healthy = False
        self._registered = False  # this node's heartbeat entry was written once
        self._closed = False
        self._stopped = asyncio.Event()
        # Set to beat now: at shutdown, and when the pub/sub connection is
        # back (Redis may be back: find out, and become healthy, at once).
        self._wake = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._pinger: asyncio.Task[None] | None = None

    def _pipe_connection(self) -> AbstractConnection:
        """A connection like the pool's, without a socket timeout (the pipe times commands)."""
        pool = self._pool
        return pool.connection_class(**{**pool.connection_kwargs, "socket_timeout": None})

    # -- lifecycle ------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return self._healthy

    async def start(self) -> None:
        """Start the pub/sub listener and the heartbeat; Redis may still be down."""
        self._listener = asyncio.create_task(self._listen(), name="redis-pubsub")
        await self._beat()
        self._heartbeat = asyncio.create_task(self._beat_forever(), name="redis-heartbeat")
        self._pinger = asyncio.create_task(self._ping_forever(), name="redis-pubsub-ping")

    def close(self) -> None:
        """Refuse new joins and messages, and end every local stream."""
        self._closed = True
        self._local.close()

    async def wait_closed(self) -> None:
        """Finish the removals in flight, leave Redis, and close the connections."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=COMMAND_TIMEOUT)
        self._stopped.set()
        self._wake.set()
        for task in (self._listener, self._heartbeat, self._pinger):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        with contextlib.suppress(*_FAILURES):
            await self._finish_leaves()
            if not self._sessions and not self._unfinished:
                await self._redis.zrem(scripts.NODES_KEY, self.node)
                await self._redis.delete(scripts.node_rooms_key(self.node))
        if self._conn is not None:
            await self._conn.disconnect()
        await self._pipe.close()
        await self._redis.aclose()
        await self._pool.disconnect()

    # -- the RoomHub calls ----------------------------------------------------

    async def enter(
        self,
        room_id: str,
        user_id: str,
        name: str = "",
        connection: str = "",
        catchup: Catchup | None = None,
        presence: bool = False,
    ) -> Joined:
        if self._closed:
            raise HubClosed
        if not self._pubsub_up:
            raise BackendUnavailable("no pub/sub connection to Redis (reconnecting)")
        feed = self._feed(room_id)
        feed.pending += 1
        member_id = self._local.next_member_id()
        field = f"{self.node}\0{member_id}"
        missed: list[tuple[int, bytes]] = []
        maybe_registered = False
        failed = True
        locked = False
        try:
            if feed.last < 0:
                await feed.establishing.acquire()
                locked = True
            try:
                async with asyncio.timeout(COMMAND_TIMEOUT):
                    await asyncio.shield(feed.confirmed)
            except TimeoutError:
                raise BackendUnavailable("Redis did not confirm the subscription") from None
            feed.joining[member_id] = missed
            generation = feed.generation
            await self._redis.sadd(scripts.node_rooms_key(self.node), room_id)
            maybe_registered = True
            now = time.time_ns()
            record = self._encode_presence(PresenceChange(room_id, user_id, name, True, now))
            want = catchup or Catchup()
            reply = await self._join(
                keys=scripts.room_keys(room_id),
                args=[
                    field,
                    user_id,
                    f"{now}|{name}",
                    secrets.token_hex(scripts.EPOCH_CHARS // 2),
                    0 if want.resume else want.history,
                    want.epoch if want.resume else "",
                    want.since_seq,
                    # The node's own position, so that the script also returns
                    # what the node may not have fanned out yet (see _advance).
                    (feed.epoch or "") if feed.last >= 0 else "",
                    feed.last,
                    feed.channel,
                    record,
                ],
            )
            epoch, seq, first, entries = _decode_state(reply)
            if self._closed:
                raise HubClosed
            if feed.generation != generation:
                raise BackendUnavailable("this server lost track of the room meanwhile; retry")
            low = seq - len(entries) + 1
            self._advance(room_id, feed, epoch, seq, low, entries)
            failed = False
        except BaseException as error:
            if maybe_registered:
                self._remove_later(room_id, field, user_id, name)
            if isinstance(error, _FAILURES):
                self._command_failed(error)
                raise BackendUnavailable(_describe(error)) from None
            raise
        finally:
            if locked:
                feed.establishing.release()
            feed.pending -= 1
            feed.joining.pop(member_id, None)
            if failed:
                self._drop_feed_if_idle(room_id)
        self._commands_ok_again()
        replay, recovered = _replay(catchup, epoch, seq, first, low, entries)
        replay.extend(payload for s, payload in missed if s > seq)
        member = self._local.admit(
            room_id, user_id, name, connection, replay, presence, member_id=member_id
        )
        self._sessions[member_id] = (room_id, field, user_id)
        self._drain(room_id, feed)
        return Joined(member, epoch, seq, recovered)

    def leave(self, member: Member) -> None:
        self._local.leave(member)
        session = self._sessions.pop(member.member_id, None)
        if session is not None:
            room_id, field, user_id = session
            self._remove_later(room_id, field, user_id, member.name)
        self._drop_feed_if_idle(member.room_id)

    async def publish(self, room_id: str, sender_id: str, text: str, name: str = "") -> Envelope:
        if self._closed:
            raise HubClosed
        await self._settled(room_id)
        now = time.time_ns()
        unnumbered = self._encode(Envelope(room_id, sender_id, text, 0, now, name))
        outbox = self._outboxes.get(room_id)
        if outbox is None:
            outbox = self._outboxes[room_id] = _Outbox()
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        outbox.waiting.append((unnumbered, accepted))
        if not outbox.running:
            outbox.running = True
            self._spawn(self._send_batches(room_id, outbox))
        # Cancelled before its batch goes, the message is not sent; after, it is.
        seq = await accepted
        return Envelope(room_id, sender_id, text, seq, now, name)

    async def _send_batches(self, room_id: str, outbox: _Outbox) -> None:
        """Run the send script for ``room_id``'s waiting messages, a batch at a time, in order."""
        keys = scripts.room_keys(room_id)[:2]
        history = self._history
        head = [history.max_messages, history.max_bytes, scripts.channel(room_id)]
        waiting = outbox.waiting
        futures: list[asyncio.Future[int]] = []
        try:
            while waiting:
                payloads: list[bytes] = []
                futures = []
                size = 0
                while waiting and len(payloads) < MAX_BATCH and size < MAX_BATCH_BYTES:
                    payload, accepted = waiting.popleft()
                    if not accepted.done():  # its caller gave up (cancelled)
                        payloads.append(payload)
                        futures.append(accepted)
                        size += len(payload)
                if payloads:
                    await self._send_batch(room_id, keys, head, payloads, futures)
        finally:
            # Left unanswered only by a bug or a cancellation: no caller waits forever.
            futures += [accepted for _, accepted in waiting]
            waiting.clear()
            for accepted in futures:
                if not accepted.done():
                    accepted.set_exception(BackendUnavailable("the send was interrupted"))
            outbox.running = False
            if self._outboxes.get(room_id) is outbox:
                del self._outboxes[room_id]

    async def _send_batch(
        self,
        room_id: str,
        keys: list[str],
        head: list[Any],
        payloads: list[bytes],
        futures: list[asyncio.Future[int]],
    ) -> None:
        started = time.perf_counter()
        failure: Exception
        try:
            first = await self._pipe.run(self._send, keys, [*head, *payloads])
        except _FAILURES as error:
            self._command_failed(error)
            failure = BackendUnavailable(_describe(error))
        else:
            stats = self.stats
            stats.sends += 1
            stats.sent += len(payloads)
            stats.send_seconds += time.perf_counter() - started
            self._commands_ok_again()
            if first is not None:
                for seq, accepted in enumerate(futures, int(first)):
                    if not accepted.done():
                        accepted.set_result(seq)
                return
            failure = RoomNotFound(room_id)
        for accepted in futures:
            if not accepted.done():
                accepted.set_exception(failure)

    async def presence(self, room_id: str) -> list[Presence]:
        await self._settled(room_id)
        try:
            reply = await self._members(keys=scripts.room_keys(room_id))
        except _FAILURES as error:
            self._command_failed(error)
            raise BackendUnavailable(_describe(error)) from None
        if reply is None:
            raise RoomNotFound(room_id)
        counts = _pairs(reply[0])
        infos = _pairs(reply[1])
        users = []
        for user, count in counts.items():
            since, _, shown = infos.get(user, "0|").partition("|")
            users.append(Presence(user, shown, int(count), int(since)))
        users.sort(key=lambda p: (p.since_ns, p.user_id))
        return users

    # -- feeds: subscriptions and this node's position in each room -----------

    def _feed(self, room_id: str) -> _Feed:
        feed = self._feeds.get(room_id)
        if feed is None:
            channel = scripts.channel(room_id).encode()
            feed = _Feed(channel, asyncio.get_running_loop().create_future())
            self._feeds[room_id] = feed
            self._rooms_by_channel[channel] = room_id
            self._spawn(self._subscribe([feed]))
        return feed

    def _drop_feed_if_idle(self, room_id: str) -> None:
        feed = self._feeds.get(room_id)
        if feed is None or feed.pending or self._local.local_members(room_id):
            return
        del self._feeds[room_id]
        del self._rooms_by_channel[feed.channel]
        if not feed.confirmed.done():
            feed.confirmed.cancel()
        self._spawn(self._pubsub_command("UNSUBSCRIBE", [feed.channel]))

    async def _subscribe(self, feeds: list[_Feed]) -> None:
        for feed in feeds:
            if feed.confirmed.done():
                feed.confirmed = asyncio.get_running_loop().create_future()
            self._confirmations.setdefault(feed.channel, collections.deque()).append(feed.confirmed)
        await self._pubsub_command("SUBSCRIBE", [feed.channel for feed in feeds])

    async def _pubsub_command(self, command: str, channels: list[bytes]) -> None:
        """Send on the pub/sub connection, in call order; a failure is the listener's."""
        if not channels:
            return
        async with self._send_lock:
            conn = self._conn
            if conn is None:
                return  # the listener subscribes every feed when it reconnects
            with contextlib.suppress(*_FAILURES):
                await conn.send_command(command, *channels, check_health=False)

    def _fan(self, room_id: str, feed: _Feed, seq: int, payload: bytes) -> None:
        self._local.fan_out(room_id, payload)
        feed.last = seq
        for missed in feed.joining.values():
            missed.append((seq, payload))

    def _advance(
        self, room_id: str, feed: _Feed, epoch: str, seq: int, low: int, entries: list[bytes]
    ) -> None:
        """Bring the node to ``seq`` of ``epoch``, as a join script saw the room."""
        if feed.epoch != epoch:
            if feed.epoch is not None:
                # Redis lost the room (restarted, or swept this node): the
                # members here belong to an epoch that is gone.
                self._local.end_room(room_id, "the room was reset in the chat backend; rejoin")
                feed.generation += 1
            feed.epoch = epoch
            feed.last = seq
        elif feed.last < 0:
            feed.last = seq
        elif feed.last < seq:
            if low > feed.last + 1:
                self._local.end_room(room_id, _MISSED)
                feed.last = seq
            else:
                for s in range(feed.last + 1, seq + 1):
                    self._fan(room_id, feed, s, entries[s - low])
        for s in [s for s in feed.held if s <= feed.last]:
            del feed.held[s]

    def _drain(self, room_id: str, feed: _Feed) -> None:
        """Fan out the held messages that follow on; refill if a gap remains."""
        if feed.last < 0 or feed.refilling:
            return
        held = feed.held
        while feed.last + 1 in held:
            self._fan(room_id, feed, feed.last + 1, held.pop(feed.last + 1))
        for s in [s for s in held if s <= feed.last]:
            del held[s]
        if held:
            feed.refilling = True
            self._spawn(self._refill(room_id, feed))

    def _on_message(self, room_id: str, feed: _Feed, data: bytes) -> None:
        kind = data[:1]
        epoch = data[1 : 1 + scripts.EPOCH_CHARS].decode()
        newline = data.index(b"\n", 1 + scripts.EPOCH_CHARS)
        head = data[1 + scripts.EPOCH_CHARS : newline]
        if kind == b"p":
            if epoch == feed.epoch:
                self._local.tell_watchers(
                    room_id, self._as_presence(data[newline + 1 :]), head.decode()
                )
            return
        if feed.epoch is not None and epoch != feed.epoch:
            self._lost(room_id, feed, "the room was reset in the chat backend; rejoin")
        if kind == b"m":  # one message, as servers published before batching
            self._on_live(room_id, feed, int(head), data[newline + 1 :])
            return
        # A batch: "<first seq> <size> <size>...", then the payloads back to back.
        first, *sizes = head.split(b" ")
        seq = int(first)
        start = newline + 1
        for size in sizes:
            end = start + int(size)
            if not self._on_live(room_id, feed, seq, data[start:end]):
                return
            seq += 1
            start = end

    def _on_live(self, room_id: str, feed: _Feed, seq: int, body: bytes) -> bool:
        """Fan out, hold or drop one live message; False if the room's streams were lost."""
        if feed.last < 0 or feed.refilling or seq > feed.last + 1:
            if seq > feed.last:
                feed.held[seq] = body
            if len(feed.held) > MAX_HELD:
                self._lost(room_id, feed, _MISSED)
                return False
            self._drain(room_id, feed)
        elif seq == feed.last + 1:
            self._fan(room_id, feed, seq, body)
            if feed.held:
                self._drain(room_id, feed)
        # else: seq <= last, already fanned out (a refill got it first)
        return True

    async def _refill(self, room_id: str, feed: _Feed) -> None:
        """Fetch what this node missed of the room from its history, in order."""
        try:
            while self._feeds.get(room_id) is feed and feed.last >= 0:
                want = feed.last + 1
                reply = await self._fetch(keys=scripts.room_keys(room_id)[:2], args=[want])
                if self._feeds.get(room_id) is not feed or feed.last < 0:
                    return
                if not reply:
                    self._lost(room_id, feed, "the room is gone from the chat backend; rejoin")
                    return
                epoch, seq, first, entries = _decode_state(reply)
                want = feed.last + 1
                if epoch != feed.epoch or (first > want and seq >= want):
                    self._lost(room_id, feed, _MISSED)
                    return
                low = seq - len(entries) + 1
                for s in range(want, seq + 1):
                    self._fan(room_id, feed, s, entries[s - low])
                held = feed.held
                for s in [s for s in held if s <= feed.last]:
                    del held[s]
                while feed.last + 1 in held:
                    self._fan(room_id, feed, feed.last + 1, held.pop(feed.last + 1))
                if not held:
                    return
        except _FAILURES as error:
            log.warning("refilling room %r failed: %s", room_id, _describe(error))
            self._lost(room_id, feed, f"chat backend unavailable: {_describe(error)}")
        finally:
            feed.refilling = False

    def _lost(self, room_id: str, feed: _Feed, detail: str) -> None:
        """This node cannot vouch for the room's next message: its streams resume."""
        self.stats.rooms_lost += 1
        self._local.end_room(room_id, detail)
        feed.epoch = None
        feed.last = -1
        feed.held.clear()
        feed.generation += 1

    # -- the pub/sub connection -----------------------------------------------

    async def _listen(self) -> None:
        delay = RECONNECT_MIN
        reconnect = False
        while not self._stopped.is_set():
            conn: AbstractConnection = self._pool.make_connection()  # type: ignore[no-untyped-call]
            try:
                await conn.connect()  # type: ignore[no-untyped-call]
                self._conn = conn
                self._ping_sent = None
                self._confirmations.clear()
                feeds = list(self._feeds.values())
                for feed in feeds:
                    # Whatever was published while disconnected is fetched once resubscribed.
                    feed.refilling = reconnect and feed.last >= 0
                await self._subscribe(feeds)
                self._pubsub_up = True
                self._update_health()
                self._wake.set()
                delay = RECONNECT_MIN
                if reconnect:
                    self.stats.pubsub_reconnects += 1
                    log.info("pub/sub connection to Redis is back; resubscribed %d", len(feeds))
                await self._read(conn, refill=set(feeds) if reconnect else set())
            except _FAILURES as error:
                if self._pubsub_up or not reconnect:
                    log.warning("pub/sub connection to Redis lost: %s", _describe(error))
            finally:
                self._conn = None
                self._pubsub_up = False
                self._update_health()
                for waiters in self._confirmations.values():
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_exception(BackendUnavailable("pub/sub connection lost"))
                            waiter.exception()  # a join may not be waiting: no warning
                self._confirmations.clear()
                with contextlib.suppress(*_FAILURES):
                    await conn.disconnect(nowait=True)
            reconnect = True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopped.wait()
            delay = min(delay * 2, RECONNECT_MAX)

    async def _read(self, conn: AbstractConnection, refill: set[_Feed]) -> None:
        while True:
            reply = await conn.read_response(timeout=math.inf)
            if reply == b"PONG" or (isinstance(reply, list) and reply[:1] == [b"pong"]):
                if self._ping_sent is not None:
                    self.stats.ping_seconds = asyncio.get_running_loop().time() - self._ping_sent
                self._ping_sent = None
                continue
            if not isinstance(reply, list) or len(reply) < 3:
                continue
            kind, channel = reply[0], reply[1]
            room_id = self._rooms_by_channel.get(channel)
            if kind == b"message":
                feed = self._feeds.get(room_id) if room_id is not None else None
                if feed is not None and room_id is not None:
                    try:
                        self._on_message(room_id, feed, reply[2])
                    except Exception:  # a malformed payload (or a bug) must not stop the feed
                        log.exception("dropped a malformed message on room %r", room_id)
                        self._lost(room_id, feed, _MISSED)
            elif kind == b"subscribe":
                waiters = self._confirmations.get(channel)
                if waiters:
                    waiter = waiters.popleft()
                    if not waiter.done():
                        waiter.set_result(None)
                feed = self._feeds.get(room_id) if room_id is not None else None
                if feed is not None and feed in refill and room_id is not None:
                    refill.discard(feed)
                    if feed.last >= 0:
                        feed.refilling = True
                        self._spawn(self._refill(room_id, feed))
                    else:
                        feed.refilling = False

    # -- heartbeat, sweep and health ------------------------------------------

    async def _beat_forever(self) -> None:
        while not self._stopped.is_set():
            interval = self._presence_ttl / 3
            if not self._healthy:
                interval = min(interval, RECONNECT_MAX)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()
            self._wake.clear()
            if not self._stopped.is_set():
                await self._beat()

    async def _check_pubsub(self) -> None:
        """PING the pub/sub connection; one unanswered for too long is dropped.

        A connection that hangs without closing (a network path that died
        quietly) would otherwise go on looking subscribed while every
        publish is lost; dropped, the listener reconnects and refills.
        """
        conn = self._conn
        if conn is None:
            return
        now = asyncio.get_running_loop().time()
        if self._ping_sent is not None:
            if now - self._ping_sent > PUBSUB_PING_TIMEOUT:
                log.warning("pub/sub connection to Redis does not answer; reconnecting")
                self._ping_sent = None
                await conn.disconnect(nowait=True)  # the listener's read fails and it reconnects
            return
        self._ping_sent = now
        async with self._send_lock:
            with contextlib.suppress(*_FAILURES):
                await conn.send_command("PING", check_health=False)

    async def _ping_forever(self) -> None:
        # Apart from the heartbeat, whose commands may themselves hang.
        while not self._stopped.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PUBSUB_PING_INTERVAL):
                    await self._stopped.wait()
            if not self._stopped.is_set():
                await self._check_pubsub()

    async def _beat(self) -> None:
        """Refresh this node's entry, re-register its rooms, sweep dead nodes."""
        try:
            now_ms = int(time.time() * 1000)
            expiry = now_ms + round(self._presence_ttl * 1000)
            added = await self._redis.zadd(scripts.NODES_KEY, {self.node: expiry})
            if added and self._registered:
                # Our entry was gone: swept while we could not beat, or Redis
                # lost its data. Our sessions are no longer counted anywhere.
                log.warning("the chat backend forgot this server's members; ending their streams")
                for room_id, feed in list(self._feeds.items()):
                    self._lost(room_id, feed, "the chat backend lost this server's members; rejoin")
            self._registered = True
            rooms = [r for r in self._feeds if self._local.local_members(r)]
            if rooms:
                await self._redis.sadd(scripts.node_rooms_key(self.node), *rooms)
            await self._finish_leaves()
            dead = await self._redis.zrangebyscore(scripts.NODES_KEY, "-inf", now_ms)
            for node in dead:
                await self._sweep_node(_text(node))
        except _FAILURES as error:
            self._command_failed(error)
            return
        self._commands_ok_again()

    async def _sweep_node(self, node: str) -> None:
        """Remove a dead node's sessions everywhere, announcing the users that left."""
        rooms_key = scripts.node_rooms_key(node)
        for raw in await self._redis.smembers(rooms_key):
            room_id = _text(raw)
            reply = await self._sweep(
                keys=scripts.room_keys(room_id), args=[f"{node}\0", self._room_ttl_ms]
            )
            if not reply:
                continue
            epoch = reply[0].decode()
            gone = reply[1]
            now = time.time_ns()
            for i in range(0, len(gone), 2):
                user = gone[i].decode()
                shown = gone[i + 1].decode().partition("|")[2]
                record = self._encode_presence(PresenceChange(room_id, user, shown, False, now))
                message = b"p" + epoch.encode() + user.encode() + b"\n" + record
                await self._redis.publish(scripts.channel(room_id), message)
        await self._redis.delete(rooms_key)
        await self._redis.zrem(scripts.NODES_KEY, node)
        log.info("swept server %s: its members' presence expired", node)

    def _remove_later(self, room_id: str, field: str, user_id: str, name: str) -> None:
        task = self._spawn(self._remove(room_id, field, user_id, name))
        removing = self._removing.setdefault(room_id, set())
        removing.add(task)

        def done(task: asyncio.Task[None]) -> None:
            removing.discard(task)
            if not removing and self._removing.get(room_id) is removing:
                del self._removing[room_id]

        task.add_done_callback(done)

    async def _settled(self, room_id: str) -> None:
        """Wait for this node's removals from ``room_id`` in flight (read your own leaves)."""
        removing = self._removing.get(room_id)
        if removing:
            await asyncio.wait(list(removing))

    def evicted(self, member: Member) -> None:
        """The local hub evicted ``member``: it stops counting at once, as in-process."""
        session = self._sessions.pop(member.member_id, None)
        if session is not None:
            room_id, field, user_id = session
            self._remove_later(room_id, field, user_id, member.name)

    async def _remove(self, room_id: str, field: str, user_id: str, name: str) -> None:
        record = self._encode_presence(
            PresenceChange(room_id, user_id, name, False, time.time_ns())
        )
        try:
            await self._leave(
                keys=scripts.room_keys(room_id),
                args=[field, scripts.channel(room_id), record, self._room_ttl_ms],
            )
        except _FAILURES as error:
            self._command_failed(error)
            self._unfinished.append((room_id, field, user_id, name))
            return
        if room_id not in self._feeds and not any(u[0] == room_id for u in self._unfinished):
            with contextlib.suppress(*_FAILURES):
                await self._redis.srem(scripts.node_rooms_key(self.node), room_id)

    async def _finish_leaves(self) -> None:
        unfinished, self._unfinished = self._unfinished, []
        for room_id, field, user_id, name in unfinished:
            await self._remove(room_id, field, user_id, name)

    def _command_failed(self, error: BaseException) -> None:
        self.stats.errors += 1
        if self._commands_ok:
            log.warning("chat backend unavailable: %s", _describe(error))
            self._wake.set()  # retry at the short, unhealthy interval from now on
        self._commands_ok = False
        self._update_health()

    def _commands_ok_again(self) -> None:
        if not self._commands_ok:
            self._commands_ok = True
            self._update_health()

    def _update_health(self) -> None:
        if self._closed:
            return  # the server's drain says NOT_SERVING itself
        healthy = self._pubsub_up and self._commands_ok
        if healthy != self._healthy:
            self._healthy = healthy
            log.info("chat backend %s", "available" if healthy else "unavailable")
            if self._on_health is not None:
                self._on_health(healthy)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def _decode_state(reply: list[Any]) -> tuple[str, int, int, list[bytes]]:
    epoch, seq, first, entries = reply
    return epoch.decode(), int(seq), int(first), list(entries)


def _replay(
    catchup: Catchup | None, epoch: str, seq: int, first: int, low: int, entries: list[bytes]
) -> tuple[list[bytes], bool | None]:
    """What a joiner gets before live messages, as `Hub._replay` decides it in-process."""
    if catchup is None:
        return [], None
    if catchup.resume:
        if catchup.epoch != epoch or not first - 1 <= catchup.since_seq <= seq:
            return [], False
        return entries[catchup.since_seq + 1 - low :], True
    count = min(catchup.history, seq - first + 1)
    return (entries[len(entries) - count :] if count > 0 else []), None


def _pairs(flat: list[bytes]) -> dict[str, str]:
    return {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text.splitlines()[0]
