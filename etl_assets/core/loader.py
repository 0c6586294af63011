"""load: one transaction per partition, an idempotent upsert, a response frame.

Rows go to a temporary staging table (PostgreSQL: COPY), then one
``INSERT ... SELECT ... ON CONFLICT (key) DO UPDATE ... WHERE <something changed>``
moves them. Keys that existed before and came back from RETURNING were updated; keys
that did not exist were inserted; the rest were unchanged.
"""

from __future__ import annotations

import io
import uuid
from datetime import datetime
from typing import Literal

import polars as pl
import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from etl_assets.core.flow_model import FlowModel
from etl_assets.core.maps import LINE, SOURCE_FILE
from etl_assets.core.tables import (
    ETL_LOADED_AT,
    ETL_ROW_HASH,
    ETL_SOURCE_FILE,
    ETL_SOURCE_LINE,
    ID,
    ensure_table,
)

Action = Literal["inserted", "updated", "unchanged", "rejected"]
COPY_SLICE_ROWS = 100_000
RESPONSE_SCHEMA = {
    LINE: pl.Int64,
    "key": pl.String,
    "target_id": pl.Int64,
    "action": pl.String,
    "reason": pl.String,
}


def dialect_insert(conn: sa.Connection):  # noqa: ANN202 - dialect-specific Insert
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def copy_rows(conn: sa.Connection, table_name: str, frame: pl.DataFrame, columns: list[str]) -> None:
    """PostgreSQL ``COPY ... FROM STDIN`` of ``frame``, as CSV written a slice at a time
    (memory holds one slice of text, not the whole partition's)."""
    column_list = ", ".join(f'"{c}"' for c in columns)
    selected = frame.select(columns)
    with (
        conn.connection.driver_connection.cursor() as cursor,
        cursor.copy(
            f"COPY \"{table_name}\" ({column_list}) FROM STDIN WITH (FORMAT csv, NULL '\\N')"
        ) as copy,
    ):
        for start in range(0, selected.height, COPY_SLICE_ROWS):
            buffer = io.BytesIO()
            selected.slice(start, COPY_SLICE_ROWS).write_csv(
                buffer, include_header=False, null_value="\\N", datetime_format="%Y-%m-%dT%H:%M:%S%.f"
            )
            copy.write(buffer.getbuffer())


def stage_rows(conn: sa.Connection, frame: pl.DataFrame, like: sa.Table, columns: list[str]) -> sa.Table:
    """A temporary table holding ``frame``; PostgreSQL gets it through COPY."""
    name = f"stage_{uuid.uuid4().hex[:12]}"
    staging = sa.Table(
        name,
        sa.MetaData(),
        *(sa.Column(c, like.c[c].type) for c in columns),
        prefixes=["TEMPORARY"],
    )
    staging.create(conn)
    if frame.height == 0:
        return staging
    if conn.dialect.name == "postgresql":
        copy_rows(conn, name, frame, columns)
        # a temporary table has no statistics: without them the joins below become nested loops
        conn.exec_driver_sql(f'ANALYZE "{name}"')
    else:
        conn.execute(staging.insert(), frame.select(columns).to_dicts())
    return staging


def upsert_partition(conn: sa.Connection, flow: FlowModel, good: pl.DataFrame) -> pl.DataFrame:
    """Upsert ``good`` (the transform output) and return the response frame."""
    table = ensure_table(conn, flow)
    key = flow.target.key
    now = datetime.now().replace(microsecond=0)
    frame = good.with_columns(
        pl.col(SOURCE_FILE).alias(ETL_SOURCE_FILE),
        pl.col(LINE).alias(ETL_SOURCE_LINE),
        pl.lit(now).alias(ETL_LOADED_AT),
    )
    data_columns = list(flow.map)
    frame = frame.with_columns(row_hash(data_columns).alias(ETL_ROW_HASH))
    columns = data_columns + [ETL_ROW_HASH, ETL_SOURCE_FILE, ETL_SOURCE_LINE, ETL_LOADED_AT]
    before = existing_rows(conn, table, key, frame.select(key))
    keyed = frame.with_columns(pl.col(key).cast(pl.String).alias("key")).join(before, on="key", how="left")
    new = keyed.filter(pl.col("_before_id").is_null())
    # Rows whose hash matches the stored one cannot have changed: they are not sent again
    # (a re-load of an unchanged file writes nothing). The UPDATE's own comparison of every
    # column stays the judge of what changed.
    candidates = keyed.filter(
        pl.col("_before_id").is_not_null() & pl.col("_before_hash").ne_missing(pl.col(ETL_ROW_HASH))
    )
    copied = pl.DataFrame(schema={"key": pl.String, "_copied_id": pl.Int64})
    if new.height and conn.dialect.name == "postgresql" and _copy_new_rows(conn, table, new, columns):
        # new keys went straight into the table (no staging, no conflict handling)
        copied = existing_rows(conn, table, key, new.select(key)).select(
            "key", pl.col("_before_id").alias("_copied_id")
        )
    else:
        candidates = pl.concat([new, candidates])
    written = pl.DataFrame(schema={"key": pl.String, "_written_id": pl.Int64})
    if candidates.height:
        staging = stage_rows(conn, candidates, table, columns)
        try:
            insert = dialect_insert(conn)(table).from_select(
                columns, sa.select(*(staging.c[c] for c in columns)).where(sa.true())
            )
            changed = sa.or_(
                *(table.c[c].is_distinct_from(insert.excluded[c]) for c in data_columns if c != key)
            )
            upsert = insert.on_conflict_do_update(
                index_elements=[key],
                set_={c: insert.excluded[c] for c in columns if c != key},
                where=changed,
            ).returning(sa.cast(table.c[key], sa.Text), table.c[ID])
            written = fetch_frame(conn, upsert, {"key": pl.String, "_written_id": pl.Int64})
        finally:
            staging.drop(conn)
    written = pl.concat([written, copied.rename({"_copied_id": "_written_id"})])
    return (
        frame.select(LINE, pl.col(key).cast(pl.String).alias("key"))
        .join(written, on="key", how="left")
        .join(before, on="key", how="left")
        .select(
            LINE,
            "key",
            pl.coalesce("_written_id", "_before_id").alias("target_id"),
            pl.when(pl.col("_written_id").is_null())
            .then(pl.lit("unchanged"))
            .when(pl.col("_before_id").is_null())
            .then(pl.lit("inserted"))
            .otherwise(pl.lit("updated"))
            .alias("action"),
            pl.lit(None, pl.String).alias("reason"),
        )
        .cast(RESPONSE_SCHEMA)
    )


def _copy_new_rows(conn: sa.Connection, table: sa.Table, new: pl.DataFrame, columns: list[str]) -> bool:
    """COPY keys that were not in the table straight into it, in a savepoint; False when
    another writer inserted one of them meanwhile (the upsert then handles them)."""
    try:
        with conn.begin_nested():
            copy_rows(conn, table.name, new, columns)
    except psycopg.errors.UniqueViolation:
        return False
    return True


def row_hash(columns: list[str]) -> pl.Expr:
    """A fingerprint of a row's values (a pre-filter only: equal values, equal hash)."""
    text = pl.concat_str([pl.col(c).cast(pl.String).fill_null("\x00") for c in columns], separator="\x1f")
    return text.hash(seed=20250101).reinterpret(signed=True)


def existing_rows(conn: sa.Connection, table: sa.Table, key: str, keys: pl.DataFrame) -> pl.DataFrame:
    """``key -> id, row hash`` of the rows already in the target for these keys."""
    schema = {"key": pl.String, "_before_id": pl.Int64, "_before_hash": pl.Int64}
    staging = stage_rows(conn, keys, table, [key])
    try:
        matched = sa.select(sa.cast(table.c[key], sa.Text), table.c[ID], table.c[ETL_ROW_HASH]).join(
            staging, staging.c[key] == table.c[key]
        )
        return fetch_frame(conn, matched, schema)
    finally:
        staging.drop(conn)


def fetch_frame(
    conn: sa.Connection, statement: sa.Executable, schema: dict[str, pl.DataType]
) -> pl.DataFrame:
    """A query's rows as a frame; PostgreSQL streams them with ``COPY (...) TO STDOUT``
    (an INSERT ... RETURNING too) instead of row by row."""
    names = list(schema)
    if conn.dialect.name != "postgresql":
        return pl.DataFrame(conn.execute(statement).all(), schema=schema, orient="row")
    sql = str(statement.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    buffer = io.BytesIO()
    with (
        conn.connection.driver_connection.cursor() as cursor,
        cursor.copy(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)") as copy,
    ):
        for block in copy:
            buffer.write(block)
    if buffer.tell() == 0:
        return pl.DataFrame(schema=schema)
    buffer.seek(0)
    return pl.read_csv(buffer, has_header=False, new_columns=names, schema=schema)
