"""A source column the map does not name, under each schema-drift policy, through extract,
transform and load on PostgreSQL."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from etl_assets.engine.extract import SourceFileError
from etl_assets.engine.steps import FlowSteps
from etl_assets.model.flow import FlowModel
from etl_assets.resources import FoldersResource
from etl_assets.resources.files import LocalFilesResource
from etl_assets_tests.services import PostgresServer

DAY, START = "2026-01-15", datetime(2026, 1, 15)


def flow(policy: str) -> FlowModel:
    return FlowModel.model_validate(
        {
            "name": "partners",
            "source": {"file": "partners_{start:%Y%m%d}.csv", "folder": "/in"},
            "map": {"external_id": {"type": "String", "source": "ID", "required": True}},
            "target": {"table": "partners", "key": "external_id"},
            "schema_drift": policy,
        }
    )


def run(policy: str, text: str, home: Path, engine: sa.Engine) -> FlowSteps:
    (home / "import").mkdir(parents=True, exist_ok=True)
    (home / "import" / "partners_20260115.csv").write_text(text, encoding="utf-8")
    steps = FlowSteps(flow(policy), FoldersResource(home=str(home)))
    steps.extract(DAY, START, LocalFilesResource(root=str(home / "import")))
    steps.transform(DAY)
    steps.load(DAY, engine)
    return steps


@pytest.fixture
def engine(postgres: PostgresServer) -> sa.Engine:
    with postgres.own_engine("etl_drift") as engine:
        yield engine  # type: ignore[misc]


FIRST = "ID;NAME\nP1;Uno\nP2;Due\n"
LATER = "ID;NAME;Credit Limit;Rating;Since\nP1;Uno;1.500,25;3;01/02/2020\nP3;Tre;;7;\n"


def columns(engine: sa.Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return {c["name"]: str(c["type"]) for c in sa.inspect(conn).get_columns("partners")}


def test_keep_leaves_the_target_as_declared(tmp_path: Path, engine: sa.Engine) -> None:
    run("keep", LATER, tmp_path, engine)
    assert "name" not in columns(engine)
    with engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from partners")).scalar_one() == 2


def test_freeze_fails_the_file_naming_the_new_columns(tmp_path: Path, engine: sa.Engine) -> None:
    with pytest.raises(SourceFileError) as caught:
        run("freeze", LATER, tmp_path, engine)
    assert str(caught.value) == (
        "partners_20260115.csv: new columns NAME, Credit Limit, Rating, Since not in the map, and "
        "partners's schema_drift is freeze: add them to the map, or set schema_drift: keep (or evolve)"
    )


def test_evolve_adds_the_columns_with_inferred_types_in_the_loads_transaction(
    tmp_path: Path, engine: sa.Engine
) -> None:
    run("evolve", FIRST, tmp_path, engine)
    assert set(columns(engine)) >= {"external_id", "name"}
    run("evolve", LATER, tmp_path / "second", engine)  # the source grew three columns
    found = columns(engine)
    assert (found["credit_limit"], found["rating"], found["since"]) == ("NUMERIC(18, 2)", "BIGINT", "TEXT")
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("select external_id, name, credit_limit::text, rating, since from partners order by 1")
        ).all()
    assert rows == [
        ("P1", "Uno", "1500.25", 3, "01/02/2020"),
        ("P2", "Due", None, None, None),
        ("P3", "Tre", None, 7, None),
    ]
