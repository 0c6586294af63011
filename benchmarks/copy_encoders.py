"""Our binary COPY encoder against the libraries' (issue 23): keep ours only if it is faster.

The same prepared frame (the companies flow's transform output with the load's own columns, as
``PartitionUpsert.prepare`` makes it, ids included) goes into an empty ``accounts`` with its
indexes dropped (what a first load COPYs into), a fresh database a path and round:

- ours: ``pgcopy.copy_rows`` (``pgbinary``'s vectorised encoder, sent from a thread);
- adbc: ``adbc_ingest(mode="append")`` of the frame's Arrow table (the C++ driver's encoder);
- psycopg_rows: psycopg 3's binary COPY of Python rows (``set_types`` + ``write_row``) on the first
  ``--psycopg-rows`` rows, its time scaled to ``--rows``;
- psql_typed: ``psql \\copy`` of the frame as CSV into the same table (the server parses text);
- psql_text: ``psql \\copy`` of the generated file into an unindexed text table (the reference of
  ``benchmarks.load``).

Rounds are interleaved, each path's median shown. Every typed path's table must equal ours:
md5 of the rows as text, ordered by id (psycopg's on its slice). Last line::

    ours_s=<x> adbc_s=<x> psycopg_rows_s=<x> adbc_vs_ours=<x>

``adbc_vs_ours`` is ADBC's time over ours (above 1: ours faster). Exit status 1 when a check failed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl

from benchmarks.load.common import PG_HOST, PG_PORT, PG_USER, log
from benchmarks.load.generator import cached_file
from benchmarks.load.paths import _engine, companies_flow, prepared_stage, work_prepare
from benchmarks.load.runner import psql, psql_argv, quiesce

PATHS = ("ours", "adbc", "psycopg_rows", "psql_typed", "psql_text")
RAW_COLUMNS = 14  # of the generated file


class Bench:
    """The prepared frame, its CSV, and one fresh database a measured run."""

    def __init__(self, rows: int, psycopg_rows: int, work: Path) -> None:
        self.rows, self.psycopg_slice, self.work = rows, min(psycopg_rows, rows), work
        self.file, _ = cached_file(rows)
        self.runs = 0
        self.flow = companies_flow()
        log("extract + transform (not timed)")
        work_prepare(argparse.Namespace(work=str(work), file=str(self.file), delta=False))
        good = pl.read_parquet(prepared_stage(work).file("transform.parquet"))
        self.frame, self.table, self.columns = self._prepared(good)
        self.csv = work / "prepared.csv"
        # the CSV pgcopy sends when a column has no binary encoder
        self.frame.write_csv(
            self.csv, include_header=False, null_value="\\N", datetime_format="%Y-%m-%dT%H:%M:%S%.f"
        )

    def _prepared(self, good: pl.DataFrame) -> tuple[pl.DataFrame, object, list[str]]:
        """The frame the load's first load COPYs: ``prepare``'s columns and one block of ids."""
        from etl_assets.engine.load.upsert import PartitionUpsert
        from etl_assets.engine.tables import ID

        database = self.database()
        with _engine(database).begin() as conn:
            load = PartitionUpsert(conn, self.flow, expected_rows=0, bulk=False, object_id=1)
            columns = [ID, *load.columns]
            frame = load.prepare(good).with_columns(
                pl.int_range(1, good.height + 1, dtype=pl.Int64).alias(ID)
            )
            table = load.table
        self.drop(database)
        return frame.select(columns), table, columns

    def database(self) -> str:
        self.runs += 1
        name = f"etl_bench_copyenc_{os.getpid()}_{self.runs}"  # beside another run of this benchmark
        psql("postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        psql("postgres", f"CREATE DATABASE {name}")
        return name

    @staticmethod
    def drop(database: str) -> None:
        psql("postgres", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")

    def accounts(self) -> str:
        """A fresh database with ``accounts`` as the load makes it, its indexes dropped."""
        from etl_assets.engine.load.ids import drop_indexes
        from etl_assets.engine.tables import ensure_table

        database = self.database()
        engine = _engine(database)
        with engine.begin() as conn:
            drop_indexes(conn, ensure_table(conn, self.flow).name)
        engine.dispose()
        return database

    # -- the paths: each returns (seconds, rows written, database left to check) -------------
    def ours(self) -> tuple[float, int, str]:
        from etl_assets.engine.load.postgres import pgcopy

        database = self.accounts()
        engine = _engine(database)
        quiesce()
        started = time.perf_counter()
        with engine.begin() as conn:
            pgcopy.copy_rows(conn, self.table, self.frame, self.columns)
        seconds = time.perf_counter() - started
        engine.dispose()
        return seconds, self.rows, database

    def adbc(self) -> tuple[float, int, str]:
        import adbc_driver_postgresql.dbapi as adbc

        database = self.accounts()
        quiesce()
        started = time.perf_counter()
        with adbc.connect(_uri(database)) as conn:
            with conn.cursor() as cursor:
                cursor.adbc_ingest("accounts", self.frame.to_arrow(), mode="append")
            conn.commit()
        return time.perf_counter() - started, self.rows, database

    def psycopg_rows(self) -> tuple[float, int, str]:
        import psycopg
        from psycopg import sql
        from sqlalchemy.dialects import postgresql

        from etl_assets.engine.tables import column_types

        database = self.accounts()
        sliced = self.frame.head(self.psycopg_slice)
        kinds = column_types(self.table, postgresql.dialect())  # NUMERIC(18, 2), TIMESTAMP WITHOUT ...
        types = [kinds[c].split("(")[0].split(" ")[0].lower() for c in self.columns]
        statement = sql.SQL("COPY accounts ({}) FROM STDIN WITH (FORMAT binary)").format(
            sql.SQL(", ").join(map(sql.Identifier, self.columns))
        )
        quiesce()
        started = time.perf_counter()
        with (
            psycopg.connect(_uri(database)) as conn,
            conn.cursor() as cursor,
            cursor.copy(statement) as copy,
        ):
            copy.set_types(types)
            for row in sliced.iter_rows():
                copy.write_row(row)
        return time.perf_counter() - started, sliced.height, database

    def psql_typed(self) -> tuple[float, int, str]:
        database = self.accounts()
        columns = ", ".join(self.columns)
        command = f"\\copy accounts ({columns}) FROM '{self.csv}' WITH (FORMAT csv, NULL '\\N')"
        return self._psql(database, command), self.rows, database

    def psql_text(self) -> tuple[float, int, str]:
        database = self.database()
        psql(database, f"CREATE TABLE companies_raw ({', '.join(f'c{i} text' for i in range(RAW_COLUMNS))})")
        command = (
            f"\\copy companies_raw FROM '{self.file}' WITH (FORMAT csv, DELIMITER ';', HEADER true, "
            "ENCODING 'UTF8')"
        )
        return self._psql(database, command), self.rows, database

    @staticmethod
    def _psql(database: str, command: str) -> float:
        quiesce()
        started = time.perf_counter()
        subprocess.run([*psql_argv(database), "-qc", command], check=True, capture_output=True)
        return time.perf_counter() - started


def _uri(database: str) -> str:
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


def checksum(database: str, table: str, rows: int) -> tuple[int, str]:
    """Rows and md5 of every column of the first ``rows`` ids as text, in id order."""
    count, digest = psql(
        database,
        f"SELECT count(*), md5(string_agg(t::text, E'\\n' ORDER BY id)) FROM {table} t WHERE id <= {rows}",
    ).split("|")
    return int(count), digest


def adbc_installed() -> bool:
    try:
        import adbc_driver_postgresql.dbapi  # noqa: F401
    except ImportError:
        return False
    return True


def measure(bench: Bench, repeat: int, paths: tuple[str, ...]) -> tuple[dict[str, list[float]], list[str]]:
    """Interleaved rounds; seconds for ``--rows`` rows per path, and every failed check."""
    seconds: dict[str, list[float]] = {p: [] for p in paths}
    failures: list[str] = []
    for round_ in range(repeat):
        reference: dict[int, str] = {}  # ours: md5 of the first n ids
        for path in paths:
            log(f"round {round_ + 1}: {path}")
            run: Callable[[], tuple[float, int, str]] = getattr(bench, path)
            took, written, database = run()
            seconds[path].append(took * bench.rows / written)
            if path != "psql_text":
                found = checksum(database, "accounts", written)
                if path == "ours":
                    reference = {written: found[1]}
                    reference[bench.psycopg_slice] = checksum(database, "accounts", bench.psycopg_slice)[1]
                if found[0] != written or found[1] != reference.get(written):
                    failures.append(f"round {round_ + 1} {path}: {found[0]} rows, md5 {found[1]} != ours")
            else:
                count = int(psql(database, "SELECT count(*) FROM companies_raw"))
                if count != bench.rows:
                    failures.append(f"round {round_ + 1} psql_text: {count} rows")
            bench.drop(database)
    return seconds, failures


WHAT = {
    "ours": "pgcopy.copy_rows (pgbinary, vectorised Arrow -> binary COPY)",
    "adbc": "ADBC adbc_ingest(mode=append) of frame.to_arrow()",
    "psycopg_rows": "psycopg 3 binary COPY, set_types + write_row (scaled)",
    "psql_typed": "psql \\copy of the frame's CSV into accounts",
    "psql_text": "psql \\copy of the file, unindexed text table (reference)",
}


def report(seconds: dict[str, list[float]], bench: Bench, failures: list[str]) -> str:
    """The table and the last line."""
    median = {p: statistics.median(s) for p, s in seconds.items() if s}
    ours = median.get("ours")
    lines = [
        f"binary COPY encoders: {bench.rows:,} rows x {len(bench.columns)} columns into accounts "
        f"(indexes dropped); psycopg_rows measured on {bench.psycopg_slice:,} rows",
        f"{'path':<13} {'median s':>9} {'rows/s':>10} {'time/ours':>9} {'vs COPY':>8}  rounds  what",
    ]
    reference = median.get("psql_text")
    for path, value in median.items():
        vs_ours = f"{value / ours:.2f}" if ours else "n/a"
        vs_copy = f"{reference / value:.2f}" if reference else "n/a"
        rounds = " ".join(f"{s:.2f}" for s in seconds[path])
        lines.append(
            f"{path:<13} {value:>9.2f} {bench.rows / value:>10,.0f} {vs_ours:>9} {vs_copy:>8}  "
            f"{rounds}  {WHAT[path]}"
        )
    checked = "checks: every typed path's md5 (rows as text, ordered by id) equals ours"
    lines += [f"FAILED: {f}" for f in failures] or [checked]

    def fmt(path: str) -> str:
        return f"{median[path]:.2f}" if path in median else "n/a"

    ratio = f"{median['adbc'] / ours:.2f}" if ours and "adbc" in median else "n/a"
    lines.append(
        f"ours_s={fmt('ours')} adbc_s={fmt('adbc')} psycopg_rows_s={fmt('psycopg_rows')} adbc_vs_ours={ratio}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--psycopg-rows", type=int, default=100_000, help="psycopg's slice (scaled)")
    args = parser.parse_args(argv)
    paths = PATHS if adbc_installed() else tuple(p for p in PATHS if p != "adbc")
    if "adbc" not in paths:
        print("adbc: not installed (pip install adbc-driver-postgresql adbc-driver-manager)")
    with tempfile.TemporaryDirectory(prefix="etl_bench_copyenc_") as work:
        bench = Bench(args.rows, args.psycopg_rows, Path(work))
        seconds, failures = measure(bench, args.repeat, paths)
    print(report(seconds, bench, failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
