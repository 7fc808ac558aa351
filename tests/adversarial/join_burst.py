"""A burst of Join calls on one connection (one grpc.aio channel), all held open.

Counts how each call ended within ``--wait`` seconds: acknowledged (joined),
refused with a status and a reason, ended CANCELLED without one, or still
waiting for a stream (gRPC clients queue calls over the server's
MAX_CONCURRENT_STREAMS until one frees up).
"""

from __future__ import annotations

import asyncio
import collections

import grpc

from hello_protocol import hello_pb2 as pb
from hello_protocol.wire import CLIENT_KEEPALIVE_OPTIONS, JOIN_METHOD
from tests.adversarial.harness import parse_args, run_attack


def burst(address: str, joins: int, wait: float) -> dict[str, object]:
    return asyncio.run(_burst(address, joins, wait))


async def _burst(address: str, joins: int, wait: float) -> dict[str, object]:
    outcomes: collections.Counter[str] = collections.Counter()
    async with grpc.aio.insecure_channel(address, options=CLIENT_KEEPALIVE_OPTIONS) as channel:
        join = channel.unary_stream(
            JOIN_METHOD,
            request_serializer=pb.JoinRequest.SerializeToString,
            response_deserializer=pb.Message.FromString,
        )
        calls = [
            join(pb.JoinRequest(roomID=f"burst-{i % 50}", user=pb.User(id=f"u{i}")))
            for i in range(joins)
        ]

        async def outcome(call: grpc.aio.UnaryStreamCall[pb.JoinRequest, pb.Message]) -> str:
            try:
                await call.initial_metadata()
                if call.done():
                    code, details = await call.code(), await call.details()
                    return f"{code.name}: {details}" if details != code.name else code.name
                return "joined"
            except grpc.aio.AioRpcError as error:
                return f"{error.code().name}: {error.details()}"

        tasks = [asyncio.ensure_future(outcome(call)) for call in calls]
        done, pending = await asyncio.wait(tasks, timeout=wait)
        for task in done:
            outcomes[task.result()[:80]] += 1
        outcomes["still waiting for a stream"] += len(pending)
        for call in calls:
            call.cancel()
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return {"joins": joins, **dict(outcomes.most_common())}


def main() -> None:
    args = parse_args(
        __doc__ or "",
        [
            ("joins", 5000, "Join calls opened at once on one connection"),
            ("wait", 10.0, "seconds to wait for the burst to settle"),
        ],
    )
    run_attack(
        "join burst",
        args.server_arg,
        burst,
        args.joins,
        args.wait,
    )


if __name__ == "__main__":
    main()
