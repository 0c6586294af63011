"""PostgreSQL COPY in both directions, a slice of a frame at a time.

Frames go in binary form when every column has a binary encoder (``pgbinary``): the
server then stores values instead of parsing text, a third less of its time on a
typed table. Other columns go as CSV.
"""

from __future__ import annotations

import io
import queue
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import numpy as np
import polars as pl
import psycopg
import sqlalchemy as sa
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from etl_assets.engine.load.postgres import pgbinary

COPY_SLICE_ROWS = 100_000  # ~30 MB of companies rows, encoded
SEND_QUEUE_CHUNKS = 512  # of psycopg's 128 kB: room for two encoded slices
CSV_NULL = "\\N"


class _SendingThread(QueuedLibpqWriter):
    """psycopg's queued COPY writer with a queue of two encoded slices (~64 MB; psycopg's
    own holds up to 1024 chunks, ~128 MB): the server always has the next slice waiting
    while the step encodes the one after. With room for half a slice (16 MB), the
    server went idle whenever the queue ran dry during an encode: a first load of 1M
    rows took 3.3-3.4 s, with two slices 2.8 s."""

    def __init__(self, cursor: psycopg.Cursor) -> None:
        super().__init__(cursor)
        self._queue = queue.Queue(maxsize=SEND_QUEUE_CHUNKS)


class _CopySink:
    """One ``COPY ... FROM STDIN``, begun by the first frame: its columns' types choose
    binary or CSV."""

    def __init__(self, cursor: psycopg.Cursor, stack: ExitStack, table: sa.Table, columns: list[str]) -> None:
        self.cursor, self.stack, self.table, self.columns = cursor, stack, table, columns
        self.copy: psycopg.Copy | None = None
        self.encoders: list[pgbinary.Encoder] | None = None

    def _begin(self, schema: pl.Schema) -> psycopg.Copy:
        self.encoders = pgbinary.encoders_for([self.table.c[c].type for c in self.columns], schema)
        if self.encoders:  # the COPY's column list follows the order the rows are encoded in
            order = pgbinary.fixed_width_first(self.encoders)
            self.columns = [self.columns[i] for i in order]
            self.encoders = [self.encoders[i] for i in order]
        if self.encoders:
            options = sql.SQL("FORMAT binary")
        else:
            options = sql.SQL("FORMAT csv, NULL {}").format(sql.Literal(CSV_NULL))
        statement = sql.SQL("COPY {} ({}) FROM STDIN WITH ({})").format(
            _table_name(self.table), sql.SQL(", ").join(map(sql.Identifier, self.columns)), options
        )
        copy = self.stack.enter_context(
            self.cursor.copy(
                statement,
                # sending happens in a thread: the next slice is encoded meanwhile
                writer=_SendingThread(self.cursor),
            )
        )
        if self.encoders:
            copy.write(pgbinary.HEADER)
        return copy

    def write(self, frame: pl.DataFrame) -> None:
        if self.copy is None:
            self.copy = self._begin(pl.Schema({c: frame.schema[c] for c in self.columns}))
        selected = frame.select(self.columns)  # in the COPY's order, which _begin chose
        for start in range(0, selected.height, COPY_SLICE_ROWS):
            self.copy.write(self._encode(selected.slice(start, COPY_SLICE_ROWS)))

    def _encode(self, frame: pl.DataFrame) -> memoryview:
        if self.encoders:
            return pgbinary.encode_rows(frame, self.encoders)
        buffer = io.BytesIO()
        frame.write_csv(
            buffer, include_header=False, null_value=CSV_NULL, datetime_format="%Y-%m-%dT%H:%M:%S%.f"
        )
        return buffer.getbuffer()

    def finish(self) -> None:
        if self.copy is not None and self.encoders:
            self.copy.write(pgbinary.TRAILER)


def speak_utf8(connection: psycopg.Connection) -> None:
    """The frames' text is UTF-8: a session in another client encoding (a LATIN1 database's
    default) would store its bytes as mojibake, or hand back CSV Polars misreads. The server
    converts from UTF-8 to its own encoding, and refuses what it cannot store."""
    if connection.info.encoding != "utf-8":
        connection.execute("SET client_encoding TO 'UTF8'")


@contextmanager
def copy_in(
    conn: sa.Connection, table: sa.Table, columns: list[str]
) -> Iterator[Callable[[pl.DataFrame], None]]:
    """One PostgreSQL ``COPY ... FROM STDIN``; frames written to it go a slice at a time
    (memory holds one encoded slice, not a partition's)."""
    speak_utf8(conn.connection.driver_connection)
    with conn.connection.driver_connection.cursor() as cursor, ExitStack() as stack:
        sink = _CopySink(cursor, stack, table, columns)
        yield sink.write
        sink.finish()


def copy_rows(conn: sa.Connection, table: sa.Table, frame: pl.DataFrame, columns: list[str]) -> None:
    """``frame`` into the table by one COPY."""
    with copy_in(conn, table, columns) as write:
        write(frame)


def _table_name(table: sa.Table) -> sql.Identifier:
    """The table as a quoted identifier (with its schema when it has one)."""
    return sql.Identifier(table.schema, table.name) if table.schema else sql.Identifier(table.name)


def copy_out(
    conn: sa.Connection, query: str, schema: dict[str, pl.DataType], params: dict | None = None
) -> pl.DataFrame:
    """The rows of a PostgreSQL query, streamed by ``COPY (...) TO STDOUT``; ``params`` are the
    query's ``%(name)s`` values, bound by psycopg (COPY has no server-side parameters)."""
    names = list(schema)
    buffer = io.BytesIO()
    statement = sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv)").format(sql.SQL(query))  # type: ignore[arg-type]
    speak_utf8(conn.connection.driver_connection)
    with (
        conn.connection.driver_connection.cursor() as cursor,
        cursor.copy(statement, params) as copy,
    ):
        for block in copy:
            buffer.write(block)
    if buffer.tell() == 0:
        return pl.DataFrame(schema=schema)
    buffer.seek(0)
    return pl.read_csv(buffer, has_header=False, new_columns=names, schema=schema)


def copy_out_arrays(
    conn: sa.Connection, query: str, params: dict | None = None, raw: frozenset[int] = frozenset()
) -> list[np.ndarray]:
    """The one row of a query of array columns (``raw``: of ``bytea``), by binary COPY, as NumPy arrays."""
    statement = sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT binary)").format(sql.SQL(query))  # type: ignore[arg-type]
    with (
        conn.connection.driver_connection.cursor() as cursor,
        cursor.copy(statement, params) as copy,
    ):
        data = b"".join(copy)
    return pgbinary.decode_arrays(data, raw)
