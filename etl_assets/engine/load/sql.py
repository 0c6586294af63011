"""SQL the load and link stages share: temporary staging tables (PostgreSQL: COPY), the
dialect's INSERT, joins limited to the staged values' range, and query results as frames
(PostgreSQL: ``COPY (...) TO STDOUT``)."""

from __future__ import annotations

import uuid
from types import ModuleType
from typing import TYPE_CHECKING, TypeVar

import polars as pl
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

if TYPE_CHECKING:
    import numpy as np


def pg() -> ModuleType:
    """The PostgreSQL COPY module, imported on first use: a code location on SQLite (dev)
    then starts without psycopg, numpy and pyarrow.compute (~0.4 s a process here)."""
    from etl_assets.engine.load.postgres import pgcopy

    return pgcopy


def dialect_insert(conn: sa.Connection):  # noqa: ANN202 - dialect-specific Insert
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


Bounded = TypeVar("Bounded", sa.Select, sa.Update)  # a statement with a WHERE to narrow


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
        pg().copy_rows(conn, staging, frame, columns)
        # a temporary table has no statistics: without them the joins below become nested loops
        conn.exec_driver_sql(f"ANALYZE {conn.dialect.identifier_preparer.quote_identifier(name)}")
    else:
        conn.execute(staging.insert(), frame.select(columns).to_dicts())
    return staging


def within_staged_range(
    conn: sa.Connection, query: Bounded, column: sa.ColumnElement, staged: sa.ColumnElement
) -> Bounded:
    """``query`` limited to the staged values' range, as literals the planner can weigh.

    Files sorted by key (as ERPs write them) give batches of narrow key ranges: the join
    then reads that range of the index, not the whole table, whatever the table's size.
    The bounds come from the database itself, in its own collation.
    """
    low, high = conn.execute(sa.select(sa.func.min(staged), sa.func.max(staged))).one()
    return query if low is None else query.where(column.between(low, high))


def fetch_frame(
    conn: sa.Connection, statement: sa.Executable, schema: dict[str, pl.DataType]
) -> pl.DataFrame:
    """A query's rows as a frame; PostgreSQL streams them with ``COPY (...) TO STDOUT``
    (an INSERT ... RETURNING too) instead of row by row.

    Values stay parameters: SQLAlchemy compiles placeholders (names quoted by its dialect) and
    psycopg binds the values (COPY takes no server-side parameters, so psycopg quotes them
    itself, by type), never our own formatting: a staged range's bounds are client data.
    """
    if conn.dialect.name != "postgresql":
        return pl.DataFrame(conn.execute(statement).all(), schema=schema, orient="row")
    query, params = _bound(conn, statement)
    return pg().copy_out(conn, query, schema, params)


def fetch_arrays(
    conn: sa.Connection, statement: sa.Executable, raw: frozenset[int] = frozenset()
) -> list[np.ndarray]:
    """PostgreSQL: the one row of a query whose columns are arrays of fixed-width values
    without nulls (``array_agg``), decoded from binary COPY into NumPy arrays. A million
    values come back as one message of a few MB, not a million rows of COPY."""
    return pg().copy_out_arrays(conn, *_bound(conn, statement), raw=raw)


def _bound(conn: sa.Connection, statement: sa.Executable) -> tuple[str, dict | None]:
    """A statement as COPY's query text and psycopg's values for it."""
    compiled = statement.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.construct_params()
    processors = compiled._bind_processors  # noqa: SLF001 - what an execute would apply to each value
    for name, process in processors.items():
        if name in params:
            params[name] = process(params[name])
    query = str(compiled)
    if not params:  # psycopg merges (and turns the dialect's %% back into %) only given values
        return query.replace("%%", "%"), None
    return query, params
