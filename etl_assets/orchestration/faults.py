"""Faults of a step in an operator's words: which are worth a retry, and the one line that
says what broke and what to do (the e-mail and the UI get it; the traceback stays in the
Dagster logs).

A database connection lost (a server restarting, a backend killed, the network) is retried
by Dagster's ``RetryPolicy`` on the load and link steps: each partition's load is one
transaction and idempotent, so a retry equals a clean run, and the UI shows each retry. SFTP
and SMTP retry inside their resources (a dropped session resumes where the step is), so their
``ConnectorError`` already means the fault lasted.
"""

from __future__ import annotations

import sys

import dagster as dg
import sqlalchemy as sa

from etl_assets.resources import DatabaseResource
from etl_assets.resources.errors import first_line

RETRY_POLICY = dg.RetryPolicy(max_retries=3, delay=1.0, backoff=dg.Backoff.EXPONENTIAL)  # 1, 2, 4 s


def is_connection_fault(exc: BaseException) -> bool:
    """A fault of the connection, not of the data or the code: worth a retry."""
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        return True
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    psycopg = sys.modules.get("psycopg")  # imported only where PostgreSQL is used
    return psycopg is not None and isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


def database_where(database: DatabaseResource, env: str) -> str:
    """``database test (db.example:5432)``, or the SQLite file: no user, no password."""
    where = database.sqlite_file if database.driver == "sqlite" else f"{database.host}:{database.port}"
    return f"database {env} ({where})"


def connection_fault_line(exc: BaseException, database: DatabaseResource, env: str, tries: int) -> str:
    """One line for the e-mail: the connector, the host, what happened, what to do."""
    cause = exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc
    reason = first_line(cause).rstrip(".")
    return f"{database_where(database, env)}: {reason} after {tries} tries; check that the server is up"
