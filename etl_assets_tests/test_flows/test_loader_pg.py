"""The loader's PostgreSQL paths on the private cluster: COPY of new keys, and what happens
when another writer inserted one of those keys in the meantime."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa
import yaml

from etl_assets.engine.columns import LINE, SOURCE_FILE
from etl_assets.engine.load import upsert as loader
from etl_assets.engine.load.upsert import (
    INITIAL_LOAD_MIN_ROWS,
    RESPONSE_SCHEMA,
    PartitionUpsert,
    _copy_new_rows,
    load_stage,
    upsert_partition,
)
from etl_assets.engine.staging import StagedWriter
from etl_assets.engine.tables import ensure_table
from etl_assets.model.flow import FlowModel
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


def test_a_first_load_rebuilds_the_indexes_it_dropped(
    postgres: PostgresServer, pg_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = sa.create_engine(postgres.url(pg_database))
    with engine.begin() as conn:
        ensure_table(conn, FLOW)
        conn.execute(sa.text("select nextval('accounts_id_seq')"))  # ids need not start at 1
        indexes = conn.execute(sa.text(INDEXES)).scalars().all()
    assert len(indexes) == 3  # id, external_id, vat_code (the self-link's match)
    count = INITIAL_LOAD_MIN_ROWS + 5
    good = tmp_path / "transform.parquet"
    with StagedWriter(good) as writer:  # written in four row groups, loaded in two batches
        for first in range(0, count, 2600):
            writer.write(many(min(2600, count - first), first))
    monkeypatch.setattr(loader, "LOAD_BATCH_ROWS", 5000)
    with StagedWriter(tmp_path / "load.parquet", RESPONSE_SCHEMA) as response, engine.begin() as conn:
        load = PartitionUpsert(conn, FLOW, expected_rows=count)
        assert load.rebuild, "an empty table and enough rows: the indexes are dropped"
        assert conn.execute(sa.text(INDEXES)).scalars().all() == []
        conn.rollback()
    with StagedWriter(tmp_path / "load.parquet", RESPONSE_SCHEMA) as response, engine.begin() as conn:
        loaded = load_stage(conn, FLOW, good, response)
    assert loaded.actions == {"inserted": count, "updated": 0, "unchanged": 0, "rejected": 0}
    answer = pl.read_parquet(tmp_path / "load.parquet")
    assert answer[LINE].to_list() == pl.read_parquet(good)[LINE].to_list()
    with engine.begin() as conn:
        assert conn.execute(sa.text(INDEXES)).scalars().all() == indexes
        stored = conn.execute(sa.text("select count(*), count(distinct id), min(id) from accounts")).one()
        assert stored == (count, count, 2)
        ids = dict(conn.execute(sa.text("select external_id, id from accounts")).all())
        assert conn.execute(sa.text("select nextval('accounts_id_seq')")).scalar_one() == count + 2
    assert dict(zip(answer["key"], answer["target_id"], strict=True)) == ids
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


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_a_stored_hash_from_another_version_is_replaced_not_counted_as_a_change(
    backend: str, postgres: PostgresServer, pg_database: str, tmp_path: Path
) -> None:
    url = postgres.url(pg_database) if backend == "postgresql" else f"sqlite:///{tmp_path / 'etl.sqlite'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        upsert_partition(conn, FLOW, rows("C1", "C2", "C3"))
        hashes = dict(conn.execute(sa.text("select external_id, etl_row_hash from accounts")).all())
        # as a table loaded by an older release (another hash function) would hold them
        conn.execute(sa.text("update accounts set etl_row_hash = 7 where external_id in ('C1', 'C2')"))
    with engine.begin() as conn:
        response = upsert_partition(conn, FLOW, rows("C1", "C2", "C3"))
        assert response["action"].to_list() == ["unchanged"] * 3
        assert dict(conn.execute(sa.text("select external_id, etl_row_hash from accounts")).all()) == hashes
    with engine.begin() as conn:  # a real change next to a stale hash: only the change counts
        conn.execute(sa.text("update accounts set etl_row_hash = 7 where external_id = 'C1'"))
        response = upsert_partition(conn, FLOW, rows("C1", "C2", name="Altro nome"))
        assert response["action"].to_list() == ["updated", "updated"]
        response = upsert_partition(conn, FLOW, rows("C1", "C2", "C3"))
        assert response["action"].to_list() == ["updated", "updated", "unchanged"]
        assert dict(conn.execute(sa.text("select external_id, etl_row_hash from accounts")).all()) == hashes
    engine.dispose()


def test_an_older_row_loaded_after_a_newer_one_does_not_overwrite_it(
    postgres: PostgresServer, pg_database: str
) -> None:
    """Partitions load out of order (a backfill's chunks side by side): with ``dedupe.latest_by``
    the row with the latest ``updated_at`` stays, whichever day loaded last."""
    from datetime import datetime

    def dated(name: str, when: datetime) -> pl.DataFrame:
        return rows("C1", name=name).with_columns(pl.lit(when).cast(pl.Datetime("us")).alias("updated_at"))

    engine = sa.create_engine(postgres.url(pg_database))
    with engine.begin() as conn:
        upsert_partition(conn, FLOW, dated("Del giorno 18", datetime(2026, 10, 18, 9)))
    with engine.begin() as conn:
        stale = upsert_partition(conn, FLOW, dated("Del giorno 17", datetime(2026, 10, 17, 9)))
        assert stale.get_column("action").to_list() == ["unchanged"]
    with engine.begin() as conn:
        newer = upsert_partition(conn, FLOW, dated("Del giorno 19", datetime(2026, 10, 19, 9)))
        assert newer.get_column("action").to_list() == ["updated"]
    with engine.connect() as conn:
        assert conn.execute(sa.text("select name from accounts")).scalar_one() == "Del giorno 19"


def test_a_daily_delta_answers_every_line_with_its_action_and_its_rows_id(
    postgres: PostgresServer, pg_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second delivery in another order, over several batches: a few rows changed, new and
    missing; each line's action and target id are those of its key's row in the table."""
    monkeypatch.setattr(loader, "LOAD_BATCH_ROWS", 20)
    engine = sa.create_engine(postgres.url(pg_database))
    first, delta = tmp_path / "first.parquet", tmp_path / "delta.parquet"
    with StagedWriter(first) as writer:
        for start in range(0, 60, 20):
            writer.write(many(20, start))
    with StagedWriter(tmp_path / "load1.parquet", RESPONSE_SCHEMA) as response, engine.begin() as conn:
        assert load_stage(conn, FLOW, first, response).actions["inserted"] == 60
    with engine.begin() as conn:
        before = dict(conn.execute(sa.text("select external_id, id from accounts")).all())
    changed, gone = {"C000005", "C000031", "C000058"}, {"C000002", "C000040"}
    kept = many(60).filter(~pl.col("external_id").is_in(list(gone)))
    kept = kept.with_columns(
        pl.when(pl.col("external_id").is_in(list(changed)))
        .then(pl.lit("Cambiato"))
        .otherwise("name")
        .alias("name")
    )
    fresh = rows("N1", "N2").with_columns(pl.col(LINE) + 100)
    delivery = pl.concat([kept, fresh]).sample(fraction=1.0, shuffle=True, seed=7)  # not in key order
    with StagedWriter(delta) as writer:
        for start in range(0, delivery.height, 20):
            writer.write(delivery.slice(start, 20))
    with StagedWriter(tmp_path / "load2.parquet", RESPONSE_SCHEMA) as response, engine.begin() as conn:
        loaded = load_stage(conn, FLOW, delta, response)
    assert loaded.actions == {"inserted": 2, "updated": 3, "unchanged": 55, "rejected": 0}
    answer = pl.read_parquet(tmp_path / "load2.parquet")
    assert answer[LINE].to_list() == delivery[LINE].to_list()
    with engine.begin() as conn:
        after = dict(conn.execute(sa.text("select external_id, id from accounts")).all())
    assert dict(zip(answer["key"], answer["target_id"], strict=True)) == {
        k: after[k] for k in delivery["external_id"]
    }
    expected = {
        k: "inserted" if k in ("N1", "N2") else "updated" if k in changed else "unchanged" for k in after
    }
    assert dict(zip(answer["key"], answer["action"], strict=True)) == {
        k: expected[k] for k in delivery["external_id"]
    }
    assert all(after[k] == before[k] for k in before)  # ids stay; missing keys are left in the table
    engine.dispose()
