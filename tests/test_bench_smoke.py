"""hello-bench end to end, tiny: 3 readers for one second against a real hello-server."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from hello_bench import report
from hello_bench.cli import app
from hello_bench.runner import Settings, run_fanout
from hello_bench.scenarios import HELLO_SUBSCRIBE, FanoutScenario


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


def test_unknown_scenario_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["nope", "--json-out", str(tmp_path / "r.json")])
    assert result.exit_code == 2
    assert not (tmp_path / "r.json").exists()


def test_unknown_target_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["fanout", "--target", "nope", "--json-out", str(tmp_path / "r.json")]
    )
    assert result.exit_code == 2
    assert "unknown target nope" in result.output
    assert not (tmp_path / "r.json").exists()
