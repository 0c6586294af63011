"""The loader's PostgreSQL paths on the private cluster: COPY of new keys, and what happens
when another writer inserted one of those keys in the meantime."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa
import yaml

from etl_assets.core.flow_model import FlowModel
from etl_assets.core.loader import INITIAL_LOAD_MIN_ROWS, PartitionUpsert, _copy_new_rows, upsert_partition
from etl_assets.core.maps import LINE, SOURCE_FILE
from etl_assets.core.tables import ensure_table
from etl_assets_tests.services import PostgresServer

FLOW = FlowModel.model_validate(
    yaml.safe_load((Path(__file__).parents[2] / "etl_assets/defs/companies/defs.yaml").read_text())[
        "attributes"
    ]
)


def rows(*keys: str, name: str = "Ditta") -> pl.DataFrame:
    frame = pl.DataFrame(
        {LINE: list(range(2, 2 + len(keys))), SOURCE_FILE: "f.csv", "external_id": list(keys)},
        schema_overrides={LINE: pl.Int64},
    )
    return frame.with_columns(
        pl.col("external_id").str.replace("C", "IT0000000000").alias("vat_code"),
        pl.lit(name).alias("name"),
        *(pl.lit(None).alias(c) for c in FLOW.map if c not in ("external_id", "vat_code", "name")),
    ).cast(
        {
            "revenue": pl.Decimal(18, 2),
            "employees": pl.Int64,
            "founded": pl.Date,
            "updated_at": pl.Datetime("us"),
        }
    )


def test_a_key_inserted_meanwhile_falls_back_to_the_upsert(
    postgres: PostgresServer, pg_database: str
) -> None:
    engine = sa.create_engine(postgres.url(pg_database))
    with engine.begin() as conn:
        response = upsert_partition(conn, FLOW, rows("C1", "C2"))
        assert response["action"].to_list() == ["inserted", "inserted"]
    with engine.begin() as conn:
        table = ensure_table(conn, FLOW)
        # C2 exists now: COPY of "new" keys that include it fails, and the transaction goes on
        assert not _copy_new_rows(conn, table, rows("C3", "C2"), ["external_id", "vat_code", "name"])
        assert conn.execute(sa.text("select count(*) from accounts")).scalar_one() == 2
        response = upsert_partition(conn, FLOW, rows("C2", "C3", name="Nuovo nome"))
        assert response.select("key", "action").rows() == [("C2", "updated"), ("C3", "inserted")]
    with engine.connect() as conn:
        names = conn.execute(sa.text("select external_id, name from accounts order by 1")).all()
    assert names == [("C1", "Ditta"), ("C2", "Nuovo nome"), ("C3", "Nuovo nome")]
    engine.dispose()


INDEXES = "select indexdef from pg_indexes where tablename = 'accounts' order by indexname"


def many(count: int, first: int = 0) -> pl.DataFrame:
    frame = rows(*(f"C{n:06d}" for n in range(first, first + count)))
    return frame.with_columns(pl.col(LINE) + first)


def test_a_first_load_rebuilds_the_indexes_it_dropped(postgres: PostgresServer, pg_database: str) -> None:
    engine = sa.create_engine(postgres.url(pg_database))
    with engine.begin() as conn:
        ensure_table(conn, FLOW)
        indexes = conn.execute(sa.text(INDEXES)).scalars().all()
    assert len(indexes) == 3  # id, external_id, vat_code (the self-link's match)
    count = INITIAL_LOAD_MIN_ROWS + 5
    with engine.begin() as conn:
        load = PartitionUpsert(conn, FLOW, expected_rows=count)
        assert load.rebuild, "an empty table and enough rows: the indexes are dropped"
        assert conn.execute(sa.text(INDEXES)).scalars().all() == []
        response = load.batch(many(count))
        load.finish()
    assert response["action"].unique().to_list() == ["inserted"]
    assert response["target_id"].n_unique() == count
    with engine.begin() as conn:
        assert conn.execute(sa.text(INDEXES)).scalars().all() == indexes
        stored = conn.execute(sa.text("select count(*), count(distinct id) from accounts")).one()
        assert stored == (count, count)
        ids = dict(conn.execute(sa.text("select external_id, id from accounts")).all())
    assert dict(zip(response["key"], response["target_id"], strict=True)) == ids
    # the rebuilt unique index is the upsert's conflict target again
    with engine.begin() as conn:
        response = upsert_partition(conn, FLOW, rows("C000001", "Z1", name="Nuovo nome"))
    assert response.select("key", "action").rows() == [("C000001", "updated"), ("Z1", "inserted")]
    engine.dispose()


def test_a_first_load_with_a_repeated_key_leaves_the_table_as_it_was(
    postgres: PostgresServer, pg_database: str
) -> None:
    engine = sa.create_engine(postgres.url(pg_database))
    with engine.begin() as conn:
        ensure_table(conn, FLOW)
        indexes = conn.execute(sa.text(INDEXES)).scalars().all()
    repeated = pl.concat([many(INITIAL_LOAD_MIN_ROWS), many(1, first=5)])
    with pytest.raises(sa.exc.IntegrityError, match="accounts_external_id_key"), engine.begin() as conn:
        upsert_partition(conn, FLOW, repeated)
    with engine.begin() as conn:
        assert conn.execute(sa.text("select count(*) from accounts")).scalar_one() == 0
        assert conn.execute(sa.text(INDEXES)).scalars().all() == indexes
    engine.dispose()
