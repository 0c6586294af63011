"""Issue 20's proof: a fourth flow made without touching the package. ``suppliers`` is created
by the CLI from the companies template in one ETL_HOME, edited through the SDK (two fields and
a link), compiled, exported, imported into a second fresh ETL_HOME, and materialised there by
the ``dagster`` CLI on PostgreSQL, from a file on the real sshd."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from etl_assets.sdk import Field, Link, Project
from etl_assets_tests.test_flows.conftest import HEADER, FlowEnv, companies_csv
from etl_assets_tests.test_flows.test_cli_runs import ROOT, dagster
from etl_assets_tests.test_sdk.test_cli import Shell


def package_tree() -> dict[str, str]:
    """Every file of the installed package (bytecode aside), by content."""
    package = ROOT / "etl_assets"
    return {
        str(p.relative_to(package)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(package.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_a_flow_made_exported_imported_and_run_without_touching_the_package(
    flow_env: FlowEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = package_tree()
    first = flow_env.home
    created = Shell(first, Path(os.environ["ETL_SETTINGS"]), capsys).spawn(
        "create", "suppliers", "--template", "companies", "--description", "Suppliers from the ERP"
    )
    assert created.returncode == 0, created.stderr

    project = Project.open(env="test")
    flow = project.flows.get("suppliers")
    assert flow is not None
    flow.map["website"] = Field.url()
    flow.map["parent_code"] = Field.string()
    flow.links.append(
        Link(field="parent_code", column="parent_supplier_id", table="suppliers", match="external_id")
    )
    project.update_flow(flow)
    assert flow.compile().ok, [str(p) for p in flow.compile().problems]
    archive = project.export_flow(flow)

    second = tmp_path / "second_home"
    monkeypatch.setenv("ETL_HOME", str(second))
    response = Project.open(env="test").import_flows(archive)
    assert response.status == "completed", [str(o) for o in response.outcomes]
    assert (second / "flows" / "suppliers" / "defs.yaml").is_file()

    header = f"{HEADER};WEBSITE;PARENT_CODE"
    rows = [
        "S1;IT00000000101;Fornitore Uno;;;;IT;;;;;;;14/01/2026 10:00:00;https://uno.example;",
        "S2;IT00000000102;Fornitore Due;;;;IT;;;;;;;14/01/2026 10:00:00;;S1",
    ]
    text = companies_csv(*rows).decode().replace(companies_csv().decode().splitlines()[0], header)
    flow_env.sshd.put_file("/outbound/suppliers/suppliers_20260115.csv", text.encode())
    run = dagster(
        "asset", "materialize", "--select", "group:suppliers", "--partition", "2026-01-15", home=second
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert flow_env.query(
        "select s.external_id, s.website, p.external_id from suppliers s "
        "left join suppliers p on p.id = s.parent_supplier_id order by 1"
    ) == [("S1", "https://uno.example", None), ("S2", None, "S1")]
    assert package_tree() == before  # the package was not written to
