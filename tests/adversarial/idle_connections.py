"""Idle connections: open up to ``--connections`` TCP connections that never speak HTTP/2.

Holds them for ``--seconds``; with ``--reopen`` every connection the server
closes is opened again at once, as a persistent attacker would. Reports how
many the server closed and how soon. The bystander opens a fresh connection
for every probe here, since new clients are what this attack locks out.
"""

from __future__ import annotations

import contextlib
import resource
import selectors
import socket
import time

from tests.adversarial.harness import host_port, parse_args, run_attack


def hold(address: str, connections: int, seconds: float, reopen: int) -> dict[str, object]:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    target = host_port(address)
    selector = selectors.DefaultSelector()
    opened_at: dict[socket.socket, float] = {}
    opened = refused_at_open = closed = 0
    lifetimes: list[float] = []

    def open_one() -> bool:
        nonlocal opened, refused_at_open
        try:
            sock = socket.create_connection(target, timeout=2)
        except OSError:
            refused_at_open += 1
            return False
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        opened_at[sock] = time.monotonic()
        opened += 1
        return True

    start = time.monotonic()
    deadline = start + seconds
    while len(opened_at) < connections and time.monotonic() < deadline:
        if not open_one():
            break
    opened_all = time.monotonic() - start
    while time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.2):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            with contextlib.suppress(OSError):
                if sock.recv(4096):
                    continue  # the server's SETTINGS: still open
            lifetimes.append(time.monotonic() - opened_at.pop(sock))
            selector.unregister(sock)
            sock.close()
            closed += 1
            if reopen and time.monotonic() < deadline:
                open_one()
    for sock in list(opened_at):
        sock.close()
    lifetimes.sort()
    return {
        "opened": opened,
        "open_failed": refused_at_open,
        "seconds_to_open": round(opened_all, 1),
        "closed_by_server": closed,
        "median_lifetime_s": round(lifetimes[len(lifetimes) // 2], 1) if lifetimes else None,
        "still_open_at_end": len(opened_at),
    }


def main() -> None:
    args = parse_args(
        __doc__ or "",
        [
            ("connections", 20_000, "connections to hold at most"),
            ("seconds", 20.0, "how long to hold them"),
            ("reopen", 0, "1: reopen every connection the server closes"),
        ],
    )
    run_attack(
        "idle connections",
        args.server_arg,
        hold,
        args.connections,
        args.seconds,
        args.reopen,
        fresh_connections=True,
    )


if __name__ == "__main__":
    main()
