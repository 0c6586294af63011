"""A companies backfill through the daemon into PostgreSQL, beside the offers sensor, at any size.

``python -m benchmarks.backfill_load --days 60 --rows 200`` runs the scenario of
``etl_assets_tests/test_load_backfill.py`` (``etl_assets_tests.scenarios.backfill_load``: one
code path, so the figures are those of what the test proves): companies files of ``--rows``
rows a day (the demo generator, plus ``--resend`` companies of the day before) in a temporary
ETL_HOME/import; a private PostgreSQL cluster (``initdb``, as the tests start it: run as root)
and a fresh database as the target (environment ``test``, the password encrypted); the real
``dagster-webserver`` and ``dagster-daemon run`` with the shipped instance
(``etl_assets/dagster.yaml``, ``--instance-config`` merged in); the backfill launched with the
UI's GraphQL mutation while an offers file arrives every ``--offers-every`` seconds.

It prints the backfill's wall time (launch to final status, and to the last partition landed),
partitions/s and rows/s, the peak memory of the server's process tree (sum of RSS over webserver,
daemon, code servers, run workers, sampled every 0.2 s, and the largest single process), the
offers runs, and the checks: each partition's ``companies_load`` materialized exactly once,
``accounts`` = the keys the files hold less those the map rejects (computed from the files with
csv and re), no run failed; and, reported but not a check (a known fault), the keys whose row is
an older day's than their latest. Last line::

    backfill_s=<x> landed_s=<x> partitions_per_s=<x> rows_per_s=<x> peak_rss_sum_mb=<n>
    peak_rss_single_mb=<n> offers_requested=<n> offers_succeeded_while_landing=<n> stale_keys=<n>

(one line; wrapped here).

Exit status 1 when a check did not hold.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

from benchmarks.load.common import log
from etl_assets_tests.scenarios.backfill_load import (
    Outcome,
    Scenario,
    run_backfill_load,
    scenario_env,
)
from etl_assets_tests.scenarios.probes import MB
from etl_assets_tests.services import start_postgres


def checks(outcome: Outcome) -> list[str]:
    """What did not hold, one line each (empty: every check passed)."""
    problems = []
    if outcome.backfill["status"] != "COMPLETED_SUCCESS":
        problems.append(f"backfill {outcome.backfill['status']}: {outcome.backfill['error']}")
    counts = outcome.materializations["companies_load"]
    twice = {k: n for k, n in counts.items() if n != 1}
    missing = sorted(set(outcome.scenario.keys) - set(counts))
    if twice or missing:
        runs = {k: outcome.materializing_runs.get(k) for k in twice}
        problems.append(f"companies_load: not exactly once {twice} (runs {runs}), missing {missing}")
    rows, keys = outcome.accounts
    if not rows == keys == len(outcome.expected.keys_landing):
        problems.append(f"accounts: {rows} rows, {keys} keys, expected {len(outcome.expected.keys_landing)}")
    problems += [f"run {r.run_id} ({r.job}) {r.status}" for r in outcome.failed_runs]
    return problems


def report(outcome: Outcome) -> str:
    """The table of figures, and the last line."""
    s, memory = outcome.scenario, outcome.memory
    rows = outcome.expected.rows
    lines = [
        f"| backfill | {s.days} partitions x {s.rows} rows (+{s.resend}), {rows:,} rows in all |",
        "|---|---|",
        f"| launch -> final status | {outcome.wall_s:.1f} s ({s.days / outcome.wall_s:.2f} partitions/s, "
        f"{rows / outcome.wall_s:,.0f} rows/s) |",
        f"| launch -> last partition landed | {outcome.landed_s:.1f} s |",
        f"| peak RSS, sum over the server tree | {memory.peak_sum / MB:,.0f} MB |",
        f"| peak RSS, single process | {memory.peak_single / MB:,.0f} MB ({memory.peak_single_kind}) |",
        f"| offers runs requested during the backfill | {len(outcome.offers_runs)} "
        f"({len(outcome.offers_succeeded_while_landing)} succeeded before the last partition landed) |",
        f"| keys holding an older day's row (a chunk's last day loaded after the next chunk's first) | "
        f"{len(outcome.stale_keys)} |",
        "",
        outcome.describe(),
        "",
        f"backfill_s={outcome.wall_s:.1f} landed_s={outcome.landed_s:.1f} "
        f"partitions_per_s={s.days / outcome.wall_s:.3f} rows_per_s={rows / outcome.wall_s:.0f} "
        f"peak_rss_sum_mb={memory.peak_sum / MB:.0f} peak_rss_single_mb={memory.peak_single / MB:.0f} "
        f"offers_requested={len(outcome.offers_runs)} "
        f"offers_succeeded_while_landing={len(outcome.offers_succeeded_while_landing)} "
        f"stale_keys={len(outcome.stale_keys)}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.backfill_load", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--days", type=int, default=60, help="daily partitions (default 60)")
    parser.add_argument(
        "--rows",
        type=int,
        default=200,
        help="companies a day (default 200; from 1000 on, the demo generator's ids repeat across days)",
    )
    parser.add_argument("--resend", type=int, default=3, help="companies of the day before re-sent each day")
    parser.add_argument("--offers-every", type=float, default=4.0, help="seconds between offers files")
    parser.add_argument("--settle-offers", type=int, default=3, help="offers runs to wait for afterwards")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds the backfill may take")
    parser.add_argument("--instance-config", type=Path, help="YAML merged into the shipped dagster.yaml")
    parser.add_argument("--keep", action="store_true", help="keep ETL_HOME and DAGSTER_HOME (printed)")
    args = parser.parse_args(argv)
    scenario = Scenario(
        days=args.days,
        rows=args.rows,
        resend=args.resend,
        offers_every_s=args.offers_every,
        settle_offers=args.settle_offers,
        timeout_s=args.timeout,
    )
    instance_config = yaml.safe_load(args.instance_config.read_text()) if args.instance_config else None
    work = Path(tempfile.mkdtemp(prefix="etl_bench_backfill_"))
    try:
        with start_postgres(work) as postgres:
            env, database = scenario_env(work, postgres)
            log(f"{scenario.days} partitions x {scenario.rows} rows: starting in {work}")
            outcome = run_backfill_load(
                scenario,
                work / "etl_home",
                work / "dagster_home",
                env,
                postgres.dsn(database),
                instance_config,
            )
    finally:
        if args.keep:
            print(f"work folder kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    problems = checks(outcome)
    for problem in problems:
        print(f"CHECK FAILED: {problem}")
    print(report(outcome))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
