"""The cost of token authentication on the send path (issue 10): sends per second
to a hello-server child with ``--auth-jwt-secret`` as a ratio to one without.

Each round starts an open server and an authenticated one, in alternating
order, and drives each the same way from this process: one room with one
Subscribe reader, and ``--senders`` users each keeping ``--in-flight`` sends
going for ``--duration`` seconds, with SendMessage (a token checked per
message) or with SendStream (a token checked per stream). It reports sends per
second and the server's CPU time per send (user + system, from /proc: less
disturbed than throughput by other load on the machine). Medians over rounds,
with every round printed, so that the spread shows.

    python3 -m hello_bench.auth_cost --rounds 5 --duration 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from contextlib import AsyncExitStack

import jwt

from hello_bench.procs import running_server
from hello_client import ChatClient, StreamSender

SECRET = "hello-bench-auth-cost-secret-0123456789abcdef"
ROOM = "auth-cost"


def _token(user: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": user, "iat": now, "exp": now + 3600}, SECRET, algorithm="HS256")


async def _sends_per_second(
    address: str,
    authenticated: bool,
    *,
    stream: bool,
    senders: int,
    in_flight: int,
    duration: float,
) -> tuple[float, int]:
    """Accepted sends per second while the reader drains the room, and how many."""

    def client(user: str) -> ChatClient:
        return ChatClient(address, token=_token(user) if authenticated else None)

    async with AsyncExitStack() as stack:
        reader_client = await stack.enter_async_context(client("reader"))
        room = await stack.enter_async_context(await reader_client.join(ROOM, "reader"))

        async def read() -> None:
            async for _ in room:
                pass

        reading = asyncio.create_task(read())
        sent = 0
        deadline = asyncio.get_running_loop().time() + duration

        async def sender(user: str) -> None:
            nonlocal sent
            own = await stack.enter_async_context(client(user))
            send = own.send
            if stream:
                send = (await stack.enter_async_context(StreamSender(own))).send

            async def one_lane() -> None:
                nonlocal sent
                while asyncio.get_running_loop().time() < deadline:
                    await send(ROOM, user, "x" * 100)
                    sent += 1

            await asyncio.gather(*(one_lane() for _ in range(in_flight)))

        started = asyncio.get_running_loop().time()
        await asyncio.gather(*(sender(f"sender-{n}") for n in range(senders)))
        elapsed = asyncio.get_running_loop().time() - started
        reading.cancel()
        await asyncio.wait([reading])
    return sent / elapsed, sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--in-flight", type=int, default=8)
    args = parser.parse_args()
    for stream in (False, True):
        rpc = "SendStream" if stream else "SendMessage"
        results: dict[bool, list[float]] = {False: [], True: []}
        cpu_per_send: dict[bool, list[float]] = {False: [], True: []}
        for round_number in range(args.rounds):
            # Alternate which goes first, so a drift in machine load hits both.
            order = (False, True) if round_number % 2 == 0 else (True, False)
            for authenticated in order:
                extra = ["--auth-jwt-secret", SECRET] if authenticated else []
                with running_server("hello", extra) as server:
                    cpu_before = server.stats.cpu_seconds()
                    rate, sends = asyncio.run(
                        _sends_per_second(
                            server.address,
                            authenticated,
                            stream=stream,
                            senders=args.senders,
                            in_flight=args.in_flight,
                            duration=args.duration,
                        )
                    )
                    cpu = server.stats.cpu_seconds() - cpu_before
                results[authenticated].append(rate)
                cpu_per_send[authenticated].append(cpu / sends * 1e6)
        open_rates, auth_rates = results[False], results[True]
        ratios = [a / o for a, o in zip(auth_rates, open_rates, strict=True)]
        print(f"{rpc}: open {[round(r) for r in open_rates]} sends/s")
        print(f"{rpc}: auth {[round(r) for r in auth_rates]} sends/s")
        print(
            f"{rpc}: median open {statistics.median(open_rates):.0f}, "
            f"auth {statistics.median(auth_rates):.0f}, ratio per round "
            f"{[round(r, 3) for r in ratios]}, median {statistics.median(ratios):.3f}"
        )
        for authenticated, label in ((False, "open"), (True, "auth")):
            costs = cpu_per_send[authenticated]
            print(
                f"{rpc}: {label} server CPU per send {[round(c) for c in costs]} us, "
                f"median {statistics.median(costs):.0f} us"
            )


if __name__ == "__main__":
    main()
