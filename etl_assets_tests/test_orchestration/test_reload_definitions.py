"""A flow created or changed in a client's flows folder shows in the UI after "Reload
definitions", with no code change; two flows of one name, or a fault in a declaration, fail the
load naming the files (and the line). All through the real webserver's GraphQL: the UI's
``reloadRepositoryLocation`` mutation, then what the UI reads."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from etl_assets.model.versions import flow_versions
from etl_assets.sdk import Field, Project
from etl_assets_tests.services import DagsterServer

WriteSettings = Callable[[str], Path]
ROOT = Path(__file__).resolve().parents[2]
LOCATION = "etl_assets"
STEPS = ("extract", "transform", "load", "link")
SHOWN = """
{
  repositoriesOrError {
    __typename
    ... on RepositoryConnection {
      nodes {
        jobs { name }
        schedules { name }
        assetNodes { assetKey { path } groupName description opVersion }
      }
    }
    ... on PythonError { message }
  }
}
"""


def shown(dagster: DagsterServer) -> dict[str, Any]:
    """What the UI lists: the jobs, the schedules and each asset (its group, description and
    code version), by name."""
    result = dagster.graphql(SHOWN)["repositoriesOrError"]
    assert result["__typename"] == "RepositoryConnection", result
    nodes = result["nodes"]
    return {
        "jobs": {job["name"] for node in nodes for job in node["jobs"]},
        "schedules": {schedule["name"] for node in nodes for schedule in node["schedules"]},
        "assets": {
            "/".join(asset["assetKey"]["path"]): asset for node in nodes for asset in node["assetNodes"]
        },
    }


def line_of(path: Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if text in line)


def test_a_client_flow_shows_changes_and_fails_after_reload_definitions(
    isolated_env: Path, write_settings: WriteSettings, tmp_path: Path
) -> None:
    write_settings("dev:\n  flows:\n    dirs: [flows, more_flows]\n")  # both under ETL_HOME
    project = Project.open(env="dev")
    env = {"ETL_ENV": "dev", "ETL_HOME": str(isolated_env)}
    with DagsterServer(ROOT, tmp_path / "dagster_home", env, daemon=False) as dagster:
        before = shown(dagster)
        assert "companies_job" in before["jobs"]
        assert not [name for name in before["assets"] if name.startswith("suppliers")]
        assert "suppliers" not in {asset["groupName"] for asset in before["assets"].values()}

        # 1. created through the SDK: its assets, job and schedule show after the reload
        flow = project.create_flow("suppliers", description="Suppliers from the ERP", template="companies")
        assert flow.path == isolated_env / "flows" / "suppliers" / "defs.yaml"
        assert dagster.reload_location(LOCATION) is None
        created = shown(dagster)
        assets = {f"suppliers_{step}" for step in STEPS}
        assert assets <= created["assets"].keys()
        assert {created["assets"][name]["groupName"] for name in assets} == {"suppliers"}
        assert {"suppliers_job", "suppliers_schedule"} <= created["jobs"] | created["schedules"]
        assert created["assets"]["suppliers_extract"]["description"].startswith("Suppliers from the ERP\n")
        first_version = created["assets"]["suppliers_load"]["opVersion"]
        assert first_version == flow_versions(project.flows.get("suppliers").model)["load"]
        first_extract = created["assets"]["suppliers_extract"]["opVersion"]

        # 2. changed through the SDK: the new description and code version show
        flow.description = "Suppliers from the new ERP, with their rating"
        flow.map["rating"] = Field.integer()
        project.update_flow(flow)
        assert dagster.reload_location(LOCATION) is None
        changed = shown(dagster)["assets"]
        assert changed["suppliers_extract"]["description"].startswith("Suppliers from the new ERP, with")
        new_versions = flow_versions(project.flows.get("suppliers").model)
        assert new_versions["load"] != first_version
        assert {name: changed[name]["opVersion"] for name in assets} == {
            f"suppliers_{step}": new_versions[step] for step in STEPS
        }
        assert changed["suppliers_extract"]["opVersion"] == first_extract  # a map change: not extract's

        # 3. a second flow of one name in the other folder: the load fails naming both files
        twin = isolated_env / "more_flows" / "suppliers" / "defs.yaml"
        twin.parent.mkdir(parents=True)
        shutil.copyfile(flow.path, twin)
        error = dagster.reload_location(LOCATION)
        assert error is not None
        assert f"flow 'suppliers' is declared twice: {flow.path} and {twin}" in error

        # 4. the twin gone, a fault typed into the declaration: its file, line and key
        shutil.rmtree(twin.parent)
        good = flow.path.read_text(encoding="utf-8")
        flow.path.write_text(good.replace("warn_limit: 10", "warn_limit: many"), encoding="utf-8")
        error = dagster.reload_location(LOCATION)
        assert error is not None
        line = line_of(flow.path, "warn_limit: many")
        assert f"{flow.path}:{line}: warn_limit: Input should be a valid integer" in error

        # 5. fixed: the location loads again, the flow as it was saved
        flow.path.write_text(good, encoding="utf-8")
        assert dagster.reload_location(LOCATION) is None
        fixed = shown(dagster)["assets"]
        assert {name: fixed[name]["opVersion"] for name in assets} == {
            name: changed[name]["opVersion"] for name in assets
        }
