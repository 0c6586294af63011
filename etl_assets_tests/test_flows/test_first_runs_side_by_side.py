"""Runs that start side by side on a new database: each creates the tables it finds missing
(target, ledger, partition loads, parking) and adds the columns its table lacks; none may
fail because another one made them first (PostgreSQL's catalog refuses a second CREATE of
the same name with a unique violation, ``IF NOT EXISTS`` or not). The scale-out test met it
first: two Celery workers loading their first partitions into one database."""

from __future__ import annotations

import threading
from collections.abc import Callable

import sqlalchemy as sa

from etl_assets.engine.ddl import create_missing
from etl_assets.engine.ledger.tables import ensure_ledger
from etl_assets.engine.link.parking import parked_table
from etl_assets.engine.load.partition_loads import record_load
from etl_assets.engine.load.upsert import upsert_partition
from etl_assets.engine.tables import add_missing_columns, target_table
from etl_assets_tests.services import PostgresServer
from etl_assets_tests.test_flows.test_loader_pg import FLOW, rows

RUNS = 4


def side_by_side(engine: sa.Engine, work: Callable[[sa.Connection, int], None]) -> list[BaseException]:
    """``work`` in RUNS transactions of their own, started together; the errors raised."""
    start, errors = threading.Barrier(RUNS), []

    def run(number: int) -> None:
        try:
            with engine.begin() as conn:
                start.wait()
                work(conn, number)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(RUNS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors


def test_first_loads_side_by_side_all_land(postgres: PostgresServer, pg_database: str) -> None:
    engine = sa.create_engine(postgres.url(pg_database), pool_size=RUNS)

    def first_load(conn: sa.Connection, number: int) -> None:
        answer = upsert_partition(conn, FLOW, rows(f"C{number}"))
        assert answer["action"].to_list() == ["inserted"]
        ensure_ledger(conn)
        record_load(conn, FLOW.name, f"2026-11-0{number + 1}", 1)
        create_missing(conn, parked_table().metadata)

    assert side_by_side(engine, first_load) == []
    with engine.connect() as conn:
        keys = conn.execute(sa.text("SELECT external_id FROM accounts ORDER BY 1")).scalars().all()
        loads = conn.execute(sa.text("SELECT count(*) FROM etl_partition_loads")).scalar_one()
    assert keys == [f"C{n}" for n in range(RUNS)]
    assert loads == RUNS


def test_columns_added_side_by_side_are_added_once(postgres: PostgresServer, pg_database: str) -> None:
    engine = sa.create_engine(postgres.url(pg_database), pool_size=RUNS)
    with engine.begin() as conn:
        upsert_partition(conn, FLOW, rows("C1"))
        conn.exec_driver_sql("ALTER TABLE accounts DROP COLUMN etl_object_id")
    added: list[list[str]] = []

    def evolve(conn: sa.Connection, number: int) -> None:
        added.append(add_missing_columns(conn, target_table(FLOW)))

    assert side_by_side(engine, evolve) == []
    assert sorted(added) == [[], [], [], ["etl_object_id"]]
