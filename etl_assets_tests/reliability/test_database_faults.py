"""The target database failing in the middle of a load: the private PostgreSQL restarted, and
the loading backend terminated while its COPY runs. Dagster's retry must give exactly what a
clean run gives: no row lost, none doubled, no update missed."""

from __future__ import annotations

import psycopg

from etl_assets_tests.reliability.support import (
    DAY,
    FILE,
    ROWS,
    assert_same_as_clean,
    companies_file,
    poll,
    put_aged,
    retries,
    run_in_thread,
)
from etl_assets_tests.test_flows.conftest import FlowEnv, materializations


def loading_backend(env: FlowEnv, statement: str, timeout: float = 120) -> int:
    """The pid of the flow's backend while it runs ``statement`` (an ILIKE pattern)."""
    with psycopg.connect(env.postgres.dsn("postgres"), autocommit=True) as admin:

        def running() -> int | None:
            row = admin.execute(
                "select pid from pg_stat_activity where datname = %s and application_name = 'etl_assets' "
                "and state = 'active' and query ilike %s",
                (env.database, statement),
            ).fetchone()
            return row[0] if row else None

        return poll(running, timeout, f"a backend running {statement}", interval=0.002)


def test_a_restart_mid_load_is_retried_and_the_table_equals_a_clean_run(flow_env: FlowEnv) -> None:
    """``pg_ctl restart -m fast`` while the first load COPYs: every open connection gets
    AdminShutdown, the partition is retried, and the table is the clean run's, row for row."""
    data = companies_file(ROWS)
    put_aged(flow_env, FILE, data)
    result = run_in_thread(flow_env, DAY)
    loading_backend(flow_env, "copy %")
    flow_env.postgres.restart()
    run = result()
    assert run.success
    assert retries(run) and set(retries(run)) <= {"companies_steps"}, retries(run)  # the UI shows it
    load = materializations(run, "companies_load")[-1].metadata
    assert load["inserted"].value + load["unchanged"].value == ROWS + 1  # C1 given twice: one row
    (message,) = flow_env.smtp.wait_for(1)  # the retry sent the run's e-mail once, not per try
    assert message["Subject"] == "[etl_assets][test] companies 2026-01-15: 5 rows rejected"
    assert_same_as_clean(flow_env, [(DAY, {FILE: data})])


def test_a_backend_terminated_mid_copy_of_a_corrected_file_loses_no_update(flow_env: FlowEnv) -> None:
    """The partition loaded, then a corrected file (every name changed): its load COPYs the
    changed rows to a temporary table, and ``pg_terminate_backend`` ends the loading connection
    in the middle of that COPY. The retry updates every row once; nothing is half-updated."""
    first, corrected = companies_file(ROWS), companies_file(ROWS, version=1)
    put_aged(flow_env, FILE, first)
    assert flow_env.run(DAY).success
    put_aged(flow_env, FILE, corrected)
    result = run_in_thread(flow_env, DAY)
    pid = loading_backend(flow_env, "copy % from stdin%")
    with psycopg.connect(flow_env.postgres.dsn("postgres"), autocommit=True) as admin:
        assert admin.execute("select pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
    run = result()
    assert run.success
    assert retries(run) == ["companies_steps"]
    assert flow_env.query("select count(*) from accounts where name like '% v0 %'") == [(0,)]
    assert_same_as_clean(flow_env, [(DAY, {FILE: first}), (DAY, {FILE: corrected})])
