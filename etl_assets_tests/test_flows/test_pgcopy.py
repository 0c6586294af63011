"""COPY into PostgreSQL: binary form for the types it encodes, CSV for the rest; either
way the table holds exactly the values of the frame."""

from datetime import date, datetime
from decimal import Decimal

import polars as pl
import psycopg
import pytest
import sqlalchemy as sa

from etl_assets.engine.load.postgres import pgbinary
from etl_assets.engine.load.postgres.pgcopy import COPY_SLICE_ROWS, copy_in, copy_rows
from etl_assets_tests.services import PostgresServer

TYPED = sa.Table(
    "typed",
    sa.MetaData(),
    sa.Column("t", sa.Text()),
    sa.Column("i", sa.BigInteger()),
    sa.Column("j", sa.Integer()),
    sa.Column("n", sa.Numeric(18, 2)),
    sa.Column("m", sa.Numeric(10, 5)),
    sa.Column("d", sa.Date()),
    sa.Column("ts", sa.DateTime()),
)
SCHEMA = {
    "t": pl.String,
    "i": pl.Int64,
    "j": pl.Int32,
    "n": pl.Decimal(18, 2),
    "m": pl.Decimal(10, 5),
    "d": pl.Date,
    "ts": pl.Datetime("us"),
}
EDGES = pl.DataFrame(
    {
        "t": ["x", None, "", 'semi;colon "quoted"\r\nnew line, comma', "ünïcode € \\N"],
        "i": [1, None, -1, 2**62, -(2**63) + 1],
        "j": [1, None, -5, 2**31 - 1, -(2**31)],
        "n": [
            Decimal("0.00"),
            None,
            Decimal("-1234567890123456.78"),
            Decimal("9999999999999999.99"),
            Decimal("-0.01"),
        ],
        "m": [Decimal("12345.12345"), None, Decimal("-0.00001"), Decimal("0"), Decimal("99999.99999")],
        "d": [date(2000, 1, 1), None, date(1970, 1, 1), date(1899, 12, 31), date(2099, 2, 28)],
        "ts": [
            datetime(2000, 1, 1),
            None,
            datetime(1970, 1, 1, 12, 0, 0, 5),
            datetime(2026, 11, 27, 11, 22, 33, 123456),
            datetime(1901, 1, 1, 23, 59, 59),
        ],
    },
    schema=SCHEMA,
)


@pytest.fixture
def engine(postgres: PostgresServer, pg_database: str):  # noqa: ANN201
    engine = sa.create_engine(postgres.url(pg_database))
    with engine.begin() as conn:
        TYPED.create(conn)
    yield engine
    engine.dispose()


def stored(engine: sa.Engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(TYPED).order_by(sa.text("ctid")))]


def test_every_encoded_type_arrives_as_the_frame_holds_it(engine: sa.Engine) -> None:
    assert pgbinary.encoders_for(list(c.type for c in TYPED.c), EDGES.schema) is not None
    with engine.begin() as conn:
        with copy_in(conn, TYPED, EDGES.columns) as write:
            write(EDGES)
            write(EDGES.slice(2))  # a second frame continues the same COPY
        # the same rows through bound parameters: the server's own reading of each value
        conn.execute(sa.insert(TYPED), EDGES.vstack(EDGES.slice(2)).to_dicts())
    rows = stored(engine)
    assert rows[:8] == rows[8:]
    assert rows[3][0] == 'semi;colon "quoted"\r\nnew line, comma'
    assert rows[1] == (None,) * 7
    assert rows[2][0] == ""  # an empty string stays empty, not null


def test_a_partition_larger_than_a_slice_goes_slice_by_slice(engine: sa.Engine) -> None:
    count = COPY_SLICE_ROWS + 7
    frame = pl.DataFrame({"i": range(count)}, schema={"i": pl.Int64}).with_columns(
        pl.format("row {}", "i").alias("t"),
        (pl.col("i") * 3).cast(pl.Decimal(18, 2)).alias("n"),
    )
    with engine.begin() as conn:
        copy_rows(conn, TYPED, frame, ["i", "t", "n"])
        total = conn.execute(sa.text("select count(*), sum(i), sum(n), max(t) from typed")).one()
    assert total == (count, count * (count - 1) // 2, Decimal(3 * count * (count - 1) // 2), "row 99999")


def test_fixed_width_columns_pack_into_one_record_a_row_whatever_their_order(engine: sa.Engine) -> None:
    # the COPY lists fixed-width columns first; those without nulls in a slice are sent as
    # one record a row: only fixed columns (one join input), then a slice with nulls
    fixed = EDGES.slice(2).select("ts", "i", "n", "d", "j", "m")  # no nulls, table order mixed
    assert pgbinary.fixed_width_first([pgbinary.encode_text, pgbinary.encode_int8]) == [1, 0]
    with engine.begin() as conn:
        with copy_in(conn, TYPED, fixed.columns) as write:
            write(fixed)
            write(EDGES.select(fixed.columns))  # nulls in every column of one row
        conn.execute(sa.insert(TYPED), fixed.vstack(EDGES.select(fixed.columns)).to_dicts())
    rows = stored(engine)
    assert rows[:8] == rows[8:]
    assert rows[0][1:] == tuple(EDGES.slice(2, 1).drop("t").row(0))


def test_a_column_without_binary_encoder_goes_as_csv(engine: sa.Engine) -> None:
    # a string frame column for a bigint column: the server parses the text itself
    frame = pl.DataFrame({"i": ["42", None], "t": ["a", "b"]})
    assert pgbinary.encoders_for([TYPED.c.i.type, TYPED.c.t.type], frame.schema) is None
    with engine.begin() as conn:
        copy_rows(conn, TYPED, frame, ["i", "t"])
    assert [(r[0], r[1]) for r in stored(engine)] == [("a", 42), ("b", None)]


def test_a_bad_row_fails_the_whole_copy(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE typed ALTER COLUMN t SET NOT NULL")
    with pytest.raises(psycopg.errors.NotNullViolation, match='column "t"'), engine.begin() as conn:
        copy_rows(conn, TYPED, EDGES, EDGES.columns)
    assert stored(engine) == []


@pytest.mark.parametrize(
    ("column_type", "dtype", "binary"),
    [
        (sa.BigInteger(), pl.Int32, True),
        (sa.SmallInteger(), pl.Int16, False),  # int2 has no encoder: CSV
        (sa.Numeric(38, 2), pl.Decimal(38, 2), False),  # past int64
        (sa.Numeric(18, 2), pl.Decimal(18, 3), False),  # another scale: the server rounds
        (sa.DateTime(timezone=True), pl.Datetime("us"), False),
        (sa.DateTime(), pl.Datetime("us", "Europe/Rome"), False),
        (sa.Enum("a", "b", name="kind"), pl.String, False),
        (sa.Text(), pl.Null, True),
        (sa.Boolean(), pl.Boolean, False),
    ],
)
def test_binary_only_where_the_bytes_are_known(
    column_type: sa.types.TypeEngine, dtype: pl.DataType, binary: bool
) -> None:
    assert (pgbinary.encoder_for(column_type, dtype) is not None) is binary
