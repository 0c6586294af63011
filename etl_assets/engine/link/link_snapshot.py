"""link's look-ups without the server's joins (issue 23, PostgreSQL, upsert mode, a table
whose links all point into itself, as the companies flow's parent link).

A re-load's or a daily delta's link passes over the whole table twice on the server (the
look-up of the partition's values, the check of the unchanged rows' stored links): ~1 s
each at 1M rows, for a handful of references that change. Beside the table's snapshot,
``data/<flow>/.table_snapshot/<table>.links.parquet`` holds every row's id, the values its
links match on and resolve from, and its stored references, true at two counter values: the
table's change counter (engine/change_counter.py: it watches the match and link-field
columns too) and its links counter (UPDATE OF the reference columns only).

It is valid for a link when both counters still read those values, or when the only writes
since were this partition's load, proven by the load itself (its response file records the
change counter's move by its own statements, and the links counter at its end; a first load
into an empty table starts from nothing). Then the look-ups and the stale-link check are
joins here, and the new snapshot (with the references this link wrote) is written after the
commit if the links counter moved by this link's own UPDATEs alone. Anything else: the
server's joins, as before, and the snapshot read back for the next link (a large partition
only). Blind spot, as the table snapshot's: writes that skip triggers.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import sqlalchemy as sa

from etl_assets.engine.change_counter import counter, links_counter_name
from etl_assets.engine.load.sql import fetch_frame
from etl_assets.engine.load.table_snapshot import (
    COUNTER_FROM_TAG,
    COUNTER_TO_TAG,
    LINKS_COUNTER_TAG,
    MAX_ROWS,
    SNAPSHOT_DIR,
    TABLE_TAG,
    WAS_EMPTY_TAG,
    AfterCommit,
    estimated_rows,
    other_writers,
    table_identity,
    write_snapshot_file,
)
from etl_assets.engine.staging import staged_tags
from etl_assets.engine.tables import ID
from etl_assets.model.flow import FlowModel, LinkSpec

REBUILD_MIN_ROWS = 100_000  # a partition this large pays the read-back for the next link
FOUND_SCHEMA = {"_value": pl.String, "_ref_id": pl.Int64, "_matches": pl.UInt32}
WRITTEN = ("inserted", "updated")


def snapshot_columns(flow: FlowModel) -> dict[str, pl.DataType] | None:
    """The snapshot's columns (matched and resolved-from values as text, references as ids);
    None when two links would share a column in two roles."""
    columns: dict[str, pl.DataType] = {ID: pl.Int64}
    for link in flow.links:
        for name, dtype in ((link.match, pl.String), (link.field, pl.String), (link.column, pl.Int64)):
            if columns.setdefault(name, dtype) != dtype:
                return None
    return columns


class LinkSnapshot:
    """One link's use of the table's links snapshot (inactive: every answer is the server's)."""

    def __init__(self) -> None:
        self.active = False
        self.base: pl.DataFrame | None = None
        self.kind = "none"  # how this link looked up: "links snapshot" or "server"

    @classmethod
    def opened(
        cls, conn: sa.Connection, flow: FlowModel, table: sa.Table, good_path: Path, loaded_path: Path
    ) -> LinkSnapshot:
        snapshot = cls()
        columns = snapshot_columns(flow)
        own = flow.links and all(link.table == flow.target.table for link in flow.links)
        if conn.dialect.name != "postgresql" or flow.target.mode != "upsert" or not own or columns is None:
            return snapshot
        staged = pl.read_parquet_schema(good_path)
        if any(staged.get(n) != pl.String for n, dtype in columns.items() if dtype == pl.String):
            return snapshot  # only text compares the same here and on the server
        snapshot._open(conn, flow, table, columns, good_path, loaded_path)
        return snapshot

    def _open(
        self,
        conn: sa.Connection,
        flow: FlowModel,
        table: sa.Table,
        columns: dict[str, pl.DataType],
        good_path: Path,
        loaded_path: Path,
    ) -> None:
        self.active, self.conn, self.table, self.columns = True, conn, table, columns
        self.path = good_path.parent.parent / SNAPSHOT_DIR / f"{table.name}.links.parquet"
        self.links_counter = links_counter_name(table.name)
        self.identity = table_identity(conn, table.name)
        self.changes, self.links = counter(conn, table.name), counter(conn, table.name, self.links_counter)
        self.kept = False
        self.statements = 0  # our UPDATEs of references: each advances the links counter once
        self.updates: dict[str, list[pl.DataFrame]] = {link.column: [] for link in flow.links}
        self.rows_in = pq.read_metadata(loaded_path).num_rows
        self.base = self._base(good_path, loaded_path)
        self.kind = "links snapshot" if self.base is not None else "server"

    @property
    def valid(self) -> bool:
        return self.base is not None

    def _read(self, at_counter: str | None = None) -> pl.DataFrame | None:
        """The file, if it is this table's at the links counter's value now (and at the change
        counter's ``at_counter``, else now)."""
        try:
            footer = pq.read_metadata(self.path)  # what it is true at, and its size: one read
        except OSError:
            return None
        meta = footer.metadata or {}
        wanted = {
            b"identity": self.identity,
            b"counter": at_counter or str(self.changes),
            b"links": str(self.links),
        }
        if any(meta.get(k) != v.encode() for k, v in wanted.items()):
            return None
        if footer.num_rows > MAX_ROWS:  # bounded memory: the server's joins
            return None
        rows = pl.read_parquet(self.path)
        return rows if list(rows.columns) == list(self.columns) else None

    def _base(self, good_path: Path, loaded_path: Path) -> pl.DataFrame | None:
        """The table's rows now: the file as it is, or with this partition's load applied when
        that load's statements alone moved the change counter to its value now."""
        if (rows := self._read()) is not None:
            self.kept = True  # the file is true as it is
            return rows
        load = staged_tags(loaded_path)
        proven = (
            load.get(TABLE_TAG) == self.identity
            and load.get(COUNTER_TO_TAG) == str(self.changes)
            and load.get(LINKS_COUNTER_TAG) == str(self.links)
        )
        if not proven:
            return None
        before = self._read(load.get(COUNTER_FROM_TAG))
        if before is None and load.get(WAS_EMPTY_TAG) == "1":
            before = pl.DataFrame(schema=self.columns)
        if before is None or before.height + self.rows_in > MAX_ROWS:  # at most, every row new
            return None
        return self._applied(before, good_path, loaded_path)

    def _applied(self, before: pl.DataFrame, good_path: Path, loaded_path: Path) -> pl.DataFrame | None:
        """``before`` with the rows the load wrote: their values from the transform output, the
        references of an updated row as they were (the load writes no reference column)."""
        values = [n for n, t in self.columns.items() if t == pl.String]
        references = [n for n, t in self.columns.items() if t == pl.Int64 and n != ID]
        # load.parquet holds a row for each row of transform.parquet, in the same order
        actions = pl.read_parquet(loaded_path, columns=["action", "target_id"]).with_row_index("_at")
        written = actions.filter(pl.col("action").is_in(WRITTEN))
        staged = pl.read_parquet(good_path, columns=values).select(pl.all().cast(pl.String))
        written = staged[written.get_column("_at")].with_columns(written.get_column("target_id").alias(ID))
        # filters by the written ids (a delta's few), not joins of the whole table
        ids = written.get_column(ID).implode()
        overwritten = pl.col(ID).is_in(ids)
        written = written.join(before.filter(overwritten).select(ID, *references), on=ID, how="left")
        rows = pl.concat([before.filter(~overwritten), written.select(before.columns)])
        return rows if rows.height <= MAX_ROWS else None

    # -- the answers, as the server's joins give them ----------------------------------
    def found(self, link: LinkSpec, values: pl.Series) -> pl.DataFrame:
        """``linker._lookup``'s answer: each value's lowest matching id and how many match."""
        assert self.base is not None
        matching = self.base.select(pl.col(link.match).alias("_value"), ID).drop_nulls("_value")
        return (
            values.cast(pl.String)
            .to_frame("_value")
            .join(matching, on="_value")
            .group_by("_value")
            .agg(pl.col(ID).min().alias("_ref_id"), pl.len().alias("_matches"))
            .cast(FOUND_SCHEMA)
        )

    def stale(self, link: LinkSpec, ids: pl.Series) -> pl.Series:
        """``linker.stale_links``' answer: of these rows, those whose stored reference is not a
        row matching their stored value. A row with neither a value nor a reference never is:
        only the others (a tenth of the companies) are joined to their parents."""
        assert self.base is not None
        value, stored = pl.col(link.field), pl.col(link.column)
        children = self.base.filter(value.is_not_null() | stored.is_not_null()).select(
            ID, link.field, link.column
        )
        referenced = children.get_column(link.column).drop_nulls().unique()
        parents = self.base.filter(pl.col(ID).is_in(referenced.implode())).select(
            pl.col(ID).alias(link.column), pl.col(link.match).alias("_parent")
        )
        drifted = value.is_null() & stored.is_not_null()
        unmatched = value.is_not_null() & pl.col("_parent").ne_missing(value)
        found = children.join(parents, on=link.column, how="left").filter(drifted | unmatched).get_column(ID)
        return found.filter(found.is_in(ids.implode()))

    def stored(self, link: LinkSpec, ids: list[int]) -> pl.DataFrame:
        """``linker.current_links``' answer: ``id -> _stored``."""
        assert self.base is not None
        # a filter, not a join: the ids are the few rows the load wrote or found stale
        wanted = pl.Series(ID, ids, pl.Int64)
        return self.base.filter(pl.col(ID).is_in(wanted.implode())).select(
            ID, pl.col(link.column).alias("_stored")
        )

    def updated(self, link: LinkSpec, changes: pl.DataFrame) -> None:
        """One UPDATE of ours sent with these (id, reference) rows: the rows it changed take them."""
        self.statements += 1
        if self.base is not None:
            self.updates[link.column].append(changes.select(ID, link.column))

    # -- the next link's snapshot ------------------------------------------------------
    def close(self) -> list[AfterCommit]:
        """After the link's last write, in its transaction: the snapshot to write once committed."""
        if not self.active:
            return []
        changes, links = (
            counter(self.conn, self.table.name),
            counter(self.conn, self.table.name, self.links_counter),
        )
        if changes != self.changes or links != self.links + self.statements:
            return [self._forget]  # somebody else wrote meanwhile
        if self.kept and not self.statements:
            return []  # nothing written: the file on disk is still true
        rows = self.base
        if rows is None:
            rows = self._read_back() if self.rows_in >= REBUILD_MIN_ROWS else None
            if rows is None:
                return [self._forget]
        for column, parts in self.updates.items():
            if parts and self.base is not None:
                news = pl.concat(parts).unique(ID, keep="last")
                # a map of the few rows this link wrote, not a join of the whole table
                written = pl.col(ID).replace_strict(
                    news.get_column(ID), news.get_column(column), default=pl.col(column)
                )
                rows = rows.with_columns(written.alias(column))
        return [self._writer(rows, changes, links)]

    def _read_back(self) -> pl.DataFrame | None:
        """The whole table's snapshot read from the server, unless another writer is open."""
        if other_writers(self.conn, self.table.name) or estimated_rows(self.conn, self.table.name) > MAX_ROWS:
            return None
        t = self.table
        query = sa.select(
            *(t.c[n] if dtype == pl.Int64 else sa.cast(t.c[n], sa.Text) for n, dtype in self.columns.items())
        )
        rows = fetch_frame(self.conn, query, self.columns)
        return rows if rows.height <= MAX_ROWS else None

    def _writer(self, rows: pl.DataFrame, changes: int, links: int) -> AfterCommit:
        def write(engine: sa.Engine) -> None:
            with engine.connect() as conn:
                now = counter(conn, self.table.name), counter(conn, self.table.name, self.links_counter)
            if now != (changes, links):  # written over since: stale already
                self._forget(engine)
                return
            meta = {"identity": self.identity, "counter": str(changes), "links": str(links)}
            write_snapshot_file(self.path, rows.to_arrow(), meta)

        return write

    def _forget(self, engine: sa.Engine | None = None) -> None:
        self.path.unlink(missing_ok=True)
