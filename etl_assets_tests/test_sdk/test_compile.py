"""``flow.compile()``: what a run would need, checked without running; each problem with its
flow, stage, field, file and line. ``report.compile()``: a report's declaration, its binds and
its query's tables, checked by a real PostgreSQL when one answers. ``flow.auto_arrange()``: one
canonical layout."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from etl_assets.engine.tables import ensure_table
from etl_assets.model.declarations import PACKAGED_FLOWS, importable
from etl_assets.model.sql_names import tables_named
from etl_assets.sdk import Field, FlowError, Link, Problem, Project, Report
from etl_assets_tests.services import PostgresServer
from etl_assets_tests.services._net import free_port

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


# -- reports ---------------------------------------------------------------------------
KPI_REPORT = PACKAGED_FLOWS / "kpi_report" / "defs.yaml"


def edited_report(project: Project, folder: Path, old: str, new: str) -> Report:
    """The package's kpi_report with one edit, declared in ``folder`` (read as the package's are)."""
    text = KPI_REPORT.read_text(encoding="utf-8")
    assert old in text
    path = folder / "kpi_edited" / "defs.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.replace(old, new), encoding="utf-8")
    return Report(project, path)


def line_at(problem: Problem) -> str:
    assert problem.file is not None and problem.line is not None
    return problem.file.read_text(encoding="utf-8").splitlines()[problem.line - 1].strip()


def database_settings(host: str, port: int, database: str, password: str = "") -> str:
    secret = f", password: {password}" if password else ""
    return (
        f"dev:\n  database: {{driver: postgresql, host: {host}, port: {port}, database: {database}, "
        f"user: postgres{secret}, connect_timeout: 2}}\n"
    )


def _settings_on(
    postgres: PostgresServer,
    pg_database: str,
    write_settings: WriteSettings,
    encrypt_password: Callable[[str], str],
) -> None:
    """The settings' target database: ``pg_database``, its password an enc: token."""
    password = encrypt_password(postgres.password)
    write_settings(database_settings(postgres.host, postgres.port, pg_database, password))


@pytest.fixture
def pg_project(
    project: Project,
    postgres: PostgresServer,
    pg_database: str,
    write_settings: WriteSettings,
    encrypt_password: Callable[[str], str],
) -> Project:
    """The project on a PostgreSQL database holding the flows' tables, as their loads create them."""
    _settings_on(postgres, pg_database, write_settings, encrypt_password)
    engine = sa.create_engine(postgres.url(pg_database))
    with engine.begin() as conn:
        for flow in project.flows:
            ensure_table(conn, flow.model)
    engine.dispose()
    return Project.open()


def test_the_kpi_report_compiles_clean_against_the_flows_tables(pg_project: Project) -> None:
    (report,) = pg_project.reports
    assert report.name == "kpi_report"
    result = pg_project.compile_report("kpi_report")
    assert (result.kind, result.ok, result.problems) == ("report", True, [])


def test_before_the_flows_have_loaded_their_tables_the_database_is_not_asked(
    project: Project,
    postgres: PostgresServer,
    pg_database: str,
    write_settings: WriteSettings,
    encrypt_password: Callable[[str], str],
) -> None:
    _settings_on(postgres, pg_database, write_settings, encrypt_password)
    (warning,) = Project.open().compile_report("kpi_report").problems
    assert (warning.severity, warning.message) == (
        "warning",
        "the target database has no offers (loaded by flow offers), accounts (loaded by flow companies) "
        "yet: the query was checked against the declarations only; compile again once they have loaded",
    )


def test_a_report_naming_an_unknown_table_is_an_error_at_its_query(
    pg_project: Project, tmp_path: Path
) -> None:
    report = edited_report(pg_project, tmp_path, "join accounts a", "join public.nowhere a")
    (problem,) = report.compile().problems  # the database is not asked about the query itself
    assert (problem.stage, problem.severity, problem.file) == ("query", "error", report.path)
    assert line_at(problem) == "query: |"
    assert problem.message == (
        "reads table public.nowhere (query line 4), which no flow or report of the project loads and "
        "the target database does not have it: fix the name, or add the flow that loads it"
    )
    assert str(problem).startswith(f"{report.path}:{problem.line}: error: kpi_report query: ")


def test_the_target_database_checks_columns_and_types(
    pg_project: Project, postgres: PostgresServer, tmp_path: Path
) -> None:
    column = edited_report(pg_project, tmp_path / "column", "sum(o.amount)", "sum(o.amout)").compile()
    (problem,) = column.errors
    assert line_at(problem) == "query: |"
    assert problem.message == (
        "the target database refuses the query: column o.amout does not exist "
        '(hint: Perhaps you meant to reference the column "o.amount".)'
    )
    typed = edited_report(pg_project, tmp_path / "type", "where o.", "where o.status >= 1 and o.").compile()
    (mismatch,) = typed.errors
    assert "operator does not exist: text >= integer" in mismatch.message
    token = pg_project.settings.database.password
    assert token and all(s not in str(p) for s in (token, postgres.password) for p in (problem, mismatch))


def test_the_tables_a_query_names() -> None:
    query = """with recent as (select * from public.offers where status is distinct from 'x from y')
select extract(year from r.created_at), g -- from comments
from recent r, lateral (select * from "Sales"."Targets" t) s, generate_series(1, 3) g
left join accounts a using (id)
where r.id in (select offer_id from offer_notes)"""
    assert [(str(t), t.line) for t in tables_named(query)] == [
        ("public.offers", 1),
        ("Sales.Targets", 3),
        ("accounts", 4),
        ("offer_notes", 5),
    ]


def test_without_a_database_the_tables_are_checked_against_the_flows(
    project: Project, write_settings: WriteSettings, tmp_path: Path
) -> None:
    write_settings(database_settings("127.0.0.1", free_port(), "etl"))  # nothing listens there
    project = Project.open()
    (warning,) = project.compile_report("kpi_report").problems
    assert warning.severity == "warning" and warning.message.startswith(
        "the target database did not answer ("
    )
    assert warning.message.endswith("): the query was checked against the flows' declarations only")

    result = edited_report(project, tmp_path, "from offers o", "from offer o").compile()
    assert [(p.severity, p.message) for p in result.problems] == [
        (
            "error",
            "reads table offer (query line 3), which no flow or report of the project loads (the target "
            "database did not answer, so it was not looked for there): fix the name, or add the flow that "
            "loads it",
        ),
        ("warning", warning.message),
    ]


def test_a_report_binds_what_a_run_binds_and_validates(project: Project, tmp_path: Path) -> None:
    binds = edited_report(project, tmp_path / "binds", ">= :start", ">= :since").compile()
    assert [p.message for p in binds.errors] == [
        "binds :since, which a run does not give it (a run binds :start and :end): write the value into "
        "the query or use the partition's window",
        "does not use :start: every partition would read the same rows; filter on the partition's "
        "window, e.g. created_at >= :start and created_at < :end",
    ]
    bad = edited_report(project, tmp_path / "bad", "table: kpi_monthly", "table: kpi-monthly").compile()
    (problem,) = bad.problems
    assert (problem.stage, problem.field, line_at(problem)) == ("declaration", "table", "table: kpi-monthly")
    assert "should match pattern" in problem.message


def _linked_to(project: Project, table: str, match: str) -> list[Problem]:
    flow = project.create_flow("suppliers", template="companies")
    flow.links.append(Link(field="vat_code", column="partner_id", table=table, match=match))
    project.update_flow(flow)
    return [p for p in flow.compile().problems if p.stage == "link"]


def test_a_link_to_a_table_of_the_target_database_is_asked_of_it(
    pg_project: Project, postgres: PostgresServer, pg_database: str
) -> None:
    """No flow loads ``partners``: the target database answers for it, column by column."""
    engine = sa.create_engine(postgres.url(pg_database))
    with engine.begin() as conn:
        conn.exec_driver_sql("create table partners (vat_code text primary key, id serial)")
    engine.dispose()
    assert _linked_to(pg_project, "partners", "vat_code") == []
    pg_project.delete_flow(pg_project.flows.get("suppliers"))  # type: ignore[arg-type]
    (problem,) = _linked_to(pg_project, "partners", "vat")
    assert problem.message == (
        "table partners is loaded by no flow of the project and the target database has no partners.vat"
    )


def test_a_link_compiled_without_a_database_says_so_and_creates_none(
    project: Project, isolated_env: Path
) -> None:
    (problem,) = _linked_to(project, "partners", "vat_code")
    assert problem.message.startswith(
        "table partners is loaded by no flow of the project and the target database did not answer ("
    )
    assert not (isolated_env / "data" / "etl.sqlite").exists()  # asking created no dev database


def test_a_hook_that_does_not_resolve_is_a_declaration_problem_at_its_line(project: Project) -> None:
    flow = project.create_flow("suppliers", template="companies")
    hooks = Path(__file__).parents[1] / "test_flows" / "hook_calls.py"
    (flow.path.parent / hooks.name).write_bytes(hooks.read_bytes())
    importable(flow.path.parent)
    try:
        flow.hooks = {"pre_extract": "hook_calls:record", "on_load_commit": "hook_calls:record"}
        flow = project.update_flow(flow)
        assert flow.compile().problems == []
        flow.hooks["on_load_commit"] = "hook_calls:two_arguments"
        result = flow.compile()
        with pytest.raises(FlowError, match="hooks.on_load_commit: Value error, hook on_load_commit"):
            project.update_flow(flow)  # not saved either
    finally:
        sys.modules.pop("hook_calls", None)
    (problem,) = result.problems
    lines = flow.path.read_text(encoding="utf-8").splitlines()  # as saved with the sound hook
    assert (problem.stage, problem.field) == ("declaration", "hooks.on_load_commit")
    assert "hook on_load_commit (hook_calls:two_arguments) is called as function(context)" in problem.message
    assert lines[problem.line - 1].strip() == "on_load_commit: hook_calls:record"  # type: ignore[operator]
