"""Parked links: rows whose referenced row has not arrived yet (an offer before its company).

A parked row waits in ``etl_parked_links`` with the source columns as received. It is
retried by every later run of its flow and after each load of the referenced flow. It
becomes a link rejection when still unresolved once a partition of the referenced flow whose
day is the row's day or later has loaded after the row was parked (``etl_partition_loads``),
or when parked longer than ``max_park_age``. The rule reads only data, so every retry (the
asset sensor's run, an operator's, a later link step) decides the same; an older day's load
never expires a newer day's rows. Times are UTC.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl
import sqlalchemy as sa

from etl_assets.engine.columns import ERROR_FIELD, ERROR_REASON, LINE, SOURCE_FILE
from etl_assets.engine.ddl import create_missing
from etl_assets.engine.link.linker import resolve_references, set_links
from etl_assets.engine.load.partition_loads import newest_load_from_each_day
from etl_assets.engine.load.sql import dialect_insert
from etl_assets.engine.tables import ID, ensure_table
from etl_assets.model.flow import FlowModel, LinkSpec

PARKED_TABLE = "etl_parked_links"


def parked_table(metadata: sa.MetaData | None = None) -> sa.Table:
    return sa.Table(
        PARKED_TABLE,
        metadata or sa.MetaData(),
        sa.Column(
            ID, sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
        ),
        sa.Column("flow", sa.Text, nullable=False),
        sa.Column("link_column", sa.Text, nullable=False),
        sa.Column("target_id", sa.BigInteger, nullable=False),
        sa.Column("record_key", sa.Text, nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("partition_key", sa.Text, nullable=False),
        sa.Column("source_file", sa.Text),
        sa.Column("source_line", sa.BigInteger),
        sa.Column("source_row", sa.Text, nullable=False),
        sa.Column("parked_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("flow", "link_column", "target_id", name="uq_etl_parked_links_target"),
    )


def _table(conn: sa.Connection) -> sa.Table:
    table = parked_table()
    create_missing(conn, table.metadata)
    return table


def park(
    conn: sa.Connection,
    flow: FlowModel,
    link: LinkSpec,
    rows: pl.DataFrame,
    extracted: pl.DataFrame,
    partition_key: str,
    now: datetime,
) -> None:
    """Park ``rows`` (LINE, key, target_id, _value); a row parked before keeps its first time."""
    table = _table(conn)
    if rows.height == 0:
        return
    source_columns = [c for c in extracted.columns if c not in (LINE, SOURCE_FILE)]
    joined = rows.join(extracted, on=LINE, how="left")
    records = [
        {
            "flow": flow.name,
            "link_column": link.column,
            "target_id": row["target_id"],
            "record_key": str(row["key"]),
            "value": row["_value"],
            "partition_key": partition_key,
            "source_file": row[SOURCE_FILE],
            "source_line": row[LINE],
            "source_row": json.dumps({c: row[c] for c in source_columns}, ensure_ascii=False),
            "parked_at": now,
        }
        for row in joined.iter_rows(named=True)
    ]
    insert = dialect_insert(conn)(table)
    conn.execute(insert.on_conflict_do_nothing(index_elements=["flow", "link_column", "target_id"]), records)


def unpark(conn: sa.Connection, flow: FlowModel, link: LinkSpec, target_ids: list[int]) -> None:
    """Forget parked rows that a run has now linked (or rejected)."""
    if not target_ids or not sa.inspect(conn).has_table(PARKED_TABLE):
        return
    table = parked_table()
    for start in range(0, len(target_ids), 10_000):
        conn.execute(
            sa.delete(table).where(
                table.c.flow == flow.name,
                table.c.link_column == link.column,
                table.c.target_id.in_(target_ids[start : start + 10_000]),
            )
        )


@dataclass
class Retried:
    """The outcome of one retry of a flow's parked rows."""

    resolved: int
    still_parked: int
    expired: pl.DataFrame  # partition_key, source_file, source_line, source_row, error_field, error_reason


def retry_parked(
    conn: sa.Connection,
    flow: FlowModel,
    *,
    now: datetime,
    max_age: timedelta,
) -> Retried:
    """Link what can be linked now; expire what had its chance or waited too long (``now``
    in UTC, as ``parked_at``); keep the rest parked."""
    table = _table(conn)
    target = ensure_table(conn, flow)
    resolved = still = 0
    expired_frames = []
    for link in (x for x in flow.links if x.on_missing == "park"):
        parked = pl.DataFrame(
            conn.execute(
                sa.select(
                    table.c.id,
                    table.c.target_id,
                    table.c.value.label("_value"),
                    table.c.partition_key,
                    table.c.source_file,
                    table.c.source_line,
                    table.c.source_row,
                    table.c.parked_at,
                ).where(table.c.flow == flow.name, table.c.link_column == link.column)
            )
            .mappings()
            .all(),
            schema={
                "id": pl.Int64,
                "target_id": pl.Int64,
                "_value": pl.String,
                "partition_key": pl.String,
                "source_file": pl.String,
                "source_line": pl.Int64,
                "source_row": pl.String,
                "parked_at": pl.Datetime("us"),
            },
        )
        if parked.height == 0:
            continue
        checked = resolve_references(conn, flow, link, parked)
        found = checked.filter(pl.col("reason").is_null())
        set_links(
            conn,
            target,
            link,
            found.select(pl.col("target_id").alias(ID), pl.col("_ref_id").alias(link.column)),
        )
        checked = _with_newest_load(conn, checked, str(link.after_flow))
        too_old = pl.col("parked_at") < (now - max_age)
        after_load = pl.col("newest_load_at") > pl.col("parked_at")
        expired = checked.filter(pl.col("reason").is_not_null() & (too_old | after_load.fill_null(False)))
        _delete(conn, table, found.get_column("id").to_list() + expired.get_column("id").to_list())
        resolved += found.height
        still += checked.height - found.height - expired.height
        column = flow.source_column(link.field)
        expired_frames.append(
            expired.select(
                "partition_key",
                "source_file",
                "source_line",
                "source_row",
                pl.lit(column).alias(ERROR_FIELD),
                pl.when(too_old)
                .then(
                    pl.format(
                        "{} (parked since {} UTC, longer than max_park_age)",
                        pl.col("reason"),
                        pl.col("parked_at"),
                    )
                )
                .otherwise(
                    pl.format(
                        f"{{}} (parked since {{}} UTC, still missing after the {link.after_flow} load "
                        "of {} at {} UTC)",
                        pl.col("reason"),
                        pl.col("parked_at"),
                        pl.col("newest_load_key"),
                        pl.col("newest_load_at"),
                    )
                )
                .alias(ERROR_REASON),
            )
        )
    empty = pl.DataFrame(
        schema={
            "partition_key": pl.String,
            "source_file": pl.String,
            "source_line": pl.Int64,
            "source_row": pl.String,
            ERROR_FIELD: pl.String,
            ERROR_REASON: pl.String,
        }
    )
    return Retried(resolved, still, pl.concat([empty, *expired_frames], how="vertical_relaxed"))


def _with_newest_load(conn: sa.Connection, parked: pl.DataFrame, after_flow: str) -> pl.DataFrame:
    """Each parked row with the newest load of ``after_flow`` of its day or a later one (null
    when no such partition has loaded yet)."""
    loads = newest_load_from_each_day(conn, after_flow)
    return (
        parked.with_columns(pl.col("partition_key").str.slice(0, 10).str.to_date("%Y-%m-%d").alias("_day"))
        .sort("_day")
        .join_asof(loads.rename({"day": "_day"}), on="_day", strategy="forward")
        .sort("id")
        .drop("_day")
    )


def count_parked(conn: sa.Connection, flow: str) -> int:
    """How many rows of ``flow`` wait for their reference (shown in the UI)."""
    if not sa.inspect(conn).has_table(PARKED_TABLE):
        return 0
    table = parked_table()
    return conn.execute(
        sa.select(sa.func.count()).select_from(table).where(table.c.flow == flow)
    ).scalar_one()


def _delete(conn: sa.Connection, table: sa.Table, ids: list[int]) -> None:
    for start in range(0, len(ids), 10_000):
        conn.execute(sa.delete(table).where(table.c.id.in_(ids[start : start + 10_000])))
