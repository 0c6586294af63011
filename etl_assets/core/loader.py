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
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from etl_assets.core.flow_model import FlowModel
from etl_assets.core.maps import LINE, SOURCE_FILE
from etl_assets.core.tables import ETL_LOADED_AT, ETL_SOURCE_FILE, ETL_SOURCE_LINE, ID, ensure_table

Action = Literal["inserted", "updated", "unchanged", "rejected"]
RESPONSE_SCHEMA = {
    LINE: pl.Int64,
    "key": pl.String,
    "target_id": pl.Int64,
    "action": pl.String,
    "reason": pl.String,
}


def dialect_insert(conn: sa.Connection):  # noqa: ANN202 - dialect-specific Insert
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


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
        buffer = io.BytesIO()
        frame.select(columns).write_csv(
            buffer, include_header=False, null_value="\\N", datetime_format="%Y-%m-%dT%H:%M:%S%.f"
        )
        dbapi = conn.connection.driver_connection
        column_list = ", ".join(f'"{c}"' for c in columns)
        with (
            dbapi.cursor() as cursor,
            cursor.copy(f"COPY \"{name}\" ({column_list}) FROM STDIN WITH (FORMAT csv, NULL '\\N')") as copy,
        ):
            copy.write(buffer.getvalue())
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
    columns = data_columns + [ETL_SOURCE_FILE, ETL_SOURCE_LINE, ETL_LOADED_AT]
    staging = stage_rows(conn, frame, table, columns)
    try:
        existing = {
            row[0]
            for row in conn.execute(
                sa.select(table.c[key]).where(table.c[key].in_(sa.select(staging.c[key])))
            )
        }
        insert = dialect_insert(conn)(table).from_select(
            columns, sa.select(*(staging.c[c] for c in columns)).where(sa.true())
        )
        changed = sa.or_(*(table.c[c].is_distinct_from(insert.excluded[c]) for c in data_columns if c != key))
        upsert = insert.on_conflict_do_update(
            index_elements=[key],
            set_={c: insert.excluded[c] for c in columns if c != key},
            where=changed,
        ).returning(table.c[key])
        written = {row[0] for row in conn.execute(upsert)}
        ids = dict(
            conn.execute(
                sa.select(table.c[key], table.c[ID]).join(staging, staging.c[key] == table.c[key])
            ).all()
        )
    finally:
        staging.drop(conn)
    keys = frame.get_column(key).to_list()
    actions = [("updated" if k in existing else "inserted") if k in written else "unchanged" for k in keys]
    return pl.DataFrame(
        {
            LINE: frame.get_column(LINE),
            "key": keys,
            "target_id": [ids.get(k) for k in keys],
            "action": actions,
            "reason": [None] * len(keys),
        },
        schema=RESPONSE_SCHEMA,
    )
