"""hello-bench end to end, tiny: 3 readers for one second against a real hello-server."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
from typer.testing import CliRunner

from hello_bench import report
from hello_bench.cli import NO_WINDOW, _targets, app
from hello_bench.procs import running_server
from hello_bench.runner import Settings, run_fanout
from hello_bench.scenarios import (
    HELLO_POOLED,
    HELLO_SUBSCRIBE,
    REDIS_ONE,
    REDIS_TARGETS,
    REDIS_TWO,
    FanoutScenario,
)
from hello_bench.send_path import MODES, measure


def test_tiny_fanout_reports_every_figure(tmp_path: Path) -> None:
    scenario = FanoutScenario("tiny", "1 room x 3 readers", rooms=1, readers=3, in_flight=4)
    settings = Settings(duration=1.0, drain_timeout=5.0)
    record = run_fanout(scenario, HELLO_SUBSCRIBE, settings, 0, stalled=False)

    assert record.lost == 0
    assert record.duplicated == 0
    assert record.evicted == 0
    assert record.sends_per_s > 0
    assert record.deliveries_per_s > 0
    assert record.latency.count >= 3 * record.sends_per_s  # every reader timed every message
    assert record.latency.p50_ms <= record.latency.p99_ms
    assert record.server_cpu_pct > 0
    assert record.server_rss_mb > 0
    assert record.load_cpu_pct > 0

    out = tmp_path / "results.json"
    report.write_json(out, [record], command=["hello-bench"], settings=settings, errors=[], info={})
    run = json.loads(out.read_text())["runs"][0]
    for field in ("deliveries_per_s", "sends_per_s", "lost", "duplicated", "server_cpu_pct"):
        assert field in run
    assert run["latency"]["p99_ms"] > 0
    assert "| tiny | hello subscribe |" in report.markdown([record])


def test_readers_split_over_two_load_processes_get_every_message() -> None:
    scenario = FanoutScenario("tiny", "1 room x 5 readers", rooms=1, readers=5, in_flight=4)
    settings = Settings(duration=1.0, drain_timeout=5.0, window=NO_WINDOW, load_processes=2)
    record = run_fanout(scenario, HELLO_SUBSCRIBE, settings, 0, stalled=False)

    sends = round(record.sends_per_s * record.seconds)
    assert sends > 0
    assert record.lost == 0
    assert record.duplicated == 0
    assert record.evicted == 0
    assert record.latency.count == 5 * sends  # every reader of both processes, every message
    assert record.load_cpu_pct > 0


def test_several_load_processes_need_the_window_off(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["bigroom", "--load-processes", "2", "--json-out", str(tmp_path / "r.json")]
    )
    assert result.exit_code == 2
    assert "error: --load-processes above 1 cannot enforce the delivery window" in result.output


def test_unknown_scenario_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["nope", "--json-out", str(tmp_path / "r.json")])
    assert result.exit_code == 2
    assert not (tmp_path / "r.json").exists()


def test_server_options_run_next_to_the_plain_target_with_a_ratio() -> None:
    """--server-options metrics: the hello server runs with /metrics and a send rate on."""
    scenario = FanoutScenario("tiny", "1 room x 3 readers", rooms=1, readers=3, in_flight=4)
    settings = Settings(duration=1.0, drain_timeout=5.0)
    with_metrics = HELLO_SUBSCRIBE.with_options("metrics")
    assert with_metrics.server_args[:2] == ("--metrics-port", "0")
    plain, measured = (
        run_fanout(scenario, target, settings, 0, stalled=False)
        for target in (HELLO_SUBSCRIBE, with_metrics)
    )
    assert measured.target == "hello subscribe [metrics]"
    assert measured.send_errors == 0  # the send rate is too high to refuse anything
    assert measured.lost == 0
    records: list[report.Record] = [plain, measured]
    assert report.plain_of(measured, records) is plain
    rows = next(rows for title, _, rows in report.tables(records) if "Server options" in title)
    assert rows[0][1] == "hello subscribe [metrics]"
    assert rows[0][3].endswith("x")
    assert [t.label for t in _targets(["metrics"])][:2] == ["hello join", "hello join [metrics]"]


def test_a_redis_target_counts_the_supervisor_every_worker_and_redis() -> None:
    with running_server("hello", redis_workers=2) as server:
        workers = psutil.Process(server.process.pid).children()
        assert server.redis is not None
        assert sorted(server.stats.pids) == sorted(
            [server.process.pid, *(w.pid for w in workers), server.redis.pid]
        )
        assert len(workers) == 2


def test_redis_targets_count_every_worker_and_redis_and_pair_the_runs() -> None:
    """--redis: in-process, then 1 and 2 workers on a redis-server of the run's own."""
    scenario = FanoutScenario("tiny", "1 room x 6 readers", rooms=1, readers=6, in_flight=4)
    settings = Settings(duration=1.0, drain_timeout=5.0)
    local, one, two = (
        run_fanout(scenario, target, settings, 0, stalled=False)
        for target in (HELLO_POOLED, REDIS_ONE, REDIS_TWO)
    )
    assert (one.target, two.target) == (
        "hello subscribe, 16 conns [redis]",
        "hello subscribe, 16 conns [redis, 2 workers]",
    )
    for record in (one, two):
        assert (record.lost, record.duplicated, record.send_errors) == (0, 0, 0)
        assert record.deliveries_per_s > 0
        assert 0 < record.redis_cpu_pct < record.server_cpu_pct  # hello's CPU and Redis's
    assert local.redis_cpu_pct == 0
    records: list[report.Record] = [local, one, two]
    assert report.plain_of(one, records) is local
    assert report.one_worker_of(two, records) is one
    titles = [title for title, _, _ in report.tables(records)]
    assert any("1 worker" in title for title in titles)
    assert [t.label for t in _targets([], REDIS_TARGETS)] == [
        HELLO_POOLED.label,
        REDIS_ONE.label,
        REDIS_TWO.label,
    ]


async def test_send_path_measures_every_mode() -> None:
    """The in-process send-path figure runs with each hook set and publishes for real."""
    for _, metrics, rate in MODES:
        assert await measure(metrics, rate, messages=200, members=3) > 0


def test_unknown_target_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["fanout", "--target", "nope", "--json-out", str(tmp_path / "r.json")]
    )
    assert result.exit_code == 2
    assert "unknown target nope" in result.output
    assert not (tmp_path / "r.json").exists()
