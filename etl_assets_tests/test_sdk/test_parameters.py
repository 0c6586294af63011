"""Runtime parameters: parameter sets with value sets beside the flows, local parameters, the
SDK's setters, a run's choice through its run config (the launchpad) or its schedule's, and the
faults named."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from etl_assets.definitions import build_definitions
from etl_assets.model.declarations import DeclarationError
from etl_assets.sdk import FlowError, Project
from etl_assets.settings import load_settings
from etl_assets_tests.test_flows.conftest import companies_csv

SITE = """default: milano
values:
  milano: {folder: /outbound/milano, warn: 5}
  roma: {folder: /outbound/roma, warn: 0}
"""
BAD_ROW = "C1;IT00000000001;Ditta;;;;IT;;;;;;31/02/2019;14/01/2026 10:00:00"  # a bad date: 1 rejected
ROME = ZoneInfo("Europe/Rome")  # the settings' timezone
GOOD_ROW = "C2;IT00000000002;Ditta Due;;;;IT;;;;;;;14/01/2026 10:00:00"


@pytest.fixture
def parameterised(project: Project, isolated_env: Path) -> Path:
    """A flow whose folder and warn_limit come from the parameter set ``site``."""
    (isolated_env / "flows" / "parameters").mkdir(parents=True)
    (isolated_env / "flows" / "parameters" / "site.yaml").write_text(SITE, encoding="utf-8")
    flow = project.create_flow("suppliers", template="companies")
    text = flow.path.read_text()
    text = text.replace("folder: /outbound/suppliers", "folder: ${site.folder}").replace(
        "warn_limit: 10", "warn_limit: ${site.warn}"
    )
    flow.path.write_text(text)
    return flow.path


def test_values_come_from_the_value_set_and_the_declaration_keeps_its_references(
    project: Project, parameterised: Path
) -> None:
    flow = project.flows.get("suppliers")
    assert flow is not None
    assert (flow.source.folder, flow.warn_limit) == ("/outbound/milano", 5)  # the default set; an int
    flow.set_runtime_value_set("site", "roma")
    flow.set_runtime_parameter_value("site", "folder", "/outbound/roma/today")
    flow.set_runtime_local_parameter("owner", "ops")
    project.update_flow(flow)
    text = parameterised.read_text()
    assert "folder: ${site.folder}" in text and "warn_limit: ${site.warn}" in text  # references stay
    again = project.flows.get("suppliers")
    assert again is not None
    assert (again.source.folder, again.warn_limit) == ("/outbound/roma/today", 0)

    again.set_runtime_value_set("site", "napoli")
    with pytest.raises(
        FlowError, match="parameter set site: no value set 'napoli' \\(value sets: milano, roma\\)"
    ):
        project.update_flow(again)


def test_an_unknown_parameter_fails_naming_it_and_its_line(project: Project, parameterised: Path) -> None:
    parameterised.write_text(parameterised.read_text().replace("hour: 6", "hour: ${site.hour}"))
    line = next(n for n, x in enumerate(parameterised.read_text().splitlines(), 1) if "${site.hour}" in x)
    with pytest.raises(DeclarationError) as caught:
        build_definitions(load_settings("dev"))
    assert str(caught.value).startswith(
        f"{parameterised}:{line}: schedule.hour: unknown parameter ${{site.hour}}"
    )


def test_a_secret_in_clear_is_refused_and_a_token_is_not(project: Project, parameterised: Path) -> None:
    flow = project.flows.get("suppliers")
    assert flow is not None
    flow.set_runtime_local_parameter("api_password", "hunter2")
    with pytest.raises(FlowError, match="local.api_password: a secret in clear; store an enc: token"):
        project.update_flow(flow)
    flow.set_runtime_local_parameter("api_password", "enc:v1:abc")
    project.update_flow(flow)
    assert "hunter2" not in parameterised.read_text()


def test_a_run_picks_its_value_set_through_its_run_config(
    project: Project, parameterised: Path, isolated_env: Path
) -> None:
    """The launchpad's config: with milano (warn up to 5) one rejected row only warns; with
    roma (warn_limit 0) it fails the blocking check, for this run only."""
    (isolated_env / "import").mkdir(exist_ok=True)
    (isolated_env / "import" / "suppliers_20260115.csv").write_bytes(companies_csv(GOOD_ROW, BAD_ROW))
    job = build_definitions(load_settings("dev")).resolve_job_def("suppliers_job")
    roma = {"ops": {"suppliers_steps": {"config": {"value_sets": {"site": "roma"}}}}}
    with dg.instance_for_test() as instance:
        assert job.execute_in_process(partition_key="2026-01-15", instance=instance).success
        failed = job.execute_in_process(
            partition_key="2026-01-15", instance=instance, run_config=roma, raise_on_error=False
        )
        assert not failed.success
        assert "transform check rejected_rows: 1 rows rejected (warn up to 0)" in str(
            failed.failure_data_for_node("suppliers_steps").error
        )  # type: ignore[union-attr]
        table = {"ops": {"suppliers_steps": {"config": {"overrides": {"site": {"warn": "x"}}}}}}
        refused = job.execute_in_process(
            partition_key="2026-01-15", instance=instance, run_config=table, raise_on_error=False
        )
        assert "run config: " in str(refused.failure_data_for_node("suppliers_steps").error)  # type: ignore[union-attr]


def test_the_schedule_s_runs_carry_its_parameters_and_a_launched_run_its_own(
    project: Project, parameterised: Path, isolated_env: Path
) -> None:
    """``schedule.parameters``: the tick's run request holds them as run config (roma: warn up
    to 0, the bad row fails the run); the job launched without config keeps milano's 5. The
    06:00 tick asks for today's partition, as the package's daily schedules do."""
    text = parameterised.read_text().replace("hour: 6", "hour: 6\n    parameters: {value_sets: {site: roma}}")
    parameterised.write_text(text)
    (isolated_env / "import").mkdir(exist_ok=True)
    (isolated_env / "import" / "suppliers_20260116.csv").write_bytes(companies_csv(GOOD_ROW, BAD_ROW))
    definitions = build_definitions(load_settings("dev"))
    schedule = definitions.resolve_schedule_def("suppliers_schedule")
    job = definitions.resolve_job_def("suppliers_job")
    with dg.instance_for_test() as instance:
        tick = dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=datetime(2026, 1, 16, 6, 0, tzinfo=ROME),
            repository_def=definitions.get_repository_def(),
        )
        (request,) = schedule.evaluate_tick(tick).run_requests or []
        assert (request.partition_key, request.run_config) == (
            "2026-01-16",
            {
                "ops": {
                    "suppliers_steps": {
                        "config": {"value_sets": {"site": "roma"}, "overrides": {}, "local": {}}
                    }
                }
            },
        )
        scheduled = job.execute_in_process(
            partition_key=request.partition_key,
            run_config=request.run_config,
            instance=instance,
            raise_on_error=False,
        )
        assert "1 rows rejected (warn up to 0)" in str(
            scheduled.failure_data_for_node("suppliers_steps").error
        )  # type: ignore[union-attr]
        assert job.execute_in_process(partition_key="2026-01-16", instance=instance).success


def test_a_schedule_naming_an_unknown_value_set_fails_the_load(project: Project, parameterised: Path) -> None:
    text = parameterised.read_text().replace(
        "hour: 6", "hour: 6\n    parameters: {value_sets: {site: napoli}}"
    )
    parameterised.write_text(text)
    with pytest.raises(
        ValueError,
        match=r"suppliers schedule.parameters: run config: .*defs.yaml:\d+: parameter set site: no value set 'napoli'",
    ):
        build_definitions(load_settings("dev"))
