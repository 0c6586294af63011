"""``etl-assets flows ...`` as a consultant and CI run it: a real process, its output, its exit
status, the files it leaves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def flows(*args: str, home: Path, settings: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ETL_HOME": str(home), "ETL_SETTINGS": str(settings), "ETL_ENV": "dev"}
    return subprocess.run(
        [sys.executable, "-m", "etl_assets.cli", "flows", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def settings(tmp_path: Path) -> Path:
    path = tmp_path / "settings.yaml"
    path.write_text("dev: {}\n", encoding="utf-8")
    return path


def test_a_flow_created_compiled_arranged_and_deleted_from_the_shell(
    isolated_env: Path, settings: Path
) -> None:
    created = flows("create", "suppliers", "--template", "companies", home=isolated_env, settings=settings)
    path = isolated_env / "flows" / "suppliers" / "defs.yaml"
    assert (created.returncode, created.stdout) == (0, f"created suppliers: {path}\n")

    listed = flows("list", "--json", home=isolated_env, settings=settings)
    assert [(f["name"], f["table"], f["packaged"]) for f in json.loads(listed.stdout)] == [
        ("companies", "accounts", True),
        ("offers", "offers", True),
        ("suppliers", "suppliers", False),
    ]
    assert flows("compile", "--all", home=isolated_env, settings=settings).returncode == 0

    path.write_text(path.read_text().replace("table: suppliers, match", "table: nowhere, match"))
    failed = flows("compile", "suppliers", home=isolated_env, settings=settings)
    assert failed.returncode == 1
    assert failed.stdout.startswith("suppliers: FAILED\n")
    assert (
        "error: suppliers link parent_vat: table nowhere is loaded by no flow of the project" in failed.stdout
    )

    copied = flows("duplicate", "suppliers", "vendors", "--json", home=isolated_env, settings=settings)
    assert json.loads(copied.stdout)["table"] == "vendors"
    assert flows("arrange", "vendors", home=isolated_env, settings=settings).returncode == 0
    shown = flows("show", "vendors", home=isolated_env, settings=settings)
    assert "  name: vendors\n" in shown.stdout

    deleted = flows("delete", "vendors", home=isolated_env, settings=settings)
    assert (
        deleted.returncode == 0 and "left in place:\n  table vendors in the target database" in deleted.stdout
    )
    assert not (isolated_env / "flows" / "vendors").exists()


def test_usage_errors_exit_2_with_one_line(isolated_env: Path, settings: Path) -> None:
    missing = flows("compile", "nope", home=isolated_env, settings=settings)
    assert (missing.returncode, missing.stderr) == (
        2,
        "etl-assets: no flow 'nope' (etl-assets flows list shows them)\n",
    )
    bad = flows("create", "Bad-Name", home=isolated_env, settings=settings)
    assert bad.returncode == 2 and "is not an identifier" in bad.stderr
    sample = flows("delete", "companies", home=isolated_env, settings=settings)
    assert sample.returncode == 1 and "is a sample flow of the package: it cannot be deleted" in sample.stderr
