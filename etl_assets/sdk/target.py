"""The target database as a compile asks it: does it answer, has it a table, does it accept a
query. Read only: a query is explained (never run) in a read-only transaction rolled back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from etl_assets.resources import build_resources
from etl_assets.resources.errors import ConnectorError, first_line, redact, reveal
from etl_assets.settings import Settings

# Seconds a compile waits for a lock (a load altering a table) or a plan, on PostgreSQL.
LOCK_TIMEOUT, STATEMENT_TIMEOUT = 5, 30


class Target:
    """The environment's target database; ``silence`` says why it did not answer (None: it did)."""

    def __init__(self, settings: Settings) -> None:
        self.resource = build_resources(settings)["database"]
        self.silence: str | None = None
        if self.resource.driver == "sqlite" and not Path(self.resource.sqlite_file).is_file():
            self.silence = f"{self.resource.label}: no such file yet"  # connecting would create it
            return
        try:
            self.resource.check_connection()
        except ConnectorError as exc:
            self.silence = exc.reason

    @property
    def answers(self) -> bool:
        return self.silence is None

    def has_table(self, name: str, schema: str | None = None) -> bool:
        with self.resource.engine().connect() as conn:
            return sa.inspect(conn).has_table(name, schema=schema)

    def has_column(self, table: str, column: str) -> bool:
        with self.resource.engine().connect() as conn:
            inspector = sa.inspect(conn)
            return inspector.has_table(table) and column in {c["name"] for c in inspector.get_columns(table)}

    def refusal(self, query: str, binds: dict[str, Any]) -> str | None:
        """The database's message when it refuses ``EXPLAIN <query>`` (an unknown column, a type
        mismatch), no password in it; None when it accepts the query."""
        with self.resource.engine().connect() as conn:
            transaction = conn.begin()
            try:
                if conn.dialect.name == "postgresql":
                    conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                    conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}s'")
                    conn.exec_driver_sql(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}s'")
                conn.execute(sa.text(f"EXPLAIN {query}"), binds)
            except sa.exc.DBAPIError as exc:
                return redact(_message(exc.orig or exc), [self._password()])
            finally:
                transaction.rollback()
        return None

    def _password(self) -> str | None:
        try:
            return reveal("database", self.resource.password, "database.password")
        except ConnectorError:
            return None


def _message(error: BaseException) -> str:
    """PostgreSQL's message and hint (psycopg's diagnostics), else the driver's first line."""
    diag = getattr(error, "diag", None)
    primary = getattr(diag, "message_primary", None)
    if not primary:
        return first_line(error)
    hint = getattr(diag, "message_hint", None)
    return f"{primary} (hint: {hint})" if hint else primary
