"""``flow.compile()`` of derived fields: a derive over map fields compiles clean (a file that
lacks the derived column is no finding); one over a field the map lacks is a declaration
problem at its line."""

from __future__ import annotations

from pathlib import Path

from etl_assets.sdk import Field, Project
from etl_assets_tests.test_flows.conftest import HEADER
from etl_assets_tests.test_sdk.test_compile import line_at


def test_a_derive_compiles_clean_even_where_the_file_lacks_its_column(
    project: Project, isolated_env: Path
) -> None:
    flow = project.create_flow("suppliers", template="companies")
    flow.map["label"] = Field.string(derive="{name} ({city})", max_length=30)
    flow.map["shout"] = Field.uppercase(derive="{label}!", fill="always", required=True)
    flow = project.update_flow(flow)
    (isolated_env / "import").mkdir(exist_ok=True)
    (isolated_env / "import" / "suppliers_20260115.csv").write_text(HEADER + "\n", encoding="utf-8")
    assert flow.compile().problems == []


def test_a_derive_over_a_field_the_map_lacks_is_refused_at_its_line(project: Project) -> None:
    flow = project.create_flow("suppliers", template="companies")
    flow.map["label"] = Field.string(derive="{name} ({city})")
    flow = project.update_flow(flow)
    flow.map["label"] = Field.string(derive="{name} ({town})")  # not saved: compiled as edited
    (problem,) = flow.compile().problems
    assert (problem.stage, problem.field, problem.severity) == ("declaration", "map.label.derive", "error")
    assert "derive '{name} ({town})' requires town: no such map field" in problem.message
    assert line_at(problem).startswith("label: {type: String, derive:")
