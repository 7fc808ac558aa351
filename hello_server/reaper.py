"""Closing a client connection whose every chat stream was evicted and is stuck in a write.

An evicted member's handler may sit in a write behind a client that stopped
reading (its flow-control window is closed) for as long as the connection
lives, and keepalive does not end it: a stalled client still answers pings.
grpc.aio cannot reset one stream (cancelling the handler leaves the client's
call open with no status), so once ALL of a connection's member streams are
stuck after eviction, and stay so for ``delay`` seconds, the connection
itself is shut down: its server-side socket is found by the peer address
(psutil) and shut down through a duplicate of its descriptor, so gRPC core
sees the connection drop and ends its calls. A client that reads again
within ``delay`` gets its streams' RESOURCE_EXHAUSTED status instead.

gRPC's own ``grpc.max_connection_age_ms`` would also free them, but it ends
every healthy long-lived stream too; see docs/hardening.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
from collections.abc import Callable
from typing import Protocol
from urllib.parse import unquote

from hello_server.mailbox import Mailbox
from hello_server.transport import server_connections

log = logging.getLogger(__name__)

Address = tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]


class Stream(Protocol):
    """A member stream as far as the reaper is concerned."""

    @property
    def member_id(self) -> int: ...

    @property
    def connection(self) -> str: ...

    @property
    def mailbox(self) -> Mailbox: ...


class StalledConnections:
    """Tracks the member streams of each connection and closes all-stuck ones."""

    def __init__(self, delay: float, local_port: Callable[[], int]) -> None:
        self._delay = delay
        self._local_port = local_port
        self._streams: dict[str, set[int]] = {}
        self._stuck: dict[str, set[int]] = {}
        self._armed: set[str] = set()  # connections with a check pending
        self._closing: set[str] = set()  # connections being shut down
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed_connections = 0

    def serving(self, stream: Stream) -> None:
        """A member stream started on its connection."""
        self._streams.setdefault(stream.connection, set()).add(stream.member_id)

    def done(self, stream: Stream) -> None:
        """A member stream ended. Idempotent."""
        connection = stream.connection
        streams = self._streams.get(connection)
        if streams is None or stream.member_id not in streams:
            return
        streams.discard(stream.member_id)
        stuck = self._stuck.get(connection)
        if stuck is not None:
            stuck.discard(stream.member_id)
            if not stuck:
                del self._stuck[connection]
            elif len(stuck) == len(streams):
                self._arm(connection)  # the last healthy stream went: the rest are all stuck
        if not streams:
            del self._streams[connection]
            self._closing.discard(connection)

    def evicted(self, stream: Stream) -> None:
        """The hub evicted a member: if its handler holds a write, watch its connection."""
        if not stream.mailbox.held_bytes or stream.member_id not in self._streams.get(
            stream.connection, ()
        ):
            return  # not in a write: the handler sees the closed mailbox and ends now
        self._stuck.setdefault(stream.connection, set()).add(stream.member_id)
        self._arm(stream.connection)

    def _arm(self, connection: str) -> None:
        if connection not in self._armed and connection not in self._closing:
            self._armed.add(connection)
            asyncio.get_running_loop().call_later(self._delay, self._check, connection)

    def _check(self, connection: str) -> None:
        self._armed.discard(connection)
        stuck = self._stuck.get(connection)
        if not stuck or len(stuck) < len(self._streams.get(connection, ())):
            return  # it read again, or it still has a stream that is not stuck
        self._closing.add(connection)
        log.info(
            "closing connection %s: its %d stream(s) were evicted and it has not read "
            "for %.1f s since",
            connection,
            len(stuck),
            self._delay,
        )
        self.closed_connections += 1  # counted now: the streams may end before the thread returns
        task = asyncio.create_task(self._close(connection))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _close(self, connection: str) -> None:
        # Listing a process's sockets reads /proc: keep it off the event loop.
        if not await asyncio.to_thread(shut_down_connection, connection, self._local_port()):
            log.warning("connection %s to close was not found (already gone?)", connection)


def parse_peer(peer: str) -> Address | None:
    """The address in a gRPC peer string ("ipv4:1.2.3.4:5", "ipv6:%5B::1%5D:5"), or None."""
    scheme, _, rest = unquote(peer).partition(":")
    if scheme not in ("ipv4", "ipv6"):
        return None
    host, _, port = rest.rpartition(":")
    try:
        return _normalise(host.strip("[]"), int(port))
    except ValueError:
        return None


def _normalise(host: str, port: int) -> Address:
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
    return ip, port


def shut_down_connection(peer: str, local_port: int) -> bool:
    """Shut down this process's TCP connection from ``peer`` to ``local_port``.

    Works on a duplicate descriptor, checked to still be that connection, so
    that gRPC's own descriptor stays valid and gRPC sees a dropped connection.
    Returns whether the connection was found.
    """
    address = parse_peer(peer)
    if address is None:
        return False
    for conn in server_connections(local_port):
        if conn.fd < 0:
            continue
        if _normalise(conn.raddr.ip, conn.raddr.port) != address:
            continue
        try:
            duplicate = os.dup(conn.fd)
        except OSError:
            continue  # closed meanwhile
        try:
            sock = socket.socket(fileno=duplicate)
        except OSError:
            os.close(duplicate)  # reused meanwhile by something that is not a socket
            continue
        with sock, contextlib.suppress(OSError):
            # The descriptor may have been reused since it was listed.
            if _normalise(*sock.getpeername()[:2]) == address:
                sock.shutdown(socket.SHUT_RDWR)
                return True
    return False
