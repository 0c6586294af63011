"""A backfill as an operator launches it from the UI: the real webserver and daemon, the UI's
GraphQL mutation, and what the UI then shows (the backfill's page, the asset's partitions).

The daemon starts after the launch, so its first backfill tick takes the backfill up: the
backfill daemon ticks every 30 s (not configurable in Dagster 1.13.27), and a backfill needs
two ticks (submit the runs, see them done); launched after the daemon's first tick, it would
wait up to 30 s more."""

from __future__ import annotations

import time
from datetime import date, timedelta
from email import message_from_bytes, policy
from pathlib import Path

from etl_assets.samples import write_demo_data
from etl_assets_tests.services import DagsterServer
from etl_assets_tests.test_flows.conftest import companies_csv

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ["companies_extract", "companies_transform", "companies_load", "companies_link"]


def test_backfill_through_the_daemon_as_the_ui_launches_it(isolated_env: Path, tmp_path: Path) -> None:
    """Three days, the middle one over its warn_limit: two land, one fails, the UI says so, and
    the backfill sends one e-mail with a line per partition."""
    end = date.today() - timedelta(days=2)  # inside the daily partitions in any timezone
    keys = [f"{end - timedelta(days=n):%Y-%m-%d}" for n in (2, 1, 0)]
    for path in write_demo_data(isolated_env / "import", days=3, end=end):
        if not path.name.startswith("companies_"):
            path.unlink()  # the offers files would start runs of their own (offers_file_sensor)
    middle = isolated_env / "import" / f"companies_{keys[1].replace('-', '')}.csv"
    bad = [
        f"B{i};IT1000000{i:04d};Bad {i} S.r.l.;;;;IT;;;;;;31/02/2019;01/01/2026 05:00:00" for i in range(11)
    ]
    middle.write_bytes(companies_csv(*bad))  # 11 rejected rows, warn_limit 10: it blocks

    env = {"ETL_ENV": "dev", "ETL_HOME": str(isolated_env)}
    outbox = isolated_env / "logs" / "outbox"
    with DagsterServer(ROOT, tmp_path / "dagster_home", env, daemon=False) as dagster:
        backfill_id = dagster.launch_backfill(keys, ASSETS)
        dagster.start_daemon()
        backfill = dagster.wait_backfill(backfill_id, timeout=150)
        load = dagster.partition_status("companies_load")
        transform = dagster.partition_status("companies_transform")
        deadline = time.monotonic() + 90  # the backfill_emails sensor looks every 30 s
        while not list(outbox.glob("*.eml")) and time.monotonic() < deadline:
            time.sleep(1)
        first_emails = list(outbox.glob("*.eml"))
        # the backfill page's "Re-execute" (from failure): only the failed day's load and link;
        # they must not load what the blocking check refused
        retry = dagster.wait_backfill(dagster.reexecute_backfill(backfill_id), timeout=150)
        load_after_retry = dagster.partition_status("companies_load")

    assert backfill["status"] == "COMPLETED_FAILED", backfill
    assert backfill["error"] is None, backfill["error"]
    # the three days are one run (a chunk of the backfill); it fails for its bad day only
    assert [run["status"] for run in backfill["runs"]] == ["FAILURE"], backfill["runs"]
    assert backfill["assets"]["companies_load"]["numPartitionsMaterialized"] == 2, backfill
    # the asset's Partitions tab: the bad day is not materialized where its load did not commit
    assert {k: load[k] for k in keys} == {
        keys[0]: "materialized",
        keys[1]: "failed",
        keys[2]: "materialized",
    }
    assert transform[keys[1]] == "materialized"  # its rows were read; its blocking check failed
    assert not {k for k, v in load.items() if v != "missing"} - set(keys), "partitions outside the backfill"

    assert [run["partition"] for run in retry["runs"]] == [keys[1]], retry["runs"]
    assert {k: v["numPartitionsTargeted"] for k, v in retry["assets"].items()} == {
        "companies_load": 1,
        "companies_link": 1,
    }, retry["assets"]
    assert retry["status"] == "COMPLETED_FAILED" and load_after_retry[keys[1]] == "failed"
    (line,) = (isolated_env / "logs" / "batches" / retry["id"]).glob("companies_*.json")
    assert "load: not run, transform check rejected_rows: 11 rows rejected" in line.read_text(), (
        line.read_text()
    )
    assert load_after_retry == load  # nothing else ran again

    (email,) = first_emails  # one for the whole backfill
    message = message_from_bytes(email.read_bytes(), policy=policy.default)
    assert message["Subject"].startswith(
        f"[etl_assets][dev] companies {keys[0]}...{keys[2]} failed: 1 of 3 partitions ({keys[1]}: "
        "transform check rejected_rows: 11 rows rejected (warn up to 10))"
    ), message["Subject"]
    body = message.get_body(("plain",)).get_content()
    lines = [line.strip() for line in body.splitlines() if line.strip().startswith("companies 20")]
    assert [line.split(":")[0] for line in lines] == [f"companies {k}" for k in keys]
    assert lines[1].startswith(f"companies {keys[1]}: failed: transform check rejected_rows")
    assert all("rejected rows" in lines[i] for i in (0, 2)), lines  # demo faults, under warn_limit
    names = sorted(p.get_filename() for p in message.iter_attachments())
    assert names == sorted(
        [f"companies_{k}_{step}.csv" for k in (keys[0], keys[2]) for step in ("transform", "link")]
        + [f"companies_{keys[1]}_transform.csv"]
    )


def test_a_run_killed_with_sigkill_is_marked_failed_and_its_partition_runs_again(
    isolated_env: Path, tmp_path: Path
) -> None:
    """Dead runs are noticed: the run worker of a daemon-launched run dies (kill -9) mid-run;
    the run is marked failed within seconds and the next run of its partition lands."""
    import os
    import re
    import signal

    import dagster as dg

    day = date.today() - timedelta(days=2)
    key = f"{day:%Y-%m-%d}"
    (path,) = [
        p
        for p in write_demo_data(isolated_env / "import", days=1, end=day, rows_per_day=60_000)
        if p.name.startswith("companies_")
    ]
    for other in (isolated_env / "import").iterdir():
        if other != path:
            other.unlink()
    env = {"ETL_ENV": "dev", "ETL_HOME": str(isolated_env)}
    home = tmp_path / "dagster_home"
    with DagsterServer(ROOT, home, env) as dagster, dg.DagsterInstance.from_config(str(home)) as instance:
        first = dagster.launch_backfill([key], ASSETS)
        deadline, pid, run_id = time.monotonic() + 90, None, None
        while pid is None and time.monotonic() < deadline:
            for run in instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": first})):
                for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
                    found = re.search(r"Executing steps in process \(pid: (\d+)\)", record.message)
                    if found:
                        pid, run_id = int(found.group(1)), run.run_id
            time.sleep(0.2)
        assert pid is not None, "the backfill's run did not start"
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        while instance.get_run_by_id(run_id).status != dg.DagsterRunStatus.FAILURE:
            assert time.monotonic() - killed_at < 60, instance.get_run_by_id(run_id).status
            time.sleep(0.5)
        noticed_s = time.monotonic() - killed_at
        backfill = dagster.wait_backfill(first, timeout=120)
        assert backfill["status"] == "COMPLETED_FAILED", backfill

        again = dagster.launch_backfill([key], ASSETS)  # it does not block its partition
        assert dagster.wait_backfill(again, timeout=150)["status"] == "COMPLETED_SUCCESS"
        assert dagster.partition_status("companies_load")[key] == "materialized"
    assert noticed_s < 30, f"the dead run was marked failed after {noticed_s:.1f} s"


def test_two_backfills_of_one_partition_run_one_after_the_other(isolated_env: Path, tmp_path: Path) -> None:
    """A double click in the UI: two backfills of one day at once. The run queue's limit (one
    run per partition) holds the second until the first ends; both land, nothing doubles."""
    import sqlite3

    day = date.today() - timedelta(days=2)
    key = f"{day:%Y-%m-%d}"
    for path in write_demo_data(isolated_env / "import", days=1, end=day):
        if not path.name.startswith("companies_"):
            path.unlink()
    env = {"ETL_ENV": "dev", "ETL_HOME": str(isolated_env)}
    with DagsterServer(ROOT, tmp_path / "dagster_home", env, daemon=False) as dagster:
        both = [dagster.launch_backfill([key], ASSETS) for _ in range(2)]
        dagster.start_daemon()
        done = [dagster.wait_backfill(b, timeout=150) for b in both]
    assert [d["status"] for d in done] == ["COMPLETED_SUCCESS", "COMPLETED_SUCCESS"], done
    (first,), (second,) = (d["runs"] for d in done)
    spans = sorted([(first["start_time"], first["end_time"]), (second["start_time"], second["end_time"])])
    assert spans[0][1] <= spans[1][0], f"the two runs of {key} overlapped: {spans}"
    with sqlite3.connect(isolated_env / "data" / "etl.sqlite") as conn:
        ((rows, keys),) = conn.execute(
            "select count(*), count(distinct external_id) from accounts"
        ).fetchall()
    assert rows == keys > 0
    # the limit that holds the second run (on two cores the runs' start-up alone may keep them
    # apart, so the instance's own reading of the shipped dagster.yaml is asserted too)
    import dagster as dg

    with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        limits = instance.run_coordinator.get_run_queue_config().tag_concurrency_limits
    assert {(x["key"], x["limit"]) for x in limits} == {
        ("dagster/partition", 1),
        ("dagster/asset_partition_range_start", 1),
        ("dagster/backfill", 2),
        ("etl_assets/arrival", 1),  # a flow's file arrivals one at a time
    }
