"""The append load mode: insert only, idempotent by delivery.

Each row carries the partition that appended it (``etl_partition``). A partition loaded again
(a re-run, a corrected delivery) is compared with what it appended before, by key and row
hash: a row found again is unchanged (its id stays, links to it hold), a new one is appended,
and the partition's earlier rows that are no longer in its delivery are deleted. A re-run
appends nothing twice; other partitions' rows are never touched.
"""

from __future__ import annotations

import polars as pl
import sqlalchemy as sa

from etl_assets.engine.columns import LINE
from etl_assets.engine.load.ids import next_ids
from etl_assets.engine.load.response import RESPONSE_SCHEMA
from etl_assets.engine.load.sql import fetch_frame, pg, stage_rows
from etl_assets.engine.load.upsert import PartitionUpsert
from etl_assets.engine.tables import ETL_PARTITION, ETL_ROW_HASH, ID

APPENDED_SCHEMA = {"key": pl.String, ETL_ROW_HASH: pl.Int64, "_before_id": pl.Int64}
IDS_SCHEMA = {ID: pl.Int64}


class PartitionAppend(PartitionUpsert):
    """One partition's rows appended, inside the caller's transaction."""

    def __init__(self, *args: object, partition: str, **kwargs: object) -> None:
        self.partition = partition
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        table = self.table
        appended = sa.select(
            sa.cast(table.c[self.flow.target.key], sa.Text), table.c[ETL_ROW_HASH], table.c[ID]
        )
        self.before = (
            pl.DataFrame(schema=APPENDED_SCHEMA)
            if self.empty
            else fetch_frame(self.conn, appended.where(table.c[ETL_PARTITION] == partition), APPENDED_SCHEMA)
        )
        self.kept: list[pl.Series] = []
        self.deleted = 0

    @property
    def columns(self) -> list[str]:
        return [*super().columns, ETL_PARTITION]

    def prepare(self, good: pl.DataFrame) -> pl.DataFrame:
        return super().prepare(good).with_columns(pl.lit(self.partition).alias(ETL_PARTITION))

    def batch(self, good: pl.DataFrame) -> pl.DataFrame:
        """Append the batch's rows the partition did not append before; its response frame."""
        frame = self.prepare(good).join(
            self.before, on=["key", ETL_ROW_HASH], how="left", maintain_order="left"
        )
        found = frame.filter(pl.col("_before_id").is_not_null())
        self.kept.append(found.get_column("_before_id"))
        new = frame.filter(pl.col("_before_id").is_null())
        ids = self._insert(new) if new.height else pl.Series(ID, [], pl.Int64)
        inserted = new.select(LINE).with_columns(ids.alias("_written_id"))
        return (
            frame.join(inserted, on=LINE, how="left", maintain_order="left")
            .select(
                LINE,
                "key",
                pl.coalesce("_written_id", "_before_id").alias("target_id"),
                pl.when(pl.col("_written_id").is_null())
                .then(pl.lit("unchanged"))
                .otherwise(pl.lit("inserted"))
                .alias("action"),
                pl.lit(None, pl.String).alias("reason"),
            )
            .cast(RESPONSE_SCHEMA)
        )

    def _insert(self, new: pl.DataFrame) -> pl.Series:
        """The rows inserted (PostgreSQL: COPY with ids from the sequence); their ids in order."""
        if self.postgres:
            ids = next_ids(self.conn, self.table, new.height, locked=self.locked)
            pg().copy_rows(self.conn, self.table, new.with_columns(ids.alias(ID)), [ID, *self.columns])
            return ids
        inserted = self.conn.execute(
            sa.insert(self.table).returning(self.table.c[ID], sort_by_parameter_order=True),
            new.select(self.columns).to_dicts(),
        )
        return pl.Series(ID, inserted.scalars().all(), pl.Int64)

    def finish(self) -> None:
        """The partition's earlier rows not in this delivery deleted; then the upsert's finish."""
        kept = pl.concat([pl.Series(ID, [], pl.Int64), *self.kept])
        gone = self.before.filter(~pl.col("_before_id").is_in(kept.implode()))
        if gone.height:
            shape = sa.Table("_gone", sa.MetaData(), sa.Column(ID, sa.BigInteger()))
            staging = stage_rows(self.conn, gone.select(pl.col("_before_id").alias(ID)), shape, [ID])
            try:
                table = self.table
                self.deleted = self.conn.execute(
                    sa.delete(table).where(table.c[ID].in_(sa.select(staging.c[ID])))
                ).rowcount
            finally:
                staging.drop(self.conn)
        super().finish()
