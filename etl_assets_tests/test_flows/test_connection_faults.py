"""Transient faults retried, lasting ones explained: the private PostgreSQL stopped for good,
and restarted in the middle of a later partition's load (real server, real Dagster retries).
A restart in the middle of a first load, compared row for row with a clean run, is in
``etl_assets_tests/reliability/test_database_faults.py``."""

from __future__ import annotations

import threading
import time

import dagster as dg
import psycopg

from etl_assets_tests.test_flows.conftest import FlowEnv, companies_csv

DAY = "2026-01-15"
FILE = "companies_20260115.csv"
ROWS = 60_000  # a first load of this size takes the fast path: COPY straight in, indexes rebuilt


def companies(n: int) -> bytes:
    return companies_csv(
        *(f"C{i};IT{i:011d};Ditta {i} S.r.l.;;;;IT;;;;;;;15/01/2026 05:00:00" for i in range(n))
    )


def wait_for_the_load(env: FlowEnv, timeout: float = 90) -> None:
    """Until a statement of the load runs in the flow's database."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(env.postgres.dsn("postgres"), autocommit=True) as admin:
        while time.monotonic() < deadline:
            (active,) = admin.execute(
                "select count(*) from pg_stat_activity where datname = %s and state = 'active' "
                "and pid <> pg_backend_pid() and (query ilike 'copy%%' or query ilike '%%accounts%%')",
                (env.database,),
            ).fetchone()
            if active:
                return
            time.sleep(0.005)
    raise AssertionError("the load never started")


def test_a_database_that_stays_down_fails_with_one_line_after_four_tries(flow_env: FlowEnv) -> None:
    flow_env.put(FILE, companies(3))
    flow_env.postgres.pause()
    try:
        started = time.monotonic()
        run = flow_env.run(DAY)
        seconds = time.monotonic() - started
    finally:
        flow_env.postgres.start()
    assert not run.success
    retried = [e for e in run.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert len(retried) == 3 and seconds >= 1 + 2 + 4  # back-off 1, 2, 4 s
    (message,) = flow_env.smtp.wait_for(1)  # the last try e-mails, not each one
    where = f"database test ({flow_env.postgres.host}:{flow_env.postgres.port})"
    subject = message["Subject"]
    assert subject.startswith(f"[etl_assets][test] companies {DAY} failed: load: {where}: "), subject
    assert subject.endswith("after 4 tries; check that the server is up"), subject
    assert "Traceback" not in message.get_body(("plain",)).get_content()
    assert "OperationalError" not in subject and "psycopg" not in subject
    failure = next(e for e in run.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert failure.step_key == "companies_steps"
    assert where in failure.event_specific_data.error.message  # the UI's line; the cause below it


def test_a_restart_in_a_later_partition_retries_only_what_did_not_land(flow_env: FlowEnv) -> None:
    """A ranged run of two days; PostgreSQL restarts in the second day's load: the retry skips
    the day that landed, and the table equals a clean run's."""
    flow_env.put("companies_20260114.csv", companies(3))
    flow_env.put(FILE, companies(ROWS))  # the same ids and more: the day after, updated
    outcome: dict[str, dg.ExecuteInProcessResult] = {}
    worker = threading.Thread(target=lambda: outcome.setdefault("run", flow_env.run_range("2026-01-14", DAY)))
    worker.start()
    deadline = time.monotonic() + 120
    link = dg.AssetKey("companies_link")
    while "2026-01-14" not in flow_env.instance.get_materialized_partitions(link):
        assert time.monotonic() < deadline and worker.is_alive(), "the first day never landed"
        time.sleep(0.05)
    wait_for_the_load(flow_env)  # the second day's
    flow_env.postgres.restart()
    worker.join(timeout=300)
    run = outcome["run"]
    assert run.success
    assert [e for e in run.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    records = flow_env.instance.get_records_for_run(
        run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    ).records  # every try's, as the instance (and the UI) has them
    landed = [
        r.event_log_entry.asset_materialization.partition
        for r in records
        if r.event_log_entry.asset_materialization.asset_key == link
    ]
    assert landed == ["2026-01-14", DAY], landed  # the first day once: the retry skipped it
    assert flow_env.query("select count(*), count(distinct external_id) from accounts") == [(ROWS, ROWS)]
