"""The parent side: psql, a quiet server, the child processes and the paths they measure."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.load.common import DLT_MISSING, FLOOR_ROWS, PG_HOST, PG_PORT, PG_USER, ROOT, _mb, log
from benchmarks.load.generator import cached_file
from benchmarks.load.modes import run_modes
from benchmarks.load.report import Measured, Report, medians
from etl_assets.samples import COMPANY_COLUMNS


def psql_argv(database: str) -> list[str]:
    """psql on the benchmark's server and database, stopping at the first error."""
    return ["psql", "-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_USER, "-d", database, "-v", "ON_ERROR_STOP=1"]


def psql(database: str, sql: str) -> str:
    """One statement through psql; its unaligned output."""
    done = subprocess.run(
        [*psql_argv(database), "-Atqc", sql],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise RuntimeError(f"psql {database}: {done.stderr.strip()}")
    return done.stdout.strip()


def quiesce(timeout: float = 120.0) -> None:
    """A quiet server before a measurement: dirty buffers written, and no autovacuum worker
    still busy with an earlier path's table (vacuuming 1M fresh rows competes with the
    next path for both cores and the disk)."""
    psql("postgres", "CHECKPOINT")
    deadline = time.monotonic() + timeout
    busy = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
    while int(psql("postgres", busy)) and time.monotonic() < deadline:
        time.sleep(0.5)


def table_state(database: str, table: str) -> tuple[int, str]:
    """Row count and an order-independent checksum of every column of every row."""
    count, checksum = psql(
        database, f"SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)), 0) FROM {table} t"
    ).split("|")
    return int(count), checksum


@dataclass
class Child:
    """What a child process left: its result, wall time and peak RSS."""

    code: int
    wall: float
    rss_mb: float
    result: dict[str, Any]
    log: Path
    killed: bool = False

    @property
    def error(self) -> str | None:
        if self.code == 0 and "error" not in self.result:
            return None
        if "error" in self.result:
            return str(self.result["error"])
        lines = self.log.read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"exit {self.code}"


def _hwm_of(pid: int) -> float | None:
    """VmHWM of a running process, None once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return next(
        (_mb(int(line.split()[1])) for line in status.splitlines() if line.startswith("VmHWM:")), None
    )


def run_child(
    argv: list[str], work: Path, name: str, env: dict[str, str] | None = None, cap_mb: float = float("inf")
) -> Child:
    """Run ``argv`` in its own process; its peak RSS is the VmHWM it reports, else the one watched.

    Not ``wait4``/``RUSAGE_CHILDREN``: on exec Linux carries the forking process's peak RSS
    into the child's ``ru_maxrss``, so every child would show at least this parent's RSS.
    A child whose RSS passes ``cap_mb`` is killed (this machine is shared: no OOM killer roulette).
    """
    log_path, result_path = work / f"{name}.log", work / f"{name}.json"
    result_path.unlink(missing_ok=True)
    watched: list[float] = [0.0]
    done = threading.Event()
    with log_path.open("wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [*argv, "--result", str(result_path)] if argv[0] != "psql" else argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
        )

        def watch() -> None:
            while not done.wait(0.02):
                watched[0] = max(watched[0], _hwm_of(proc.pid) or 0.0)
                if watched[0] > cap_mb:
                    proc.kill()
                    return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        code = proc.wait()
        wall = time.perf_counter() - started
        done.set()
        watcher.join()
    result = json.loads(result_path.read_text()) if result_path.exists() else {}
    killed = watched[0] > cap_mb
    if killed:
        result = {"error": _killed(cap_mb, result_path.with_suffix(".progress"))}
    return Child(
        code, wall, result.get("peak_rss_mb") or watched[0] or float("nan"), result, log_path, killed
    )


def _killed(cap_mb: float, progress: Path) -> str:
    """Why and where a child was killed, with the steps it finished before."""
    reason = f"killed: RSS passed the cap of {cap_mb:,.0f} MB (--rss-cap-mb)"
    if not progress.exists():
        return reason
    state = json.loads(progress.read_text())
    done = ", ".join(
        f"{step} {state['seconds'].get(step, 0):.1f} s peak {peak:,.0f} MB"
        for step, peak in state["peaks"].items()
    )
    return f"{reason} in step {state['running']}" + (f"; before it: {done}" if done else "")


class Bench:
    """The paths on one file, each in a fresh database of its own."""

    def __init__(
        self,
        rows: int,
        keep: bool,
        dlt_python: str | None,
        cap_mb: float,
        repeat: int = 1,
        modes: list[str] | None = None,
    ) -> None:
        self.rows = rows
        self.modes = modes or []
        self.repeat = repeat
        self.round = 0
        self.keep = keep
        self.dlt_python = dlt_python
        self.cap_mb = cap_mb
        self.tag = uuid.uuid4().hex[:8]
        self.work = Path(tempfile.mkdtemp(prefix=f"etl_bench_{self.tag}_"))
        self.databases: list[str] = []
        self.file, self.facts = cached_file(rows)
        self.report = Report(rows, self.file, self.facts, psql("postgres", "SHOW server_version"))

    def database(self, name: str) -> str:
        database = f"etl_bench_{self.tag}_{name}" + (f"_{self.round}" if self.round else "")
        psql("postgres", f"CREATE DATABASE {database}")
        self.databases.append(database)
        return database

    def done_with(self, database: str) -> None:
        """Drop a path's database once checked: its table's autovacuum must not run during
        the next path's measurement (unless --keep)."""
        if not self.keep:
            psql("postgres", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            self.databases.remove(database)

    def close(self) -> None:
        if self.keep:
            self.report.notes.append(f"kept: work dir {self.work}, databases {', '.join(self.databases)}")
            return
        for database in self.databases:
            psql("postgres", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        shutil.rmtree(self.work, ignore_errors=True)

    def child(
        self, only: str, database: str, reload: bool = False, name: str | None = None, extra: list[str] = ()
    ) -> Child:
        """A path in a child process; the whole flow gets a home of its own each round."""
        quiesce()
        work = self.work / f"round{self.round}" if only == "flow" and self.round else self.work
        work.mkdir(exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "benchmarks.load",
            "--only",
            only,
            "--file",
            str(self.file),
            "--db",
            database,
            "--work",
            str(work),
            *extra,
        ]
        return run_child([*argv, "--reload"] if reload else argv, work, name or only, cap_mb=self.cap_mb)

    def add(self, measured: Measured) -> Measured:
        rate = measured.rate()
        log(f"{measured.label}: {measured.seconds or 0:.2f} s, {rate or 0:,.0f} rows/s, {measured.check}")
        self.report.measured.append(measured)
        return measured

    def from_child(
        self, key: str, label: str, child: Child, check: Callable[[Child], str], rows: int | None = None
    ) -> Measured:
        measured = Measured(
            key,
            label,
            int(child.result.get("rows", rows or self.rows)),
            child.result.get("seconds"),
            child.rss_mb,
            capped=child.killed,
            detail=child.result,
        )
        if child.error:
            measured.ok, measured.check = False, f"FAILED: {child.error}"
        else:
            try:
                measured.check = check(child)
            except AssertionError as exc:
                measured.ok, measured.check = False, f"FAILED: {exc}"
        return self.add(measured)

    # -- the paths ---------------------------------------------------------------------------
    def copy(self) -> None:
        database = self.database("copy")
        columns = ", ".join(f"{c.lower()} text" for c in COMPANY_COLUMNS)
        psql(database, f"CREATE TABLE companies_raw ({columns})")
        quiesce()
        command = (
            f"\\copy companies_raw FROM '{self.file}' WITH (FORMAT csv, DELIMITER ';', HEADER true, "
            "ENCODING 'UTF8')"
        )
        child = run_child(
            [*psql_argv(database), "-qc", command],
            self.work,
            "copy",
        )
        child.result = {"rows": self.rows, "seconds": child.wall}

        def check(_: Child) -> str:
            count = int(psql(database, "SELECT count(*) FROM companies_raw"))
            assert count == self.rows, f"{count} rows in companies_raw, expected {self.rows}"
            return f"ok: {count:,} rows"

        self.from_child("copy", "COPY: psql \\copy, unindexed text table", child, check)
        self.done_with(database)

    def load(self) -> None:
        if self.round == 0:
            log("preparing the transform output for the load step (extract + transform, not timed)")
            prepared = self.child("prepare", "postgres")
            if prepared.error:
                self.report.notes.append(f"load step not measured: prepare failed: {prepared.error}")
                return
        elif not (self.work / "prepare_home").exists():
            return
        self.first_and_reload("load", "load step (load_stage), first load", "load step", "all unchanged")

    def flow(self) -> None:
        parents = self.facts["parents"]

        def linked(database: str) -> str:
            count = int(psql(database, "SELECT count(parent_account_id) FROM accounts"))
            assert count == parents, f"{count} parents linked, expected {parents}"
            return f", {count:,} parents linked"

        first_label = "whole flow (extract>transform>load>link), first"
        self.first_and_reload("flow", first_label, "whole flow", "load+link all unchanged", linked)

    def first_and_reload(
        self,
        only: str,
        first_label: str,
        name: str,
        unchanged: str,
        extra: Callable[[str], str] | None = None,
    ) -> None:
        """A path's first load into a new database, then its re-load: the table must not change."""
        database = self.database(only)
        state: dict[str, tuple[int, str]] = {}

        def first(child: Child) -> str:
            state["first"] = table_state(database, "accounts")
            count = state["first"][0]
            assert count == self.rows, f"{count} rows in accounts, expected {self.rows}"
            return f"ok: {self.rows:,} inserted" + (extra(database) if extra else "")

        def again(child: Child) -> str:
            after = table_state(database, "accounts")
            assert after == state.get("first"), f"re-load changed the table: {state.get('first')} -> {after}"
            return f"ok: {unchanged}, table identical"

        if self.from_child(only, first_label, self.child(only, database), first).ok:
            reload = self.child(only, database, True, f"{only}_reload")
            self.from_child(f"{only}_reload", f"{name}, re-load", reload, again)
        else:
            self.report.notes.append(f"{name} re-load not run: the first load failed")
        self.done_with(database)

    def dlt(self) -> None:
        python = self.dlt_python
        if not python:
            self.report.notes.append(DLT_MISSING)
            return
        database = self.database("dlt")
        dsn = (
            f"postgresql://{PG_USER}:{os.environ.get('PGPASSWORD') or 'trust'}@{PG_HOST}:{PG_PORT}/{database}"
        )
        env = {**os.environ, "RUNTIME__DLTHUB_TELEMETRY": "false", "RUNTIME__LOG_LEVEL": "WARNING"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))

        def run(name: str) -> Child:
            quiesce()
            argv = [
                python,
                "-m",
                "benchmarks.dlt_peer",
                "--file",
                str(self.file),
                "--dsn",
                dsn,
                "--pipelines-dir",
                str(self.work / "dlt_pipelines"),
            ]
            return run_child(argv, self.work, name, env, self.cap_mb)

        def check(child: Child) -> str:
            count = int(psql(database, "SELECT count(*) FROM dlt_bench.companies"))
            assert count == self.rows, f"{count} rows in dlt_bench.companies, expected {self.rows}"
            return f"ok: {count:,} rows ({child.result.get('source', '?')}, {child.result.get('dlt', '?')})"

        if self.from_child("dlt", "dlt merge, first load", run("dlt"), check).ok:
            self.from_child("dlt_reload", "dlt merge, re-load", run("dlt_reload"), check)
        else:
            self.report.notes.append("dlt re-load not run: the first load failed")
        self.done_with(database)

    def floor(self) -> None:
        database = self.database("floor")
        expected = min(FLOOR_ROWS, self.rows)

        def check(_: Child) -> str:
            count = int(psql(database, "SELECT count(*) FROM companies_floor"))
            assert count == expected, f"{count} rows in companies_floor, expected {expected}"
            return f"ok: {count:,} rows"

        self.from_child(
            "floor",
            f"SQLAlchemy executemany, {expected // 1000}k rows, keyed",
            self.child("floor", database),
            check,
            expected,
        )

    def run(self, with_dlt: bool) -> Report:
        try:
            for round_ in range(self.repeat):  # COPY, load and flow interleaved, round by round
                self.round = round_
                if self.repeat > 1:
                    log(f"round {self.round + 1} of {self.repeat}")
                self.copy()
                self.load()
                self.flow()
                if self.modes:  # each round too: a ratio between modes needs their medians
                    run_modes(self, self.modes)
            self.round = 0
            self.report.measured = medians(self.report.measured)
            if with_dlt:
                self.dlt()
            else:
                self.report.notes.append("dlt: skipped (--no-dlt)")
            self.floor()
        finally:
            self.close()
        return self.report
