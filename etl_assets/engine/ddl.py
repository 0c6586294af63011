"""Tables and columns created where missing, safely when runs start side by side.

Two transactions that both find a table missing both run ``CREATE TABLE``; on PostgreSQL
the second fails on the catalog's unique index (``pg_type_typname_nsp_index``) even with
``IF NOT EXISTS``, and so does a second ``ALTER TABLE ... ADD COLUMN``. The one that finds
something missing takes one lock (released when its transaction ends) and looks again: the
others wait for its commit and then find what it made. One lock for every table we make, so
two creators can never wait for each other. SQLite serializes writers by itself.
"""

from __future__ import annotations

import sqlalchemy as sa

DDL_LOCK = "etl_assets:ddl"


def lock_ddl(conn: sa.Connection) -> None:
    """Hold the lock of our schema changes until the caller's transaction ends."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:name, 0))"), {"name": DDL_LOCK})


def create_missing(conn: sa.Connection, metadata: sa.MetaData) -> None:
    """Create the tables (and their indexes) of ``metadata`` the database lacks, in the
    caller's transaction; nothing is locked when every table exists already."""
    if not missing_tables(conn, metadata):
        return
    lock_ddl(conn)
    metadata.create_all(conn, checkfirst=True)  # looks again: another run may have made them


def missing_tables(conn: sa.Connection, metadata: sa.MetaData) -> list[str]:
    inspector = sa.inspect(conn)
    return [t.name for t in metadata.sorted_tables if not inspector.has_table(t.name, schema=t.schema)]
