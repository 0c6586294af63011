"""Wall time of the companies flow through the ``dagster`` CLI (issue 5).

``python -m benchmarks.orchestration`` writes 30 daily companies files of 1,000 rows into a
temporary ETL_HOME/import (dev environment: SQLite target, local files), then times, as
subprocesses with a temporary DAGSTER_HOME:

- ``dagster asset materialize -m etl_assets.definitions --select 'group:companies'
  --partition <day>``: one partition, all four steps and their checks, on a new instance;
- the same command again (the idempotent re-load, instance and tables already there);
- both ``--repeat`` times (default 3), each time on a new home: the median counts (a
  single CLI run here varies by a second from one run to the next);
- ``etl-assets backfill companies --from <first> --to <last>``: a 30-partition backfill in
  ranged runs of up to 12 partitions, one after the other in one process (each partition
  lands or fails on its own inside its run), on a new ETL_HOME and instance;
- the same 30 partitions through the daemon (``--no-daemon`` skips it): ``dagster-webserver``
  and ``dagster-daemon run`` on a new ETL_HOME and instance (``DagsterServer`` of the tests),
  the backfill launched as the UI launches it (GraphQL ``launchPartitionBackfill``), timed from
  that call to the last partition landed (the last run's end) and to the backfill's final
  status (the backfill daemon notices it at its next tick, up to 30 s later); launched once
  just after the backfill daemon's tick (the worst case) and once just before it (the best).

It checks each exit code (or the backfill's status), that the runs succeeded, and the rows
and parent links in the SQLite target; prints a table and, last, ``single_partition_s=..
reload_partition_s=.. backfill_30_s=.. daemon_backfill_30_s=.. (to the last partition landed)
daemon_backfill_final_s=.. daemon_backfill_vs_single=..``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path

from benchmarks.load.common import log
from benchmarks.load.generator import write_companies_csv
from benchmarks.load.report import representative
from etl_assets_tests.services.dagster_server import DagsterServer

ROOT = Path(__file__).resolve().parent.parent
SINGLE_TARGET_S = 6.0
BACKFILL_TARGET_S = 60.0
DAGSTER_YAML = "telemetry:\n  enabled: false\n"
COMPANIES_ASSETS = ["companies_extract", "companies_transform", "companies_load", "companies_link"]
DAEMON_TIMEOUT_S = 900.0
OTHER_RUNS = """
{ runsOrError { __typename ... on Runs { results { runId jobName status tags { key value } } } } }
"""


@dataclass
class Home:
    """An ETL_HOME with its files and a DAGSTER_HOME beside it."""

    etl_home: Path
    dagster_home: Path
    days: list[date]
    rows: int
    parents: dict[date, int]

    @property
    def env(self) -> dict[str, str]:
        """The dev environment on this home: no settings file or override from outside."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETL__") and k != "ETL_SETTINGS"}
        env.update(ETL_ENV="dev", ETL_HOME=str(self.etl_home), DAGSTER_HOME=str(self.dagster_home))
        return env

    def target_state(self) -> tuple[int, int]:
        """Rows and linked parents in the SQLite target (0, 0 when it has no table)."""
        path = self.etl_home / "data" / "etl.sqlite"
        if not path.exists():
            return 0, 0
        with sqlite3.connect(path) as conn:
            try:
                count, linked = conn.execute(
                    "SELECT count(*), count(parent_account_id) FROM accounts"
                ).fetchone()
            except sqlite3.OperationalError:
                return 0, 0
        return count, linked


def make_home(
    base: Path, name: str, days: list[date], rows: int, dagster_yaml: str | None = DAGSTER_YAML
) -> Home:
    """Companies files for ``days`` (unique ids across days) in a new ETL_HOME/import."""
    etl_home, dagster_home = base / name / "etl_home", base / name / "dagster_home"
    dagster_home.mkdir(parents=True)
    if dagster_yaml is not None:
        (dagster_home / "dagster.yaml").write_text(dagster_yaml)
    parents = {}
    for index, day in enumerate(days):
        path = etl_home / "import" / f"companies_{day:%Y%m%d}.csv"
        parents[day] = write_companies_csv(path, rows, offset=index * rows)["parents"]
    return Home(etl_home, dagster_home, days, rows, parents)


@dataclass
class Timed:
    """One CLI run."""

    label: str
    partitions: int
    rows: int
    seconds: float
    target: float | None
    code: int
    run_ok: bool
    check: str
    state: str | None = None  # shown instead of "success" / "exit N" (a backfill's status)
    final_seconds: float | None = None  # a daemon backfill: to its final status (seconds: landed)

    @property
    def ok(self) -> bool:
        return self.code == 0 and self.run_ok and self.check.startswith("ok")


def dagster_cli() -> str:
    """The ``dagster`` beside this interpreter, else the one on PATH."""
    local = Path(sys.executable).with_name("dagster")
    return str(local) if local.exists() else "dagster"


def materialize(home: Home, days: list[date], log_path: Path) -> tuple[float, int, bool]:
    """One partition: ``dagster asset materialize`` of the companies group; a range:
    ``etl-assets backfill`` (a run per partition in one process). Wall seconds, exit code,
    every run a success."""
    first, last = f"{days[0]:%Y-%m-%d}", f"{days[-1]:%Y-%m-%d}"
    if len(days) == 1:
        argv = [dagster_cli(), "asset", "materialize", "-m", "etl_assets.definitions"]
        argv += ["--select", "group:companies", "--partition", first]
    else:
        argv = [str(Path(sys.executable).with_name("etl-assets")), "backfill", "companies"]
        argv += ["--from", first, "--to", last]
    with log_path.open("wb") as out:
        started = time.perf_counter()
        code = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=home.env)
        seconds = time.perf_counter() - started
    text = log_path.read_text(errors="replace")
    run_ok = "RUN_SUCCESS" in text and "RUN_FAILURE" not in text
    return seconds, code.returncode, run_ok


def checks_seen(log_path: Path) -> int:
    """Asset check evaluations the run logged."""
    return len(re.findall(r"ASSET_CHECK_EVALUATION", log_path.read_text(errors="replace")))


def timed(
    home: Home,
    label: str,
    days: list[date],
    log_path: Path,
    expect_rows: int,
    expect_linked: int,
    target: float,
) -> Timed:
    """One materialisation of ``days`` and the checks of the target afterwards."""
    log(f"{label}: {len(days)} partition(s)")
    seconds, code, run_ok = materialize(home, days, log_path)
    count, linked = home.target_state()
    if (count, linked) != (expect_rows, expect_linked):
        check = (
            f"FAILED: accounts has {count:,} rows / {linked:,} parents, "
            f"expected {expect_rows:,} / {expect_linked:,}"
        )
    elif code != 0 or not run_ok:
        check = f"FAILED: exit {code}, see {log_path}"
    else:
        check = f"ok: {count:,} rows, {linked:,} parents linked, {checks_seen(log_path)} check evaluations"
    result = Timed(label, len(days), home.rows * len(days), seconds, target, code, run_ok, check)
    log(f"{label}: {seconds:.1f} s, {check}")
    return result


def median_of(runs: list[Timed]) -> Timed:
    """The run of median wall time (every run must pass its checks); the label lists them all."""
    chosen = representative(runs, lambda r: r.seconds, lambda r: r.ok)
    if len(runs) == 1:
        return chosen
    seconds = ", ".join(f"{r.seconds:.2f}" for r in runs)
    return replace(chosen, label=f"{chosen.label}, median of {seconds}")


def peak_concurrency(runs: list[dict]) -> int:
    """Most runs executing at the same moment (from their start and end times: a run process's
    start-up, before its start time, is not counted)."""
    edges = sorted(
        [(r["start_time"], 1) for r in runs if r["start_time"] and r["end_time"]]
        + [(r["end_time"], -1) for r in runs if r["start_time"] and r["end_time"]]
    )
    peak = now = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


def daemon_backfill(home: Home, label: str, log_dir: Path, before_tick: bool = False) -> Timed:
    """All of ``home.days`` as one backfill through the webserver and the daemon, launched with
    the UI's GraphQL; seconds from the launch call to the last partition landed.

    The backfill daemon looks for new backfills every 30 s (Dagster's fixed interval), the first
    time as it starts. Launched once both are up (``before_tick=False``), the backfill waits
    nearly a whole interval: the worst case. Launched before the daemon starts, it is picked up
    at once: the best case. An operator's click falls anywhere between."""
    keys = [f"{day:%Y-%m-%d}" for day in home.days]
    expect_rows, expect_linked = home.rows * len(keys), sum(home.parents.values())
    log(f"{label}: starting dagster-webserver and dagster-daemon")
    server = DagsterServer(ROOT, home.dagster_home, base_env=home.env, daemon=not before_tick)
    seconds, status, detail, other = float("nan"), "not launched", {}, Counter()
    try:
        with server:
            log(f"{label}: launchPartitionBackfill {keys[0]}...{keys[-1]} ({len(keys)} partitions)")
            started = time.perf_counter()
            backfill_id = server.launch_backfill(keys, COMPANIES_ASSETS)
            if before_tick:
                server.start_daemon()
            detail = server.wait_backfill(backfill_id, timeout=DAEMON_TIMEOUT_S)
            seconds = time.perf_counter() - started
            status = detail["status"]
            everything = server.graphql(OTHER_RUNS)["runsOrError"].get("results", [])
            ours = {r["id"] for r in detail["runs"]}
            other = Counter(r["jobName"] for r in everything if r["runId"] not in ours)
    except Exception as exc:  # a failed path is a row of the table, not a traceback
        status = f"error: {type(exc).__name__}"
        detail = {"error": str(exc).splitlines()[0][:300]}
    finally:
        for name, path in server.log_paths.items():
            if path.exists():
                shutil.copy(path, log_dir / f"daemon_{name}.log")
    count, linked = home.target_state()
    runs = detail.get("runs", [])
    run_states = ", ".join(
        f"{sum(r['status'] == s for r in runs)} {s}" for s in sorted({r["status"] for r in runs})
    )
    run_ok = status == "COMPLETED_SUCCESS" and bool(runs) and all(r["status"] == "SUCCESS" for r in runs)
    if detail.get("error"):
        check = f"FAILED: {detail['error']} (logs: {log_dir}/daemon_*.log)"
    elif (count, linked) != (expect_rows, expect_linked):
        check = (
            f"FAILED: accounts has {count:,} rows / {linked:,} parents, "
            f"expected {expect_rows:,} / {expect_linked:,}"
        )
    elif not run_ok:
        check = f"FAILED: backfill {status}, runs {run_states}"
    else:
        launched = detail["timestamp"]
        first = min(r["start_time"] for r in runs if r["start_time"]) - launched
        last = max(r["end_time"] for r in runs if r["end_time"]) - launched
        check = (
            f"ok: {count:,} rows, {linked:,} parents linked, {len(runs)} runs {run_states} "
            f"(at most {peak_concurrency(runs)} executing at once), "
            f"first run started +{first:.0f} s, last ended +{last:.0f} s, "
            f"final +{detail['end_timestamp'] - launched:.0f} s (Dagster's timestamps)"
            + (
                f"; other runs meanwhile: {', '.join(f'{n} {job}' for job, n in other.items())}"
                if other
                else ""
            )
        )
    landed = seconds
    if run_ok:  # to the last partition landed: the last run's end, on Dagster's clock
        landed = max(r["end_time"] for r in runs if r["end_time"]) - detail["timestamp"]
    result = Timed(
        label, len(keys), expect_rows, landed, None, 0 if run_ok else 1, run_ok, check, status, seconds
    )
    log(f"{label}: {landed:.1f} s to the last partition landed, {seconds:.1f} s to its status, {check}")
    return result


def import_floor(home: Home) -> float:
    """Seconds to import the code location and build its definitions (every CLI run pays it)."""
    code = "import etl_assets.definitions as d; d.defs()"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=home.env, capture_output=True)
    return time.perf_counter() - started


def print_table(results: list[Timed], floor: float) -> None:
    header = (
        f"{'run':<76} {'partitions':>10} {'rows':>7} {'wall s':>7} {'target':>7} {'met':>4} {'run':>8}  check"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        met = "n/a" if r.target is None else ("yes" if r.seconds < r.target and r.ok else "no")
        target = "" if r.target is None else f"< {r.target:g}"
        state = r.state or ("success" if r.run_ok and r.code == 0 else f"exit {r.code}")
        print(
            f"{r.label:<76} {r.partitions:>10} {r.rows:>7,} {r.seconds:>7.2f} {target:>7} {met:>4} "
            f"{state:>8}  {r.check}"
        )
    print(
        "(fixed cost in every CLI run: importing etl_assets.definitions and building defs takes "
        f"{floor:.2f} s)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.orchestration", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--rows", type=int, default=1_000, help="rows per daily file")
    parser.add_argument("--days", type=int, default=30, help="partitions of the backfill")
    parser.add_argument(
        "--repeat", type=int, default=3, help="single-partition runs, each on a new home (median shown)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary homes and logs")
    parser.add_argument(
        "--no-daemon", action="store_true", help="skip the backfill through the webserver and daemon"
    )
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="etl_bench_orch_"))
    last = date.today() - timedelta(days=2)  # well inside the daily partitions in any timezone
    days = [last - timedelta(days=n) for n in range(args.days - 1, -1, -1)]
    daemon: Timed | None = None
    try:
        day = [days[-1]]
        firsts, reloads = [], []
        for attempt in range(args.repeat):
            single = make_home(base, f"single{attempt}", day, args.rows)
            floor = import_floor(single)
            firsts.append(
                timed(
                    single,
                    "one partition (new instance and target)",
                    day,
                    base / f"single{attempt}.log",
                    args.rows,
                    single.parents[days[-1]],
                    SINGLE_TARGET_S,
                )
            )
            reloads.append(
                timed(
                    single,
                    "same partition again (idempotent re-load)",
                    day,
                    base / f"reload{attempt}.log",
                    args.rows,
                    single.parents[days[-1]],
                    SINGLE_TARGET_S,
                )
            )
        results = [median_of(firsts), median_of(reloads)]
        backfill = make_home(base, "backfill", days, args.rows)
        results.append(
            timed(
                backfill,
                f"{args.days}-partition backfill (etl-assets backfill: runs of 16, one process)",
                days,
                base / "backfill.log",
                args.rows * args.days,
                sum(backfill.parents.values()),
                BACKFILL_TARGET_S,
            )
        )
        if not args.no_daemon:
            daemon = daemon_backfill(
                make_home(base, "daemon", days, args.rows, dagster_yaml=None),
                f"{args.days}-partition backfill through the daemon (launched just after a tick)",
                base,
            )
            best = daemon_backfill(
                make_home(base, "daemon_best", days, args.rows, dagster_yaml=None),
                f"{args.days}-partition backfill through the daemon (launched just before a tick)",
                base,
                before_tick=True,
            )
            results += [daemon, best]
        print(
            f"\ncompanies flow through the dagster CLI: {args.rows:,} rows a day, dev environment (SQLite), "
            f"in-process executor, {os.cpu_count()} cores"
        )
        print_table(results, floor)
        if args.keep:
            print(f"kept: {base}")
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    print()
    daemon_s = daemon_final = daemon_ratio = best_s = mean_ratio = "n/a"
    if daemon is not None:
        single, best = results[0].seconds, results[-1].seconds
        daemon_s, daemon_ratio = f"{daemon.seconds:.2f}", f"{daemon.seconds / single:.1f}"
        daemon_final, best_s = f"{daemon.final_seconds:.2f}", f"{best:.2f}"
        # the wait for the tick is uniform over the interval: the mean is halfway
        mean_ratio = f"{(daemon.seconds + best) / 2 / single:.1f}"
        print(
            f"through the daemon: {best:.1f} s (launched just before a tick) to {daemon.seconds:.1f} s "
            f"(just after one); {float(mean_ratio):.1f}x one partition halfway, as a click falls on average"
        )
    print(
        f"single_partition_s={results[0].seconds:.2f} reload_partition_s={results[1].seconds:.2f} "
        f"backfill_{args.days}_s={results[2].seconds:.2f} daemon_backfill_{args.days}_s={daemon_s} "
        f"daemon_backfill_final_s={daemon_final} daemon_backfill_vs_single={daemon_ratio} "
        f"daemon_backfill_best_s={best_s} daemon_backfill_mean_vs_single={mean_ratio}"
    )
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
