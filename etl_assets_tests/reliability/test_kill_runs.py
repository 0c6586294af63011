"""``kill -9`` of a run in each of its steps, three times in a row per step, then a normal run.

The run is a process of its own, started as an operator starts one (``dagster job execute`` on
the package; the in-process executor runs the steps in that process), and its process group
gets SIGKILL inside the step: the step has begun (the event line of the step before it, on the
run's stderr) and shows a sign of its work: a temporary file of its own under
``ETL_HOME/data/<flow>/<partition>/`` (the name carries the writer's pid), a file it wrote, or
its statement in ``pg_stat_activity``. Nothing can clean up after SIGKILL: what must hold is
that every file under a final name is whole, that the target has all of a partition's rows or
none and all of its links or none, and that the next normal run gives exactly the clean run's
rows.

``RELIABILITY_LONG=1`` kills ten times per step, each kill a random 0-150 ms after the sign
(anywhere in the step, or in the next one).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import polars as pl
import psycopg

from etl_assets_tests.reliability.support import (
    DAY,
    FILE,
    ROWS,
    assert_nothing_looks_complete_that_is_not,
    assert_same_as_clean,
    clean_run,
    companies_file,
    poll,
    put_aged,
    scan,
    stage_dir,
)
from etl_assets_tests.test_flows.conftest import FlowEnv

LONG = os.environ.get("RELIABILITY_LONG") == "1"
KILLS_PER_STEP = 10 if LONG else 3
MISSES_PER_STEP = 3  # kills the test's timing let land after their step (a busy machine): done again
DAGSTER = str(Path(sys.executable).with_name("dagster"))
ROOT = Path(__file__).resolve().parents[2]
# a step begins after the line of the step before it, and has landed at the line of its own
# (the run's events, as ``dagster job execute`` prints them on stderr)
BEGINS = {
    "extract": 'STEP_START - Started execution of step "companies_steps"',
    "transform": "Materialized value companies_extract.",
    "load": "Materialized value companies_transform.",
    "link": "Materialized value companies_load.",
}


@dataclass
class Run:
    """A run of the partition in a process of its own (its own session: one process group),
    its event lines read as they come."""

    process: subprocess.Popen[str]
    started_ns: int
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def logged(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def wait(self, timeout: float = 300) -> str:
        """Its exit, then everything it printed on stderr."""
        self.process.wait(timeout=timeout)
        if self.reader is not None:
            self.reader.join(timeout=30)
        return "".join(self.lines)


def start_run(dagster_home: Path) -> Run:
    started = time.time_ns()
    command = [DAGSTER, "job", "execute", "-m", "etl_assets", "-j", "companies_job"]
    process = subprocess.Popen(
        [*command, "--tags", json.dumps({"dagster/partition": DAY})],
        cwd=ROOT,
        env={**os.environ, "DAGSTER_HOME": str(dagster_home), "VIRTUAL_ENV": sys.prefix},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    run = Run(process, started)
    stream = process.stderr
    assert stream is not None
    run.reader = threading.Thread(target=lambda: run.lines.extend(stream), daemon=True)
    run.reader.start()
    return run


Sign = Callable[[FlowEnv, Run, psycopg.Connection], bool]


def writing(*names: str) -> Sign:
    """The run's own temporary file of one of ``names`` exists in the partition's folders."""

    def seen(env: FlowEnv, run: Run, admin: psycopg.Connection) -> bool:
        stage = stage_dir(env.home)
        return any(
            entry.name.endswith(".part")
            and f".{run.pid}." in entry.name
            and any(entry.name.startswith(f".{name}.") for name in names)
            for entry in [*scan(stage), *scan(stage / "raw")]
        )

    return seen


def landed(name: str) -> Sign:
    """``name`` is in place under its final name, written by this run."""

    def seen(env: FlowEnv, run: Run, admin: psycopg.Connection) -> bool:
        try:
            return (stage_dir(env.home) / name).stat().st_mtime_ns >= run.started_ns
        except FileNotFoundError:
            return False

    return seen


def in_database(statement: str) -> Sign:
    """The run's backend is in a transaction, on ``statement`` (ILIKE), in the flow's database."""

    def seen(env: FlowEnv, run: Run, admin: psycopg.Connection) -> bool:
        row = admin.execute(
            "select count(*) from pg_stat_activity where datname = %s and application_name = 'etl_assets' "
            "and state in ('active', 'idle in transaction') and xact_start is not null and query ilike %s",
            (env.database, statement),
        ).fetchone()
        return bool(row and row[0])

    return seen


TRANSFORM_FILES = (
    "transform.parquet",
    "transform_first_pass.parquet",
    "transform_groups.parquet",
    "transform_failed.parquet",
)
# where each kill lands, in turn, within its step (None: as soon as the step begins)
SIGNS: dict[str, list[Sign | None]] = {
    "extract": [writing(FILE), writing("extract.parquet"), None],  # downloading, parsing, listing
    # its last file lands last; transform_collapsed.parquet just before it
    "transform": [None, writing(*TRANSFORM_FILES), landed("transform_collapsed.parquet")],
    "load": [in_database("copy %"), writing("load.parquet"), in_database("copy %")],  # COPY; before commit
    "link": [in_database("%"), in_database("copy (update %"), None],
}


def kill_in(dagster_home: Path, env: FlowEnv, step: str, sign: Sign | None, jitter: float = 0.0) -> bool:
    """Start a run, SIGKILL its process group in ``step`` once ``sign`` shows; True when it died
    in that step (False: the step had landed first, the kill hit a later one)."""
    run = start_run(dagster_home)
    done = f"Materialized value companies_{step}."
    try:
        with psycopg.connect(env.postgres.dsn("postgres"), autocommit=True) as admin:

            def now() -> bool:
                if run.process.poll() is not None or run.logged(done):
                    return True
                return run.logged(BEGINS[step]) and (sign is None or sign(env, run, admin))

            poll(now, 180, f"the run's {step}")
        time.sleep(jitter)
        if run.process.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    finally:
        stderr = run.wait()
    assert run.process.returncode == -signal.SIGKILL, f"the run was not killed in {step}: {stderr[-3000:]}"
    return not run.logged(done)


def counts(env: FlowEnv) -> tuple[int, int]:
    """Rows in the target, and rows whose parent is linked (0, 0 without the table)."""
    with psycopg.connect(env.postgres.dsn(env.database)) as conn:
        if not conn.execute("select to_regclass('accounts')").fetchone()[0]:
            return 0, 0
        return conn.execute("select count(*), count(parent_account_id) from accounts").fetchone()


def cli_instance(env: FlowEnv) -> Path:
    """A DAGSTER_HOME for the runs, created once, as a deployment has it."""
    dagster_home = env.home.parent / "dagster_home"
    dagster_home.mkdir()
    dg.DagsterInstance.from_config(str(dagster_home)).dispose()
    return dagster_home


def test_kill_9_three_times_in_each_step_then_a_normal_run_equals_a_clean_run(flow_env: FlowEnv) -> None:
    data = companies_file(ROWS)
    put_aged(flow_env, FILE, data)
    clean = clean_run(flow_env, [(DAY, {FILE: data})])
    rows = len(clean.tables["accounts"])
    linked = sum(1 for parent in clean.column("accounts", "parent_account_id") if parent is not None)
    dagster_home = cli_instance(flow_env)
    chance = random.Random(19)
    for step, signs in SIGNS.items():
        kills = misses = 0
        while kills < KILLS_PER_STEP:
            jitter = chance.uniform(0, 0.15) if LONG else 0.0
            sign = signs[kills % len(signs)]
            in_step = kill_in(dagster_home, flow_env, step, sign, jitter)
            assert_nothing_looks_complete_that_is_not(flow_env.home, [(FILE, data)])
            loaded, parents = counts(flow_env)
            assert loaded in (0, rows), f"after a kill in {step}: {loaded} of {rows} rows: half a load"
            assert parents in (0, linked), f"after a kill in {step}: {parents} of {linked} links: half a link"
            if not in_step and not LONG:  # the step landed before the kill: once more
                misses += 1
                assert misses <= MISSES_PER_STEP, f"{misses} kills meant for {step} landed after it"
                continue
            kills += 1
            if LONG:  # a kill anywhere (the jitter may take it past the step): the checks above hold
                continue
            stage = stage_dir(flow_env.home)  # it died at the sign: the step's work had not landed
            if step == "extract":
                assert not (stage / "extract.parquet").exists()
            if step == "transform" and sign is not SIGNS["transform"][2]:
                assert not (stage / "transform.parquet").exists()  # (the last may land just after)
            if step == "load" and sign is not SIGNS["load"][1]:
                assert loaded == 0  # killed mid-COPY (the other kill may land after the commit)
            if step == "link":
                assert loaded == rows  # the load had committed; the link all or nothing, above

    normal = start_run(dagster_home)
    stderr = normal.wait()
    assert normal.process.returncode == 0, stderr[-3000:]
    assert "RUN_SUCCESS" in stderr
    assert_nothing_looks_complete_that_is_not(flow_env.home, [(FILE, data)])
    assert_same_as_clean(flow_env, [(DAY, {FILE: data})])


def test_a_kill_between_the_two_passes_of_transform_leaves_no_transform_parquet_that_looks_done(
    flow_env: FlowEnv,
) -> None:
    data = companies_file(ROWS)
    put_aged(flow_env, FILE, data)
    good_rows = len(clean_run(flow_env, [(DAY, {FILE: data})]).tables["accounts"])  # no key given twice
    # the first pass is done and the duplicates found: the file with them taken out is next
    kill_in(cli_instance(flow_env), flow_env, "transform", landed("transform_collapsed.parquet"))
    staged = stage_dir(flow_env.home) / "transform.parquet"
    assert not staged.exists() or pl.read_parquet(staged).height == good_rows
