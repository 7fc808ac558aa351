"""A member whose process stops (SIGSTOP) while its room stays busy.

Measures how long the server keeps the stopped member (until SendMessage to
its room, where it is alone, answers NOT_FOUND) and how many messages it
accepted for it meanwhile. The stopped process is killed afterwards.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import grpc

from hello_protocol import hello_pb2 as pb
from hello_protocol.wire import CLIENT_KEEPALIVE_OPTIONS, SEND_METHOD
from tests.adversarial.harness import parse_args, run_attack

ROOM = "dead-peer"


def start_member(address: str, room: str) -> subprocess.Popen[str]:
    """A member child process, returned once the server acknowledged its Join."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.adversarial.member", address, room],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if line.strip() != "joined":
        process.kill()
        raise RuntimeError(f"the member did not join: {line!r}")
    return process


def stop_member(address: str, limit: float, rate: float, size: int) -> dict[str, object]:
    process = start_member(address, ROOM)
    try:
        os.kill(process.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        accepted = asyncio.run(_send_until_gone(address, limit, rate, size))
        gone = time.monotonic() - stopped
    finally:
        process.kill()  # SIGKILL works on a stopped process too
        process.wait()
    return {
        "noticed_after_s": round(gone, 1) if accepted >= 0 else f"not within {limit} s",
        "messages_accepted_meanwhile": abs(accepted),
    }


async def _send_until_gone(address: str, limit: float, rate: float, size: int) -> int:
    """Send to the room until it is gone; the count sent, negative if ``limit`` ran out."""
    text = "x" * size
    sent = 0
    async with grpc.aio.insecure_channel(address, options=CLIENT_KEEPALIVE_OPTIONS) as channel:
        send = channel.unary_unary(
            SEND_METHOD,
            request_serializer=pb.Message.SerializeToString,
            response_deserializer=pb.Exit.FromString,
        )
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                await send(pb.Message(id="sender", roomID=ROOM, message=text), timeout=5)
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    return sent
                raise
            sent += 1
            await asyncio.sleep(1 / rate)
    return -sent


def main() -> None:
    args = parse_args(
        __doc__ or "",
        [
            ("limit", 150.0, "seconds to wait for the server to notice, at most"),
            ("rate", 20.0, "messages per second sent to the stopped member's room"),
            ("size", 1000, "bytes of text per message"),
        ],
    )
    run_attack(
        "dead peer (SIGSTOP)", args.server_arg, stop_member, args.limit, args.rate, args.size
    )


if __name__ == "__main__":
    main()
