"""``flow.compile()``: what a run would need, checked without running; each problem with its
flow, stage, field, file and line. ``flow.auto_arrange()``: one canonical layout."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from etl_assets.sdk import Field, Project

WriteSettings = Callable[[str], Path]


def test_a_sound_flow_compiles_clean(project: Project) -> None:
    flow = project.create_flow("suppliers", template="companies")
    result = flow.compile()
    assert result.ok and result.problems == []


def test_each_problem_names_its_stage_field_file_and_line(project: Project, isolated_env: Path) -> None:
    flow = project.create_flow("suppliers", template="companies")
    flow.map["score"] = Field.method("no_such_module:score")
    flow.links[0].table = "nowhere"
    project.update_flow(flow)
    lines = flow.path.read_text(encoding="utf-8").splitlines()
    (isolated_env / "import").mkdir(exist_ok=True)
    header = (
        "COMPANY_ID;VAT_CODE;NAME;ADDRESS;CITY;ZIP;COUNTRY;EMAIL;PHONE;PARENT_VAT;REVENUE;EMPLOYEES;FOUNDED"
    )
    (isolated_env / "import" / "suppliers_20260115.csv").write_text(header + "\n", encoding="utf-8")

    result = flow.compile()
    assert not result.ok
    found = {(p.stage, p.field): p for p in result.problems}
    score = found[("transform", "score")]
    assert "No module named 'no_such_module'" in score.message
    assert (score.file, lines[score.line - 1].strip()) == (
        flow.path,
        "score: {type: Method, method: no_such_module:score}",
    )  # type: ignore[operator]
    updated = found[("extract", "updated_at")]  # the dedupe key's column is not in the header
    assert (
        updated.severity == "warning"
        and "reads column UPDATED_AT, which suppliers_20260115.csv lacks" in updated.message
    )
    link = found[("link", "parent_vat")]
    assert "table nowhere is loaded by no flow of the project" in link.message
    assert lines[link.line - 1].strip().startswith("- {field: parent_vat")  # type: ignore[operator]
    assert str(link).startswith(f"{flow.path}:{link.line}: error: suppliers link parent_vat: ")


def test_a_declaration_fault_is_a_problem_not_an_exception(project: Project) -> None:
    flow = project.create_flow("suppliers", template="companies")
    flow.dedupe.latest_by = "no_such_field"
    (problem,) = flow.compile().problems
    assert (problem.stage, problem.severity) == ("declaration", "error")
    assert "dedupe.latest_by 'no_such_field' is not a map field" in problem.message


def test_auto_arrange_orders_keys_and_fields_and_keeps_comments(project: Project, isolated_env: Path) -> None:
    path = isolated_env / "flows" / "partners" / "defs.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(
        """type: etl_assets.orchestration.FlowComponent
attributes:
  warn_limit: 3
  target: {table: partners, key: external_id}
  map:
    name:
      source: NAME   # as spelled
      type: String
    # the ERP's own id
    external_id: {required: true, type: String, source: ID}
  # where files come from
  source: {folder: /outbound/partners, file: "partners_{start:%Y%m%d}.csv"}
  name: partners
""",
        encoding="utf-8",
    )
    (isolated_env / "import").mkdir(exist_ok=True)
    (isolated_env / "import" / "partners_20260115.csv").write_text("ID;NAME\n", encoding="utf-8")
    flow = project.flows.get("partners")
    assert flow is not None
    flow.auto_arrange()
    project.update_flow(flow)
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[1:] == [
        "attributes:",
        "  name: partners",
        "  # where files come from",
        '  source: {file: "partners_{start:%Y%m%d}.csv", folder: /outbound/partners}',
        "  map:",
        "    # the ERP's own id",  # the field order of the file's header: ID;NAME
        "    external_id: {type: String, source: ID, required: true}",
        "    name: {type: String, source: NAME}  # as spelled",
        "  target: {table: partners, key: external_id}",
        "  warn_limit: 3",
    ]
