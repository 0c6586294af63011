"""A process that runs some flows (the CLI's ``--select``, a run worker's job) builds those
flows and the flows their links read only; any other command builds them all."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import serialize_value

from etl_assets.definitions import PROJECT_ROOT, build_definitions
from etl_assets.settings import load_settings
from etl_assets_tests.test_orchestration.test_flow_dirs import client_flow, flows_dir  # noqa: F401

MATERIALIZE = ["dagster", "asset", "materialize", "-m", "etl_assets.definitions", "--partition", "2026-01-05"]


def three_flows(folder: Path) -> None:
    """suppliers (linked to itself), buyers (linked to suppliers' table) and others."""
    client_flow(folder, "suppliers")
    buyers = client_flow(folder, "buyers")
    buyers.write_text(buyers.read_text().replace("table: buyers, match", "table: suppliers, match"))
    client_flow(folder, "others")


def jobs(argv: list[str]) -> set[str]:
    defs = build_definitions(load_settings("dev"), argv)
    return {job.name for job in defs.get_repository_def().get_all_jobs() if job.name.endswith("_job")}


def test_a_run_of_one_flow_builds_it_and_the_flows_it_links_to(flows_dir: Path) -> None:  # noqa: F811
    three_flows(flows_dir)
    built = jobs([*MATERIALIZE, "--select", "group:buyers"])
    assert {"buyers_job", "suppliers_job", "companies_job"} <= built
    assert "others_job" not in built
    assert jobs([*MATERIALIZE, "--select", "others_extract,others_load"]) >= {"others_job"}
    assert "buyers_job" not in jobs([*MATERIALIZE, "--select", "others_extract,others_load"])
    # the link step's parent is the real, partitioned load of suppliers: provenance maps it
    defs = build_definitions(load_settings("dev"), [*MATERIALIZE, "--select", "group:buyers"])
    graph = defs.get_repository_def().asset_graph
    parents = graph.get(dg.AssetKey("buyers_link")).parent_keys
    assert dg.AssetKey("suppliers_load") in parents
    assert graph.get(dg.AssetKey("suppliers_load")).is_partitioned


def test_any_other_command_builds_every_flow(flows_dir: Path) -> None:  # noqa: F811
    three_flows(flows_dir)
    every = {"buyers_job", "suppliers_job", "others_job", "companies_job"}
    assert jobs([]) >= every  # definitions validate, the code server, a test
    assert jobs([*MATERIALIZE, "--select", "+buyers_load"]) >= every
    assert jobs([*MATERIALIZE, "--select", "group:kpi_report"]) >= every  # not a flow
    assert jobs([*MATERIALIZE, "--select", "nosuchflow_load"]) >= every  # Dagster says so


def test_a_run_worker_builds_its_jobs_flow(flows_dir: Path) -> None:  # noqa: F811
    three_flows(flows_dir)
    repo = ReconstructableRepository.for_module(
        "etl_assets.definitions", "defs", working_directory=str(PROJECT_ROOT)
    )
    origin = repo.get_reconstructable_job("others_job").get_python_origin()
    args = serialize_value(ExecuteRunArgs(job_origin=origin, run_id="r1", instance_ref=None))
    built = jobs(["dagster", "api", "execute_run", args])
    assert "others_job" in built
    assert not {"buyers_job", "suppliers_job"} & built
