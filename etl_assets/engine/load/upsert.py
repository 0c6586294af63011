"""load: one transaction per partition, an idempotent upsert, a response frame.

Rows go to a temporary staging table (PostgreSQL: COPY), then one
``INSERT ... SELECT ... ON CONFLICT (key) DO UPDATE ... WHERE <something changed>``
moves them. Keys that existed before and came back from RETURNING were updated; keys
that did not exist were inserted; the rest were unchanged.

Speed (issue 5): keys not in the table are COPYed straight into it with ids taken from
its sequence (no second lookup); rows whose hash matches the stored one are not sent at
all; a first load into an empty table drops and rebuilds the indexes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path

import polars as pl
import sqlalchemy as sa

from etl_assets.engine.columns import ERROR_FIELD, ERROR_REASON, LINE, SOURCE_FILE
from etl_assets.engine.load.fits import TargetFit
from etl_assets.engine.load.ids import drop_indexes, next_ids, reserve_ids
from etl_assets.engine.load.lookup import ExistingRows
from etl_assets.engine.load.refusals import RowRefusedInBulk, database_errors, database_message, row_fault
from etl_assets.engine.load.response import (
    ACTIONS,
    RESPONSE_SCHEMA,
    Outcome,
    in_order,
    refused_answer,
    respond,
)
from etl_assets.engine.load.sql import dialect_insert, fetch_frame, pg, stage_rows
from etl_assets.engine.load.table_snapshot import TableSnapshot, load_tags, opened
from etl_assets.engine.staging import StagedWriter, count_rows, read_batches
from etl_assets.engine.tables import (
    ETL_LOADED_AT,
    ETL_OBJECT_ID,
    ETL_ROW_HASH,
    ETL_SOURCE_FILE,
    ETL_SOURCE_LINE,
    ID,
    column_types,
    ensure_table,
)
from etl_assets.model.flow import FlowModel

INITIAL_LOAD_MIN_ROWS = 10_000
INDEX_BUILD_MEMORY = "256MB"
FIRST_LOAD_STATISTICS = 20  # ANALYZE samples 300 rows per unit: 6,000 rows
ROW_HASH_SEED = 20250101
LOAD_BATCH_ROWS = 200_000  # rows a round of look-up, COPY and upsert (row groups joined)
WRITTEN_SCHEMA = {"key": pl.String, "_written_id": pl.Int64}


def load_stage(
    conn: sa.Connection,
    flow: FlowModel,
    good_path: Path,
    response: StagedWriter,
    bulk: bool = True,
    object_id: int | None = None,
    load: PartitionUpsert | None = None,
) -> Outcome:
    """Upsert ``transform.parquet`` a batch at a time inside the caller's transaction; the
    response frame goes to ``response`` batch for batch (so link can read both in step).
    ``load`` is another mode's loader (engine/load/modes.py), an upsert's by default.

    A value the target's columns cannot hold is rejected before it is sent (``TargetFit``);
    a row the database still refuses (a constraint or trigger of the client's) is found by
    halving its batch inside savepoints and rejected with the database's message."""
    if load is None:
        load = PartitionUpsert(
            conn, flow, expected_rows=count_rows(good_path), bulk=bulk, object_id=object_id
        )
    load.snapshot = opened(conn, flow, load.table, good_path, load.locked and load.empty)
    fit = TargetFit.read(conn, flow)
    outcome = Outcome(dict.fromkeys(ACTIONS, 0), column_types=column_types(load.table, conn.dialect))
    for answer in _fitted(load, fit, read_batches(good_path, min_rows=LOAD_BATCH_ROWS)):
        response.write(answer)
        outcome.add(answer)
    load.finish()
    outcome.after_commit = load.snapshot.close()
    outcome.lookup, outcome.snapshot = load.snapshot.kind, load.snapshot.built
    response.tags.update(load_tags(load.snapshot))  # for the link after it (link/link_snapshot)
    return outcome


def _fitted(load: PartitionUpsert, fit: TargetFit, batches: Iterable[pl.DataFrame]) -> Iterator[pl.DataFrame]:
    """Each batch's answer, in the batch's row order (link reads it in step with
    ``transform.parquet``): the rows that do not fit rejected, the others loaded."""
    pending: list[tuple[pl.Series, pl.DataFrame]] = []  # a batch's lines and its refused rows

    def fitting() -> Iterator[pl.DataFrame]:
        for good in batches:
            fits, refused = fit.split(load.flow, good)
            # only the refused rows prepared here: preparing (hashing) the batch is the loader's work
            unfit = good.join(refused.select(LINE), on=LINE, how="semi")
            pending.append((good.get_column(LINE), refused_answer(load.prepare(unfit), refused)))
            yield fits

    if not load.rebuild:
        for fits in fitting():
            loaded = load.settled(fits)
            yield in_order(*pending.pop(), loaded)
        return
    try:
        for loaded in load.bulk(fitting()):
            yield in_order(*pending.pop(0), loaded)
    except database_errors() as exc:
        if row_fault(exc):
            raise RowRefusedInBulk(database_message(exc)) from exc
        raise


def upsert_partition(conn: sa.Connection, flow: FlowModel, good: pl.DataFrame) -> pl.DataFrame:
    """Upsert ``good`` (the transform output) in one batch and return the response frame."""
    load = PartitionUpsert(conn, flow, expected_rows=good.height)
    response = load.batch(good)
    load.finish()
    return response


class PartitionUpsert:
    """One partition's upsert inside the caller's transaction, a batch at a time.

    A first load into an empty PostgreSQL table (at least ``INITIAL_LOAD_MIN_ROWS`` rows)
    takes the table's lock, drops its indexes, COPYs and builds the indexes again at
    ``finish``: building an index once is several times cheaper than maintaining it row by
    row. Its transaction still holds everything: a failure leaves the table as it was.
    """

    def __init__(
        self,
        conn: sa.Connection,
        flow: FlowModel,
        expected_rows: int,
        bulk: bool = True,
        object_id: int | None = None,
    ) -> None:
        self.conn = conn
        self.flow = flow
        self.object_id = object_id
        self.table = ensure_table(conn, flow)
        self.now = datetime.now().replace(microsecond=0)
        self.postgres = conn.dialect.name == "postgresql"
        self.empty = self.postgres and _is_empty(conn, self.table)
        self.expected_rows = expected_rows
        self.rebuild: list[str] = []
        self.lookup: ExistingRows | None = None
        self.snapshot = TableSnapshot()  # a re-load's look-up without the server (load_stage's)
        self.locked = self.empty and expected_rows >= INITIAL_LOAD_MIN_ROWS
        if self.locked:
            conn.exec_driver_sql(f'LOCK TABLE "{self.table.name}" IN ACCESS EXCLUSIVE MODE')
            self.empty = _is_empty(conn, self.table)
            if self.empty and bulk:
                self.rebuild = drop_indexes(conn, self.table.name)

    @property
    def columns(self) -> list[str]:
        return list(self.flow.map) + [
            ETL_ROW_HASH,
            ETL_SOURCE_FILE,
            ETL_SOURCE_LINE,
            ETL_LOADED_AT,
            ETL_OBJECT_ID,
        ]

    def prepare(self, good: pl.DataFrame) -> pl.DataFrame:
        """Transform output with the load's own columns (source, time, row hash, key)."""
        return good.with_columns(
            pl.col(SOURCE_FILE).alias(ETL_SOURCE_FILE),
            pl.col(LINE).alias(ETL_SOURCE_LINE),
            pl.lit(self.now).alias(ETL_LOADED_AT),
            pl.lit(self.object_id, pl.Int64).alias(ETL_OBJECT_ID),
            row_hash(list(self.flow.map)).alias(ETL_ROW_HASH),
            pl.col(self.flow.target.key).cast(pl.String).alias("key"),
        )

    def batch(self, good: pl.DataFrame) -> pl.DataFrame:
        """Upsert one batch of transform output; its response frame."""
        frame = self.prepare(good)
        if self.empty:
            # nothing to compare with: no lookup of existing keys (transform made keys unique)
            keyed = frame.with_columns(
                pl.lit(None, pl.Int64).alias("_before_id"), pl.lit(False).alias("_unchanged")
            )
        else:
            keyed = frame.hstack(self.existing(frame).get_columns())
        new = keyed.filter(pl.col("_before_id").is_null())
        # Rows whose hash matches the stored one cannot have changed: they are not sent again
        # (a re-load of an unchanged file writes nothing). The UPDATE's own comparison of every
        # column stays the judge of what changed.
        candidates = keyed.filter(pl.col("_before_id").is_not_null() & ~pl.col("_unchanged"))
        written = [pl.DataFrame(schema=WRITTEN_SCHEMA)]
        if new.height and self.postgres:
            inserted = self._copy_new(new)
            if inserted is None:
                candidates = pl.concat([new, candidates])
            else:
                written.append(inserted)
        elif new.height:
            candidates = pl.concat([new, candidates])
        if candidates.height:
            written.append(self._upsert(candidates))
        return respond(keyed, pl.concat(written))

    @property
    def analyzed(self) -> set[str]:
        """The columns a first load's ANALYZE samples: those the next loads and links join on."""
        own = (link.match for link in self.flow.links if link.table == self.flow.target.table)
        return {ID, self.flow.target.key, *own}

    @property
    def current(self) -> tuple[sa.ColumnElement, ...]:
        """What keeps a target row among those a key can write over (all of them here)."""
        return ()

    def existing(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Each prepared row's id in the target (null: a new key) and whether its stored hash
        is the row's, in the frame's order (``lookup.FOUND_SCHEMA``)."""
        return self.snapshot.lookup(frame, self._lookup())

    def _lookup(self) -> ExistingRows:
        if self.lookup is None:
            self.lookup = ExistingRows(self.conn, self.table, self.flow.target.key, self.current)
        return self.lookup

    def settled(self, good: pl.DataFrame) -> pl.DataFrame:
        """``batch`` in a savepoint; should the database refuse a row of it, the batch is
        halved, each half in a savepoint of its own, until the refused rows stand alone:
        they are rejected with the database's message and the others land. k refused rows
        of n cost about k * log2(n) more rounds, paid only when a row is refused."""
        if not self.postgres or good.height == 0:
            return self.batch(good)
        if not (self.empty or self.snapshot.valid):
            self._lookup().ready()  # its temporary table made outside the savepoint
        try:
            with self.conn.begin_nested():
                return self.batch(good)
        except database_errors() as exc:
            if not row_fault(exc):
                raise
            self.snapshot.lost()
            if good.height == 1:
                reason = f"refused by the database: {database_message(exc)}"
                refused = good.select(LINE).with_columns(
                    pl.lit(None, pl.String).alias(ERROR_FIELD), pl.lit(reason).alias(ERROR_REASON)
                )
                return refused_answer(self.prepare(good), refused)
            half = good.height // 2
            return pl.concat(
                [self.settled(good.head(half)), self.settled(good.slice(half))], how="diagonal_relaxed"
            )

    def bulk(self, batches: Iterable[pl.DataFrame]) -> Iterator[pl.DataFrame]:
        """A first load (empty table, indexes dropped): every row is new, so one COPY takes
        the whole partition, with ids from one block of the sequence; the response of each
        batch is known without asking the database."""
        next_id = reserve_ids(self.conn, self.table, self.expected_rows)
        last = next_id + self.expected_rows
        with pg().copy_in(self.conn, self.table, [ID, *self.columns]) as write:
            for good in batches:
                if next_id + good.height > last:
                    raise ValueError(f"more rows than the {self.expected_rows} the load was sized for")
                rows = self.prepare(good).with_columns(
                    pl.int_range(next_id, next_id + good.height, dtype=pl.Int64).alias(ID)
                )
                next_id += good.height
                write(rows)
                self.snapshot.wrote(rows, statements=0)  # the one COPY counted at its end
                yield rows.select(
                    LINE,
                    "key",
                    pl.col(ID).alias("target_id"),
                    pl.lit("inserted").alias("action"),
                    pl.lit(None, pl.String).alias("reason"),
                ).cast(RESPONSE_SCHEMA)
        self.snapshot.wrote(pl.DataFrame(), statements=1)

    def _copy_new(self, new: pl.DataFrame) -> pl.DataFrame | None:
        """COPY keys that were not in the table straight into it, with ids taken from the
        table's sequence; None when another writer inserted one of them meanwhile."""
        ids = next_ids(self.conn, self.table, new.height, locked=self.locked)
        rows = new.with_columns(ids.alias(ID))
        if self.rebuild:  # locked, no unique index to trip on: nobody else can write
            pg().copy_rows(self.conn, self.table, rows, [ID, *self.columns])
        elif not _copy_new_rows(self.conn, self.table, rows, [ID, *self.columns]):
            return None
        self.snapshot.wrote(rows)
        return rows.select("key", pl.col(ID).alias("_written_id"))

    def _upsert(self, candidates: pl.DataFrame) -> pl.DataFrame:
        """``INSERT ... ON CONFLICT DO UPDATE WHERE <something changed>`` from a staging table."""
        table, key, columns = self.table, self.flow.target.key, self.columns
        staging = stage_rows(self.conn, candidates, table, columns)
        try:
            insert = dialect_insert(self.conn)(table).from_select(
                columns, sa.select(*(staging.c[c] for c in columns)).where(sa.true())
            )
            changed = sa.or_(
                *(table.c[c].is_distinct_from(insert.excluded[c]) for c in self.flow.map if c != key)
            )
            latest = self.flow.dedupe.latest_by
            if latest:  # partitions may load out of order (a backfill's chunks): the latest row wins
                changed = sa.and_(
                    changed, sa.or_(table.c[latest].is_(None), insert.excluded[latest] >= table.c[latest])
                )
            upsert = insert.on_conflict_do_update(
                index_elements=[key],
                set_={c: insert.excluded[c] for c in columns if c != key},
                where=changed,
            ).returning(sa.cast(table.c[key], sa.Text), table.c[ID])
            written = fetch_frame(self.conn, upsert, WRITTEN_SCHEMA)
            refresh = candidates.height > written.height
            if refresh:
                self._refresh_hashes(staging)
            self.snapshot.read_back(
                staging, statements=2 + refresh
            )  # ON CONFLICT fires INSERT's and UPDATE's
            return written
        finally:
            staging.drop(self.conn)

    def _refresh_hashes(self, staging: sa.Table) -> None:
        """Store the new hash of rows the upsert found unchanged though their stored hash
        differed (written by another version of the hash): the next re-load skips them
        again without comparing. Rows it updated carry the new hash already."""
        table = self.table
        update = (
            sa.update(table)
            .where(table.c[self.flow.target.key] == staging.c[self.flow.target.key])
            .where(table.c[ETL_ROW_HASH].is_distinct_from(staging.c[ETL_ROW_HASH]))
        )
        latest = self.flow.dedupe.latest_by
        if latest:  # an older row left unwritten is not the stored row: its hash is not the row's
            update = update.where(table.c[latest].is_not_distinct_from(staging.c[latest]))
        self.conn.execute(update.values({ETL_ROW_HASH: staging.c[ETL_ROW_HASH]}))

    def finish(self) -> None:
        """Build the indexes a first load dropped (a duplicate key fails here, and the
        transaction with it); fresh statistics for the link step's joins."""
        if self.rebuild:
            # sorting a partition's keys in memory, not in temporary files (this transaction only)
            self.conn.exec_driver_sql(f"SET LOCAL maintenance_work_mem = '{INDEX_BUILD_MEMORY}'")
        for statement in self.rebuild:
            self.conn.exec_driver_sql(statement)
        if self.rebuild:
            # the columns the link step joins on, from a small sample: the link's plans need
            # row counts and how distinct the keys are, not fine histograms (0.02 s against
            # 0.15 s at 1M rows); autovacuum analyzes the whole table after the commit
            columns = ", ".join(f'"{c}"' for c in sorted(self.analyzed))
            self.conn.exec_driver_sql(f"SET LOCAL default_statistics_target = {FIRST_LOAD_STATISTICS}")
            self.conn.exec_driver_sql(f'ANALYZE "{self.table.name}" ({columns})')
        self.rebuild = []


def _is_empty(conn: sa.Connection, table: sa.Table) -> bool:
    return conn.exec_driver_sql(f'SELECT NOT EXISTS (SELECT 1 FROM "{table.name}")').scalar_one()


def _copy_new_rows(conn: sa.Connection, table: sa.Table, new: pl.DataFrame, columns: list[str]) -> bool:
    """COPY rows in a savepoint; False when another writer inserted one of their keys
    meanwhile (the upsert then handles them)."""
    from psycopg.errors import UniqueViolation  # PostgreSQL only, like pg()

    try:
        with conn.begin_nested():
            pg().copy_rows(conn, table, new, columns)
    except UniqueViolation:
        return False
    return True


def row_hash(columns: list[str]) -> pl.Expr:
    """A fingerprint of a row's typed values (a pre-filter only: equal values, equal hash).

    Polars hashes each value natively (ten times cheaper than hashing a text rendering of
    the row). A hash from another Polars version only costs a comparison in the upsert,
    which then stores the new one (``_refresh_hashes``).
    """
    return pl.struct(columns).hash(seed=ROW_HASH_SEED).reinterpret(signed=True)
