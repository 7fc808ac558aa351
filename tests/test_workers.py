"""hello-server --workers N: one supervisor, N real worker processes on one port.

Every test runs the real command and watches real processes: the ready and
log lines say when something happened, psutil says which processes exist.
Rooms are not shared between workers here (each client uses its own room):
that is the Redis backend's part, tested with it.
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
from tests.test_daemon import SHUTDOWN_DETAILS, STALL_ARGS, assert_no_traceback, stall_a_member

WORKER_READY = re.compile(r"\[(?P<pid>\d+)\]: worker ready on (?P<address>\S+)")
# Enough connections that all of them landing on one of two workers (SO_REUSEPORT
# hashes each connection's addresses) has a chance of 2 ** -15.
CONNECTIONS = 16


@pytest.fixture
def redis_url(redis: str) -> str:
    """The Redis the workers share: the suite's own redis-server, or HELLO_TEST_REDIS_URL."""
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
            r"hello-server ready on 127\.0\.0\.1:\d+ \(3 workers; plaintext; open: no auth",
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
