"""ScriptPipe: one Redis connection of its own for the send script, pipelined.

redis-py's pooled client spent 310-370 us of CPU per command on this
machine, against 130-190 us for the same command on a connection used
directly (pool checkout and release, its hooks, the connection check); the
send script runs once per batch of a room's messages, which in a busy room
is about once per message, and a worker spent about 1.9 ms per message.
The pipe sends on one connection that it owns, lets any number of commands
be in flight, and hands the replies back in order; redis-py still packs the
commands and parses the replies, as on the pub/sub connection.

The connection must have no socket timeout (the pipe times each command
itself): redis-py then writes a command at once, in the caller's step, so
the commands go out in the order their replies are awaited.

A command that gets no reply within the timeout, or a connection that fails,
fails every command in flight on it (their scripts may or may not have run:
the caller answers UNAVAILABLE and never resends) and the next command
connects again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError, NoScriptError, RedisError, ResponseError


class ScriptPipe:
    """Runs scripts on one connection of its own, many in flight, replies in order."""

    def __init__(self, connect: Callable[[], AbstractConnection], timeout: float) -> None:
        self._make_connection = connect
        self._timeout = timeout
        self._conn: AbstractConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._replies: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._connecting = asyncio.Lock()
        self._closed = False

    async def run(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """``script`` on ``keys`` and ``args``; raises what redis-py would (RedisError...)."""
        try:
            return await self._execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:  # a new or flushed Redis: the script did not run
            return await self._execute("EVAL", script.script, len(keys), *keys, *args)

    async def close(self) -> None:
        self._closed = True
        if self._conn is not None:
            await self._break(self._conn, ConnectionError("the server is stopping"))

    async def _execute(self, *args: Any) -> Any:
        conn = await self._connection()
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._replies.append(reply)
        sent = False
        try:
            async with asyncio.timeout(self._timeout):
                await conn.send_packed_command(conn.pack_command(*args), check_health=False)
                sent = True
                return await reply
        except TimeoutError:
            late = TimeoutError("no reply from Redis in time")
            await self._break(conn, late)
            raise late from None
        except BaseException as error:
            if not sent:  # a partial write leaves the connection unusable
                await self._break(conn, error)
            raise

    async def _connection(self) -> AbstractConnection:
        if self._conn is not None:
            return self._conn
        async with self._connecting:
            if self._closed:
                raise ConnectionError("the server is stopping")
            if self._conn is None:
                conn = self._make_connection()
                try:
                    await conn.connect()  # type: ignore[no-untyped-call]
                except BaseException:
                    await conn.disconnect(nowait=True)
                    raise
                self._conn = conn
                self._reader = asyncio.create_task(self._read(conn), name="redis-script-pipe")
            return self._conn

    async def _read(self, conn: AbstractConnection) -> None:
        """Hand each reply to the oldest command in flight; any failure breaks the connection."""
        try:
            while True:
                try:
                    reply = await conn.read_response(timeout=math.inf)
                except ResponseError as error:  # the command's own error: the connection is fine
                    reply = error
                if not self._replies:
                    raise ConnectionError("a reply nobody asked for")
                waiter = self._replies.popleft()
                if waiter.done():  # its caller gave up (timed out or cancelled)
                    continue
                if isinstance(reply, ResponseError):
                    waiter.set_exception(reply)
                else:
                    waiter.set_result(reply)
        except (RedisError, OSError) as error:
            await self._break(conn, error)

    async def _break(self, conn: AbstractConnection, error: BaseException) -> None:
        """Fail everything in flight on ``conn`` and drop it; the next command reconnects."""
        if self._conn is not conn:
            return  # already broken
        self._conn = None
        replies, self._replies = self._replies, collections.deque()
        for reply in replies:
            if not reply.done():
                reply.set_exception(ConnectionError(f"lost the Redis connection: {error}"))
                reply.exception()  # its caller may be gone (its send failed): no warning
        reader, self._reader = self._reader, None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            await asyncio.wait([reader])
        with contextlib.suppress(RedisError, OSError):
            await conn.disconnect(nowait=True)
