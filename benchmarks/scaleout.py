"""Companies partitions through the Celery executor on one or two workers, and where the time goes.

``python -m benchmarks.scaleout --workers 1|2 --partitions 20`` runs the scenario of
``etl_assets_tests/test_flows/test_scaleout.py`` (``etl_assets_tests.scenarios.scaleout``: one
code path) without its kill: a private PostgreSQL cluster (``initdb``, as the tests start it:
run as root) for the target and Dagster's storage, RabbitMQ on 127.0.0.1:5672 (guest) with a
queue of the run's own, ``--workers`` ``etl-assets worker`` processes (one task at a time
each), and a run per partition (``dagster asset materialize --partition P`` under ``etl-assets
exec``), ``--at-once`` of them side by side.

It prints the wall time, partitions per minute, the steps each worker ran and how busy it was,
the median of each phase of a run (from Dagster's event log: process start, queue wait, the
step on the worker, the result's way back, the process's exit), and last::

    partitions=<n> landed=<n> doubled=<n> workers_used=<n> wall_s=<x>

``landed``: partitions whose companies_load materialized; ``doubled``: partitions whose load
ran more than once. Exit status 1 when a check did not hold (a run failed, a partition not
landed or landed twice, the target's rows not those the files hold).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks.load.common import log
from etl_assets_tests.scenarios.scaleout import Outcome, ScaleOut, run_scaleout
from etl_assets_tests.services import start_postgres

PHASES = [  # (label, first moment, last moment) of one run, as RunTimes names them
    ("process start: CLI import, definitions, run created", "spawned", "RUN_START"),
    ("run start -> step sent to the queue", "RUN_START", "sent"),
    ("queue wait: sent -> taken by a worker", "sent", "taken"),
    ("worker: taken -> step started (plan, resources)", "taken", "STEP_START"),
    ("our code: the step (extract, transform, load, link, checks)", "STEP_START", "STEP_SUCCESS"),
    ("result back to the run, run ended", "STEP_SUCCESS", "RUN_SUCCESS"),
    ("process exit", "RUN_SUCCESS", "exited"),
]


def checks(outcome: Outcome) -> list[str]:
    """What did not hold, one line each (empty: every check passed)."""
    problems = [
        f"run {r.partition}: exit {r.returncode}, {r.status}" for r in outcome.runs if r.status != "SUCCESS"
    ]
    if outcome.landed != len(outcome.partitions) or outcome.doubled:
        problems.append(f"companies_load per partition: {dict(outcome.loads)}")
    expected = len(outcome.expected.keys_landing)
    if not outcome.rows[0] == outcome.rows[1] == expected or outcome.keys != outcome.expected.keys_landing:
        problems.append(f"accounts: {outcome.rows[0]} rows, {outcome.rows[1]} keys, expected {expected}")
    return problems


def busy_s(outcome: Outcome, worker: str) -> float:
    """Seconds the worker spent on the steps it finished (taken -> step succeeded)."""
    return sum(r.span("taken", "STEP_SUCCESS") or 0.0 for r in outcome.runs if r.worker == worker)


def report(outcome: Outcome) -> str:
    s = outcome.scenario
    per_minute = len(outcome.partitions) / outcome.wall_s * 60
    lines = [
        f"| {s.partitions} partitions x {s.rows} rows, {s.workers} worker(s), {s.at_once} runs at once | |",
        "|---|---|",
        f"| wall time | {outcome.wall_s:.1f} s |",
        f"| partitions per minute | {per_minute:.1f} |",
    ]
    for worker, steps in sorted(outcome.steps_per_worker.items()):
        busy = busy_s(outcome, worker)
        lines.append(
            f"| steps on {worker} | {steps} (busy {busy:.1f} s, {busy / outcome.wall_s:.0%} of the wall) |"
        )
    for label, first, last in PHASES:
        value = outcome.phase(first, last)
        lines.append(f"| median {label} | {'n/a' if value is None else f'{value:.2f} s'} |")
    lines += [
        "",
        f"partitions={len(outcome.partitions)} landed={outcome.landed} doubled={outcome.doubled} "
        f"workers_used={len(outcome.steps_per_worker)} wall_s={outcome.wall_s:.1f}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scaleout", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--workers", type=int, choices=(1, 2), default=2, help="Celery workers (default 2)")
    parser.add_argument(
        "--partitions", type=int, default=20, help="daily partitions, a run each (default 20)"
    )
    parser.add_argument("--rows", type=int, default=200, help="companies a day (default 200)")
    parser.add_argument("--at-once", type=int, default=4, help="runs started side by side (default 4)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds the runs may take")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (printed)")
    args = parser.parse_args(argv)
    scenario = ScaleOut(
        partitions=args.partitions,
        workers=args.workers,
        rows=args.rows,
        at_once=args.at_once,
        timeout_s=args.timeout,
    )
    work = Path(tempfile.mkdtemp(prefix="etl_bench_scaleout_"))
    try:
        with start_postgres(work) as postgres:
            log(f"{scenario.partitions} partitions on {scenario.workers} worker(s): starting in {work}")
            (work / "run").mkdir()
            outcome = run_scaleout(scenario, work / "run", postgres)
            problems = checks(outcome)  # reads the failed runs' logs, in the work folder
    finally:
        if args.keep:
            print(f"work folder kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    for problem in problems:
        print(f"CHECK FAILED: {problem}")
    print(report(outcome))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
