"""A rough probe: the in-process hub against the Redis backend, in one process.

Not hello-bench's load generator: server, readers and sender share this
process's event loop, so the figures compare the two backends' cost, not
what a server can do. Per run: R Subscribe readers in one room, one sender
with 16 SendMessage calls in flight, M messages; deliveries/s (wall) and
deliveries per CPU-second (this process, plus Redis's own CPU for the Redis
backend, from INFO cpu). Backends alternate, round after round.

    redis-server --port 6391 --save '' --appendonly no &
    python3 -m hello_bench.redis_probe --redis redis://127.0.0.1:6391 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import time

import grpc
import redis.asyncio as aioredis

from hello_protocol import hello_pb2 as pb
from hello_protocol import hello_pb2_grpc
from hello_server import ServerConfig, run_server

IN_FLIGHT = 16


async def redis_cpu(url: str) -> float:
    client = aioredis.Redis.from_url(url)
    try:
        info = await client.info("cpu")
    finally:
        await client.aclose()
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def one_run(url: str | None, readers: int, messages: int) -> tuple[float, float]:
    """Deliveries per wall second, and per CPU-second (Redis's included)."""
    config = ServerConfig(port=0, redis_url=url)
    async with (
        run_server(config) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = hello_pb2_grpc.ChatRoomStub(channel)
        room = f"probe-{time.monotonic_ns()}"
        calls = [
            stub.Subscribe(pb.JoinRequest(roomID=room, user=pb.User(id=f"r{i}")))
            for i in range(readers)
        ]
        for call in calls:
            await call.initial_metadata()

        async def read(call: grpc.aio.UnaryStreamCall[pb.JoinRequest, pb.MessageBatch]) -> None:
            got = 0
            while got < messages:
                batch = await call.read()
                assert isinstance(batch, pb.MessageBatch), "the stream ended"
                got += len(batch.messages)

        slots = asyncio.Semaphore(IN_FLIGHT)

        async def send(i: int) -> None:
            async with slots:
                await stub.SendMessage(pb.Message(id="s", roomID=room, message="x" * 100))

        redis_before = await redis_cpu(url) if url else 0.0
        cpu_before = time.process_time()
        start = time.perf_counter()
        reading = [asyncio.create_task(read(call)) for call in calls]
        await asyncio.gather(*(send(i) for i in range(messages)))
        await asyncio.gather(*reading)
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu_before
        if url:
            cpu += await redis_cpu(url) - redis_before
        for call in calls:
            call.cancel()
    deliveries = readers * messages
    return deliveries / wall, deliveries / cpu


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", required=True, help="redis:// URL of a Redis to use")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--readers", type=int, default=50)
    parser.add_argument("--messages", type=int, default=2000)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {"local": [], "redis": []}
    for _ in range(args.rounds):
        for backend in ("local", "redis"):
            url = args.redis if backend == "redis" else None
            results[backend].append(await one_run(url, args.readers, args.messages))
    for backend, runs in results.items():
        rates = ", ".join(f"{wall:,.0f}" for wall, _ in runs)
        per_cpu = ", ".join(f"{cpu:,.0f}" for _, cpu in runs)
        print(f"{backend}: deliveries/s {rates}; deliveries per CPU-second {per_cpu}")


if __name__ == "__main__":
    asyncio.run(main())
