"""A report compiled without running: its declaration, its query, its Dagster definitions.

The report's side of the Celery talk's unit test: the declaration validates as a
``ReportModel``; the query binds exactly what a run binds (``:start``, ``:end``); every table
it names is loaded by a flow of the project (its target or a link's table), filled by a
report, or exists in the target database; and, when the target database answers, the
database itself checks the query (``EXPLAIN``, never run, in a read-only transaction rolled
back), so an unknown column or a type mismatch is PostgreSQL's own message. When it does not
answer, a warning says the query was checked against the declarations only.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
import yaml
from pydantic import ValidationError

from etl_assets.engine.report import BINDS, window_binds
from etl_assets.model.declarations import DeclarationError, line_of, read_document
from etl_assets.model.report import ReportModel
from etl_assets.model.sql_names import TableName, tables_named
from etl_assets.sdk.compiling import CompileResult, Findings, check_definitions
from etl_assets.sdk.target import Target

if TYPE_CHECKING:
    import dagster as dg

    from etl_assets.sdk.report import Report

QUERY = "query"
# ``project`` below is the sdk.project.Project compiling the report: typed Any, as in
# sdk.compiling, since that module imports this one.


def compile_report(report: Report) -> CompileResult:
    """The report's problems (see the module); a declaration fault stops the compile there."""
    result = CompileResult(report.name, kind="report")
    text = report.path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        Findings(result, report.path, lambda *_: line)(
            "declaration", None, f"not valid YAML: {getattr(exc, 'problem', exc)}", "attributes"
        )
        return result
    try:
        attributes = read_document(report.path, text).get("attributes") or {}
    except DeclarationError as exc:  # valid YAML, but not a mapping
        Findings(result, report.path, lambda *_: 1)("declaration", None, str(exc), "attributes")
        return result
    problem = Findings(result, report.path, lambda *loc: line_of(root, ("attributes", *loc)))
    try:
        model = ReportModel.model_validate(attributes)
    except ValidationError as exc:
        for error in exc.errors():
            loc = error["loc"]
            problem("declaration", ".".join(map(str, loc)) or None, error["msg"], *loc)
        return result
    binds_ok = _binds(model, problem)
    target = Target(report.project.settings)
    if _tables(model, report.project, target, problem) and binds_ok and target.answers:
        refusal = target.refusal(model.query, window_binds(*_first_window(model)))
        if refusal is not None:
            problem("query", None, f"the target database refuses the query: {refusal}", QUERY)
    _definitions(model, report.project, problem)
    return result


def _binds(model: ReportModel, problem: Findings) -> bool:
    """The query's bind parameters, as SQLAlchemy reads them for the run, against the run's
    (``engine.report.BINDS``); False when the query names one a run does not bind."""
    used = set(sa.text(model.query).compile().params)
    given = " and ".join(f":{b}" for b in BINDS)
    for name in sorted(used - set(BINDS)):
        problem(
            "query",
            None,
            f"binds :{name}, which a run does not give it (a run binds {given}): write the value "
            "into the query or use the partition's window",
            QUERY,
        )
    for name in BINDS:
        if name not in used:
            problem(
                "query",
                None,
                f"does not use :{name}: every partition would read the same rows; filter on the "
                f"partition's window, e.g. created_at >= :start and created_at < :end",
                QUERY,
            )
    return used <= set(BINDS)


def _tables(model: ReportModel, project: Any, target: Target, problem: Findings) -> bool:
    """Every table the query names, against the tables the project's flows and reports fill and
    the target database's; True when the database can be asked about the query itself."""
    provided = _provided(project, model)
    not_there: list[str] = []  # loaded by a flow, not (yet) in the database
    found_all = True
    for table in tables_named(model.query):
        by = provided.get(table.name) if table.in_default_schema else None
        present = target.answers and target.has_table(table.name, table.schema)
        if by is not None:
            if target.answers and not present:
                not_there.append(f"{table} ({by})")
            continue
        if not present:
            found_all = False
            problem("query", None, _unknown(table, target), QUERY)
    if not_there:
        problem(
            "query",
            None,
            f"the target database has no {', '.join(not_there)} yet: the query was checked against "
            "the declarations only; compile again once they have loaded",
            QUERY,
            severity="warning",
        )
    elif not target.answers:
        problem(
            "query",
            None,
            f"the target database did not answer ({target.silence}): the query was checked "
            "against the flows' declarations only",
            QUERY,
            severity="warning",
        )
    return found_all and not not_there


def _provided(project: Any, model: ReportModel) -> dict[str, str]:
    """The tables the project fills, each with what fills it: a flow's target, a table a flow
    links to (checked by that flow's compile), a report's table."""
    provided: dict[str, str] = {}
    for flow in project.flows:
        provided.setdefault(flow.target.table, f"loaded by flow {flow.name}")
        for link in flow.links:
            provided.setdefault(link.table, f"linked to by flow {flow.name}")
    provided.setdefault(model.table, f"filled by report {model.name}")
    for report in project.reports:
        other = _valid(report)
        if other is not None:
            provided.setdefault(other.table, f"filled by report {other.name}")
    return provided


def _valid(report: Report) -> ReportModel | None:
    """Another report's model; None when it does not validate (its own compile says why)."""
    try:
        document = yaml.safe_load(report.path.read_text(encoding="utf-8")) or {}
        return ReportModel.model_validate(document.get("attributes") or {})
    except (yaml.YAMLError, ValidationError, AttributeError):
        return None


def _unknown(table: TableName, target: Target) -> str:
    where = (
        "and the target database does not have it"
        if target.answers
        else "(the target database did not answer, so it was not looked for there)"
    )
    return (
        f"reads table {table} (query line {table.line}), which no flow or report of the project "
        f"loads {where}: fix the name, or add the flow that loads it"
    )


def _first_window(model: ReportModel) -> tuple[datetime, datetime]:
    """The report's first partition: a window of the right width for ``EXPLAIN``'s binds."""
    start = datetime.combine(model.start, datetime.min.time())
    if model.partition_kind == "daily":
        return start, start + timedelta(days=1)
    return start, (start.replace(day=28) + timedelta(days=4)).replace(day=1)


def _definitions(model: ReportModel, project: Any, problem: Findings) -> None:
    """The report's Dagster definitions, as its component builds them."""
    from etl_assets.orchestration.report_component import build_report_defs

    settings = project.settings

    def build() -> dg.Definitions:
        recipients = list(settings.mail.report_recipients.get(model.name, []))
        return build_report_defs(model, settings.timezone, recipients)

    check_definitions(build, settings, problem)
