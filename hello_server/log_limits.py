"""Keeps one client's refused requests from flooding the server's log.

`RefusalLog` logs a refusal once per client and kind per interval, with a
count of the rest; everything that refuses a client for what it keeps doing
(malformed requests, per-user limits, bad tokens) logs through one.

grpc.aio parses the requests of the services it hosts for us (health,
reflection) itself; when a request does not parse, it logs an ERROR with a
full traceback (about 15 lines) on the ``grpc._cython.cygrpc`` logger and
answers UNKNOWN. A client sending garbage in a loop turned that into 1.4 MB/s
of log. `MalformedRequestLog` is a filter on that logger: it drops those
records, logs the first one of a quiet period as one line, and then one line
per interval with the count. Every other gRPC log record passes untouched:
an unexpected error in a handler is a bug and keeps its traceback.

The chat service parses its own requests (see service.py), so garbage sent to
it never reaches this path: it gets INVALID_ARGUMENT and no log line.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time

from google.protobuf.message import DecodeError

log = logging.getLogger(__name__)

GRPC_SERVER_LOGGER = "grpc._cython.cygrpc"

# Long enough that a flood costs one line per interval, short enough that an
# operator watching the log sees it still going on.
DEFAULT_INTERVAL_SECONDS = 10.0
# Clients with an interval in progress, at most; more are counted together.
DEFAULT_MAX_CLIENTS = 10_000
OTHER_CLIENTS = "other clients"
TIMER_SLACK_SECONDS = 0.001

_METHOD = re.compile(r"servicer method \[(?P<method>[^\]]+)\]")


class RefusalLog:
    """Logs refusals once per client and kind per interval, and counts the rest.

    The first refusal of a kind for a client in a quiet period is logged at
    once; further ones within the interval are counted, and logged as one
    line with the count when the interval ends; the next interval keeps
    counting while they go on. A client that stops is forgotten when its
    interval ends, so the state is the clients refused in the last interval,
    and at most ``max_clients`` of them: beyond that, refusals are counted for
    "other clients" together. Used for malformed requests, for the per-user
    limits and for authentication refusals.

    Each line carries ``fields`` (room, user, peer, status) as ``extra`` for
    the JSON log format. Runs on the event loop's thread.
    """

    def __init__(
        self,
        interval: float = DEFAULT_INTERVAL_SECONDS,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        logger: logging.Logger = log,
    ) -> None:
        self._interval = interval
        self._max_clients = max_clients
        self._log = logger
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        """Clients (and kinds) with an interval in progress."""
        return len(self._entries)

    def refused(
        self, what: str, client: str, detail: str, fields: dict[str, str] | None = None
    ) -> bool:
        """Note one refusal of ``what`` (a singular noun) for ``client``; True if logged now."""
        key = (what, client)
        entry = self._entries.get(key)
        if entry is None and len(self._entries) >= self._max_clients:
            key = (what, OTHER_CLIENTS)
            client = OTHER_CLIENTS
            entry = self._entries.get(key)
        if entry is not None:
            entry.count += 1
            entry.last = detail
            entry.fields = fields
            return False
        self._log.warning(
            "%s refused%s: %s (more are counted and logged every %g s)",
            what,
            _for(client),
            detail,
            self._interval,
            extra=fields,
        )
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return True  # not on a loop: nothing to time intervals with; log each one
        self._entries[key] = _Entry(time.monotonic(), detail, fields)
        if self._timer is None:
            self._timer = loop.call_later(self._interval, self._end_intervals)
        return True

    def flush(self) -> None:
        """Log every count in progress and forget all clients (the server stops)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        now = time.monotonic()
        for (what, client), entry in self._entries.items():
            self._report(what, client, entry, now - entry.since)
        self._entries.clear()

    def _end_intervals(self) -> None:
        self._timer = None
        now = time.monotonic()
        due = now - self._interval + TIMER_SLACK_SECONDS  # timers may fire that much early
        ended = [key for key, entry in self._entries.items() if entry.since <= due]
        for key in ended:
            entry = self._entries[key]
            if entry.count:
                self._report(*key, entry, now - entry.since)
                # Still going on: keep counting in a new interval.
                self._entries[key] = _Entry(now, entry.last, entry.fields, count=0)
            else:
                del self._entries[key]
        if self._entries:
            first = min(entry.since for entry in self._entries.values())
            delay = max(0.0, first + self._interval - now)
            self._timer = asyncio.get_running_loop().call_later(delay, self._end_intervals)

    def _report(self, what: str, client: str, entry: _Entry, seconds: float) -> None:
        if entry.count:
            self._log.warning(
                "%d %ss refused%s in the last %.0f s; last: %s",
                entry.count,
                what,
                _for(client),
                seconds,
                entry.last,
                extra=entry.fields,
            )


def _for(client: str) -> str:
    return f" for {client}" if client else ""


class _Entry:
    __slots__ = ("count", "fields", "last", "since")

    def __init__(
        self, since: float, last: str, fields: dict[str, str] | None, count: int = 0
    ) -> None:
        self.since = since  # time.monotonic()
        self.last = last
        self.fields = fields
        self.count = count


class MalformedRequestLog(logging.Filter):
    """Turns gRPC's traceback per unparsable request into a count per interval.

    Install with `install`, remove with `uninstall` (which also logs what is
    still counted). Runs on the event loop's thread, where grpc.aio logs.
    The counting is a `RefusalLog`'s, with one client for all.
    """

    def __init__(self, interval: float = DEFAULT_INTERVAL_SECONDS) -> None:
        super().__init__()
        self._refusals = RefusalLog(interval)

    def install(self) -> None:
        logging.getLogger(GRPC_SERVER_LOGGER).addFilter(self)

    def uninstall(self) -> None:
        logging.getLogger(GRPC_SERVER_LOGGER).removeFilter(self)
        self._refusals.flush()

    def filter(self, record: logging.LogRecord) -> bool:
        refusal = _malformed_request(record)
        if refusal is None:
            return True
        self._refusals.refused("malformed request", "", refusal)
        return False


def _malformed_request(record: logging.LogRecord) -> str | None:
    """``"METHOD: reason"`` if ``record`` is gRPC failing to parse a request, else None."""
    if record.exc_info is None:
        return None
    _, error, trace = record.exc_info
    if not isinstance(error, DecodeError) or trace is None:
        return None
    while trace.tb_next is not None:
        trace = trace.tb_next
    # Raised by gRPC's own deserialisation step, not by a handler (a bug).
    if not trace.tb_frame.f_code.co_name.endswith("deserialize"):
        return None
    match = _METHOD.search(record.getMessage())
    method = match["method"] if match else "unknown method"
    return f"{method}: {error}"
