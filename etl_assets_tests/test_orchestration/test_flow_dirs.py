"""A client's flows live outside the package, in the folders ``flows.dirs`` names: the code
location builds them beside the samples; contradictions and faults name their files."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from etl_assets.definitions import DEFS_DIR, build_definitions
from etl_assets.model.declarations import DeclarationError
from etl_assets.settings import load_settings

WriteSettings = Callable[[str], Path]


def client_flow(folder: Path, name: str, table: str | None = None, key: str = "external_id") -> Path:
    """A copy of the companies sample renamed (and its table), as a consultant would start."""
    text = (DEFS_DIR / "companies" / "defs.yaml").read_text(encoding="utf-8")
    text = text.replace("name: companies", f"name: {name}").replace(
        "table: accounts", f"table: {table or name}"
    )
    text = text.replace("key: external_id", f"key: {key}").replace(
        "table: accounts, match", f"table: {table or name}, match"
    )
    path = folder / name / "defs.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def flows_dir(isolated_env: Path, write_settings: WriteSettings, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_settings("dev: {}\n")
    monkeypatch.setenv("ETL_ENV", "dev")
    return isolated_env / "flows"  # the default flows.dirs: ETL_HOME/flows


def test_a_flow_in_the_clients_folder_is_built_beside_the_samples(flows_dir: Path) -> None:
    client_flow(flows_dir, "suppliers")
    package = sorted(p.relative_to(DEFS_DIR) for p in DEFS_DIR.rglob("*"))
    defs = build_definitions(load_settings("dev"))
    job = defs.resolve_job_def("suppliers_job")
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} >= {
        "suppliers_extract",
        "suppliers_load",
    }
    assert defs.resolve_job_def("companies_job")  # the samples are still there
    assert sorted(p.relative_to(DEFS_DIR) for p in DEFS_DIR.rglob("*")) == package  # nothing written there


def test_another_folder_named_by_the_settings(
    isolated_env: Path, write_settings: WriteSettings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "client_flows"
    client_flow(elsewhere, "suppliers")
    write_settings(f"dev:\n  flows:\n    dirs: [{elsewhere}]\n")
    monkeypatch.setenv("ETL_ENV", "dev")
    assert build_definitions(load_settings("dev")).resolve_job_def("suppliers_job")


def test_two_flows_of_one_name_fail_the_load_naming_both_files(flows_dir: Path) -> None:
    shutil.copytree(DEFS_DIR / "companies", flows_dir / "companies")
    with pytest.raises(DeclarationError) as caught:
        build_definitions(load_settings("dev"))
    assert str(caught.value) == (
        f"flow 'companies' is declared twice: {DEFS_DIR / 'companies' / 'defs.yaml'} and "
        f"{flows_dir / 'companies' / 'defs.yaml'}"
    )


def test_two_flows_writing_one_table_on_different_keys_fail_naming_both(flows_dir: Path) -> None:
    first = client_flow(flows_dir, "suppliers", table="partners")
    second = client_flow(flows_dir, "vendors", table="partners", key="vat_code")
    with pytest.raises(DeclarationError) as caught:
        build_definitions(load_settings("dev"))
    assert str(caught.value) == (
        f"table 'partners' is written on key 'external_id' by {first} and on key 'vat_code' by {second}"
    )


def test_a_bad_declaration_names_its_file_line_and_key(flows_dir: Path) -> None:
    path = client_flow(flows_dir, "suppliers")
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("warn_limit: 10", "warn_limit: many"), encoding="utf-8")
    line = next(n for n, x in enumerate(path.read_text().splitlines(), 1) if "warn_limit" in x)
    with pytest.raises(DeclarationError) as caught:
        build_definitions(load_settings("dev"))
    assert str(caught.value).startswith(f"{path}:{line}: warn_limit: Input should be a valid integer")
