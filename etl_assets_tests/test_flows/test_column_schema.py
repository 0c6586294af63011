"""A companies load through a real Dagster run: its materialization carries the target's
columns as PostgreSQL has them, next to the declared schema the asset page shows."""

from __future__ import annotations

import dagster as dg

from etl_assets_tests.test_flows.conftest import FlowEnv, companies_csv, materializations

ROW = "C1;IT00000000001;Rossi S.p.A.;;Milano;20121;IT;;;;1.234,50;12;01/02/1990;14/01/2026 10:00:00"


def test_a_load_materialization_carries_the_table_as_the_database_has_it(flow_env: FlowEnv) -> None:
    # a client's own table, narrower than the declaration: the schema says what is there
    flow_env.execute(
        "create table accounts (id bigserial primary key, external_id varchar(40) unique not null, "
        "vat_code text, name text, address text, city text, zip text, country text, email text, "
        "phone text, parent_vat text, revenue numeric(12, 2), employees integer, founded date, "
        "updated_at timestamp, parent_account_id bigint, etl_row_hash bigint, etl_source_file text, "
        "etl_source_line bigint, etl_loaded_at timestamp)"
    )
    flow_env.put("companies_20260115.csv", companies_csv(ROW))
    result = flow_env.run("2026-01-15")
    assert result.success
    assert flow_env.query("select external_id, revenue::text, employees from accounts") == [
        ("C1", "1234.50", 12)
    ]
    (load,) = materializations(result, "companies_load")
    found = {c.name: c.type for c in load.metadata["dagster/column_schema"].schema.columns}
    assert (found["external_id"], found["revenue"], found["employees"]) == (
        "VARCHAR(40)",
        "NUMERIC(12, 2)",
        "INTEGER",
    )
    assert found["updated_at"] == "TIMESTAMP WITHOUT TIME ZONE"
    assert isinstance(load.metadata["dagster/column_schema"], dg.TableSchemaMetadataValue)
