"""The parent side: the paths, each in child processes and databases of its own, round by round."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

from benchmarks.load.children import Child, psql, psql_argv, quiesce, run_child, table_state
from benchmarks.load.common import DLT_MISSING, EXECUTEMANY_ROWS, PG_HOST, PG_PORT, PG_USER, ROOT, log
from benchmarks.load.delta import Delta
from benchmarks.load.deltafile import cached_delta
from benchmarks.load.floor import keyed_floor
from benchmarks.load.generator import cached_file
from benchmarks.load.modes import run_modes
from benchmarks.load.report import Measured, Report, medians
from etl_assets.samples import COMPANY_COLUMNS


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
        self.delta = Delta(self, *cached_delta(rows))
        self.report = Report(rows, self.file, self.facts, psql("postgres", "SHOW server_version"))
        self.report.delta_facts = self.delta.facts

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

    def prepare(self) -> None:
        """Extract + transform of both deliveries for the load step, the delta's fresh load (not timed)."""
        log("preparing the transform output for the load step (extract + transform, not timed)")
        prepared = self.child("prepare", "postgres")
        if prepared.error:
            self.report.notes.append(f"load step not measured: prepare failed: {prepared.error}")
            return
        log("preparing the daily delta (its transform output, a fresh load to compare with; not timed)")
        self.delta.prepare()

    def load(self) -> None:
        if not (self.work / "prepare_home").exists():
            return
        label = "load step (load_stage), first load"
        self.first_and_reload("load", label, "load step", "all unchanged", then=self.delta.run)

    def flow(self) -> None:
        parents = self.facts["parents"]

        def linked(database: str) -> str:
            count = int(psql(database, "SELECT count(parent_account_id) FROM accounts"))
            assert count == parents, f"{count} parents linked, expected {parents}"
            return f", {count:,} parents linked"

        first_label = "whole flow (extract>transform>load>link), first"
        unchanged = "load+link all unchanged"
        self.first_and_reload("flow", first_label, "whole flow", unchanged, linked, self.delta.run)

    def first_and_reload(
        self,
        only: str,
        first_label: str,
        name: str,
        unchanged: str,
        extra: Callable[[str], str] | None = None,
        then: Callable[[str, str], None] | None = None,
    ) -> None:
        """A path's first load into a new database, then its re-load: the table must not change;
        then ``then(only, database)`` (the daily delta) on the table they left."""
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
            if self.from_child(f"{only}_reload", f"{name}, re-load", reload, again).ok and then:
                then(only, database)
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

        def run(name: str, file: Path) -> Child:
            quiesce()
            argv = [
                python,
                "-m",
                "benchmarks.dlt_peer",
                "--file",
                str(file),
                "--dsn",
                dsn,
                "--pipelines-dir",
                str(self.work / "dlt_pipelines"),
            ]
            return run_child(argv, self.work, name, env, self.cap_mb)

        def checker(expected: int) -> Callable[[Child], str]:
            def check(child: Child) -> str:
                count = int(psql(database, "SELECT count(*) FROM dlt_bench.companies"))
                assert count == expected, f"{count} rows in dlt_bench.companies, expected {expected}"
                peer = f"{child.result.get('source', '?')}, {child.result.get('dlt', '?')}"
                return f"ok: {count:,} rows ({peer})"

            return check

        if self.from_child("dlt", "dlt merge, first load", run("dlt", self.file), checker(self.rows)).ok:
            # merge keeps the keys the delta lacks: the table holds the first file's rows and the new
            delta, facts = self.delta.file, self.delta.facts
            expected = self.rows + facts["new"]
            self.from_child("dlt_delta", "dlt merge, daily delta", run("dlt_delta", delta), checker(expected))
        else:
            self.report.notes.append("dlt delta not run: the first load failed")
        self.done_with(database)

    def executemany(self) -> None:
        database = self.database("executemany")
        expected = min(EXECUTEMANY_ROWS, self.rows)

        def check(_: Child) -> str:
            count = int(psql(database, "SELECT count(*) FROM companies_executemany"))
            assert count == expected, f"{count} rows in companies_executemany, expected {expected}"
            return f"ok: {count:,} rows"

        self.from_child(
            "executemany",
            f"SQLAlchemy executemany, {expected // 1000}k rows, keyed",
            self.child("executemany", database),
            check,
            expected,
        )

    def run(self, with_dlt: bool) -> Report:
        try:
            self.prepare()
            for round_ in range(self.repeat):  # COPY, floor, load and flow interleaved, round by round
                self.round = round_
                if self.repeat > 1:
                    log(f"round {self.round + 1} of {self.repeat}")
                self.copy()
                keyed_floor(self)
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
            self.executemany()
        finally:
            self.close()
        return self.report
