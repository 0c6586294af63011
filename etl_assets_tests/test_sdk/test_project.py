"""The SDK's verbs over real declaration files, a real Dagster instance and the definitions
the code location builds from them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.dagster_run import DagsterRun

from etl_assets.definitions import build_definitions
from etl_assets.sdk import Field, FlowError, Link, Project
from etl_assets.settings import load_settings

WriteSettings = Callable[[str], Path]

HAND_WRITTEN = """# Partners: written by hand, comments and order matter to the consultant.
type: etl_assets.orchestration.FlowComponent

attributes:
  name: partners
  description: Partners from the ERP
  source:
    file: "partners_{start:%Y%m%d}.csv"
    folder: /outbound/partners
  map:
    # the ERP's own id
    external_id:  {type: String, source: ID, required: true}
    name:         {type: String, source: NAME}   # as the ERP spells it
  target:
    table: partners
    key: external_id
  warn_limit: 3
"""


def test_the_samples_are_listed_and_looked_up(project: Project) -> None:
    assert [f.name for f in project.flows] == ["companies", "contacts", "offers"]
    assert [f.name for f in project.flows.get_all(cadence="five_minutes")] == ["offers"]
    assert project.flows.get(name="companies").target.table == "accounts"  # type: ignore[union-attr]
    assert project.flows.get(name="suppliers") is None


def test_a_flow_created_from_a_template_is_written_and_built(project: Project, isolated_env: Path) -> None:
    flow = project.create_flow("suppliers", description="Suppliers from the ERP", template="companies")
    assert flow.path == isolated_env / "flows" / "suppliers" / "defs.yaml"
    assert (flow.target.table, flow.links[0].table, flow.source.file) == (
        "suppliers",
        "suppliers",
        "suppliers_{start:%Y%m%d}.csv",
    )
    assert sorted(p.name for p in flow.path.parent.iterdir()) == ["defs.yaml", "revisions"]  # nothing partial
    again = Project.open().flows.get("suppliers")
    assert again is not None and again.description == "Suppliers from the ERP"
    assert build_definitions(load_settings("dev")).resolve_job_def("suppliers_job")
    with pytest.raises(FlowError, match="a flow 'suppliers' exists already"):
        project.create_flow("suppliers")
    with pytest.raises(FlowError, match="'Bad Name' is not an identifier"):
        project.create_flow("Bad Name")


def test_an_update_keeps_comments_and_order_and_a_bad_one_changes_nothing(
    project: Project, isolated_env: Path
) -> None:
    path = isolated_env / "flows" / "partners" / "defs.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(HAND_WRITTEN, encoding="utf-8")
    flow = project.flows.get("partners")
    assert flow is not None
    flow.map["email"] = Field.email(source="EMAIL")
    flow.map["vat_code"] = Field.uppercase(source="VAT", required=True)
    flow.links.append(Link(field="vat_code", column="parent_id", table="partners", match="vat_code"))
    flow.warn_limit = 5
    project.update_flow(flow)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Partners: written by hand, comments and order matter to the consultant.\n")
    assert "    # the ERP's own id\n" in text and "# as the ERP spells it" in text
    assert "    email: {type: Email, source: EMAIL}\n" in text  # in the style of its neighbours
    assert "  - {field: vat_code, column: parent_id, table: partners, match: vat_code}" in text
    assert (
        text.index("  map:")
        < text.index("  target:")
        < text.index("  warn_limit: 5")
        < text.index("  links:")
    )

    with pytest.raises(ValueError, match="Date needs a format"):
        Field.of("Date")  # a field is checked as it is made
    flow.warn_limit = -1  # an attribute is checked when the flow is saved
    with pytest.raises(FlowError, match="warn_limit: Input should be greater than or equal to 0"):
        project.update_flow(flow)
    assert path.read_text(encoding="utf-8") == text  # refused before anything was written


def test_a_sample_flow_is_read_only(project: Project) -> None:
    companies = project.flows.get("companies")
    assert companies is not None
    companies.warn_limit = 1
    with pytest.raises(FlowError, match="is a sample flow of the package .* duplicate it into"):
        project.update_flow(companies)
    with pytest.raises(FlowError, match="cannot be deleted"):
        project.delete_flow(companies)


def test_a_duplicate_gets_its_own_name_table_and_file(project: Project) -> None:
    original = project.create_flow("suppliers", template="companies")
    copy = project.duplicate_flow(original, "vendors")
    assert (copy.name, copy.target.table, copy.description) == ("vendors", "vendors", original.description)
    assert copy.path.parent.name == "vendors" and original.path.exists()
    assert [f.name for f in project.flows] == ["companies", "contacts", "offers", "suppliers", "vendors"]


def test_delete_waits_for_active_runs_and_leaves_the_data(project: Project, isolated_env: Path) -> None:
    flow = project.create_flow("suppliers", template="companies")
    (isolated_env / "data" / "suppliers" / "2026-01-15").mkdir(parents=True)
    with dg.instance_for_test() as instance:
        instance.add_run(
            DagsterRun(job_name="suppliers_job", run_id="r1", status=dg.DagsterRunStatus.STARTED)
        )
        instance.add_run(
            DagsterRun(job_name="companies_job", run_id="r2", status=dg.DagsterRunStatus.STARTED)
        )
        busy = Project(project.settings, instance)
        with pytest.raises(FlowError, match=r"suppliers has 1 queued or running runs \(r1\)"):
            busy.delete_flow(flow)
        assert flow.path.exists()
        deleted = busy.delete_flow(flow, force=True)
    assert not flow.path.parent.exists()
    (kept,) = (isolated_env / "flows" / ".deleted").iterdir()
    assert kept.name.startswith("suppliers_") and (kept / "defs.yaml").is_file()
    assert deleted.remains == [
        "table suppliers in the target database",
        str(isolated_env / "data" / "suppliers"),
        f"its declaration and revisions: {kept}",
    ]
    assert (isolated_env / "data" / "suppliers" / "2026-01-15").is_dir()
    assert project.flows.get("suppliers") is None
    defs = build_definitions(load_settings("dev"))  # .deleted is not loaded
    assert {j.name for j in defs.resolve_all_job_defs()} >= {"companies_job"}
    assert "suppliers_job" not in {j.name for j in defs.resolve_all_job_defs()}


def test_every_save_is_a_revision_with_history_diff_and_rollback(project: Project) -> None:
    flow = project.create_flow("suppliers", template="companies")
    flow.warn_limit = 3
    project.update_flow(flow)
    path = flow.path
    path.write_text(path.read_text().replace("hour: 6", "hour: 7"))  # a hand edit between saves
    flow = project.flows.get("suppliers")
    assert flow is not None
    flow.map["website"] = Field.url()
    project.update_flow(flow)
    assert [r.number for r in flow.history()] == [1, 2, 3, 4]
    assert "-  warn_limit: 10\n+  warn_limit: 3\n" in flow.diff(1, 2)
    assert "-    hour: 6\n+    hour: 7\n" in flow.diff(2, 3)  # the hand edit, kept
    added = [line for line in flow.diff(3, 4).splitlines() if line.startswith("+")]
    assert added == ["+++ revision 4", "+    website: {type: URL}"]

    project.rollback_flow(flow, 1)
    assert [r.number for r in flow.history()] == [1, 2, 3, 4, 5]
    assert path.read_text() == flow.history()[0].text()
    assert (flow.warn_limit, "website" in flow.map) == (10, False)
    with pytest.raises(FlowError, match=r"no revision 9 \(revisions: \[1, 2, 3, 4, 5\]\)"):
        project.rollback_flow(flow, 9)
