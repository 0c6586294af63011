"""A row the database refuses, told from a fault of the connection or the statement: its
refusal rejects the row (``PartitionUpsert.settled``), never the partition."""

from __future__ import annotations

import sqlalchemy as sa


class RowRefusedInBulk(Exception):
    """The database refused a row of a first load's single COPY: the load starts again in
    batches, where the refused rows can be found (the transaction is rolled back first)."""


def database_errors() -> tuple[type[Exception], ...]:
    """What a refusal by PostgreSQL raises: through SQLAlchemy, or from a COPY on the driver's
    own cursor (psycopg imported here: SQLite needs none of it)."""
    import psycopg

    return (sa.exc.DBAPIError, psycopg.Error)


def row_fault(exc: BaseException) -> bool:
    """A refusal of a row's values (SQLSTATE class 22 data, 23 integrity, P0 a trigger's
    RAISE), not of the connection or the statement: rejecting the row is the answer."""
    state = getattr(getattr(exc, "orig", exc), "sqlstate", None) or ""
    return state[:2] in ("22", "23", "P0")


def database_message(exc: BaseException) -> str:
    """The database's own words (its primary message), without SQLAlchemy's wrapping."""
    orig = getattr(exc, "orig", exc)
    diag = getattr(orig, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    return primary or str(orig).splitlines()[0]
