"""The server's log formats: today's text lines, or one JSON object per line.

JSON lines carry ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``event``
(the message) and, when the log call knows them (``extra=``), ``room``,
``user``, ``peer`` and ``status``; a traceback goes in ``exc``. Log
collectors (Loki, Elasticsearch, CloudWatch) index those fields directly.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The context a log call may pass as ``extra=`` (see `fields`).
CONTEXT_FIELDS = ("room", "user", "peer", "status")


def fields(
    room: str | None = None,
    user: str | None = None,
    peer: str | None = None,
    status: str | None = None,
) -> dict[str, str]:
    """The ``extra=`` of a log call: the context that is known, by name."""
    known = {"room": room, "user": user, "peer": peer, "status": status}
    return {name: value for name, value in known.items() if value is not None}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "event": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(log_format: str, hello_level: int, *, name_process: bool = False) -> None:
    """Send every log record to stderr in ``log_format``; hello's own at ``hello_level``.

    ``name_process``: text lines name the process (``hello_server[PID]:``),
    as the workers of ``--workers`` do; JSON lines always carry ``pid``.

    Other libraries (asyncio, grpc) stay at WARNING: a debug level is about
    hello's own joins and leaves, not their internals.
    """
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        text_format = TEXT_FORMAT
        if name_process:
            text_format = text_format.replace("%(name)s:", "%(name)s[%(process)d]:")
        handler.setFormatter(logging.Formatter(text_format))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    logging.getLogger("hello_server").setLevel(hello_level)
