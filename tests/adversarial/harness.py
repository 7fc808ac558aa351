"""What every attack script shares: the server child, the bystander, RSS, raw HTTP/2.

The bystander is an ordinary client on its own connection, opened before the
attack: each probe joins a fresh room, sends one message and reads it back,
and counts as a success only if all of that took at most `PROBE_DEADLINE`.
Raw HTTP/2 frames are serialised with hyperframe and HPACK-encoded with hpack
(both come with the h2 package); every attack loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import multiprocessing
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import grpc
import psutil
from hpack import Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

from hello_protocol import hello_pb2 as pb
from hello_protocol.wire import JOIN_METHOD
from tests.support.calls import open_channel
from tests.support.processes import ServerProcess, server_process

PROBE_DEADLINE = 1.0  # seconds for one bystander Join + SendMessage + delivery
PROBE_GAP = 0.1  # between bystander probes
MIB = 1024 * 1024

SEND_TIMEOUT = 2.0  # seconds one raw write may block before the attacker gives up on it

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER = 9  # bytes: length, type, flags, stream id


@dataclass
class Report:
    """What one attack run measured."""

    name: str
    attack: dict[str, object] = field(default_factory=dict)
    probes: int = 0
    probes_ok: int = 0
    worst_probe_ms: float = 0.0
    rss_before_mib: float = 0.0
    rss_peak_mib: float = 0.0
    rss_after_mib: float = 0.0
    alive: bool = True

    @property
    def success_percent(self) -> float:
        return 100.0 * self.probes_ok / self.probes if self.probes else 0.0

    def lines(self) -> list[str]:
        attack = ", ".join(f"{key}={value}" for key, value in self.attack.items())
        return [
            f"== {self.name}: {attack}",
            f"   bystander: {self.probes_ok}/{self.probes} probes within "
            f"{PROBE_DEADLINE:.0f} s ({self.success_percent:.1f}%), worst "
            f"{self.worst_probe_ms:.0f} ms",
            f"   server RSS: before {self.rss_before_mib:.0f} MiB, peak "
            f"{self.rss_peak_mib:.0f} MiB, after {self.rss_after_mib:.0f} MiB",
            f"   server alive afterwards: {self.alive}",
        ]


def parse_args(
    description: str, extra: Sequence[tuple[str, object, str]] = ()
) -> argparse.Namespace:
    """Common options: ``--server-arg`` (repeatable) plus each script's own knobs."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra hello-server option, e.g. --server-arg=--max-connections=100",
    )
    for name, default, help_text in extra:
        parser.add_argument(f"--{name}", type=type(default), default=default, help=help_text)
    return parser.parse_args()


@contextlib.contextmanager
def attacked_server(server_args: Sequence[str]) -> Iterator[ServerProcess]:
    """A hello-server child on a free port, its log followed so it never blocks."""
    with server_process(["--log-level", "info", *server_args]) as server:
        server.follow_log()
        yield server


def host_port(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host.strip("[]"), int(port)


class RssSampler:
    """Samples a process's RSS every 50 ms in a thread; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self.peak = self.now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def now(self) -> int:
        try:
            return int(self._process.memory_info().rss)
        except psutil.Error:
            return 0

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.now())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class Bystander:
    """An ordinary client probing the server during an attack (in its own thread)."""

    def __init__(self, address: str, fresh_connections: bool = False) -> None:
        self._address = address
        self._fresh = fresh_connections
        self.results: list[float | None] = []  # seconds, or None for a failure
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        if self._fresh:
            while not self._stop.is_set():
                await self._probe_on_channel(1)
            return
        await self._probe_on_channel(None)

    async def _probe_on_channel(self, probes: int | None) -> None:
        """Probe on one channel: ``probes`` times, or until stopped."""
        # A fresh channel really is a fresh connection.
        async with open_channel(self._address, own_connection=True) as channel:
            join = channel.unary_stream(
                JOIN_METHOD,
                request_serializer=pb.JoinRequest.SerializeToString,
                response_deserializer=pb.Message.FromString,
            )
            send = channel.unary_unary(
                "/hello.ChatRoom/SendMessage",
                request_serializer=pb.Message.SerializeToString,
                response_deserializer=pb.Exit.FromString,
            )
            if probes is None:
                await channel.channel_ready()
            for _ in itertools.count() if probes is None else range(probes):
                if self._stop.is_set():
                    return
                number = len(self.results)
                start = time.monotonic()
                try:
                    await asyncio.wait_for(self._probe(join, send, number), PROBE_DEADLINE)
                    self.results.append(time.monotonic() - start)
                except (TimeoutError, grpc.aio.AioRpcError) as error:
                    self.results.append(None)
                    if len(self.errors) < 3:
                        self.errors.append(
                            f"{error.code().name}: {error.details()}"
                            if isinstance(error, grpc.aio.AioRpcError)
                            else repr(error)
                        )
                await asyncio.sleep(PROBE_GAP)

    @staticmethod
    async def _probe(join: object, send: object, number: int) -> None:
        room = f"bystander-{number}"
        call = join(pb.JoinRequest(roomID=room, user=pb.User(id="bystander")))  # type: ignore[operator]
        try:
            await call.initial_metadata()
            await send(pb.Message(id="bystander", roomID=room, message=f"probe {number}"))  # type: ignore[operator]
            message = await call.read()
            assert message.message == f"probe {number}"
        finally:
            call.cancel()

    def __enter__(self) -> Bystander:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(PROBE_DEADLINE * 3)

    def report_into(self, report: Report) -> None:
        report.probes = len(self.results)
        done = [r for r in self.results if r is not None]
        report.probes_ok = len(done)
        report.worst_probe_ms = max(done, default=0.0) * 1000


def run_attack(
    name: str,
    server_args: Sequence[str],
    attack: Callable[..., dict[str, object]],
    *attack_args: object,
    settle: float = 2.0,
    fresh_connections: bool = False,
) -> Report:
    """Start a server, a bystander and the RSS sampler, run the attack, print the figures.

    ``attack(address, *attack_args)`` runs in a child process (its own GIL and,
    for gRPC clients, its own event loop) and returns a dict of figures.
    """
    report = Report(name)
    with attacked_server(server_args) as server:
        sampler = RssSampler(server.process.pid)
        report.rss_before_mib = sampler.now() / MIB
        with (
            sampler,
            Bystander(server.address, fresh_connections) as bystander,
            ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool,
        ):
            time.sleep(settle)  # unloaded probes first: a baseline in the same figures
            report.attack = pool.submit(attack, server.address, *attack_args).result()
            time.sleep(settle)  # and recovery
        bystander.report_into(report)
        report.rss_peak_mib = sampler.peak / MIB
        report.rss_after_mib = sampler.now() / MIB
        report.alive = server.process.poll() is None
        for line in report.lines():
            print(line, flush=True)
        for error in bystander.errors:
            print(f"   bystander error: {error.splitlines()[0]}", flush=True)
        warnings = [line for line in server.log if " WARNING " in line or " ERROR " in line]
        print(f"   server warnings and errors: {len(warnings)}", flush=True)
        for line in warnings[:3]:
            print(f"   | {line[:160]}", flush=True)
    return report


# -- raw HTTP/2 ----------------------------------------------------------------


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message (uncompressed)."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def request_headers(address: str, path: str = JOIN_METHOD) -> list[tuple[str, str]]:
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", address),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]


class RawConnection:
    """A TCP connection speaking HTTP/2 frames by hand; a thread reads what the server sends.

    By default the thread only counts and discards it (an attack's cheapest
    reader). ``keep`` keeps the frames for `frames` (tests). ``live`` reads them
    as a live client would: it answers PINGs, notes the streams the server
    ends (`ended_streams`) and takes a GOAWAY as the connection closing.
    """

    def __init__(self, address: str, keep: bool = False, live: bool = False) -> None:
        self.address = address
        self.sock = socket.create_connection(host_port(address))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # A server that stops reading must not hang the attacker past its bound.
        self.sock.settimeout(SEND_TIMEOUT)
        self.encoder = Encoder()
        self.received = 0
        self._keep = keep
        self._live = live
        self._next_stream = 1
        self._frames: list[Frame] = []
        self._ended: list[int] = []
        self._arrived = threading.Condition()
        # The reader answers PINGs while the owner sends: one frame sequence at a time.
        self._sending = threading.Lock()
        self.closed_by_server = threading.Event()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        parse = self._keep or self._live
        pending = bytearray()
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
            if parse:
                pending += data
                self._take(_complete_frames(pending))
        self.closed_by_server.set()
        with self._arrived:
            self._arrived.notify_all()

    def _take(self, frames: list[Frame]) -> None:
        if self._live:
            for frame in frames:
                self._answer(frame)
        if self._keep:
            with self._arrived:
                self._frames += frames
                self._arrived.notify_all()

    def _answer(self, frame: Frame) -> None:
        """What a live client does with a frame the server sent."""
        if isinstance(frame, PingFrame) and "ACK" not in frame.flags:
            self.send(PingFrame(0, opaque_data=frame.opaque_data, flags=["ACK"]))
        elif isinstance(frame, RstStreamFrame) or (
            isinstance(frame, HeadersFrame) and "END_STREAM" in frame.flags
        ):
            with self._arrived:
                self._ended.append(frame.stream_id)
        elif isinstance(frame, GoAwayFrame):
            self.closed_by_server.set()

    def frames(self) -> list[Frame]:
        """Every complete frame the server sent so far (``keep=True`` only)."""
        with self._arrived:
            return list(self._frames)

    def ended_streams(self) -> list[int]:
        """The streams the server ended since the last call (``live=True`` only)."""
        with self._arrived:
            ended, self._ended = self._ended, []
        return ended

    def wait_for_frames(
        self, predicate: Callable[[list[Frame]], bool], timeout: float
    ) -> list[Frame]:
        """Wait until the frames received satisfy ``predicate``; return them either way."""
        with self._arrived:
            self._arrived.wait_for(
                lambda: predicate(self._frames) or self.closed_by_server.is_set(), timeout
            )
        return self.frames()

    def start(self, initial_window: int | None = None) -> None:
        """Client preface, SETTINGS, and an ACK of the server's SETTINGS.

        ``initial_window``: SETTINGS_INITIAL_WINDOW_SIZE for every stream's
        flow-control window (0: the server may send no DATA until a
        WINDOW_UPDATE); None keeps the HTTP/2 default.
        """
        settings = (
            {} if initial_window is None else {SettingsFrame.INITIAL_WINDOW_SIZE: initial_window}
        )
        self.send(PREFACE, SettingsFrame(0, settings=settings), SettingsFrame(0, flags=["ACK"]))

    def open_join(self, room: str, user: str) -> int:
        """A Join request on the next stream, its request ended; the stream's id."""
        stream_id = self._next_stream
        self._next_stream += 2
        body = grpc_frame(pb.JoinRequest(roomID=room, user=pb.User(id=user)).SerializeToString())
        self.send(
            HeadersFrame(
                stream_id,
                data=self.headers_block(request_headers(self.address)),
                flags=["END_HEADERS"],
            ),
            DataFrame(stream_id, data=body, flags=["END_STREAM"]),
        )
        return stream_id

    def send(self, *frames: bytes | Frame) -> bool:
        """Write frames; False once the server has closed the connection."""
        data = b"".join(f if isinstance(f, bytes) else f.serialize() for f in frames)
        try:
            with self._sending:
                self.sock.sendall(data)
        except OSError:
            return False
        return True

    def headers_block(self, headers: list[tuple[str, str]]) -> bytes:
        return bytes(self.encoder.encode(headers))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        self._reader.join(2)


def _complete_frames(pending: bytearray) -> list[Frame]:
    """Parse and remove the complete frames at the start of ``pending``."""
    frames: list[Frame] = []
    offset = 0
    while len(pending) - offset >= FRAME_HEADER:
        frame, length = Frame.parse_frame_header(
            memoryview(pending[offset : offset + FRAME_HEADER])
        )
        end = offset + FRAME_HEADER + length
        if len(pending) < end:
            break
        frame.parse_body(memoryview(pending[offset + FRAME_HEADER : end]))
        frames.append(frame)
        offset = end
    del pending[:offset]
    return frames


__all__ = [
    "MIB",
    "ContinuationFrame",
    "DataFrame",
    "HeadersFrame",
    "RawConnection",
    "Report",
    "RstStreamFrame",
    "grpc_frame",
    "parse_args",
    "request_headers",
    "run_attack",
]
