"""A target table's change counter (issue 23): a sequence that a statement-level trigger
advances once per statement writing the table's key, id or row hash (all a re-load's
look-up answers with) or the values a link of the table to itself matches on, whoever runs
it (a client's SQL, a rolled-back load). Not transactional: nothing waits on it, and a value
nobody accounted for only makes the next load look up on the server again
(engine/load/table_snapshot.py). A link's UPDATE of its reference column does not advance
it: the table's links counter (``etl_links_<table>``, UPDATE OF the reference columns only)
counts those, for the link's own snapshot (engine/link/link_snapshot.py).
"""

from __future__ import annotations

import sqlalchemy as sa

from etl_assets.engine.ddl import lock_ddl

COUNT_FUNCTION = "etl_count_change"


ROWS = "AFTER INSERT OR DELETE OR TRUNCATE OR UPDATE OF"  # the change counter's events
LINKS = "AFTER UPDATE OF"  # the links counter's: a row inserted or deleted is the change counter's


def counter_name(table: str) -> str:
    return f"etl_changes_{table}"


def links_counter_name(table: str) -> str:
    return f"etl_links_{table}"


def install_counter(
    conn: sa.Connection, table: sa.Table, watched: list[str], counter_of: str = "", events: str = ROWS
) -> None:
    """The table's change counter (or ``counter_of`` the counter so named) and its trigger,
    where missing (or watching fewer columns than ``watched``: a flow whose map grew), made
    under the DDL lock (runs side by side)."""
    counter_of = counter_of or counter_name(table.name)
    if _watches(conn, table, watched, counter_of):
        return
    lock_ddl(conn)
    if _watches(conn, table, watched, counter_of):
        return
    sequence, name = quoted(conn, counter_of), quoted(conn, table.name)
    columns = ", ".join(quoted(conn, c) for c in dict.fromkeys(watched))
    literal = "'" + sequence.replace("'", "''") + "'"
    conn.exec_driver_sql(f"CREATE SEQUENCE IF NOT EXISTS {sequence} CACHE 1")
    conn.exec_driver_sql(
        f"CREATE OR REPLACE FUNCTION {COUNT_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM nextval(TG_ARGV[0]::regclass); RETURN NULL; END $$"
    )
    conn.exec_driver_sql(
        f"CREATE OR REPLACE TRIGGER {sequence} {events} {columns} ON {name} FOR EACH STATEMENT "
        f"EXECUTE FUNCTION {COUNT_FUNCTION}({literal})"
    )


def _watches(conn: sa.Connection, table: sa.Table, watched: list[str], counter_of: str) -> bool:
    found = conn.execute(
        sa.text(
            "SELECT array(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = t.tgrelid "
            "AND a.attnum = ANY(t.tgattr::int2[])) FROM pg_trigger t "
            "WHERE t.tgrelid = to_regclass(:table) AND t.tgname = :name"
        ),
        {"table": quoted(conn, table.name), "name": counter_of},
    ).scalar()
    return found is not None and set(watched) <= set(found)


def quoted(conn: sa.Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote_identifier(name)


def counter(conn: sa.Connection, table: str, counter_of: str = "") -> int:
    """The last value the table's change counter (or ``counter_of``) gave (0: none yet)."""
    last, called = conn.exec_driver_sql(
        f"SELECT last_value, is_called FROM {quoted(conn, counter_of or counter_name(table))}"
    ).one()
    return last if called else last - 1
