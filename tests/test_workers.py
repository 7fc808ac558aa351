"""hello-server --workers N: one supervisor, N real worker processes on one port.

Every test runs the real command and watches real processes: the ready and
log lines say when something happened, psutil says which processes exist.
The workers share a real redis-server (the session's, tests/support/redis.py).
Most tests give each client a room of its own; `TestOneRoomOverWorkers` puts
members on every worker into one room, and kills a worker under them.
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager

import grpc
import psutil
import pytest

from hello_client import ChatClient
from hello_client.backoff import ReconnectPolicy
from hello_client.client import Subscription
from hello_client.events import ChatMessage, PresenceChange, Reconnected, Reconnecting
from hello_server.workers import RESTART_LIMIT, RESTART_WINDOW_SECONDS, worker_metrics_port
from tests.support import TIMEOUT
from tests.support.calls import (
    final_status,
    joined,
    open_channel,
    open_stub,
    read_messages,
    send,
)
from tests.support.processes import ServerProcess, run_server_command, server_process
from tests.support.redis import flush
from tests.test_daemon import SHUTDOWN_DETAILS, STALL_ARGS, assert_no_traceback, stall_a_member

WORKER_READY = re.compile(r"\[(?P<pid>\d+)\]: worker ready on (?P<address>\S+)")
# Enough connections that all of them landing on one of two workers (SO_REUSEPORT
# hashes each connection's addresses) has a chance of 2 ** -15.
CONNECTIONS = 16


@pytest.fixture
async def redis_url(redis: str) -> str:
    """The session's real Redis (tests/support/redis.py), emptied for this test."""
    await flush(redis)
    return redis


@contextmanager
def supervisor(
    redis_url: str, workers: int = 2, args: tuple[str, ...] = ()
) -> Iterator[ServerProcess]:
    """``hello-server --redis URL --workers N`` on a free port, its log followed."""
    with server_process(["--redis", redis_url, "--workers", str(workers), *args]) as server:
        server.follow_log()
        yield server


def workers_of(server: ServerProcess) -> list[psutil.Process]:
    return psutil.Process(server.process.pid).children()


def gone(process: psutil.Process) -> bool:
    """True once ``process`` has exited (an orphan's zombie counts: nobody may reap it here)."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def served(address: str, label: str) -> None:
    """A client on a connection of its own joins a room of its own and gets its message back."""
    async with open_stub(address) as stub:
        call = await joined(stub, f"room-{label}", f"user-{label}")
        reply = await send(stub, f"room-{label}", f"user-{label}", f"hello {label}")
        assert reply.success
        (message,) = await read_messages(call, 1)
        assert message.message == f"hello {label}"
        call.cancel()


async def stop_and_check(server: ServerProcess, workers: list[psutil.Process]) -> str:
    """SIGTERM the supervisor; assert it exits 0 with every worker gone; return the log."""
    server.signal(signal.SIGTERM)
    code = await server.await_exit(TIMEOUT)
    log = server.rest_of_log()
    assert code == 0, log
    assert all(gone(worker) for worker in workers), log
    return log


class TestStartup:
    async def test_one_ready_line_once_every_worker_serves(self, redis_url: str) -> None:
        """Port 0 becomes one real port; the ready line names it and the count, after all N."""
        with supervisor(redis_url, workers=3) as server:
            before_ready = list(server.log)
            workers = workers_of(server)
            await served(server.address, "first")
            log = await stop_and_check(server, workers)
        assert re.search(
            r"hello-server ready on 127\.0\.0\.1:\d+ \(3 workers; plaintext; open: no auth"
            r"[^)]*; rooms shared through Redis\)",
            before_ready[-1],
        )
        ready = [match for line in before_ready if (match := WORKER_READY.search(line))]
        assert sorted(int(match["pid"]) for match in ready) == sorted(w.pid for w in workers)
        assert {match["address"] for match in ready} == {server.address}
        assert not server.address.endswith(":0")
        assert log.count("hello-server ready on") == 1
        assert_no_traceback(log)

    async def test_each_worker_serves_its_own_metrics(self, redis_url: str) -> None:
        """--metrics-port with workers: one /metrics per worker, on ports of their own."""
        with supervisor(redis_url, args=("--metrics-port", "0")) as server:
            workers = workers_of(server)
            lines = [line for line in server.log if "metrics on http://" in line]
            await stop_and_check(server, workers)
        pids = {int(m[1]) for line in lines if (m := re.search(r"\[(\d+)\]", line))}
        assert pids == {worker.pid for worker in workers}
        ports = {re.search(r":(\d+)/metrics", line)[1] for line in lines}  # type: ignore[index]
        assert len(ports) == 2, lines
        assert worker_metrics_port(9100, 0) == 9100
        assert worker_metrics_port(9100, 1) == 9101  # a fixed port: the slot's own, restarts too
        assert worker_metrics_port(0, 1) == 0
        assert worker_metrics_port(None, 1) is None

    async def test_clients_are_spread_over_the_workers(self, redis_url: str) -> None:
        """Clients on separate connections are served, and by more than one worker."""
        with supervisor(redis_url, args=("--log-level", "debug")) as server:
            workers = workers_of(server)
            await asyncio.gather(*(served(server.address, str(i)) for i in range(CONNECTIONS)))
            serving = set()
            for i in range(CONNECTIONS):
                line = await server.await_log(rf"\[\d+\]: user-{i} joined room")
                match = re.search(r"\[(\d+)\]", line)
                assert match is not None
                serving.add(int(match[1]))
            await stop_and_check(server, workers)
        assert serving <= {worker.pid for worker in workers}
        assert len(serving) > 1, f"every client was served by worker {serving}"

    def test_several_workers_without_redis_is_a_usage_error(self) -> None:
        """--workers 2 (or HELLO_WORKERS=2) without --redis: one error line, exit 2."""
        for args, env in ((["--workers", "2"], None), ([], {"HELLO_WORKERS": "2"})):
            result = run_server_command(["--port", "0", *args], env)
            assert result.returncode == 2, result.stderr
            assert result.stderr.splitlines() == [
                "hello-server: error: --workers 2 needs --redis: workers share rooms through Redis"
            ]

    def test_a_port_in_use_is_refused_exit_3(self, redis_url: str) -> None:
        """A port another process listens on is not joined: one error line, exit 3, no worker."""
        with socket.create_server(("127.0.0.1", 0)) as taken:
            port = taken.getsockname()[1]
            result = run_server_command(
                ["--port", str(port), "--redis", redis_url, "--workers", "2"]
            )
        assert result.returncode == 3, result.stderr
        assert result.stderr.splitlines() == [
            f"hello-server: error: cannot listen on 127.0.0.1:{port}: Address already in use"
        ]


class TestShutdown:
    @pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
    async def test_a_signal_drains_every_worker_and_exits_0(
        self, redis_url: str, signum: signal.Signals
    ) -> None:
        """Members on every worker get UNAVAILABLE; each worker drains once; exit 0, none left."""
        with supervisor(redis_url, args=("--grace", "30")) as server:
            workers = workers_of(server)
            async with AsyncExitStack() as clients:
                streams = []
                for i in range(CONNECTIONS):
                    stub = await clients.enter_async_context(open_stub(server.address))
                    streams.append(await joined(stub, f"room-{i}", f"user-{i}"))
                server.signal(signum)
                statuses = await asyncio.gather(*(final_status(call) for call in streams))
                code = await server.await_exit(TIMEOUT)
            log = server.rest_of_log()
        assert statuses == [(grpc.StatusCode.UNAVAILABLE, SHUTDOWN_DETAILS)] * CONNECTIONS
        assert code == 0, log
        assert all(gone(worker) for worker in workers), log
        assert f"{signum.name}: draining 2 workers" in log
        for worker in workers:
            assert log.count(f"[{worker.pid}]: {signum.name}: draining") == 1, log
            assert f"[{worker.pid}]: worker stopped" in log
        assert log.count("hello-server stopped") == 1
        assert_no_traceback(log)

    async def test_a_second_signal_cuts_every_drain_short_exit_1(self, redis_url: str) -> None:
        """A second SIGTERM while a worker's stuck stream holds its drain open: exit 1 at once."""
        with supervisor(redis_url, args=(*STALL_ARGS, "--grace", "30")) as server:
            workers = workers_of(server)
            async with open_channel(server.address) as channel:
                member = await stall_a_member(channel, messages=300)
                server.signal(signal.SIGTERM)
                for worker in workers:
                    await server.await_log(rf"\[{worker.pid}\]: SIGTERM: draining")
                assert server.process.poll() is None, "the drain ended early"
                server.signal(signal.SIGTERM)
                code = await server.await_exit(TIMEOUT)
                member.cancel()
            log = server.rest_of_log()
        assert code == 1, log
        assert "second signal: stopping all workers now" in log
        assert "hello-server stopped" not in log
        assert all(gone(worker) for worker in workers), log
        assert_no_traceback(log)

    async def test_workers_drain_when_the_supervisor_is_killed(self, redis_url: str) -> None:
        """kill -9 of the supervisor: every worker notices, drains and exits."""
        with supervisor(redis_url) as server:
            workers = workers_of(server)
            server.process.kill()
            server.wait()
            # The log pipe ends only when every worker, which holds it too, has exited.
            log = server.rest_of_log()
        for worker in workers:
            assert f"[{worker.pid}]: the supervisor is gone: draining" in log
            assert f"[{worker.pid}]: worker stopped" in log
        assert all(gone(worker) for worker in workers), log
        assert_no_traceback(log)


class TestWorkerFailure:
    async def test_a_killed_worker_is_reported_and_restarted(self, redis_url: str) -> None:
        """kill -9 of one worker: logged with PID and signal, the other serves, a new one joins."""
        with supervisor(redis_url) as server:
            victim, survivor = workers_of(server)
            victim.kill()
            await server.await_log(rf"worker {victim.pid} was killed by SIGKILL; restarting it in")
            await asyncio.gather(*(served(server.address, f"during-{i}") for i in range(4)))
            line = await server.await_log(rf"worker \d+ is serving in place of {victim.pid}")
            match = re.search(r"worker (\d+) is serving", line)
            assert match is not None
            workers = workers_of(server)
            assert sorted(w.pid for w in workers) == sorted([int(match[1]), survivor.pid])
            await asyncio.gather(*(served(server.address, f"after-{i}") for i in range(4)))
            log = await stop_and_check(server, [victim, *workers])
        assert log.count("hello-server ready on") == 1
        assert_no_traceback(log)

    async def test_workers_that_keep_dying_stop_the_server_exit_4(self, redis_url: str) -> None:
        """Past the restart limit within the window, the others are drained and the exit is 4."""
        with supervisor(redis_url) as server:
            victim, survivor = workers_of(server)
            for _ in range(RESTART_LIMIT):
                victim.kill()
                line = await server.await_log(rf"worker \d+ is serving in place of {victim.pid}")
                match = re.search(r"worker (\d+) is serving", line)
                assert match is not None
                victim = psutil.Process(int(match[1]))
            victim.kill()
            code = await server.await_exit(TIMEOUT)
            log = server.rest_of_log()
        assert code == 4, log
        assert (
            f"worker {victim.pid} was killed by SIGKILL; {RESTART_LIMIT + 1} workers died "
            f"within {RESTART_WINDOW_SECONDS:.0f} s: stopping" in log
        )
        assert f"[{survivor.pid}]: worker stopped" in log
        assert gone(victim)
        assert gone(survivor)
        assert_no_traceback(log)


# A client of its own connection: without a local subchannel pool, gRPC would
# put every ChatClient to one address on one shared connection (one worker).
OWN_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)
# Rejoin at once after a lost stream: the test waits on the rejoin, not on backoff.
PROMPT = ReconnectPolicy(first_delay=0.05, max_delay=0.5, give_up_seconds=TIMEOUT)


class Reader:
    """A member that reads the whole room, rejoining (since_seq + epoch) when its stream is lost."""

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self.seqs: list[int] = []
        self.texts: list[str] = []
        self.lost_stream = 0  # Reconnecting events
        self.rejoins: list[bool] = []  # Reconnected.recovered, one per rejoin
        self.presence: list[tuple[str, bool]] = []

    async def read(self, until: int) -> None:
        while not self.seqs or self.seqs[-1] < until:
            event = await self.subscription.next_event()
            assert event is not None, "the stream ended"
            if isinstance(event, ChatMessage):
                self.seqs.append(event.seq)
                self.texts.append(event.text)
            elif isinstance(event, Reconnecting):
                self.lost_stream += 1
            elif isinstance(event, Reconnected):
                self.rejoins.append(event.recovered)
            elif isinstance(event, PresenceChange):
                self.presence.append((event.user, event.joined))

    async def watch(self, until: int, left: set[str]) -> None:
        """Read past seq ``until`` and on until every user of ``left`` has LEFT."""
        await self.read(until)
        while not left <= {user for user, joined in self.presence if not joined}:
            event = await self.subscription.next_event()
            assert event is not None, "the stream ended"
            if isinstance(event, PresenceChange):
                self.presence.append((event.user, event.joined))


async def serving_worker(server: ServerProcess, user: str) -> int:
    """The PID of the worker whose log says ``user`` joined."""
    line = await server.await_log(rf"\[\d+\]: {user} joined room")
    match = re.search(r"\[(\d+)\]", line)
    assert match is not None
    return int(match[1])


class TestOneRoomOverWorkers:
    async def test_one_room_over_two_workers_survives_a_killed_worker(self, redis_url: str) -> None:
        """Members on both workers: one order, each message once; kill -9 of one mid-flood.

        The survivor's members never notice; the dead worker's members rejoin
        (on the survivor or the restarted worker) with since_seq/epoch, are told
        ``recovered`` and miss nothing; the dead worker's presence expires.
        """
        args = ("--log-level", "debug", "--presence-ttl", "1")
        total, kill_after = 300, 100
        with supervisor(redis_url, args=args) as server:
            async with AsyncExitStack() as stack:
                clients = []
                for _ in range(CONNECTIONS + 1):
                    client = ChatClient(server.address, channel_options=OWN_CONNECTION)
                    stack.push_async_callback(client.close)
                    clients.append(client)
                talker, clients = clients[0], clients[1:]
                # The talker watches the room's presence on its own connection.
                watch = await talker.join("hall", "watcher", presence=True, reconnect=None)
                stack.push_async_callback(watch.close)
                readers, ghosts, worker_of = [], [], {}
                for i, client in enumerate(clients):
                    subscription = await client.join("hall", f"user-{i}", reconnect=PROMPT)
                    stack.push_async_callback(subscription.close)
                    readers.append(Reader(subscription))
                    # A member that does not rejoin: its LEFT shows its worker's death.
                    ghost = await client.join("hall", f"ghost-{i}", reconnect=None)
                    stack.push_async_callback(ghost.close)
                    ghosts.append(ghost)
                for user in ["watcher"] + [
                    f"{k}-{i}" for i in range(CONNECTIONS) for k in ("user", "ghost")
                ]:
                    worker_of[user] = await serving_worker(server, user)
                survivor = worker_of["watcher"]
                victims = {pid for pid in worker_of.values() if pid != survivor}
                assert len(victims) == 1, f"every member is on worker {survivor}"
                (victim,) = victims
                moved = [r for i, r in enumerate(readers) if worker_of[f"user-{i}"] == victim]
                stayed = [r for i, r in enumerate(readers) if worker_of[f"user-{i}"] == survivor]
                dead_ghosts = {
                    f"ghost-{i}" for i in range(CONNECTIONS) if worker_of[f"ghost-{i}"] == victim
                }
                assert moved
                assert dead_ghosts

                watcher = Reader(watch)
                reading = [asyncio.create_task(r.read(total)) for r in readers]
                watching = asyncio.create_task(watcher.watch(total, dead_ghosts))
                async with asyncio.timeout(TIMEOUT):
                    for n in range(1, total + 1):
                        assert await talker.send("hall", "talker", f"m{n}") == n
                        if n == kill_after:
                            psutil.Process(victim).kill()  # mid-flood: deliveries in flight
                    await asyncio.gather(*reading, watching)
                members = {m.user: m.sessions for m in await talker.members("hall")}
                await server.await_log(rf"worker \d+ is serving in place of {victim}")
            log = await stop_and_check(server, workers_of(server))

        expected = list(range(1, total + 1))
        texts = [f"m{n}" for n in expected]
        for reader in [watcher, *readers]:  # every seq once, in one order
            assert reader.seqs == expected
            assert reader.texts == texts
        for reader in [watcher, *stayed]:  # the survivor's members never noticed
            assert (reader.lost_stream, reader.rejoins) == (0, [])
        for reader in moved:  # the dead worker's rejoined and were told nothing was lost
            assert (reader.lost_stream, reader.rejoins) == (1, [True])
        # The dead worker's sessions expired: its ghosts are gone, its readers
        # count once (their new session), and nobody else left.
        assert {user for user, joined in watcher.presence if not joined} == dead_ghosts
        assert members == {
            "watcher": 1,
            **{f"user-{i}": 1 for i in range(CONNECTIONS)},
            **{f"ghost-{i}": 1 for i in range(CONNECTIONS) if f"ghost-{i}" not in dead_ghosts},
        }
        assert f"worker {victim} was killed by SIGKILL" in log
        assert_no_traceback(log)
