"""Runs started the way operators start them: ``dg launch`` (Dagster 1.13's command) and the
``dagster`` CLI for those who still type it, no daemon."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from etl_assets.samples import write_demo_data
from etl_assets_tests.test_flows.conftest import FlowEnv, companies_csv

DAGSTER = str(Path(sys.executable).with_name("dagster"))
DG = str(Path(sys.executable).with_name("dg"))
ROOT = Path(__file__).resolve().parents[2]
WARNING = re.compile(r"(?i)\bwarning\b|\w+Warning\b")


def cli(command: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    dagster_home = home / "dagster_home"
    dagster_home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "VIRTUAL_ENV": sys.prefix}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def dagster(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """The ``dagster`` CLI on the package, as a user who types its name would point it."""
    return cli([DAGSTER, *args, "-m", "etl_assets"], home)


def dg_launch(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """``dg launch`` from the project root: the code location comes from pyproject.toml."""
    return cli([DG, "launch", *args], home)


def test_three_partition_backfill_through_the_cli(flow_env: FlowEnv) -> None:
    for day in (13, 14, 15):
        flow_env.put(
            f"companies_202601{day}.csv",
            companies_csv(f"C{day};IT000000000{day};Ditta {day} S.r.l.;;;;IT;;;;;;;{day}/01/2026 05:00:00"),
        )
    run = dagster(
        "asset",
        "materialize",
        "--select",
        "group:companies",
        "--partition-range",
        "2026-01-13...2026-01-15",
        home=flow_env.home,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert flow_env.query("select external_id from accounts order by 1") == [("C13",), ("C14",), ("C15",)]
    assert "RUN_SUCCESS" in run.stderr
    assert flow_env.smtp.messages() == []  # a clean run sends nothing


def test_dev_defaults_sqlite_and_the_import_folder(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No server at all: files from ETL_HOME/import, SQLite, e-mails to the outbox."""
    monkeypatch.setenv("ETL_ENV", "dev")
    files = write_demo_data(isolated_env / "import", days=1, rows_per_day=30)
    day = files[0].name[len("companies_") : -len(".csv")]
    partition = f"{day[:4]}-{day[4:6]}-{day[6:]}"
    run = dg_launch("--assets", "group:companies", "--partition", partition, home=isolated_env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert not WARNING.findall(run.stdout + run.stderr), (run.stdout + run.stderr)[:3000]
    with sqlite3.connect(isolated_env / "data" / "etl.sqlite") as conn:
        (loaded,) = conn.execute("select count(*) from accounts").fetchone()
        (linked,) = conn.execute(
            "select count(*) from accounts where parent_account_id is not null"
        ).fetchone()
    assert loaded == 30 - 4  # demo faults: bad date, bad e-mail, missing VAT, bad revenue
    assert linked > 0
    outbox = sorted((isolated_env / "logs" / "outbox").glob("*.eml"))
    assert len(outbox) == 1
    message = message_from_bytes(outbox[0].read_bytes(), policy=policy.default)
    assert message["Subject"].startswith(f"[etl_assets][dev] companies {partition}: ")
    assert {p.get_filename() for p in message.iter_attachments()} >= {f"companies_{partition}_transform.csv"}
