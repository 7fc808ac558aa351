"""What the server's own Python spends per message on the send path, in process, no gRPC.

``python -m hello_bench.send_path`` publishes messages through
`ChatRoomService._accept` (validation, per-user limits, publish to a room of
members, metrics) with the hooks off, metrics on, the send rate on (too high
to refuse), and both, alternating, and prints CPU microseconds per message
(`time.process_time`). The readers' side is simulated the cheapest way: every
8 messages each member's queue is taken and marked written.

End to end over gRPC (hello-bench fanout) a message to 50 members costs far
more than this; this isolates the hooks, which the loopback figures cannot
resolve on a shared 2-core machine.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import grpc
import typer

from hello_protocol import hello_pb2 as pb
from hello_server.config import ServerConfig
from hello_server.hub import LocalRooms
from hello_server.limits import UserLimits
from hello_server.server import ChatServer
from hello_server.service import ChatRoomService

MODES = (
    ("off", False, False),
    ("metrics", True, False),
    ("rate", False, True),
    ("both", True, True),
)

app = typer.Typer(add_completion=False, rich_markup_mode=None)


class _Peer:
    """The one thing `_accept` asks of a gRPC context: the peer, for a refusal's log line."""

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"


async def measure(metrics: bool, rate: bool, messages: int, members: int) -> float:
    """CPU microseconds per message through `_accept` with the given hooks on."""
    config = ServerConfig(
        port=0,
        metrics_port=0 if metrics else None,
        user_limits=UserLimits(send_rate=1e6, send_burst=1_000_000) if rate else UserLimits(),
    )
    server = ChatServer(config)  # never started: its hub, guard and metrics are what count
    service = ChatRoomService(
        LocalRooms(server.hub), config.limits, 0.005, None, None, server.guard
    )
    boxes = [server.hub.join("r", f"u{i}", connection=f"c{i}").mailbox for i in range(members)]
    raw = pb.Message(id="sender", roomID="r", message="x" * 100).SerializeToString()
    context: grpc.aio.ServicerContext[bytes, bytes] = _Peer()  # type: ignore[assignment]
    start = time.process_time()
    for n in range(messages):
        await service._accept(raw, "SendMessage", context)
        if n % 8 == 7:
            for box in boxes:
                box.wrote(shared=sum(map(len, box.take_nowait(512))))
    return (time.process_time() - start) / messages * 1e6


@app.command()
def main(
    runs: Annotated[int, typer.Option(min=1, max=50, help="Alternating runs of every mode.")] = 3,
    messages: Annotated[int, typer.Option(min=100, help="Messages per run.")] = 20_000,
    members: Annotated[int, typer.Option(min=1, max=10_000, help="Members of the room.")] = 50,
) -> None:
    """Print CPU us per message with the send-path hooks off, metrics on, rate on, both."""

    async def run() -> None:
        for _ in range(runs):
            cells = [
                f"{name} {await measure(metrics, rate, messages, members):6.2f}"
                for name, metrics, rate in MODES
            ]
            typer.echo("  ".join(cells) + "  us/message")

    asyncio.run(run())  # the hub needs a running loop


if __name__ == "__main__":
    app()
