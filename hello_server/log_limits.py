"""Keeps one client's malformed requests from flooding the server's log.

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

_METHOD = re.compile(r"servicer method \[(?P<method>[^\]]+)\]")


class MalformedRequestLog(logging.Filter):
    """Turns gRPC's traceback per unparsable request into a count per interval.

    Install with `install`, remove with `uninstall` (which also logs what is
    still counted). Runs on the event loop's thread, where grpc.aio logs.
    """

    def __init__(self, interval: float = DEFAULT_INTERVAL_SECONDS) -> None:
        super().__init__()
        self._interval = interval
        self._count = 0
        self._last = ""
        self._since = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None

    def install(self) -> None:
        logging.getLogger(GRPC_SERVER_LOGGER).addFilter(self)

    def uninstall(self) -> None:
        logging.getLogger(GRPC_SERVER_LOGGER).removeFilter(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._report()

    def filter(self, record: logging.LogRecord) -> bool:
        refusal = _malformed_request(record)
        if refusal is None:
            return True
        if self._timer is None:
            # The first in a quiet period is logged at once; the rest are counted.
            log.warning(
                "malformed request refused: %s (more are counted and logged every %g s)",
                refusal,
                self._interval,
            )
            self._start_interval()
        else:
            self._count += 1
            self._last = refusal
        return False

    def _start_interval(self) -> None:
        self._since = time.monotonic()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not on a loop: nothing to time intervals with; log each one
        self._timer = loop.call_later(self._interval, self._end_interval)

    def _end_interval(self) -> None:
        self._timer = None
        if self._count:
            self._report()
            self._start_interval()  # still going on: keep counting

    def _report(self) -> None:
        if self._count:
            log.warning(
                "%d malformed requests refused in the last %.0f s; last: %s",
                self._count,
                time.monotonic() - self._since,
                self._last,
            )
        self._count = 0


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
