"""The load modes (``target.mode``) through extract, transform, load and link, on PostgreSQL and
on SQLite: each mode's table after a first delivery, a changed one, one with rows missing and
a re-run; a snapshot that may not delete (rejected rows above warn_limit), hard_delete."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from etl_assets.definitions import build_definitions
from etl_assets.engine.load.response import Outcome
from etl_assets.engine.steps import FlowSteps
from etl_assets.model.flow import FlowModel
from etl_assets.resources import FoldersResource
from etl_assets.resources.files import LocalFilesResource
from etl_assets.settings import load_settings
from etl_assets_tests.services import PostgresServer
from etl_assets_tests.test_flows.conftest import FlowEnv, companies_csv, materializations
from etl_assets_tests.test_flows.test_companies import GOOD
from etl_assets_tests.test_orchestration.test_flow_dirs import client_flow

DAY, NEXT_DAY = "2026-01-15", "2026-01-16"
HEADER = "ID;NAME;CITY;PARENT"
FIRST = ["P1;Uno;Roma;", "P2;Due;Milano;P1", "P3;Tre;Napoli;P1"]


def flow(mode: str, warn_limit: int | None = None, **target: object) -> FlowModel:
    return FlowModel.model_validate(
        {
            "name": "partners",
            "source": {"file": "partners_{start:%Y%m%d}.csv", "folder": "/in"},
            "map": {
                "external_id": {"type": "String", "source": "ID", "required": True},
                "name": {"type": "String"},
                "city": {"type": "String"},
                "parent": {"type": "String"},
            },
            "links": [
                {"field": "parent", "column": "parent_id", "table": "partners", "match": "external_id"}
            ],
            "target": {"table": "partners", "key": "external_id", "mode": mode, **target},
            "warn_limit": warn_limit,
        }
    )


class Deliveries:
    """One flow's deliveries into one database, each through the four steps."""

    def __init__(self, model: FlowModel, home: Path, engine: sa.Engine) -> None:
        self.steps = FlowSteps(model, FoldersResource(home=str(home)))
        self.home, self.engine = home, engine

    def deliver(self, *rows: str, day: str = DAY) -> Outcome:
        folder = self.home / "import"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"partners_{day.replace('-', '')}.csv").write_text("\n".join([HEADER, *rows]) + "\n")
        self.steps.extract(day, datetime.fromisoformat(day), LocalFilesResource(root=str(folder)))
        self.steps.transform(day)
        loaded = self.steps.load(day, self.engine).loaded
        self.steps.link(day, self.engine, datetime.now(UTC))
        return loaded

    def rows(self, columns: str = "external_id, name, city") -> list[tuple]:
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(f"select {columns} from partners order by id"))]


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'target.db'}")
        yield engine
        engine.dispose()
        return
    postgres: PostgresServer = request.getfixturevalue("postgres")
    with postgres.own_engine("etl_modes") as engine:
        yield engine


def actions(outcome: Outcome) -> dict[str, int]:
    return {action: n for action, n in outcome.actions.items() if n}


def test_upsert_stays_the_default(tmp_path: Path, engine: sa.Engine) -> None:
    load = Deliveries(flow("upsert"), tmp_path, engine)
    assert actions(load.deliver(*FIRST)) == {"inserted": 3}
    assert actions(load.deliver("P1;Uno;Roma;", "P2;Due;Torino;P1")) == {"unchanged": 1, "updated": 1}
    assert "deleted" not in load.deliver("P1;Uno;Roma;").actions
    assert load.rows() == [("P1", "Uno", "Roma"), ("P2", "Due", "Torino"), ("P3", "Tre", "Napoli")]


def test_snapshot_marks_missing_keys_deleted_and_clears_the_mark_when_they_come_back(
    tmp_path: Path, engine: sa.Engine
) -> None:
    load = Deliveries(flow("snapshot"), tmp_path, engine)
    assert actions(load.deliver(*FIRST)) == {"inserted": 3}
    changed = load.deliver("P1;Uno;Roma;", "P2;Due;Torino;P1", "P3;Tre;Napoli;P1")
    assert actions(changed) == {"unchanged": 2, "updated": 1}
    assert changed.notes == {"snapshot_deleted": 0, "snapshot_restored": 0}
    missing = load.deliver("P1;Uno;Roma;", "P3;Tre;Napoli;P1")
    assert actions(missing) == {"unchanged": 2, "deleted": 1}
    assert load.rows("external_id, etl_deleted_at is not null") == [("P1", 0), ("P2", 1), ("P3", 0)]
    rerun = load.deliver("P1;Uno;Roma;", "P3;Tre;Napoli;P1")
    assert actions(rerun) == {"unchanged": 2}  # marked once: the mark keeps its time
    back = load.deliver("P1;Uno;Roma;", "P2;Due;Torino;P1", "P3;Tre;Napoli;P1")
    assert back.notes == {"snapshot_deleted": 0, "snapshot_restored": 1}
    assert load.rows("external_id, etl_deleted_at is null") == [("P1", 1), ("P2", 1), ("P3", 1)]


def test_snapshot_hard_delete_deletes_the_missing_rows(tmp_path: Path, engine: sa.Engine) -> None:
    load = Deliveries(flow("snapshot", hard_delete=True), tmp_path, engine)
    load.deliver(*FIRST)
    assert actions(load.deliver("P1;Uno;Roma;", "P3;Tre;Bari;P1")) == {
        "unchanged": 1,
        "updated": 1,
        "deleted": 1,
    }
    assert load.rows() == [("P1", "Uno", "Roma"), ("P3", "Tre", "Bari")]
    assert actions(load.deliver("P1;Uno;Roma;", "P3;Tre;Bari;P1")) == {"unchanged": 2}


def test_a_snapshot_rejected_above_warn_limit_loads_but_deletes_nothing(
    tmp_path: Path, engine: sa.Engine
) -> None:
    load = Deliveries(flow("snapshot", warn_limit=0, hard_delete=True), tmp_path, engine)
    load.deliver(*FIRST)
    cut_short = load.deliver("P1;Uno;Ostia;", ";Senza chiave;Roma;")  # the second row has no key
    assert actions(cut_short) == {"updated": 1}
    assert cut_short.notes == {
        "snapshot_deleted": 0,
        "snapshot_restored": 0,
        "snapshot_deletion_skipped": "1 rows rejected, above warn_limit 0: nothing deleted",
    }
    assert load.rows() == [("P1", "Uno", "Ostia"), ("P2", "Due", "Milano"), ("P3", "Tre", "Napoli")]


def test_an_empty_snapshot_deletes_nothing(tmp_path: Path, engine: sa.Engine) -> None:
    load = Deliveries(flow("snapshot", hard_delete=True), tmp_path, engine)
    load.deliver(*FIRST)
    empty = load.deliver()  # the header only: an export cut short, not a table emptied at the source
    assert empty.notes["snapshot_deletion_skipped"] == "the delivery brought no row: nothing deleted"
    assert len(load.rows()) == 3


def test_append_inserts_only_and_a_rerun_appends_nothing_twice(tmp_path: Path, engine: sa.Engine) -> None:
    load = Deliveries(flow("append"), tmp_path, engine)
    assert actions(load.deliver(*FIRST)) == {"inserted": 3}
    assert actions(load.deliver(*FIRST)) == {"unchanged": 3}  # the same partition again
    assert actions(load.deliver(*FIRST[:2], day=NEXT_DAY)) == {"inserted": 2}  # another day: appended
    assert len(load.rows()) == 5
    # the first day corrected: its changed row replaced, its missing row gone, the other day untouched
    corrected = load.deliver("P1;Uno;Roma;", "P2;Due;Torino;P1")
    assert actions(corrected) == {"unchanged": 1, "inserted": 1, "deleted": 2}
    assert load.rows("external_id, city, etl_partition") == [
        ("P1", "Roma", DAY),
        ("P1", "Roma", NEXT_DAY),
        ("P2", "Milano", NEXT_DAY),
        ("P2", "Torino", DAY),
    ]


def test_history_closes_the_changed_version_and_links_point_to_the_current_row(
    tmp_path: Path, engine: sa.Engine
) -> None:
    load = Deliveries(flow("history", tracked=["city", "parent"]), tmp_path, engine)
    assert actions(load.deliver(*FIRST)) == {"inserted": 3}
    changed = load.deliver("P1;Uno;Ostia;", "P2;Due bis;Milano;P1", "P3;Tre;Napoli;P1")
    assert actions(changed) == {"updated": 2, "unchanged": 1}
    assert load.rows("external_id, name, city, is_current, valid_to is null") == [
        ("P1", "Uno", "Roma", False, False),
        ("P2", "Due bis", "Milano", True, True),  # name is not tracked: written in place
        ("P3", "Tre", "Napoli", True, True),
        ("P1", "Uno", "Ostia", True, True),
    ]
    with engine.connect() as conn:
        closed_to, opened_from = conn.execute(
            sa.text("select valid_to, valid_from from partners where external_id = 'P1' order by id")
        ).all()
        assert closed_to[0] == opened_from[1]
    # every reference names P1's current version
    current_p1 = load.rows("id, external_id, is_current")[-1][0]
    assert load.rows("external_id, parent_id") == [
        ("P1", None),
        ("P2", current_p1),
        ("P3", current_p1),
        ("P1", None),
    ]
    before = load.rows("*")
    assert actions(load.deliver("P1;Uno;Ostia;", "P2;Due bis;Milano;P1", "P3;Tre;Napoli;P1")) == {
        "unchanged": 3
    }
    assert load.rows("*") == before  # a re-run changes nothing
    assert actions(load.deliver("P1;Uno;Ostia;")) == {"unchanged": 1}  # rows missing: history keeps them
    assert load.rows("*") == before


def test_history_options_are_checked_with_the_declaration() -> None:
    with pytest.raises(ValueError, match="hard_delete: true goes with mode: snapshot only"):
        flow("history", hard_delete=True)
    with pytest.raises(ValueError, match=r"target.tracked \['town'\]: name map fields"):
        flow("history", tracked=["town"])
    with pytest.raises(ValueError, match="target.tracked goes with mode: history only"):
        flow("upsert", tracked=["city"])


def run_job(env: FlowEnv, job: str, partition_key: str) -> dg.ExecuteInProcessResult:
    with env.defs_state():
        defs = build_definitions(load_settings("test"))
        return defs.resolve_job_def(job).execute_in_process(
            partition_key=partition_key, instance=env.instance, raise_on_error=False
        )


def test_a_snapshot_flows_deletions_are_in_the_load_metadata_and_the_email(flow_env: FlowEnv) -> None:
    path = client_flow(flow_env.home / "flows", "snap")
    text = path.read_text(encoding="utf-8").replace(
        "folder: /outbound/companies", f"folder: {flow_env.folder}"
    )
    path.write_text(text.replace("    key: external_id\n", "    key: external_id\n    mode: snapshot\n"))
    flow_env.put("companies_20260115.csv", companies_csv(*GOOD))
    assert run_job(flow_env, "snap_job", "2026-01-15").success
    flow_env.put("companies_20260116.csv", companies_csv(*GOOD[:2]))  # C3 is gone at the source
    second = run_job(flow_env, "snap_job", "2026-01-16")
    assert second.success
    metadata = materializations(second, "snap_load")[0].metadata
    assert (metadata["deleted"].value, metadata["snapshot_deleted"].value) == (1, 1)
    assert flow_env.query("select external_id, etl_deleted_at is not null from snap order by 1") == [
        ("C1", False),
        ("C2", False),
        ("C3", True),
    ]
    (message,) = flow_env.smtp.wait_for(1)
    body = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "snapshot of the whole table: 1 rows whose key is missing deleted, 0 keys back" in body
