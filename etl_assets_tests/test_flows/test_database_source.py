"""The contacts flow: the CRM's table read by its updated_at watermark, on real PostgreSQL (two
databases: the CRM and the target), through real Dagster runs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import psycopg
import pytest

from etl_assets.samples import crm_contacts_table
from etl_assets_tests.services import PostgresServer
from etl_assets_tests.test_flows.conftest import FlowEnv, materializations

DAY = "2026-01-27"
RAW = "contacts_202601270000.parquet"


class Crm:
    """The client's CRM database, written as its users would."""

    def __init__(self, postgres: PostgresServer, database: str) -> None:
        self.dsn = postgres.dsn(database)

    def upsert(self, contact_id: str, last_name: str, updated_at: str, email: str = "") -> None:
        with psycopg.connect(self.dsn) as conn:
            conn.execute(
                "insert into contacts (contact_id, last_name, email, updated_at) values (%s, %s, %s, %s) "
                "on conflict (contact_id) do update set last_name = excluded.last_name, "
                "email = excluded.email, updated_at = excluded.updated_at",
                (contact_id, last_name, email or None, datetime.fromisoformat(f"{DAY} {updated_at}")),
            )


@pytest.fixture
def crm(flow_env: FlowEnv, postgres: PostgresServer, encrypt_password, tmp_path) -> Iterator[Crm]:
    """A second database, the CRM, with its own connector (sources.crm) and encrypted password."""
    name = f"crm_{flow_env.database}"
    postgres.create_database(name)
    try:
        import sqlalchemy as sa

        engine = sa.create_engine(postgres.url(name))
        metadata = sa.MetaData()
        crm_contacts_table(metadata)
        metadata.create_all(engine)
        engine.dispose()
        settings = tmp_path / "settings.yaml"
        settings.write_text(
            settings.read_text()
            + f"""  sources:
    crm:
      driver: postgresql
      host: {postgres.host}
      port: {postgres.port}
      database: {name}
      user: {postgres.user}
      password: {encrypt_password(postgres.password)}
"""
        )
        yield Crm(postgres, name)
    finally:
        postgres.drop_database(name)


def loaded(flow_env: FlowEnv) -> dict[str, tuple]:
    """contact_id -> (last_name, updated_at, etl_loaded_at) in the target."""
    rows = flow_env.query("select contact_id, last_name, updated_at, etl_loaded_at from contacts")
    return {r[0]: r[1:] for r in rows}


def run(flow_env: FlowEnv) -> dict[str, object]:
    """One run of the day's partition; the load's counts."""
    result = flow_env.run(DAY, job="contacts_job")
    assert result.success
    metadata = materializations(result, "contacts_load")[-1].metadata
    return {a: metadata[a].value for a in ("inserted", "updated", "unchanged", "rejected")}


def watermark(flow_env: FlowEnv) -> list[tuple]:
    return flow_env.query("select column_name, value, kind, partition_key from etl_watermarks")


def test_three_runs_load_each_change_exactly_once(flow_env: FlowEnv, crm: Crm) -> None:
    for contact, name, at in [
        ("C1", "Rossi", "10:00:00"),
        ("C2", "Bianchi", "10:00:01"),
        ("C3", "Verdi", "10:00:05"),
    ]:
        crm.upsert(contact, name, at)
    assert run(flow_env) == {"inserted": 3, "updated": 0, "unchanged": 0, "rejected": 0}
    assert watermark(flow_env) == [("updated_at", f"{DAY} 10:00:05", "datetime", DAY)]
    first = loaded(flow_env)
    kept = flow_env.home / "data" / "contacts" / DAY / "raw" / RAW
    digest = (kept.parent / f"{RAW}.sha256").read_text().split()[0]
    assert flow_env.query("select name, checksum, rows from etl_data_objects") == [(RAW, digest, 3)]

    # after the read, two rows written in the watermark's own second, and a transaction that
    # committed late with a time before the watermark (within the overlap)
    crm.upsert("C1", "Rossi-Neri", "10:00:05")
    crm.upsert("C4", "Gialli", "10:00:05")
    crm.upsert("C5", "Tardi", "10:00:02")
    # read from 10:00:00 (the watermark less 5 s of overlap): C2 and C3 again, unchanged
    assert run(flow_env) == {"inserted": 2, "updated": 1, "unchanged": 2, "rejected": 0}
    second = loaded(flow_env)
    # loaded again: the source's time moved; etl_loaded_at has whole seconds, so two runs within
    # one second may share it (seen in CI: 04:40:28 both)
    assert second["C1"][0] == "Rossi-Neri" and second["C1"][1] > first["C1"][1]
    assert second["C1"][2] >= first["C1"][2]
    assert second["C2"] == first["C2"] and second["C3"] == first["C3"]  # read again, not loaded again

    crm.upsert("C2", "Bianchi-Blu", "11:30:00")
    assert run(flow_env) == {"inserted": 0, "updated": 1, "unchanged": 4, "rejected": 0}
    third = loaded(flow_env)
    assert {k: v for k, v in third.items() if k != "C2"} == {k: v for k, v in second.items() if k != "C2"}
    assert third["C2"][0] == "Bianchi-Blu"
    assert watermark(flow_env) == [("updated_at", f"{DAY} 11:30:00", "datetime", DAY)]

    # the same window again: read again (the overlap), nothing loaded twice
    assert run(flow_env) == {"inserted": 0, "updated": 0, "unchanged": 1, "rejected": 0}
    assert loaded(flow_env) == third
    assert flow_env.query("select count(*) from contacts") == [(5,)]
    # each run's extract kept under its content, each an object of the ledger
    assert len(list((kept.parent / "deliveries").iterdir())) == 4


def test_a_failed_load_leaves_the_watermark_where_it_was(flow_env: FlowEnv, crm: Crm) -> None:
    crm.upsert("C1", "Rossi", "10:00:00")
    run(flow_env)
    crm.upsert("C1", "Rossi-Neri", "12:00:00")
    # the load's transaction fails after the rows went in: everything of it rolls back
    flow_env.execute(
        "create function refuse() returns trigger language plpgsql as "
        "$$ begin raise exception 'partition loads refused for this test'; end $$;"
        "create trigger refuse before insert or update on etl_partition_loads "
        "for each row execute function refuse()"
    )
    result = flow_env.run(DAY, job="contacts_job")
    assert not result.success
    assert "partition loads refused" in result.failure_data_for_node("contacts_steps").error.message
    assert watermark(flow_env) == [("updated_at", f"{DAY} 10:00:00", "datetime", DAY)]
    assert loaded(flow_env)["C1"][0] == "Rossi"

    flow_env.execute("drop trigger refuse on etl_partition_loads")
    assert run(flow_env) == {"inserted": 0, "updated": 1, "unchanged": 0, "rejected": 0}
    assert loaded(flow_env)["C1"][0] == "Rossi-Neri"
    assert watermark(flow_env) == [("updated_at", f"{DAY} 12:00:00", "datetime", DAY)]


def test_changes_after_the_partitions_end_wait_for_the_next_partition(flow_env: FlowEnv, crm: Crm) -> None:
    crm.upsert("C1", "Rossi", "10:00:00")
    with psycopg.connect(crm.dsn) as conn:  # the next day's change
        conn.execute(
            "insert into contacts (contact_id, last_name, updated_at) values ('C9', 'Domani', '2026-01-28 09:00')"
        )
    assert run(flow_env) == {"inserted": 1, "updated": 0, "unchanged": 0, "rejected": 0}
    result = flow_env.run("2026-01-28", job="contacts_job")
    assert result.success
    assert set(loaded(flow_env)) == {"C1", "C9"}
    assert watermark(flow_env) == [("updated_at", "2026-01-28 09:00:00", "datetime", "2026-01-28")]


def test_test_connections_has_a_line_for_the_crm(flow_env: FlowEnv, crm: Crm) -> None:
    from etl_assets.resources import build_resources, test_connections
    from etl_assets.settings import load_settings

    lines = {r.connector: r for r in test_connections(build_resources(load_settings("test")))}
    assert lines["sources.crm"].ok and "crm_" in lines["sources.crm"].detail
    assert list(lines) == ["database", "sources.crm", "sftp", "mail"]
