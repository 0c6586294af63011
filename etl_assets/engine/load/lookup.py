"""The load's look-up of the rows a batch would write over: for each row of the batch, the
id of its key's row in the target (none: a new key) and whether the stored row hash is the
batch row's (then the row is not sent again).

Why this shape (issue 23): a re-load of a million unchanged rows used to read a million
(key, id, hash) rows into Python, one COPY message each (~3 s of the client's time). On
PostgreSQL each batch's keys and hashes now go by binary COPY into one temporary table of
the partition, the server compares the hashes, and one row of three arrays answers the
batch: its positions, ids and states, a few MB in one message, decoded by NumPy.
"""

from __future__ import annotations

import uuid

import polars as pl
import sqlalchemy as sa

from etl_assets.engine.load.sql import fetch_arrays, fetch_frame, pg, stage_rows, within_staged_range
from etl_assets.engine.tables import ETL_ROW_HASH, ID

BEFORE_SCHEMA = {"key": pl.String, "_before_id": pl.Int64, "_before_hash": pl.Int64}
FOUND_SCHEMA = {"_before_id": pl.Int64, "_unchanged": pl.Boolean}  # a batch's rows, in order
ORDINAL = "_ordinal"
NEW, UNCHANGED, CHANGED = 0, 1, 2  # a row's state as the server answers it


class ExistingRows:
    """One partition's look-ups in the target, a batch at a time; ``where`` keeps the rows
    that count (a history's current rows)."""

    def __init__(self, conn: sa.Connection, table: sa.Table, key: str, where: tuple = ()) -> None:
        self.conn, self.table, self.key, self.where = conn, table, key, where
        self.staging: sa.Table | None = None

    def ready(self) -> None:
        """The partition's temporary table, created once and outside any savepoint (a refused
        batch's savepoint rolled back must not take it along); dropped at the commit."""
        if self.staging is not None or self.conn.dialect.name != "postgresql":
            return
        self.staging = sa.Table(
            f"lookup_{uuid.uuid4().hex[:12]}",
            sa.MetaData(),
            sa.Column(self.key, self.table.c[self.key].type),
            sa.Column(ETL_ROW_HASH, self.table.c[ETL_ROW_HASH].type),
            sa.Column(ORDINAL, sa.Integer()),
            prefixes=["TEMPORARY"],
            postgresql_on_commit="DROP",
        )
        self.staging.create(self.conn)

    def __call__(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` (the key column and the row hash) -> ``FOUND_SCHEMA``, row for row."""
        if frame.height == 0:
            return pl.DataFrame(schema=FOUND_SCHEMA)
        if self.conn.dialect.name != "postgresql":
            return self._joined(frame)
        self.ready()
        staging = self.staging
        assert staging is not None
        name = self.conn.dialect.identifier_preparer.quote_identifier(staging.name)
        self.conn.exec_driver_sql(f"TRUNCATE {name}")
        rows = frame.select(self.key, ETL_ROW_HASH, pl.int_range(frame.height, dtype=pl.Int32).alias(ORDINAL))
        pg().copy_rows(self.conn, staging, rows, [self.key, ETL_ROW_HASH, ORDINAL])
        # a temporary table has no statistics: without them the join becomes a nested loop
        self.conn.exec_driver_sql(f"ANALYZE {name}")
        target = self.table
        state = sa.case(
            (target.c[ID].is_(None), NEW),
            (target.c[ETL_ROW_HASH].is_not_distinct_from(staging.c[ETL_ROW_HASH]), UNCHANGED),
            else_=CHANGED,
        )
        low, high = self.conn.execute(
            sa.select(sa.func.min(staging.c[self.key]), sa.func.max(staging.c[self.key]))
        ).one()
        on = sa.and_(
            target.c[self.key] == staging.c[self.key], target.c[self.key].between(low, high), *self.where
        )
        answer = sa.select(
            sa.func.array_agg(staging.c[ORDINAL]),
            sa.func.array_agg(sa.func.coalesce(target.c[ID], 0)),
            sa.func.array_agg(sa.cast(state, sa.SmallInteger)),
        ).select_from(staging.outerjoin(target, on))
        ordinals, ids, states = fetch_arrays(self.conn, answer)
        if len(ordinals) != frame.height:
            raise RuntimeError(f"the look-up answered {len(ordinals)} rows of {frame.height}")
        found = pl.DataFrame({"_id": ids, "_state": states, ORDINAL: ordinals}).sort(ORDINAL)
        return found.select(
            pl.when(pl.col("_state") != NEW).then(pl.col("_id")).alias("_before_id"),
            (pl.col("_state") == UNCHANGED).alias("_unchanged"),
        ).cast(FOUND_SCHEMA)

    def _joined(self, frame: pl.DataFrame) -> pl.DataFrame:
        """SQLite (dev): the matching rows read whole, joined to the batch here."""
        before = existing_rows(self.conn, self.table, self.key, frame.select(self.key), *self.where)
        keyed = frame.select(pl.col(self.key).cast(pl.String).alias("key"), ETL_ROW_HASH)
        return keyed.join(before, on="key", how="left", maintain_order="left").select(
            "_before_id",
            (
                pl.col("_before_id").is_not_null() & pl.col("_before_hash").eq_missing(pl.col(ETL_ROW_HASH))
            ).alias("_unchanged"),
        )


def existing_rows(
    conn: sa.Connection, table: sa.Table, key: str, keys: pl.DataFrame, *where: sa.ColumnElement
) -> pl.DataFrame:
    """``key -> id, row hash`` of the rows already in the target for these keys (those of
    them ``where`` keeps: a history's current rows)."""
    staging = stage_rows(conn, keys, table, [key])
    try:
        matched = (
            sa.select(sa.cast(table.c[key], sa.Text), table.c[ID], table.c[ETL_ROW_HASH])
            .join(staging, staging.c[key] == table.c[key])
            .where(*where)
        )
        return fetch_frame(
            conn, within_staged_range(conn, matched, table.c[key], staging.c[key]), BEFORE_SCHEMA
        )
    finally:
        staging.drop(conn)
