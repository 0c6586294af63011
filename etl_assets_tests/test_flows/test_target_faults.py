"""Row faults stay rows at load: a value the client's own table cannot hold (its narrower
types, a NOT NULL, its encoding) or a row its constraints and triggers refuse is rejected
with the field and the reason; the other rows of the partition land in its one transaction."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import polars as pl
import psycopg
import pytest
import sqlalchemy as sa
import yaml

from etl_assets.engine.load import upsert as loader
from etl_assets.engine.load.upsert import RESPONSE_SCHEMA, load_stage
from etl_assets.engine.staging import StagedWriter
from etl_assets.engine.tables import ensure_table
from etl_assets.model.flow import FlowModel
from etl_assets_tests.services import PostgresServer
from etl_assets_tests.test_flows.conftest import FlowEnv, companies_csv, materializations
from etl_assets_tests.test_flows.test_loader_pg import rows

FLOW = FlowModel.model_validate(
    yaml.safe_load((Path(__file__).parents[2] / "etl_assets/defs/companies/defs.yaml").read_text())[
        "attributes"
    ]
)
DAY = "2026-01-15"


def company(
    key: str, name: str = "Ditta", city: str = "Milano", revenue: str = "", employees: str = ""
) -> str:
    number = key[1:].rjust(11, "0")
    return f"{key};IT{number};{name};;{city};;IT;;;;{revenue};{employees};;14/01/2026 10:00:00"


CLIENT_TABLE = [
    "ALTER TABLE accounts ALTER name TYPE varchar(20)",
    "ALTER TABLE accounts ALTER employees TYPE integer",
    "ALTER TABLE accounts ALTER revenue TYPE numeric(8,2)",
    "ALTER TABLE accounts ALTER city SET NOT NULL",
    "ALTER TABLE accounts ADD CONSTRAINT employees_positive CHECK (employees >= 0)",
    """CREATE FUNCTION no_forbidden() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN IF NEW.name = 'Vietato' THEN RAISE EXCEPTION 'name %% is not allowed', NEW.name; END IF;
       RETURN NEW; END $$""",
    "CREATE TRIGGER no_forbidden BEFORE INSERT OR UPDATE ON accounts FOR EACH ROW EXECUTE FUNCTION no_forbidden()",
]


def client_table(url: str) -> None:
    """The client's accounts table: ours, narrowed, with a constraint and a trigger of theirs."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        ensure_table(conn, FLOW)
        for statement in CLIENT_TABLE:
            conn.exec_driver_sql(statement)
    engine.dispose()


def error_rows(path: Path) -> list[tuple[str, str, str, str]]:
    """(key, error_field, error_reason, source_line) of an error file."""
    reader = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8")), delimiter=";")
    return [(r["COMPANY_ID"], r["error_field"], r["error_reason"], r["source_line"]) for r in reader]


def test_rows_the_clients_table_refuses_are_rejected_and_the_rest_land(flow_env: FlowEnv) -> None:
    client_table(flow_env.postgres.url(flow_env.database))
    flow_env.put(
        "companies_20260115.csv",
        companies_csv(
            company("C1", revenue="1.000,00", employees="10"),
            company("C2", name="Ditta dal nome troppo lungo"),
            company("C3", employees="3000000000"),
            company("C4", revenue="12.345.678,00"),
            company("C5", city=""),
            company("C6", employees="-5"),
            company("C7", name="Vietato"),
            company("C8"),
        ),
    )
    result = flow_env.run(DAY)
    assert result.success  # 6 rejections, warn_limit 10: a warning, the partition lands
    assert flow_env.query("select external_id from accounts order by 1") == [("C1",), ("C8",)]
    assert error_rows(flow_env.error_file(DAY, "load")) == [
        ("C2", "NAME", "longer than 20 characters: accounts.name is character varying(20)", "3"),
        ("C3", "EMPLOYEES", "out of range: accounts.employees is integer", "4"),
        ("C4", "REVENUE", "out of range: accounts.revenue is numeric(8,2) (below 1e+06 only)", "5"),
        ("C5", "CITY", "missing: accounts.city is NOT NULL", "6"),
        (
            "C6",
            "COMPANY_ID",
            'refused by the database: new row for relation "accounts" violates check constraint '
            '"employees_positive"',
            "7",
        ),
        ("C7", "COMPANY_ID", "refused by the database: name Vietato is not allowed", "8"),
    ]
    load = materializations(result, "companies_load")[0].metadata
    assert (load["inserted"].value, load["rejected"].value) == (2, 6)
    checks = {
        c.check_name: c
        for c in result.get_asset_check_evaluations()
        if c.asset_key.path[0] == "companies_load"
    }
    assert checks["reconciliation"].passed  # rows in = loaded + rejected + collapsed


@pytest.fixture
def forbidden_table(postgres: PostgresServer, pg_database: str) -> sa.Engine:
    engine = sa.create_engine(postgres.url(pg_database))
    with engine.begin() as conn:
        ensure_table(conn, FLOW)
        for statement in CLIENT_TABLE[5:]:
            conn.exec_driver_sql(statement)
    return engine


def load_frame(engine: sa.Engine, frame: pl.DataFrame, tmp_path: Path) -> pl.DataFrame:
    good = tmp_path / "transform.parquet"
    frame.write_parquet(good)
    response = tmp_path / "load.parquet"
    with StagedWriter(response, RESPONSE_SCHEMA) as writer, engine.begin() as conn:
        load_stage(conn, FLOW, good, writer)
    return pl.read_parquet(response)


def test_a_row_refused_in_a_first_loads_single_copy_is_found_in_batches(
    forbidden_table: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first load COPYs the whole partition at once (indexes dropped): one refused row
    fails that COPY, and the load starts again in batches, halving the one that fails."""
    monkeypatch.setattr(loader, "INITIAL_LOAD_MIN_ROWS", 10)
    monkeypatch.setattr(loader, "LOAD_BATCH_ROWS", 8)
    keys = [f"C{i}" for i in range(1, 41)]
    frame = rows(*keys).with_columns(
        pl.when(pl.col("external_id").is_in(["C7", "C33"]))
        .then(pl.lit("Vietato"))
        .otherwise("name")
        .alias("name")
    )
    with StagedWriter(tmp_path / "t.parquet") as writer:  # row groups of 8 rows: 5 batches
        for start in range(0, 40, 8):
            writer.write(frame.slice(start, 8))
    response = tmp_path / "load.parquet"
    with (
        pytest.raises(loader.RowRefusedInBulk, match="name Vietato is not allowed"),
        StagedWriter(response, RESPONSE_SCHEMA) as out,
        forbidden_table.begin() as conn,
    ):
        load_stage(conn, FLOW, tmp_path / "t.parquet", out)
    with forbidden_table.connect() as conn:  # rolled back whole
        assert conn.execute(sa.text("select count(*) from accounts")).scalar_one() == 0
    with StagedWriter(response, RESPONSE_SCHEMA) as out, forbidden_table.begin() as conn:
        outcome = load_stage(conn, FLOW, tmp_path / "t.parquet", out, bulk=False)
    answer = pl.read_parquet(response)
    assert answer.get_column("key").to_list() == keys  # in the file's order: link reads it in step
    assert answer.filter(pl.col("action") == "rejected").get_column("key").to_list() == ["C7", "C33"]
    assert outcome.actions["inserted"] == 38
    with forbidden_table.connect() as conn:
        assert conn.execute(sa.text("select count(*) from accounts")).scalar_one() == 38
        # the indexes a first load drops are there: the batches kept them
        assert (
            conn.execute(sa.text("select count(*) from pg_indexes where tablename = 'accounts'")).scalar_one()
            >= 2
        )


def test_text_the_databases_encoding_cannot_store_is_rejected(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    name = "etl_test_latin1"
    with psycopg.connect(postgres.dsn("postgres"), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(
            f"CREATE DATABASE {name} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
        )
    engine = sa.create_engine(postgres.url(name))
    try:
        frame = rows("C1", "C2", "C3").with_columns(
            pl.Series("name", ["Caffè Società", "Ditta €uro", "東京 Trading"])
        )
        answer = load_frame(engine, frame, tmp_path)
        assert answer.select("key", "action").rows() == [
            ("C1", "inserted"),
            ("C2", "rejected"),
            ("C3", "rejected"),
        ]
        assert answer.get_column("reason")[1] == (
            "a character the database's encoding (LATIN1) cannot store: accounts.name is text"
        )
        with engine.connect() as conn:
            assert conn.execute(sa.text("select name from accounts")).all() == [("Caffè Società",)]
    finally:
        engine.dispose()
        with psycopg.connect(postgres.dsn("postgres"), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
