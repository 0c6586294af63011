"""Runs started the way operators start them: ``dg launch`` (Dagster 1.13's command) and the
``dagster`` CLI for those who still type it, no daemon."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
from datetime import date
from email import message_from_bytes, policy
from pathlib import Path

import dagster as dg
import pytest

from etl_assets.model.flow import STEPS
from etl_assets.samples import write_demo_data
from etl_assets_tests.test_flows.conftest import FlowEnv, companies_csv

DAGSTER = str(Path(sys.executable).with_name("dagster"))
DG = str(Path(sys.executable).with_name("dg"))
ETL_ASSETS = str(Path(sys.executable).with_name("etl-assets"))
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


def test_backfill_lands_every_good_partition_and_sends_one_email(flow_env: FlowEnv) -> None:
    """``etl-assets backfill``: one ranged run for the three days; the one over its warn_limit
    fails alone, the others land."""
    bad = [
        f"B{i};IT1000000{i:04d};Bad {i} S.r.l.;;;;IT;;;;;;31/02/2019;14/01/2026 05:00:00" for i in range(11)
    ]
    for day in (13, 14, 15):
        good = f"C{day};IT000000000{day};Ditta {day} S.r.l.;;;;IT;;;;;;;{day}/01/2026 05:00:00"
        flow_env.put(f"companies_202601{day}.csv", companies_csv(good, *(bad if day == 14 else [])))
    run = cli(
        [ETL_ASSETS, "backfill", "companies", "--from", "2026-01-13", "--to", "2026-01-15"], flow_env.home
    )
    assert run.returncode == 1, run.stdout + run.stderr[-3000:]  # one partition failed
    assert "2026-01-14: FAILED" in run.stdout and "--partitions 2026-01-14" in run.stdout
    assert flow_env.query("select external_id from accounts order by 1") == [("C13",), ("C15",)]

    with dg.DagsterInstance.from_config(str(flow_env.home / "dagster_home")) as instance:
        (ranged,) = runs = instance.get_runs()
        assert ranged.tags["dagster/asset_partition_range_start"] == "2026-01-13"
        assert ranged.tags["dagster/asset_partition_range_end"] == "2026-01-15"
        assert ranged.status == dg.DagsterRunStatus.FAILURE  # it says which partition, below
        for step, landed in (
            ("transform", {"13", "14", "15"}),
            ("load", {"13", "15"}),
            ("link", {"13", "15"}),
        ):
            done = instance.get_materialized_partitions(dg.AssetKey(f"companies_{step}"))
            assert done == {f"2026-01-{d}" for d in landed}, step
        # each check result carries its partition (the UI's check history shows it)
        verdicts = {
            (e.partition, e.check_name): e.passed
            for r in runs
            for record in instance.all_logs(r.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
            if (e := record.dagster_event.event_specific_data).asset_key == dg.AssetKey("companies_transform")
        }
        assert verdicts == {
            ("2026-01-13", "rejected_rows"): True,
            ("2026-01-14", "rejected_rows"): False,
            ("2026-01-15", "rejected_rows"): True,
        }

    (message,) = flow_env.smtp.wait_for(1)
    time.sleep(0.3)
    assert len(flow_env.smtp.messages()) == 1  # one e-mail for the whole backfill
    assert message["Subject"] == (
        "[etl_assets][test] companies 2026-01-13...2026-01-15 failed: 1 of 3 partitions "
        "(2026-01-14: transform check rejected_rows: 11 rows rejected (warn up to 10)); 11 rows rejected"
    )
    body = message.get_body(("plain",)).get_content()
    lines = [line.strip() for line in body.splitlines() if line.strip().startswith("companies 2026-01-")]
    assert lines == [
        "companies 2026-01-13: ok; 1 rows in, 1 loaded, 0 rejected",
        "companies 2026-01-14: failed: transform check rejected_rows: 11 rows rejected (warn up to 10); "
        "12 rows in, 0 loaded, 11 rejected; error files: transform.csv",
        "companies 2026-01-15: ok; 1 rows in, 1 loaded, 0 rejected",
    ]
    assert [p.get_filename() for p in message.iter_attachments()] == ["companies_2026-01-14_transform.csv"]

    # the failed one again, alone, once its file is corrected
    flow_env.put(
        "companies_20260114.csv",
        companies_csv("C14;IT00000000014;Ditta 14 S.r.l.;;;;IT;;;;;;;14/01/2026 05:00:00"),
    )
    again = cli([ETL_ASSETS, "backfill", "companies", "--partitions", "2026-01-14"], flow_env.home)
    assert again.returncode == 0, again.stdout + again.stderr[-3000:]
    assert flow_env.query("select external_id from accounts order by 1") == [("C13",), ("C14",), ("C15",)]


def test_the_dagster_cli_still_runs_a_partition_on_the_package(flow_env: FlowEnv) -> None:
    """For those who type ``dagster asset materialize -m etl_assets``."""
    flow_env.put(
        "companies_20260113.csv",
        companies_csv("C13;IT00000000013;Ditta 13 S.r.l.;;;;IT;;;;;;;13/01/2026 05:00:00"),
    )
    run = dagster(
        "asset", "materialize", "--select", "group:companies", "--partition", "2026-01-13", home=flow_env.home
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "RUN_SUCCESS" in run.stderr
    assert flow_env.query("select external_id from accounts") == [("C13",)]
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


def test_two_runs_of_one_partition_at_once_neither_fails_nor_doubles(flow_env: FlowEnv) -> None:
    """A double click, or a sensor and a schedule: two CLI runs of one partition together, on
    an empty table (12,000 rows: the first load's fast path, indexes dropped) and again on a loaded one."""
    rows = [f"C{i};IT{i:011d};Ditta {i} S.r.l.;;;;IT;;;;;;;13/01/2026 05:00:00" for i in range(12_000)]
    flow_env.put("companies_20260113.csv", companies_csv(*rows))
    for _ in range(2):
        home = flow_env.home / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        # the instance exists before the runs, as under dg dev or the daemon (two processes
        # creating a new SQLite instance at once race in Dagster's own migrations)
        dg.DagsterInstance.from_config(str(home)).dispose()
        env = {**os.environ, "DAGSTER_HOME": str(home), "VIRTUAL_ENV": sys.prefix}
        command = [DG, "launch", "--assets", "group:companies", "--partition", "2026-01-13"]
        both = [
            subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for _ in range(2)
        ]
        outputs = [p.communicate(timeout=300) for p in both]
        for process, (_, err) in zip(both, outputs, strict=True):
            assert process.returncode == 0, err[-3000:]
        assert flow_env.query("select count(*), count(distinct external_id) from accounts") == [
            (12_000, 12_000)
        ]
    assert flow_env.smtp.messages() == []  # clean runs: no e-mail, and no raw error anywhere


def test_backfill_of_keys_that_are_not_partitions_says_what_keys_look_like(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from etl_assets.cli import main

    monkeypatch.setenv("ETL_ENV", "dev")
    monkeypatch.setenv("DAGSTER_HOME", str(isolated_env))
    assert main(["backfill", "companies", "--from", "2026-13-01", "--to", "2026-01-03"]) == 2
    assert "not partitions of companies: 2026-13-01 (keys look like 20" in capsys.readouterr().err
    assert main(["backfill", "suppliers", "--from", "2026-01-01"]) == 2
    assert "no flow 'suppliers'" in capsys.readouterr().err
    assert main(["backfill", "companies"]) == 2
    assert "give --from [--to] or --partitions" in capsys.readouterr().err


def test_a_ranged_run_of_its_own_lands_its_good_days_and_sends_one_email(flow_env: FlowEnv) -> None:
    """A run over a range that is no backfill (a Python caller's): the day whose file is
    missing fails alone, the run says which, and its one e-mail has a line per day."""
    for day in (13, 15):
        good = f"C{day};IT000000000{day};Ditta {day} S.r.l.;;;;IT;;;;;;;{day}/01/2026 05:00:00"
        flow_env.put(f"companies_202601{day}.csv", companies_csv(good))
    result = flow_env.run_range("2026-01-13", "2026-01-15")
    assert not result.success
    failure = result.failure_data_for_node("companies_steps").error.message
    assert "1 of 3 partitions failed (2 landed): 2026-01-14: " in failure, failure
    for step in STEPS:
        done = flow_env.instance.get_materialized_partitions(dg.AssetKey(f"companies_{step}"))
        assert done == {"2026-01-13", "2026-01-15"}, step
    assert flow_env.query("select external_id from accounts order by 1") == [("C13",), ("C15",)]
    (message,) = flow_env.smtp.wait_for(1)
    assert message["Subject"].startswith(
        "[etl_assets][test] companies 2026-01-13...2026-01-15 failed: 1 of 3 partitions (2026-01-14: "
    ), message["Subject"]
    body = message.get_body(("plain",)).get_content()
    lines = [line.strip() for line in body.splitlines() if line.strip().startswith("companies 2026-01-")]
    assert [line.split(":")[0] for line in lines] == [f"companies 2026-01-{d}" for d in (13, 14, 15)]
    assert lines[1].startswith("companies 2026-01-14: failed: ") and "companies_20260114.csv" in lines[1]


def test_dev_contacts_from_the_demo_crm(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``etl-assets demo-data`` fills the dev CRM (SQLite); the contacts flow reads it by its
    watermark, and a second run loads nothing again."""
    monkeypatch.setenv("ETL_ENV", "dev")
    demo = cli([ETL_ASSETS, "demo-data", "--days", "2", "--rows", "10"], isolated_env)
    assert demo.returncode == 0, demo.stderr
    assert f"{isolated_env / 'data' / 'crm.sqlite'} (contacts: 20 rows)" in demo.stdout
    today = date.today().isoformat()
    for _ in range(2):
        run = dg_launch("--assets", "group:contacts", "--partition", today, home=isolated_env)
        assert run.returncode == 0, run.stderr[-3000:]
    with sqlite3.connect(isolated_env / "data" / "etl.sqlite") as conn:
        (loaded,) = conn.execute("select count(*) from contacts").fetchone()
        (mark,) = conn.execute("select value from etl_watermarks where flow = 'contacts'").fetchone()
    assert loaded == 20 - 2  # a demo contact a day has a bad e-mail
    assert mark.startswith(today)
