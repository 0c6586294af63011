"""The ledger on SQLite (the dev target): the same statements, the same stale listing."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from etl_assets.engine.ledger.record import Delivery, Ledger, StageRecord, ledger_now
from etl_assets.engine.ledger.show import format_objects, object_rows, stale_partitions
from etl_assets.model.declarations import PACKAGED_FLOWS, read_flow
from etl_assets.model.versions import flow_versions


def test_the_ledger_records_and_lists_stale_partitions_on_sqlite(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'target.db'}")
    flow = read_flow(PACKAGED_FLOWS / "companies" / "defs.yaml")
    old = Ledger(flow, "run-1", lambda: engine)
    for key in ("2026-01-01", "2026-01-02"):
        old.delivered(key, Delivery("ab" * 32, "f.csv", 10, 2, tmp_path / "f.csv"))
        for stage in ("extract", "transform"):
            old.stage_done_now(key, StageRecord(stage, 2, 2, 0, ledger_now()))
    # the same bytes again: the same object
    assert old.objects == {"2026-01-01": 1, "2026-01-02": 2}
    old.delivered("2026-01-01", Delivery("ab" * 32, "f.csv", 10, 2, tmp_path / "f.csv"))
    assert old.objects["2026-01-01"] == 1
    assert stale_partitions(engine, flow) == []

    changed = flow.model_copy(deep=True)
    changed.map["city"].pattern = "^[A-Za-z ]+$"
    new = Ledger(changed, "run-2", lambda: engine)
    new.stage_done_now("2026-01-02", StageRecord("transform", 2, 2, 0, ledger_now()))
    [stale] = stale_partitions(engine, changed)
    assert stale.partition_key == "2026-01-01"
    assert [(s.stage, s.recorded, s.current, s.run_id) for s in stale.stages] == [
        ("transform", flow_versions(flow)["transform"], flow_versions(changed)["transform"], "run-1")
    ]
    with engine.connect() as conn:
        assert conn.exec_driver_sql("select count(*) from etl_data_models").scalar_one() == 2
        assert conn.exec_driver_sql("select count(*) from etl_data_objects").scalar_one() == 2
    shown = object_rows(engine, "companies", "2026-01-02")
    assert [s["run_id"] for s in shown[0]["stages"]] == ["run-1", "run-1", "run-2"]
    assert "object 2  partition 2026-01-02  f.csv" in format_objects(shown)


def test_a_write_the_database_refuses_now_waits_for_the_next_transaction(tmp_path: Path) -> None:
    """The database down at extract: the stage is not failed for it, its rows go in with the
    load's transaction (here: the next one that gets through)."""
    down = sa.create_engine(f"sqlite:///{tmp_path / 'missing' / 'target.db'}")  # no such folder
    up = sa.create_engine(f"sqlite:///{tmp_path / 'target.db'}")
    flow = read_flow(PACKAGED_FLOWS / "companies" / "defs.yaml")
    engines = iter([down, down, up])
    ledger = Ledger(flow, "run-1", lambda: next(engines))
    ledger.delivered("2026-01-01", Delivery("cd" * 32, "f.csv", 10, 2, tmp_path / "f.csv"))
    ledger.stage_done_now("2026-01-01", StageRecord("extract", 2, 2, 0, ledger_now()))
    assert len(ledger.pending) == 2
    with up.begin() as conn:
        assert ledger.object_of(conn, "2026-01-01") == 1
        ledger.stage_done(conn, "2026-01-01", StageRecord("load", 2, 2, 0, ledger_now()))
    ledger.committed()
    [found] = object_rows(up, "companies")
    assert [(s["stage"], s["object_id"]) for s in found["stages"]] == [("extract", 1), ("load", 1)]
