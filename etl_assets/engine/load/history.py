"""The history load mode (a slowly changing dimension, type 2): a key keeps every version.

A change of a tracked column closes the key's current row (``valid_to``, ``is_current``
false) and opens a new one (``valid_from``, ``is_current``); a change of an untracked column
is written over the current row; a row whose hash matches the current row's is not sent.
New keys take the upsert's fast paths (COPY with ids from the sequence, a first load's
index rebuild): only the comparison with the stored row differs.
"""

from __future__ import annotations

import polars as pl
import sqlalchemy as sa

from etl_assets.engine.load.sql import fetch_frame, stage_rows, within_staged_range
from etl_assets.engine.load.upsert import WRITTEN_SCHEMA, PartitionUpsert
from etl_assets.engine.tables import ETL_ROW_HASH, ID, IS_CURRENT, VALID_FROM, VALID_TO


class PartitionHistory(PartitionUpsert):
    """One partition's versions, inside the caller's transaction; compared with the current
    rows only (the unique index on the key is partial: ``WHERE is_current``)."""

    @property
    def columns(self) -> list[str]:
        return [*super().columns, VALID_FROM, IS_CURRENT]

    @property
    def tracked(self) -> list[str]:
        key = self.flow.target.key
        return [c for c in self.flow.target.tracked or list(self.flow.map) if c != key]

    @property
    def analyzed(self) -> set[str]:
        return {*super().analyzed, IS_CURRENT}  # every look-up keeps the current rows only

    def prepare(self, good: pl.DataFrame) -> pl.DataFrame:
        return (
            super()
            .prepare(good)
            .with_columns(pl.lit(self.now).alias(VALID_FROM), pl.lit(True).alias(IS_CURRENT))
        )

    @property
    def current(self) -> tuple[sa.ColumnElement, ...]:
        return (self.table.c[IS_CURRENT].is_(True),)

    def _upsert(self, candidates: pl.DataFrame) -> pl.DataFrame:
        """Close the current rows whose tracked columns changed, insert a current row for every
        key left without one (the closed and the new), write untracked changes in place."""
        table, key, columns = self.table, self.flow.target.key, self.columns
        staging = stage_rows(self.conn, candidates, table, columns)
        current = table.c[IS_CURRENT].is_(True)
        same_key = table.c[key] == staging.c[key]
        try:
            if self.tracked:
                changed = sa.or_(*(table.c[c].is_distinct_from(staging.c[c]) for c in self.tracked))
                # bounded by the staged keys' range: an index range, not the whole table per batch
                close = sa.update(table).where(same_key, current, changed)
                close = within_staged_range(self.conn, close, table.c[key], staging.c[key])
                self.conn.execute(close.values({VALID_TO: self.now, IS_CURRENT: False}))
            has_current = sa.select(table.c[ID]).where(same_key, current).exists()
            opened = (
                sa.insert(table)
                .from_select(columns, sa.select(*(staging.c[c] for c in columns)).where(~has_current))
                .returning(sa.cast(table.c[key], sa.Text), table.c[ID])
            )
            written = [fetch_frame(self.conn, opened, WRITTEN_SCHEMA)]
            written.append(self._in_place(staging))
            if candidates.height > sum(w.height for w in written):
                # unchanged rows whose stored hash differed (another version of the hash): stored
                # anew, so the next re-load skips them without comparing
                stale = table.c[ETL_ROW_HASH].is_distinct_from(staging.c[ETL_ROW_HASH])
                refresh = sa.update(table).where(same_key, current, stale)
                self.conn.execute(refresh.values({ETL_ROW_HASH: staging.c[ETL_ROW_HASH]}))
            return pl.concat(written)
        finally:
            staging.drop(self.conn)

    def _in_place(self, staging: sa.Table) -> pl.DataFrame:
        """Untracked columns that changed, written over the current row (its version stays)."""
        table, key = self.table, self.flow.target.key
        untracked = [c for c in self.flow.map if c != key and c not in self.tracked]
        if not untracked:
            return pl.DataFrame(schema=WRITTEN_SCHEMA)
        kept = (key, VALID_FROM, IS_CURRENT)
        update = (
            sa.update(table)
            .where(table.c[key] == staging.c[key], table.c[IS_CURRENT].is_(True))
            .where(sa.or_(*(table.c[c].is_distinct_from(staging.c[c]) for c in untracked)))
            .values({c: staging.c[c] for c in self.columns if c not in kept})
            .returning(sa.cast(table.c[key], sa.Text), table.c[ID])
        )
        return fetch_frame(self.conn, update, WRITTEN_SCHEMA)
