"""A first load's shortcuts on PostgreSQL: its indexes dropped and built again once, its ids
taken from the sequence in one block."""

from __future__ import annotations

import polars as pl
import sqlalchemy as sa

from etl_assets.engine.load.sql import pg
from etl_assets.engine.tables import ID


def drop_indexes(conn: sa.Connection, table_name: str) -> list[str]:
    """Drop the table's indexes and constraints that no foreign key depends on; the
    statements that create them again, in the same form."""
    found = conn.exec_driver_sql(
        """
        SELECT c.conname, pg_get_constraintdef(c.oid), pg_get_indexdef(i.indexrelid),
               quote_ident(n.nspname) || '.' || quote_ident(x.relname)
        FROM pg_index i
        JOIN pg_class x ON x.oid = i.indexrelid
        JOIN pg_namespace n ON n.oid = x.relnamespace
        LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid
             AND c.contype IN ('p', 'u')
        WHERE i.indrelid = to_regclass(%(table)s)
          AND NOT EXISTS (SELECT 1 FROM pg_constraint f WHERE f.contype = 'f' AND f.conindid = i.indexrelid)
        ORDER BY c.contype NULLS LAST, x.relname
        """,
        {"table": f'"{table_name}"'},
    ).all()
    rebuild = []
    for constraint, constraint_def, index_def, index_name in found:
        if constraint:
            conn.exec_driver_sql(f'ALTER TABLE "{table_name}" DROP CONSTRAINT "{constraint}"')
            rebuild.append(f'ALTER TABLE "{table_name}" ADD CONSTRAINT "{constraint}" {constraint_def}')
        else:
            conn.exec_driver_sql(f"DROP INDEX {index_name}")
            rebuild.append(index_def)
    return rebuild


def next_ids(conn: sa.Connection, table: sa.Table, count: int, locked: bool = False) -> pl.Series:
    """``count`` values of the id column's sequence.

    ``nextval`` a row is safe beside other writers but costs ~4 s a million; a table this
    transaction holds in ACCESS EXCLUSIVE mode (a first load) takes one block instead.
    """
    if locked:
        first = reserve_ids(conn, table, count)
        return pl.int_range(first, first + count, dtype=pl.Int64, eager=True).alias(ID)
    sql = f"SELECT nextval({_sequence(table)}) FROM generate_series(1, {int(count)})"
    return pg().copy_out(conn, sql, {ID: pl.Int64}).get_column(ID)


def reserve_ids(conn: sa.Connection, table: sa.Table, count: int) -> int:
    """The first of ``count`` consecutive ids, taken with one ``setval``: only for a table
    this transaction holds in ACCESS EXCLUSIVE mode (nobody can insert meanwhile)."""
    sequence = _sequence(table)
    last = conn.exec_driver_sql(
        f"SELECT setval({sequence}, nextval({sequence}) + {int(count)} - 1)"
    ).scalar_one()
    return last - count + 1


def _sequence(table: sa.Table) -> str:
    return f"pg_get_serial_sequence('\"{table.name}\"', '{ID}')"
