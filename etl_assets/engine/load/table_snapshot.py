"""A re-load's look-up without the server's join (issue 23, PostgreSQL, upsert mode).

Beside the staged files, ``data/<flow>/.table_snapshot/<table>.parquet`` holds the target's
``key -> (id, etl_row_hash)`` for the whole table (every partition of the flow shares it),
and the value V of the table's change counter it is true at. The counter is a sequence that
a statement-level trigger advances once per statement writing the table's key, id or hash
(ours, a client's, a rolled-back one: it is not transactional, so nothing
waits on it). A load whose counter reads V at its start joins its batches to the snapshot
here; any other value falls back to the server's join (``lookup.ExistingRows``).

The new snapshot is the old one plus the rows this load wrote, true at the counter's value
after our last write only if every value consumed since V was one of our statements (their
count is known; ``INSERT ... ON CONFLICT DO UPDATE`` fires two). Without a valid one to
start from (a first load, or after someone else wrote), the rows the load looked up and wrote
are the new one when nobody else was writing and they are all the table holds (its count);
else the whole table is read back (arrays by binary COPY: ~1.6 s at 1M rows, about half the
server joins it saves each later re-load), unless another writer is open then. The file is
written after the commit (temp + rename), if the counter has not moved since; a crash before
just means no snapshot next time. What makes it stale: a counter value nobody accounted for.
Known blind spot: writes that skip triggers (``session_replication_role = replica``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from etl_assets.engine.change_counter import counter, links_counter_name, quoted
from etl_assets.engine.load.lookup import FOUND_SCHEMA
from etl_assets.engine.load.sql import fetch_arrays, fetch_frame
from etl_assets.engine.tables import ETL_ROW_HASH, ID
from etl_assets.model.flow import FlowModel

SNAPSHOT_DIR = ".table_snapshot"
# tags of a load's response file (``load_tags``)
TABLE_TAG, WAS_EMPTY_TAG = "etl_table", "etl_table_was_empty"
COUNTER_FROM_TAG, COUNTER_TO_TAG = "etl_counter_from", "etl_counter_to"
LINKS_COUNTER_TAG = "etl_links_counter"
ROWS_SCHEMA = {"key": pl.String, ID: pl.Int64, ETL_ROW_HASH: pl.Int64}
# a writer of the table still in its transaction: what it wrote is not what we can read yet
WRITER_LOCKS = ("RowExclusiveLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock")
AfterCommit = Callable[[sa.Engine], None]
# a snapshot holds at most this many rows (~40 bytes each in memory, a few copies while it is
# updated): a larger table keeps the server's joins, so the load's memory stays bounded
# (at 10M rows the snapshots took the whole flow's peak to 2.4 GB)
MAX_ROWS = 2_000_000


def table_identity(conn: sa.Connection, table: str) -> str:
    """The database and the table's oid: a table dropped and made again is another table."""
    return conn.execute(
        sa.text("SELECT current_database() || ':' || to_regclass(:t)::oid"), {"t": quoted(conn, table)}
    ).scalar_one()


class TableSnapshot:
    """One load's use of the table's snapshot: the look-up while it is valid, the rows the
    load wrote, and the new snapshot handed out to be written after the commit."""

    def __init__(
        self,
        conn: sa.Connection | None = None,
        table: sa.Table | None = None,
        key: str = "",
        path: Path | None = None,
        *,
        empty: bool = False,
    ) -> None:
        self.conn, self.table, self.key, self.path = conn, table, key, path
        self.active = conn is not None
        self.base: pl.DataFrame | None = None
        self.written: list[pl.DataFrame] = []
        self.held = 0  # rows in ``written``
        self.oversized = False  # the table outgrew MAX_ROWS: no snapshot is kept for it
        self.proven = True
        self.build_seconds: float | None = None
        self.built = "none"  # how the new snapshot was made: kept, updated, the load's rows, read whole
        self.identity, self.start, self.expected = "", 0, 0
        self.moved: tuple[int, int] | None = None  # the counter from start to end by our statements alone
        self.empty = empty
        if conn is None or table is None or path is None:
            return
        self.identity = table_identity(conn, table.name)
        self.start = self.expected = counter(conn, table.name)
        # an empty table under the first load's lock: nobody's rows but ours will be in it
        self.base = pl.DataFrame(schema=ROWS_SCHEMA) if empty else self._read()
        # no valid snapshot: the rows this load looks up and writes may still be the whole table
        # (a single partition's flow), if nobody else was writing when it started
        self.quiet = self.base is None and not other_writers(conn, table.name)

    @property
    def kind(self) -> str:
        """How this load looks its rows up."""
        return "table snapshot" if self.valid else "server"

    @property
    def valid(self) -> bool:
        """Whether the batches' look-ups are answered here (no server join)."""
        return self.base is not None

    def _read(self) -> pl.DataFrame | None:
        assert self.path is not None
        try:
            footer = pq.read_metadata(self.path)  # what it is true at, and its size: one read
        except (FileNotFoundError, OSError):
            return None
        meta = footer.metadata or {}
        wanted = {b"identity": self.identity.encode(), b"counter": str(self.start).encode()}
        if any(meta.get(name) != value for name, value in wanted.items()):
            return None
        if footer.num_rows > MAX_ROWS:
            self.oversized = True
            return None
        rows = pl.read_parquet(self.path)
        return by_key(rows)

    def lookup(self, frame: pl.DataFrame, server: Callable[[pl.DataFrame], pl.DataFrame]) -> pl.DataFrame:
        """``ExistingRows``' answer (``FOUND_SCHEMA``, row for row) from the snapshot; without
        one, the ``server``'s, whose unchanged rows are then known: (key, id, our hash)."""
        if self.base is None:
            found = server(frame)
            if self.active and self.quiet:
                known = frame.select("key", ETL_ROW_HASH).hstack(found.get_columns())
                self.wrote(known.filter("_unchanged").rename({"_before_id": ID}), statements=0)
            return found
        keys = frame.get_column("key")
        # the snapshot is sorted by key: a batch of a file in key order (as ERPs write them) is
        # joined to its own range of it, not to the whole table (as the server's join does)
        first, last = (
            self.base.get_column("key").search_sorted(k, side)
            for k, side in ((keys.min(), "left"), (keys.max(), "right"))
        )
        return (
            frame.select("key", pl.col(ETL_ROW_HASH).alias("_hash"))
            .join(self.base.slice(first, last - first), on="key", how="left", maintain_order="left")
            .select(
                pl.col(ID).alias("_before_id"),
                (pl.col(ID).is_not_null() & pl.col(ETL_ROW_HASH).eq_missing(pl.col("_hash"))).alias(
                    "_unchanged"
                ),
            )
            .cast(FOUND_SCHEMA)
        )

    def wrote(self, rows: pl.DataFrame, statements: int = 1) -> None:
        """Rows (key, id, stored hash) our ``statements`` writing the table left there."""
        self.expected += statements
        if not self.active or not rows.height or self.oversized:
            return
        self.held += rows.height
        if self.held + (0 if self.base is None else self.base.height) > MAX_ROWS:
            self.oversized, self.written = True, []  # the look-ups go on; nothing more is held
            return
        self.written.append(rows.select(list(ROWS_SCHEMA)).cast(ROWS_SCHEMA))

    def read_back(self, staging: sa.Table, statements: int) -> None:
        """The staged keys' rows as stored after our ``statements`` (the stored hash is the
        upsert's and the hash refresh's to decide, not ours)."""
        if not self.active:
            return
        assert self.conn is not None and self.table is not None
        t, key = self.table, self.key
        query = sa.select(sa.cast(t.c[key], sa.Text), t.c[ID], t.c[ETL_ROW_HASH]).join(
            staging, staging.c[key] == t.c[key]
        )
        self.wrote(fetch_frame(self.conn, query, ROWS_SCHEMA), statements)

    def lost(self) -> None:
        """A statement of ours failed (a savepoint rolled back): what it counted is unknown."""
        self.proven = False

    def close(self) -> list[AfterCommit]:
        """After the load's last write, in its transaction: the new snapshot, to be written
        once the transaction committed (none if it cannot be proven)."""
        if not self.active:
            return []
        assert self.conn is not None and self.table is not None
        now = counter(self.conn, self.table.name)
        ours = self.proven and now == self.expected  # nobody's statements but ours since the start
        self.moved = (self.start, now) if ours else None
        if self.oversized:
            self.built = f"none: over {MAX_ROWS:,} rows"
            return [self._forget]
        if self.base is not None and ours:
            if not self.written and now == self.start:
                self.built = "kept"
                return []  # nothing written: the snapshot on disk is still true
            # both sorted by key: the rows written merged in, not the whole table sorted again
            news = by_key(pl.concat(self.written))
            kept = self.base.filter(~pl.col("key").is_in(news.get_column("key").implode()))
            rows = by_key(kept.merge_sorted(news, key="key"))
            self.built = "updated"
            return [self._writer(rows, now)]
        started = time.perf_counter()
        rows = self._rebuilt(now)
        self.build_seconds = time.perf_counter() - started
        return [self._writer(rows, now)] if rows is not None else [self._forget]

    def _rebuilt(self, now: int) -> pl.DataFrame | None:
        """The snapshot without one to start from: the rows this load looked up and wrote, when
        nobody else wrote since it started and they are all the table has; else read whole."""
        assert self.conn is not None and self.table is not None
        if self.quiet and self.proven and now == self.expected and self.written:
            known = by_key(pl.concat(self.written))
            count = self.conn.exec_driver_sql(f"SELECT count(*) FROM {quoted(self.conn, self.table.name)}")
            if count.scalar_one() == known.height:
                self.built = "the load's rows"
                return known
        rows = self._whole_table()
        self.built = "read whole" if rows is not None else "none"
        return rows

    def _whole_table(self) -> pl.DataFrame | None:
        """The whole table read back, true at the counter's value read just before, unless
        another writer is inside its transaction (what it wrote would be missing)."""
        assert self.conn is not None and self.table is not None
        if other_writers(self.conn, self.table.name) or estimated_rows(self.conn, self.table.name) > MAX_ROWS:
            return None
        rows = whole_table(self.conn, self.table.name, self.key)
        return rows if rows.height <= MAX_ROWS else None  # the estimate lags a table grown since ANALYZE

    def _writer(self, rows: pl.DataFrame, value: int) -> AfterCommit:
        def write(engine: sa.Engine) -> None:
            assert self.path is not None and self.table is not None
            with engine.connect() as conn:
                if counter(conn, self.table.name) != value:  # written over since: stale already
                    self._forget(engine)
                    return
            write_snapshot_file(
                self.path, by_key(rows).to_arrow(), {"identity": self.identity, "counter": str(value)}
            )

        return write

    def _forget(self, engine: sa.Engine | None = None) -> None:
        assert self.path is not None
        self.path.unlink(missing_ok=True)


def write_snapshot_file(path: Path, table: pa.Table, meta: dict[str, str]) -> None:
    """A snapshot file with what it is true at in its metadata, whole or not at all (temp + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tagged = table.replace_schema_metadata({k.encode(): v.encode() for k, v in meta.items()})
    # plain pages, uncompressed: keys and hashes hardly repeat or compress, and at 1M rows
    # the links snapshot wrote in 0.08 s instead of 0.15 s (lz4, dictionary) and read back in
    # 0.05 s instead of 0.16 s, for 27 MB instead of 17 MB
    pq.write_table(tagged, temporary, compression="none", use_dictionary=False)
    os.replace(temporary, path)


def load_tags(snapshot: TableSnapshot) -> dict[str, str]:
    """What the load's response file records of the table for the link after it (its own
    snapshot, engine/link/link_snapshot.py): the table, the change counter's move by this load's
    statements alone, whether the table was empty before it, and the links counter at its end."""
    if not snapshot.active or snapshot.moved is None:
        return {}
    assert snapshot.conn is not None and snapshot.table is not None
    tags = {
        TABLE_TAG: snapshot.identity,
        COUNTER_FROM_TAG: str(snapshot.moved[0]),
        COUNTER_TO_TAG: str(snapshot.moved[1]),
        WAS_EMPTY_TAG: "1" if snapshot.empty else "0",
    }
    links = links_counter_name(snapshot.table.name)
    if snapshot.conn.execute(sa.text("SELECT to_regclass(:s)"), {"s": quoted(snapshot.conn, links)}).scalar():
        tags[LINKS_COUNTER_TAG] = str(counter(snapshot.conn, snapshot.table.name, links))
    return tags


def by_key(rows: pl.DataFrame) -> pl.DataFrame:
    """Rows sorted by key (sorted already: ~free), the last of a key kept. A key written twice
    by one load is rare (a batch halved after a refusal), so the (slower) dedupe runs only then."""
    rows = rows if rows.get_column("key").is_sorted() else rows.sort("key", maintain_order=True)
    keys = rows.get_column("key")
    if (keys == keys.shift(1)).any():
        return rows.unique("key", keep="last", maintain_order=True)
    return rows


def other_writers(conn: sa.Connection, table: str) -> int:
    """Other transactions holding a lock that writes the table: what they wrote (and counted)
    is not what this transaction can see yet."""
    return conn.execute(
        sa.text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'relation' AND relation = to_regclass(:t) "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND pid <> pg_backend_pid() AND mode = ANY(:modes)"
        ),
        {"t": quoted(conn, table), "modes": list(WRITER_LOCKS)},
    ).scalar_one()


def estimated_rows(conn: sa.Connection, table: str) -> int:
    """The table's rows as the planner estimates them (cheap at any size), counted when it has
    no estimate yet (never analyzed): what decides whether it is read back whole."""
    query = sa.text("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(:t)")
    estimate = conn.execute(query, {"t": quoted(conn, table)}).scalar_one()
    if estimate >= 0:
        return estimate
    return conn.exec_driver_sql(f"SELECT count(*) FROM {quoted(conn, table)}").scalar_one()


def whole_table(conn: sa.Connection, table: str, key: str) -> pl.DataFrame:
    """Every row's (key, id, hash) as one row of arrays and the keys end to end (binary COPY
    into NumPy: ~5x cheaper than a million rows of COPY text); one aggregate node feeds every
    aggregate the same rows in the same order."""
    text = f"{quoted(conn, key)}::text"
    hash_ = quoted(conn, ETL_ROW_HASH)
    query = (
        f"SELECT array_agg({quoted(conn, ID)}), array_agg(coalesce({hash_}, 0)), array_agg({hash_} IS NULL), "
        f"array_agg(octet_length({text})), convert_to(string_agg({text}, ''), 'UTF8') "
        f"FROM {quoted(conn, table)}"
    )
    import numpy as np  # PostgreSQL only, like pg(): a code location on SQLite starts without it

    ids, hashes, missing, lengths, blob = fetch_arrays(conn, sa.text(query), raw=frozenset({4}))
    offsets = np.zeros(len(ids) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    keys = pa.LargeStringArray.from_buffers(len(ids), pa.py_buffer(offsets), pa.py_buffer(blob))
    missing = pl.Series("_missing", missing).cast(pl.Boolean)  # an empty table's arrays have no type
    frame = pl.DataFrame({"key": pl.from_arrow(keys), ID: ids, ETL_ROW_HASH: hashes, "_missing": missing})
    hashed = pl.when(~pl.col("_missing")).then(pl.col(ETL_ROW_HASH)).alias(ETL_ROW_HASH)
    return frame.select("key", ID, hashed).cast(ROWS_SCHEMA)


def opened(
    conn: sa.Connection, flow: FlowModel, table: sa.Table, good_path: Path, empty: bool
) -> TableSnapshot:
    """The load's snapshot: PostgreSQL's upsert mode only (the other modes keep the server's look-up)."""
    if conn.dialect.name != "postgresql" or flow.target.mode != "upsert":
        return TableSnapshot()
    return TableSnapshot(conn, table, flow.target.key, snapshot_path(good_path, table.name), empty=empty)


def snapshot_path(good_path: Path, table: str) -> Path:
    """``data/<flow>/.table_snapshot/<table>.parquet`` beside the partitions' folders."""
    return good_path.parent.parent / SNAPSHOT_DIR / f"{table}.parquet"
