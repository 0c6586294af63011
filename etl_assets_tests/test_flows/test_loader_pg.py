"""The loader's PostgreSQL paths on the private cluster: COPY of new keys, and what happens
when another writer inserted one of those keys in the meantime."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import sqlalchemy as sa
import yaml

from etl_assets.core.flow_model import FlowModel
from etl_assets.core.loader import _copy_new_rows, upsert_partition
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
