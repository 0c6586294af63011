"""``etl-assets flows ...`` as a consultant and CI run it: its output, its exit status, the
files it leaves. The console script runs once as a real process; the other calls go to its
``main`` in this process (the same code, without a start-up of a few seconds each)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from etl_assets.cli import main


@dataclass
class Shell:
    """``etl-assets flows ...`` for one ETL_HOME."""

    home: Path
    settings: Path
    capsys: pytest.CaptureFixture[str]

    def env(self) -> dict[str, str]:
        return {"ETL_HOME": str(self.home), "ETL_SETTINGS": str(self.settings), "ETL_ENV": "dev"}

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        self.capsys.readouterr()
        code = main(["flows", *args])
        out = self.capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, out.out, out.err)

    def spawn(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "etl_assets.cli", "flows", *args]
        env = {**os.environ, **self.env()}
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def flows(
    isolated_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Shell:
    settings = tmp_path / "settings.yaml"
    settings.write_text("dev: {}\n", encoding="utf-8")
    shell = Shell(isolated_env, settings, capsys)
    for name, value in shell.env().items():
        monkeypatch.setenv(name, value)
    return shell


def test_a_flow_created_compiled_arranged_and_deleted_from_the_shell(
    flows: Shell, isolated_env: Path
) -> None:
    created = flows.spawn("create", "suppliers", "--template", "companies")  # the console script
    path = isolated_env / "flows" / "suppliers" / "defs.yaml"
    assert (created.returncode, created.stdout) == (0, f"created suppliers: {path}\n")

    listed = flows("list", "--json")
    assert [(f["name"], f["table"], f["packaged"]) for f in json.loads(listed.stdout)] == [
        ("companies", "accounts", True),
        ("contacts", "contacts", True),
        ("offers", "offers", True),
        ("suppliers", "suppliers", False),
    ]
    assert flows("compile", "--all").returncode == 0

    path.write_text(path.read_text().replace("table: suppliers, match", "table: nowhere, match"))
    failed = flows("compile", "suppliers")
    assert failed.returncode == 1
    assert failed.stdout.startswith("suppliers: FAILED\n")
    assert (
        "error: suppliers link parent_vat: table nowhere is loaded by no flow of the project" in failed.stdout
    )

    copied = flows("duplicate", "suppliers", "vendors", "--json")
    assert json.loads(copied.stdout)["table"] == "vendors"
    assert flows("arrange", "vendors").returncode == 0
    shown = flows("show", "vendors")
    assert "  name: vendors\n" in shown.stdout

    vendors = isolated_env / "flows" / "vendors" / "defs.yaml"
    vendors.write_text(vendors.read_text().replace("warn_limit: 10", "warn_limit: 4"))  # by hand
    assert flows("arrange", "vendors").returncode == 0
    history = json.loads(flows("history", "vendors", "--json").stdout)
    assert [r["revision"] for r in history] == [1, 2]  # created; the hand edit, kept by the save
    changed = flows("diff", "vendors", "1", "2").stdout
    assert changed.startswith("--- revision 1\n+++ revision 2\n") and "+  warn_limit: 4\n" in changed
    back = flows("rollback", "vendors", "1")
    assert back.stdout == "vendors: revision 1 saved as 3\n"
    deleted = flows("delete", "vendors")
    assert (
        deleted.returncode == 0 and "left in place:\n  table vendors in the target database" in deleted.stdout
    )
    assert not (isolated_env / "flows" / "vendors").exists()


def test_usage_errors_exit_2_with_one_line(flows: Shell) -> None:
    missing = flows("compile", "nope")
    assert (missing.returncode, missing.stderr) == (
        2,
        "etl-assets: no flow or report 'nope' (etl-assets flows list shows the flows; reports: kpi_report)\n",
    )
    bad = flows("create", "Bad-Name")
    assert bad.returncode == 2 and "is not an identifier" in bad.stderr
    sample = flows("delete", "companies")
    assert sample.returncode == 1 and "is a sample flow of the package: it cannot be deleted" in sample.stderr


def test_compile_all_covers_the_reports(flows: Shell) -> None:
    compiled = flows("compile", "--all", "--json")
    assert compiled.returncode == 0
    results = {(r["flow"], r["kind"]): r for r in json.loads(compiled.stdout)}
    assert list(results) == [
        ("companies", "flow"),
        ("contacts", "flow"),
        ("offers", "flow"),
        ("kpi_report", "report"),
    ]
    (warning,) = results[("kpi_report", "report")]["problems"]  # dev: no SQLite file yet
    assert (warning["stage"], warning["severity"]) == ("query", "warning")
    assert warning["message"].endswith("the query was checked against the flows' declarations only")

    one = flows("compile", "kpi_report")
    assert one.returncode == 0 and one.stdout.startswith("kpi_report (report): ok\n  ")
