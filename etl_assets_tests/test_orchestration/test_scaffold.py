"""`dg scaffold defs ... FlowComponent <flow>` writes a declaration that loads unchanged."""

from __future__ import annotations

from pathlib import Path

import yaml
from dagster import ScaffoldRequest

from etl_assets.model.declarations import flow_files
from etl_assets.orchestration import FlowComponent
from etl_assets.orchestration.flow_component import FlowScaffolder


def test_scaffolded_flow_validates_and_builds(tmp_path: Path) -> None:
    target = tmp_path / "suppliers"
    target.mkdir()
    FlowScaffolder().scaffold(
        ScaffoldRequest(
            type_name=f"etl_assets.orchestration.{FlowComponent.__name__}",
            target_path=target,
            scaffold_format="yaml",
            project_root=None,
            params=None,
        )
    )
    document = yaml.safe_load((target / "defs.yaml").read_text())
    assert document["type"] == "etl_assets.orchestration.FlowComponent"
    ((_, flow, _),) = [(f.path, f.flow, f.packaged) for f in flow_files(tmp_path)]
    assert (flow.name, flow.target.table, flow.source.file) == (
        "suppliers",
        "suppliers",
        "suppliers_{start:%Y%m%d}.csv",
    )
