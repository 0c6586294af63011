"""Steps on a Celery worker (issue 24): real RabbitMQ on loopback, Dagster's storage in a real
PostgreSQL database written by ``etl-assets dagster-yaml``, a worker started by ``etl-assets
worker``, a companies partition materialized by the ``dagster`` CLI through ``etl-assets exec``.

The queue is the test's own, so no other worker on the broker takes its tasks."""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import psycopg

from etl_assets.cli import main
from etl_assets_tests.scenarios.scaleout import Workers
from etl_assets_tests.services import PostgresServer
from etl_assets_tests.test_flows.conftest import FlowEnv, companies_csv
from etl_assets_tests.test_flows.test_cli_runs import DAGSTER, ETL_ASSETS, ROOT
from etl_assets_tests.test_flows.test_companies import FILE, GOOD

PARTITION = "2026-01-15"


def test_a_partition_runs_on_a_celery_worker_with_its_run_in_postgres(
    flow_env: FlowEnv, postgres: PostgresServer, encrypt_password, tmp_path: Path
) -> None:
    tag = secrets.token_hex(4)
    queue, instance_db = f"etl_io_{tag}", f"dagster_{tag}"
    postgres.create_database(instance_db)
    settings = Path(os.environ["ETL_SETTINGS"])
    settings.write_text(
        settings.read_text()
        + f"""  instance:
    storage: postgresql
    postgres: {{host: {postgres.host}, port: {postgres.port}, database: {instance_db}, user: {postgres.user},
      password: '{encrypt_password(postgres.password)}'}}
  executor:
    kind: celery
    broker: {{host: 127.0.0.1, port: 5672, user: guest}}
    queues: {{io: {queue}, cpu: {queue}_cpu}}
"""
    )
    dagster_home = tmp_path / "dagster_home"
    assert main(["dagster-yaml", "-e", "test", "--dagster-home", str(dagster_home)]) == 0
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home)}
    flow_env.put(FILE, companies_csv(*GOOD))

    workers = Workers(1, tag, env, tmp_path)
    try:
        workers.wait_ready()
        done = subprocess.run(
            [ETL_ASSETS, "exec", "-e", "test", "--", DAGSTER, "asset", "materialize", "-m", "etl_assets"]
            + ["--select", "group:companies", "--partition", PARTITION],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:] + workers.text(f"w1-{tag}")[-3000:]
    finally:
        workers.stop()
    worked = workers.text(f"w1-{tag}")
    assert "Task execute_plan[" in worked and "succeeded" in worked  # the worker ran the step

    assert len(flow_env.query("select external_id from accounts")) == len(GOOD)
    with psycopg.connect(postgres.dsn(instance_db)) as conn:
        [(run_id, status)] = conn.execute("select run_id, status from runs").fetchall()
        submitted = conn.execute(
            "select count(*) from event_logs where run_id = %s and event like %s",
            (run_id, f"%Submitting celery task for step%to queue%{queue}%"),
        ).fetchone()
        landed = conn.execute(
            "select count(*) from event_logs where run_id = %s and dagster_event_type = 'ASSET_MATERIALIZATION'",
            (run_id,),
        ).fetchone()
    assert status == "SUCCESS"
    assert submitted == (1,)  # the flow's op, sent to the flow's queue
    assert landed == (4,)  # extract, transform, load, link of the partition
