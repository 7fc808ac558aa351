"""What both ends of a hello connection agree on, beyond the schema.

Keepalive: the server pings every connection so that a vanished or stopped
client is noticed within 30 s (keepalive time plus timeout); it tolerates
client pings every 10 s, and clients ping every 20 s, so the two never trip
gRPC's "too_many_pings" GOAWAY.

Batch framing: a ``MessageBatch`` on the wire is the concatenation of
``field 1, length-delimited`` records, one per ``Message``, and ``field 2``
records, one per ``PresenceEvent`` (marked as a `PresenceRecord`). Framing
the bytes that were already serialised for ``Join`` gives the exact encoding
of a ``MessageBatch`` without decoding or re-encoding anything.

Join acknowledgement headers (initial metadata of Join and Subscribe), see
../shared/protocol.md "Planned additions": `EPOCH_HEADER`, `SEQ_HEADER`, and
`RECOVERED_HEADER` when the join asked to resume.
"""

from __future__ import annotations

from collections.abc import Iterable

SERVICE_NAME = "hello.ChatRoom"
JOIN_METHOD = f"/{SERVICE_NAME}/Join"
SEND_METHOD = f"/{SERVICE_NAME}/SendMessage"
SUBSCRIBE_METHOD = f"/{SERVICE_NAME}/Subscribe"
SEND_STREAM_METHOD = f"/{SERVICE_NAME}/SendStream"
MEMBERS_METHOD = f"/{SERVICE_NAME}/Members"

EPOCH_HEADER = "hello-epoch"
SEQ_HEADER = "hello-seq"
RECOVERED_HEADER = "hello-recovered"
# Trailing metadata of a call refused RESOURCE_EXHAUSTED for sending too fast:
# how many milliseconds to wait before the next message will be accepted.
RETRY_AFTER_HEADER = "retry-after-ms"

DEFAULT_PORT = 8080
DEFAULT_ADDRESS = f"127.0.0.1:{DEFAULT_PORT}"

# Room and user ids, and the text, have these limits unless the server is
# configured otherwise. Both ends know them so a client can reject early.
DEFAULT_MAX_ID_CHARS = 128
DEFAULT_MAX_TEXT_BYTES = 64 * 1024
# Room the ids and framing take beyond the text in one request or delivery.
ENVELOPE_ALLOWANCE_BYTES = 4096

# The server pings a connection every DEFAULT_KEEPALIVE_TIME_SECONDS and
# closes it when the ping is not answered within DEFAULT_KEEPALIVE_TIMEOUT_SECONDS:
# a client that stopped (or a network that dropped it) is gone from its rooms
# within their sum, 30 s (measured: docs/hardening.md, "Transport attacks").
# hello_server/transport.py turns these into the server's channel arguments.
DEFAULT_KEEPALIVE_TIME_SECONDS = 20.0
DEFAULT_KEEPALIVE_TIMEOUT_SECONDS = 10.0
# The server accepts client pings this often at most; clients ping every 20 s.
MIN_CLIENT_PING_INTERVAL_MS = 10_000

CLIENT_KEEPALIVE_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
)

_BATCH_FIELD_TAG = b"\x0a"  # field 1, wire type 2 (length-delimited)
_PRESENCE_FIELD_TAG = b"\x12"  # field 2, wire type 2


class PresenceRecord(bytes):
    """A serialised ``PresenceEvent``: framed as ``MessageBatch`` field 2, not 1."""

    __slots__ = ()


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Message records' headers (tag and length) by length: the server frames the
# same few sizes for every member of a room, so each is built once.
_MESSAGE_HEADERS: dict[int, bytes] = {}
_MAX_CACHED_HEADERS = 4096


def _message_header(size: int) -> bytes:
    header = _BATCH_FIELD_TAG + _varint(size)
    if len(_MESSAGE_HEADERS) < _MAX_CACHED_HEADERS:
        _MESSAGE_HEADERS[size] = header
    return header


def frame_batch(messages: Iterable[bytes]) -> bytes:
    """Encode serialised ``Message`` bytes (and `PresenceRecord`s) as one ``MessageBatch``.

    A batch's presence events and messages are two lists on the wire: their
    order relative to each other within one batch is not kept.
    """
    parts: list[bytes] = []
    append = parts.append
    headers = _MESSAGE_HEADERS
    for body in messages:
        if type(body) is PresenceRecord:
            append(_PRESENCE_FIELD_TAG + _varint(len(body)))
        else:
            size = len(body)
            append(headers.get(size) or _message_header(size))
        append(body)
    return b"".join(parts)
