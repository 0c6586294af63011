"""The keyed floor (issue 23): what PostgreSQL must do for any first load of ``accounts``.

The rows the load step would send (the prepared ``transform.parquet`` with the load's own
columns and ids, ``PartitionUpsert.prepare``), encoded beforehand by the project's binary COPY
encoder (``pgbinary``, in the column order ``pgcopy`` sends), are COPY'd into an empty
``accounts`` (``target_table`` of the companies flow) whose indexes were dropped, and the
indexes are built after, in one transaction, as the load step's first load does. Only the
COPY and the index builds are timed: the server's work, no client encoding. The load step's
first load against it is ``load_vs_floor``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

COPY_CHUNK_BYTES = 1 << 20
FLOOR_INDEXES = 3  # the primary key, the unique key, the index on the links' match value


def _encode(conn: Any, flow: Any, good_path: Path, out: Path) -> tuple[list[str], int]:
    """The load step's rows of ``good_path`` as binary COPY into ``out``: the columns, the rows."""
    import polars as pl

    from etl_assets.engine.load.postgres import pgbinary
    from etl_assets.engine.load.upsert import PartitionUpsert
    from etl_assets.engine.staging import count_rows, read_batches
    from etl_assets.engine.tables import ID

    rows = count_rows(good_path)
    load = PartitionUpsert(conn, flow, expected_rows=rows, bulk=False)  # for its prepare() only
    columns, encoders, next_id = [ID, *load.columns], None, 1
    with out.open("wb") as sink:
        sink.write(pgbinary.HEADER)
        for good in read_batches(good_path, min_rows=100_000):
            frame = load.prepare(good).with_columns(
                pl.int_range(next_id, next_id + good.height, dtype=pl.Int64).alias(ID)
            )
            next_id += good.height
            if encoders is None:  # as pgcopy's sink: the fixed-width columns first
                types = [load.table.c[c].type for c in columns]
                found = pgbinary.encoders_for(types, pl.Schema({c: frame.schema[c] for c in columns}))
                assert found, "a column of accounts has no binary encoder"
                order = pgbinary.fixed_width_first(found)
                columns, encoders = [columns[i] for i in order], [found[i] for i in order]
            sink.write(pgbinary.encode_rows(frame.select(columns), encoders))
        sink.write(pgbinary.TRAILER)
    return columns, rows


def work_keyed_floor(args: argparse.Namespace) -> dict[str, Any]:
    """Binary COPY of the prepared rows into an empty ``accounts``, its indexes built after."""
    from psycopg import sql

    from benchmarks.load.paths import _engine, companies_flow, prepared_stage
    from etl_assets.engine.load.ids import drop_indexes
    from etl_assets.engine.load.upsert import INDEX_BUILD_MEMORY
    from etl_assets.engine.tables import ensure_table

    flow = companies_flow()
    engine = _engine(args.db)
    encoded = Path(args.work) / "keyed_floor.pgcopy"
    with engine.begin() as conn:  # setup, not timed: the table, its indexes dropped, the bytes
        table = ensure_table(conn, flow)
        rebuild = drop_indexes(conn, table.name)
        good = prepared_stage(Path(args.work)).file("transform.parquet")
        columns, rows = _encode(conn, flow, good, encoded)
    statement = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT binary)").format(
        sql.Identifier(table.name), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    started = time.perf_counter()
    with engine.begin() as conn:
        driver = conn.connection.driver_connection
        with driver.cursor() as cursor, cursor.copy(statement) as copy, encoded.open("rb") as source:
            while chunk := source.read(COPY_CHUNK_BYTES):
                copy.write(chunk)
        copied = time.perf_counter()
        conn.exec_driver_sql(f"SET LOCAL maintenance_work_mem = '{INDEX_BUILD_MEMORY}'")
        for index in rebuild:
            conn.exec_driver_sql(index)
    done = time.perf_counter()
    encoded.unlink()
    return {
        "seconds": done - started,
        "rows": rows,
        "copy_seconds": copied - started,
        "index_seconds": done - copied,
        "indexes": len(rebuild),
    }


def keyed_floor(bench: Any) -> None:
    """The parent side: the floor in a database of its own, checked for its rows and indexes."""
    from benchmarks.load.children import psql

    if not (bench.work / "prepare_home").exists():
        bench.report.notes.append("keyed floor not measured: the transform output was not prepared")
        return
    database = bench.database("keyed_floor")

    def check(child: Any) -> str:
        count = int(psql(database, "SELECT count(*) FROM accounts"))
        assert count == bench.rows, f"{count} rows in accounts, expected {bench.rows}"
        indexes = int(psql(database, "SELECT count(*) FROM pg_indexes WHERE tablename = 'accounts'"))
        assert indexes == FLOOR_INDEXES, f"{indexes} indexes on accounts, expected {FLOOR_INDEXES}"
        result = child.result
        return (
            f"ok: {count:,} rows, {indexes} indexes (COPY {result['copy_seconds']:.2f} s, "
            f"index builds {result['index_seconds']:.2f} s)"
        )

    label = "keyed floor: binary COPY into accounts + indexes"
    bench.from_child("keyed_floor", label, bench.child("keyed_floor", database), check)
    bench.done_with(database)
