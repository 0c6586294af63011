"""`etl-assets dagster-yaml` and `etl-assets exec`: the Dagster instance of each environment.

dev stays on embedded SQLite; test and prod keep runs and events in a real PostgreSQL whose
password is read from the environment that `exec` sets, never written into dagster.yaml.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import psycopg
import yaml

from etl_assets.cli import main
from etl_assets.orchestration.instance_config import PASSWORD_ENV, SHIPPED_INSTANCE
from etl_assets_tests.services import PostgresServer
from etl_assets_tests.test_flows.test_cli_runs import DAGSTER

# One trivial asset: what is asserted is where Dagster records the run, not our flows.
TRIVIAL_RUN = textwrap.dedent(
    """
    import dagster as dg

    @dg.asset
    def probe() -> int:
        return 1

    with dg.DagsterInstance.get() as instance:
        result = dg.materialize([probe], instance=instance)
        print("run", result.run_id, result.success)
    """
)


def test_dev_keeps_embedded_storage_and_the_shipped_queue(tmp_path: Path, capsys) -> None:
    assert main(["dagster-yaml", "-e", "dev", "--dagster-home", str(tmp_path)]) == 0
    written = yaml.safe_load((tmp_path / "dagster.yaml").read_text())
    shipped = yaml.safe_load(SHIPPED_INSTANCE.read_text())
    assert "storage" not in written  # SQLite under DAGSTER_HOME
    shipped_queue = shipped["run_queue"]
    assert written["concurrency"]["runs"] == {
        "max_concurrent_runs": shipped_queue["max_concurrent_runs"],
        "tag_concurrency_limits": shipped_queue["tag_concurrency_limits"],
    }
    assert written["concurrency"]["pools"] == {"default_limit": 2, "granularity": "op"}
    assert written["run_queue"] == {"dequeue_interval_seconds": shipped_queue["dequeue_interval_seconds"]}
    assert written["run_monitoring"] == shipped["run_monitoring"]
    assert written["retention"]["schedule"] == {"purge_after_days": 30}
    assert "storage sqlite" in capsys.readouterr().out


def test_settings_set_the_limits(tmp_path: Path, write_settings: Callable[[str], Path]) -> None:
    write_settings("instance: {max_concurrent_runs: 6, backfill_runs: 4, max_runtime_seconds: 600}\n")
    assert main(["dagster-yaml", "-e", "dev", "--dagster-home", str(tmp_path)]) == 0
    written = yaml.safe_load((tmp_path / "dagster.yaml").read_text())
    runs = written["concurrency"]["runs"]
    limits = {limit["key"]: limit for limit in runs["tag_concurrency_limits"]}
    assert runs["max_concurrent_runs"] == 6
    assert limits["dagster/backfill"]["limit"] == 4
    assert written["run_monitoring"]["max_runtime_seconds"] == 600


def test_backfills_cannot_take_more_runs_than_the_queue(write_settings, capsys) -> None:
    write_settings("instance: {max_concurrent_runs: 2, backfill_runs: 3}\n")
    assert main(["dagster-yaml", "-e", "dev", "--stdout"]) == 2
    assert "backfill_runs cannot exceed max_concurrent_runs" in capsys.readouterr().err


def test_exec_without_a_command_is_a_usage_error(capsys) -> None:
    assert main(["exec", "-e", "dev"]) == 2
    assert "give the command after --" in capsys.readouterr().err


def test_test_environment_records_runs_in_postgres_without_the_password_in_the_file(
    tmp_path: Path,
    postgres: PostgresServer,
    pg_database: str,
    write_settings: Callable[[str], Path],
    encrypt_password: Callable[[str], str],
) -> None:
    token = encrypt_password(postgres.password)
    write_settings(
        "instance:\n"
        "  storage: postgresql\n"
        f"  postgres: {{host: {postgres.host}, port: {postgres.port}, database: {pg_database},"
        f" user: {postgres.user}, password: '{token}'}}\n"
    )
    dagster_home = tmp_path / "dagster_home"
    assert main(["dagster-yaml", "-e", "test", "--dagster-home", str(dagster_home)]) == 0
    text = (dagster_home / "dagster.yaml").read_text()
    assert postgres.password not in text and token not in text
    storage = yaml.safe_load(text)["storage"]["postgres"]["postgres_db"]
    assert storage["password"] == {"env": PASSWORD_ENV}
    assert storage["scheme"] == "postgresql+psycopg2"

    script = tmp_path / "probe_run.py"
    script.write_text(TRIVIAL_RUN)
    environment = {**os.environ, "DAGSTER_HOME": str(dagster_home)}
    environment.pop(PASSWORD_ENV, None)
    done = subprocess.run(
        [sys.executable, "-m", "etl_assets.cli", "exec", "-e", "test", "--", sys.executable, str(script)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = done.stdout.split()[1]
    assert done.stdout.split()[2] == "True"
    assert postgres.password not in done.stdout + done.stderr

    with psycopg.connect(postgres.dsn(pg_database)) as conn:
        status = conn.execute("SELECT status FROM runs WHERE run_id = %s", (run_id,)).fetchone()
        events = conn.execute("SELECT count(*) FROM event_logs WHERE run_id = %s", (run_id,)).fetchone()
    assert status == ("SUCCESS",)
    assert events[0] > 5

    # without exec the password is missing, and Dagster says which variable
    failed = subprocess.run(
        [sys.executable, str(script)], env=environment, capture_output=True, text=True, timeout=120
    )
    assert failed.returncode != 0
    assert PASSWORD_ENV in failed.stderr


def test_pools_are_made_once_with_the_settings_limit(
    tmp_path: Path,
    postgres: PostgresServer,
    pg_database: str,
    write_settings: Callable[[str], Path],
    encrypt_password: Callable[[str], str],
) -> None:
    write_settings(
        "test:\n"
        "  instance:\n"
        "    storage: postgresql\n"
        f"    postgres: {{host: {postgres.host}, port: {postgres.port}, database: {pg_database},"
        f" user: {postgres.user}, password: '{encrypt_password(postgres.password)}'}}\n"
        "  executor: {kind: celery, connections_per_flow: 3}\n"
    )
    dagster_home = tmp_path / "dagster_home"
    assert main(["dagster-yaml", "-e", "test", "--dagster-home", str(dagster_home)]) == 0
    environment = {**os.environ, "DAGSTER_HOME": str(dagster_home)}

    def pools(*extra: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "etl_assets.cli", "pools", "-e", "test", *extra],
            env=environment,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert postgres.password not in done.stdout + done.stderr
        return done.stdout

    def limits() -> dict[str, int]:
        with psycopg.connect(postgres.dsn(pg_database)) as conn:
            return dict(conn.execute('SELECT concurrency_key, "limit" FROM concurrency_limits').fetchall())

    assert "etl_flow_companies: 3 slots" in pools()
    assert limits()["etl_flow_companies"] == 3 and limits()["etl_flow_offers"] == 3
    own = ["exec", "-e", "test", "--", DAGSTER, "instance", "concurrency", "set", "etl_flow_offers", "5"]
    subprocess.run([sys.executable, "-m", "etl_assets.cli", *own], env=environment, check=True, timeout=180)
    assert limits()["etl_flow_offers"] == 5  # an operator's own limit ...
    assert "etl_flow_offers: kept, 5 slots" in pools()  # ... is kept
    assert "etl_flow_offers: 3 slots" in pools("--reset")
    assert limits()["etl_flow_offers"] == 3


def test_pools_in_process_are_none(capsys) -> None:
    assert main(["pools", "-e", "dev"]) == 0
    assert "runs steps in process: its flows use no pools" in capsys.readouterr().out
