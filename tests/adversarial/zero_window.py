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

from hello_protocol import hello_pb2 as pb
from hello_protocol import hello_pb2_grpc
from tests.adversarial.harness import RawConnection, parse_args, run_attack

TEXT = "x" * (60 * 1024)


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
            # Live: it answers pings, as a stalled client does, and sees its streams end.
            conn = RawConnection(address, live=True)
            conn.start(initial_window=0)  # and never a WINDOW_UPDATE
            room_of = {conn.open_join(name, "hog"): name for name in names}
            counts["joins"] += rooms
            while time.monotonic() < deadline and not conn.closed_by_server.wait(0.05):
                for stream in conn.ended_streams():
                    name = room_of.pop(stream, "")
                    if name:
                        room_of[conn.open_join(name, "hog")] = name
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
