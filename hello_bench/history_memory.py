"""RSS of an in-process hub whose rooms all hold a full history (issue 8, "Memory stays bounded").

Fills ``--rooms`` rooms, each with one member, with ``--messages`` messages of
``--text-bytes`` characters encoded as the server does, under the server's
default limits and history budget (or ``--history-budget``; 0: no budget),
and prints the process's RSS before and after, and what the histories hold.

    python3 -m hello_bench.history_memory --rooms 10000
"""

from __future__ import annotations

import argparse
import asyncio
import platform
from pathlib import Path

from hello_server.config import ServerConfig
from hello_server.hub import Hub
from hello_server.service import encode_message


def rss_bytes() -> int:
    """This process's resident set size, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def fill(rooms: int, messages: int, text_bytes: int, budget: int) -> None:
    config = ServerConfig() if budget <= 0 else ServerConfig(history_budget_bytes=budget)
    history_budget = None if budget == 0 else config.history_budget_bytes
    hub = Hub(
        encode_message,
        config.queue,
        config.memory,
        history=config.history,
        history_budget=history_budget,
    )
    text = "x" * text_bytes
    before = rss_bytes()
    for n in range(rooms):
        room = f"room-{n}"
        member = hub.join(room, "filler")
        for _ in range(messages):
            hub.publish(room, "filler", text)
            # Read as a stream would, so that only the history pins the payloads.
            member.mailbox.wrote(shared=sum(map(len, member.mailbox.take_nowait(1 << 30))))
    after = rss_bytes()
    mib = 1024 * 1024
    print(f"python {platform.python_version()} on {platform.machine()}, {platform.node()}")
    print(
        f"rooms {rooms} x {messages} messages of {text_bytes} characters; "
        f"history budget {history_budget or 'none'}"
    )
    print(f"history bytes held: {hub.history_bytes / mib:.1f} MiB")
    print(f"RSS before {before / mib:.0f} MiB, after {after / mib:.0f} MiB")
    hub.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=500, help="per room (default: full)")
    parser.add_argument("--text-bytes", type=int, default=200)
    parser.add_argument(
        "--history-budget", type=int, default=-1, help="bytes; 0: none; default: the server's"
    )
    args = parser.parse_args()
    asyncio.run(fill(args.rooms, args.messages, args.text_bytes, args.history_budget))


if __name__ == "__main__":
    main()
