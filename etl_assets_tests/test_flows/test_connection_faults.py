"""Transient faults retried, lasting ones explained: the private PostgreSQL restarted in the
middle of a load, and stopped for good (real server, real Dagster retries)."""

from __future__ import annotations

import threading
import time

import dagster as dg
import psycopg

from etl_assets_tests.test_flows.conftest import FlowEnv, companies_csv, materializations

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


def test_a_restart_mid_load_is_retried_and_the_table_equals_a_clean_run(flow_env: FlowEnv) -> None:
    flow_env.put(FILE, companies(ROWS))
    outcome: dict[str, dg.ExecuteInProcessResult] = {}
    worker = threading.Thread(target=lambda: outcome.setdefault("run", flow_env.run(DAY)))
    worker.start()
    wait_for_the_load(flow_env)
    flow_env.postgres.restart()  # every open connection gets AdminShutdown
    worker.join(timeout=300)
    run = outcome["run"]
    assert run.success
    retried = [e.step_key for e in run.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert retried and set(retried) <= {"companies_steps"}, retried  # the UI shows it
    assert flow_env.query("select count(*), count(distinct external_id) from accounts") == [(ROWS, ROWS)]
    load = materializations(run, "companies_load")[-1].metadata
    assert load["inserted"].value + load["unchanged"].value == ROWS
    assert flow_env.smtp.messages() == []  # a clean partition, after all: no e-mail


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
