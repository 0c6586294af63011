"""What the target's own columns can hold, checked before a batch is sent.

The target table may be the client's, made before us with narrower types than a flow
declares (``varchar(40)`` for a String, ``integer`` for an Integer, ``numeric(10,2)``, a
``NOT NULL``, a database in LATIN1). PostgreSQL refuses a whole COPY for one such value; here
the row is rejected instead, naming the field, the value's fault and the column's type, and
the rest of the batch loads. The facts come from the database's catalogue, read once a load.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

import polars as pl
import sqlalchemy as sa

from etl_assets.engine.columns import ERROR_FIELD, ERROR_REASON, LINE
from etl_assets.model.flow import FlowModel

INTEGER_RANGES = {"smallint": (-(2**15), 2**15 - 1), "integer": (-(2**31), 2**31 - 1)}
# PostgreSQL's names of server encodings where they differ from Python's codecs
PYTHON_CODECS = {
    "LATIN1": "latin-1",
    "LATIN2": "iso8859-2",
    "LATIN9": "iso8859-15",
    "WIN1250": "cp1250",
    "WIN1251": "cp1251",
    "WIN1252": "cp1252",
    "EUC_JP": "euc_jp",
    "SJIS": "shift_jis",
    "KOI8R": "koi8-r",
}
NOT_ASCII = r"[^\x00-\x7F]"
REFUSED_SCHEMA = {LINE: pl.Int64, ERROR_FIELD: pl.String, ERROR_REASON: pl.String}


@dataclass(frozen=True)
class ColumnFacts:
    """One target column as the database declares it."""

    name: str
    data_type: str
    max_length: int | None
    precision: int | None
    scale: int | None
    nullable: bool

    @property
    def shown(self) -> str:
        if self.max_length is not None:
            return f"{self.data_type}({self.max_length})"
        if self.data_type == "numeric" and self.precision is not None:
            return f"numeric({self.precision},{self.scale or 0})"
        return self.data_type


@dataclass(frozen=True)
class TargetFit:
    """The checks a flow's values need against one target table (none on SQLite)."""

    table: str
    columns: dict[str, ColumnFacts]
    encoding: str | None  # the database's, when it cannot store every character (not UTF8)
    codec: str | None = None  # the same as Python's codec

    @classmethod
    def read(cls, conn: sa.Connection, flow: FlowModel) -> TargetFit:
        table = flow.target.table
        if conn.dialect.name != "postgresql":
            return cls(table, {}, None)
        rows = conn.execute(
            sa.text(
                "SELECT column_name, data_type, character_maximum_length, numeric_precision, "
                "numeric_scale, is_nullable = 'YES' FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = :table"
            ),
            {"table": table},
        ).all()
        columns = {r[0]: ColumnFacts(*r) for r in rows if r[0] in flow.map}
        server = conn.exec_driver_sql("SHOW server_encoding").scalar_one()
        codec = _codec(server)
        return cls(table, columns, server if codec else None, codec)

    def split(self, flow: FlowModel, good: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(rows the table can hold, the others as ``LINE, field, reason``): a row's first
        fault in map order."""
        faults = self._faults(good)
        if not faults:
            return good, pl.DataFrame(schema=REFUSED_SCHEMA)
        field = pl.coalesce([pl.when(c).then(pl.lit(flow.source_column(n))) for n, c, _ in faults])
        reason = pl.coalesce([pl.when(c).then(r) for _, c, r in faults])
        judged = good.with_columns(field.alias(ERROR_FIELD), reason.alias(ERROR_REASON))
        refused = judged.filter(pl.col(ERROR_FIELD).is_not_null()).select(LINE, ERROR_FIELD, ERROR_REASON)
        if refused.height == 0:
            return good, refused
        return judged.filter(pl.col(ERROR_FIELD).is_null()).drop(ERROR_FIELD, ERROR_REASON), refused

    def _faults(self, good: pl.DataFrame) -> list[tuple[str, pl.Expr, pl.Expr]]:
        """(field, condition, reason) for every check a column needs."""
        faults = []
        for name, facts in self.columns.items():
            column, where = pl.col(name), f"{self.table}.{name} is {facts.shown}"
            dtype = good.schema.get(name)
            if not facts.nullable:
                faults.append((name, column.is_null(), pl.lit(f"missing: {self.table}.{name} is NOT NULL")))
            if dtype == pl.String and facts.max_length is not None:
                too_long = column.str.len_chars() > facts.max_length
                faults.append((name, too_long, pl.lit(f"longer than {facts.max_length} characters: {where}")))
            if dtype == pl.String and self.codec is not None:
                lines = _unencodable_lines(good, name, self.codec)
                reason = f"a character the database's encoding ({self.encoding}) cannot store: {where}"
                faults.append((name, pl.col(LINE).is_in(lines.implode()), pl.lit(reason)))
            if dtype is not None and dtype.is_integer() and facts.data_type in INTEGER_RANGES:
                low, high = INTEGER_RANGES[facts.data_type]
                faults.append((name, ~column.is_between(low, high), pl.lit(f"out of range: {where}")))
            if isinstance(dtype, pl.Decimal | pl.Int64) and facts.data_type == "numeric" and facts.precision:
                limit = 10 ** (facts.precision - (facts.scale or 0))
                beyond = column.cast(pl.Float64).abs() >= limit
                faults.append((name, beyond, pl.lit(f"out of range: {where} (below {limit:g} only)")))
        return faults


def _codec(server_encoding: str) -> str | None:
    if server_encoding in ("UTF8", "SQL_ASCII"):
        return None
    name = PYTHON_CODECS.get(server_encoding, server_encoding.lower())
    try:
        return codecs.lookup(name).name
    except LookupError:  # an encoding Python lacks: the database's own refusal stays the judge
        return None


def _unencodable_lines(good: pl.DataFrame, column: str, encoding: str) -> pl.Series:
    """Lines whose value holds a character the encoding lacks; only values with a character
    beyond ASCII are tried (most rows are skipped by one vectorised test)."""
    candidates = good.filter(pl.col(column).str.contains(NOT_ASCII)).select(LINE, column)

    def fits(value: str) -> bool:
        try:
            value.encode(encoding)
        except UnicodeEncodeError:
            return False
        return True

    bad = [line for line, value in candidates.iter_rows() if not fits(value)]
    return pl.Series(LINE, bad, dtype=pl.Int64)
