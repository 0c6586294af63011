"""When each partition of each flow last loaded, kept in the target beside the data.

The load step records its partition in the same transaction as its rows, so the record and
the data commit together. Parking reads it to decide, from data and the same way whoever
runs the retry, whether a referenced row had its chance to arrive. Times are UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import sqlalchemy as sa

from etl_assets.engine.ddl import create_missing
from etl_assets.engine.load.sql import dialect_insert

LOADS_TABLE = "etl_partition_loads"


def utc_now() -> datetime:
    """Now in UTC, whole seconds, without tzinfo: how every time in our tables is stored."""
    return datetime.now(UTC).replace(microsecond=0, tzinfo=None)


def lock_partition(conn: sa.Connection, flow: str, partition_key: str) -> None:
    """Hold the partition until this transaction ends: a second run of it (one that bypassed
    the run queue: two CLI runs, a CLI run beside the daemon's) waits here, then finds the
    first one's rows. PostgreSQL: an advisory lock; SQLite serializes writers by itself."""
    if conn.dialect.name == "postgresql":
        conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:name, 0))"),
            {"name": f"etl_assets:{flow}:{partition_key}"},
        )


def loads_table(metadata: sa.MetaData | None = None) -> sa.Table:
    return sa.Table(
        LOADS_TABLE,
        metadata or sa.MetaData(),
        sa.Column("flow", sa.Text, primary_key=True),
        sa.Column("partition_key", sa.Text, primary_key=True),
        sa.Column("loaded_at", sa.DateTime, nullable=False),  # UTC
        sa.Column("rows_in", sa.BigInteger, nullable=False),
    )


def record_load(conn: sa.Connection, flow: str, partition_key: str, rows_in: int) -> None:
    """This partition loaded now (inside the load's transaction)."""
    table = loads_table()
    create_missing(conn, table.metadata)
    values = {"flow": flow, "partition_key": partition_key, "loaded_at": utc_now(), "rows_in": rows_in}
    insert = dialect_insert(conn)(table).values(values)
    conn.execute(
        insert.on_conflict_do_update(
            index_elements=["flow", "partition_key"],
            set_={"loaded_at": insert.excluded.loaded_at, "rows_in": insert.excluded.rows_in},
        )
    )


def newest_load_from_each_day(conn: sa.Connection, flow: str) -> pl.DataFrame:
    """For each day a partition of ``flow`` loaded: the newest load of that day or a later one
    (``day``, ``newest_load_at``, ``newest_load_key``), sorted by day."""
    schema = {"day": pl.Date, "newest_load_at": pl.Datetime("us"), "newest_load_key": pl.String}
    if not sa.inspect(conn).has_table(LOADS_TABLE):
        return pl.DataFrame(schema=schema)
    table = loads_table()
    rows = conn.execute(sa.select(table.c.partition_key, table.c.loaded_at).where(table.c.flow == flow)).all()
    found: list[tuple[object, datetime, str]] = []
    newest: tuple[datetime, str] | None = None
    for key, loaded_at in sorted(rows, key=lambda r: r[0], reverse=True):  # keys sort as days
        if newest is None or loaded_at > newest[0]:
            newest = (loaded_at, key)
        found.append((datetime.strptime(key[:10], "%Y-%m-%d").date(), *newest))
    return pl.DataFrame(found[::-1], schema=schema, orient="row").unique(
        "day", keep="first", maintain_order=True
    )
