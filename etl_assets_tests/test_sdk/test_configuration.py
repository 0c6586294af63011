"""``flow.configuration``: the runtime settings a flow carries, validated as they are set, and
applied for real (the environment a flow is built in; the runs, staged data and error files
housekeeping keeps)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from etl_assets.definitions import build_definitions
from etl_assets.engine.catcher import CaughtErrors, check_result
from etl_assets.model.declarations import DeclarationError, flow_files
from etl_assets.sdk import Project
from etl_assets.settings import load_settings
from etl_assets_tests.test_flows.conftest import companies_csv

ROW = "C{n};IT0000000000{n};Ditta {n} S.r.l.;;;;IT;;;;;;;14/01/2026 10:00:00"


def test_settings_are_checked_as_they_are_set_and_saved(project: Project) -> None:
    flow = project.create_flow("suppliers", template="companies")
    settings = flow.configuration
    with pytest.raises(ValueError, match="warn_limit 0: an int > 0, or None"):
        settings.warn_limit = 0
    settings.warn_limit = None
    settings.retention_days = 30
    with pytest.raises(ValueError, match="retention_amount and retention_days: never both"):
        settings.retention_amount = 5
    settings.retention_days = None
    settings.retention_amount = 5
    settings.environment = "prod"
    with pytest.raises(ValueError, match="environment 'staging'"):
        settings.environment = "staging"
    project.update_flow(flow)
    saved = project.flows.get("suppliers")
    assert saved is not None
    assert repr(saved.configuration) == (
        "Configuration(environment='prod', warn_limit=None, retention_days=None, retention_amount=5)"
    )
    text = saved.path.read_text()
    assert "  warn_limit:\n" in text and "  environment: prod\n" in text and "    amount: 5\n" in text


def test_a_declaration_with_both_retentions_is_refused_naming_the_line(project: Project) -> None:
    flow = project.create_flow("suppliers", template="companies")
    flow.path.write_text(flow.path.read_text() + "  retention: {days: 3, amount: 2}\n")
    with pytest.raises(
        DeclarationError,
        match=r"defs.yaml:\d+: retention: Value error, retention: days or amount, never both",
    ):
        flow_files(flow.path.parents[1])


def test_a_flow_of_one_environment_is_built_there_only(project: Project) -> None:
    flow = project.create_flow("suppliers", template="companies")
    flow.configuration.environment = "prod"
    project.update_flow(flow)
    jobs = {j.name for j in build_definitions(load_settings("dev")).resolve_all_job_defs()}
    assert "suppliers_job" not in jobs and "companies_job" in jobs
    flow.configuration.environment = "dev"
    project.update_flow(flow)
    assert build_definitions(load_settings("dev")).resolve_job_def("suppliers_job")


def test_no_warn_limit_only_warns() -> None:
    first = pl.DataFrame(
        {"error_step": ["transform"], "error_field": ["A"], "error_reason": ["bad"], "source_line": [2]}
    )
    caught = [CaughtErrors(step="transform", partition_key="p", rows=first, path=None, total=500)]
    verdict = check_result(caught, None, 1000)
    assert (verdict.severity, verdict.description) == ("WARN", "500 rows rejected (warn, no limit)")


def test_housekeeping_keeps_the_newest_runs_and_retires_the_rest_with_their_files(
    project: Project, isolated_env: Path
) -> None:
    flow = project.create_flow("suppliers", template="companies")
    flow.configuration.retention_amount = 1
    project.update_flow(flow)
    days = ["2026-01-13", "2026-01-14", "2026-01-15"]
    imported = isolated_env / "import"
    imported.mkdir(exist_ok=True)
    for n, day in enumerate(days, start=1):
        (imported / f"suppliers_{day.replace('-', '')}.csv").write_bytes(companies_csv(ROW.format(n=n)))
    with dg.instance_for_test() as instance:
        defs = build_definitions(load_settings("dev"))
        for day in days:
            assert (
                defs.resolve_job_def("suppliers_job")
                .execute_in_process(partition_key=day, instance=instance)
                .success
            )
        companies = defs.resolve_job_def("companies_job")  # another flow's runs: not touched
        (imported / "companies_20260115.csv").write_bytes(companies_csv(ROW.format(n=9)))
        assert companies.execute_in_process(partition_key="2026-01-15", instance=instance).success
        newest = instance.get_runs(dg.RunsFilter(job_name="suppliers_job"), limit=1)[0].run_id

        result = defs.resolve_job_def("housekeeping").execute_in_process(instance=instance)
        assert result.success
        summary = result.output_for_node("tidy_up")
        assert (summary["deleted_runs"], summary["retired_partitions"]) == (2, 2)
        assert [r.run_id for r in instance.get_runs(dg.RunsFilter(job_name="suppliers_job"))] == [newest]
        assert len(instance.get_runs(dg.RunsFilter(job_name="companies_job"))) == 1
    staged = sorted(p.name for p in (isolated_env / "data" / "suppliers").iterdir())
    assert staged == ["2026-01-15"]  # the retired days' staged data went with their runs
    assert list((isolated_env / "backup" / "suppliers").rglob("suppliers_20260113.csv"))  # backups stay
