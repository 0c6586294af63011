"""No secret ever leaves the process: a canary password, grepped for everywhere.

The canary is the password of every connector. Runs that fail (wrong password, missing
database) go through the CLI (subprocess and in process at DEBUG), the Dagster job (every
event of the run), the resources' reprs and exceptions, the code location's snapshot (what
the UI shows) and ``dagster definitions validate``; the canary, in any usual encoding, must
appear in none of them. A run with the canary as the right password proves the tokens do
decrypt to it, so the test cannot pass by accident.
"""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest.mock import patch
from urllib.parse import quote

import psycopg
import pytest
import yaml
from dagster import instance_for_test
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._core.storage.defs_state.base import DefsStateStorage, set_defs_state_storage
from dagster._serdes import serialize_value
from psycopg import sql

from etl_assets.cli import main
from etl_assets.definitions import build_definitions
from etl_assets.resources import build_resources
from etl_assets.settings import decrypt, load_settings
from etl_assets_tests.conftest import SMTP_AUTH
from etl_assets_tests.services import PostgresServer, SmtpServer, SshdServer

CANARY = "Leak-Canary-7f3a9!"
ROLE = "etl_canary"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
Encrypt = Callable[[str], str]
WriteSettings = Callable[[str], Path]


def canary_forms() -> list[str]:
    """The canary as it could show up: clear, URL-quoted, base64 (SMTP AUTH LOGIN/PLAIN), hex."""
    b64 = base64.b64encode
    return [
        CANARY,
        quote(CANARY, safe=""),
        CANARY.encode().hex(),
        b64(CANARY.encode()).decode(),
        b64(f"\0{SMTP_AUTH[0]}\0{CANARY}".encode()).decode(),
        b64(f"\0{ROLE}\0{CANARY}".encode()).decode(),
    ]


def assert_no_canary(where: str, text: str) -> None:
    """Fail naming where the canary was found (never printing the haystack's secret part)."""
    for form in canary_forms():
        position = text.find(form)
        assert position < 0, f"the password leaked into {where}: ...{text[max(0, position - 80) : position]}"


@pytest.fixture(scope="module")
def canary_role(postgres: PostgresServer) -> Iterator[str]:
    """A login role on the private cluster whose password is the canary."""
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(ROLE), sql.Literal(CANARY))
        )
    try:
        yield ROLE
    finally:
        with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(ROLE)))


def overlay(
    postgres: PostgresServer,
    sshd: SshdServer,
    smtp_server: SmtpServer,
    *,
    db_user: str,
    database: str,
    password: str,
) -> dict[str, Any]:
    """Every connector's password is ``password``; SFTP and SMTP refuse it (not theirs)."""
    return {
        "database": {
            "driver": "postgresql",
            "host": postgres.host,
            "port": postgres.port,
            "database": database,
            "user": db_user,
            "password": password,
            "connect_timeout": 3,
        },
        "sftp": {
            "host": sshd.host,
            "port": sshd.port,
            "user": sshd.user,
            "password": password,
            "known_hosts": str(sshd.known_hosts_path),
            "folders": {"companies": "/outbound"},
            "timeout": 5,
            "retries": 0,
        },
        "mail": {
            "sender": "etl@client.example",
            "recipients": ["ops@client.example"],
            "smtp": {
                "host": smtp_server.host,
                "port": smtp_server.port,
                "starttls": True,
                "cafile": str(smtp_server.cafile),
                "user": SMTP_AUTH[0],
                "password": password,
                "timeout": 5,
            },
        },
    }


def grep_everything(env: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    """Run every surface for ``env`` (settings from ETL_SETTINGS) and grep it for the canary."""
    proc = subprocess.run(
        [sys.executable, "-m", "etl_assets.cli", "test-connections", "-e", env, "--send-test-email"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert [line.split()[:2] for line in proc.stdout.splitlines()[1:]] == [
        ["database", "FAIL"],
        ["sftp", "FAIL"],
        ["mail", "FAIL"],
    ], proc.stdout  # every connector was really tried (and used the canary)
    assert_no_canary("the CLI's stdout", proc.stdout)
    assert_no_canary("the CLI's stderr", proc.stderr)

    caplog.set_level(logging.DEBUG)
    for name in ("paramiko", "sqlalchemy", "psycopg", "etl_assets", "dagster"):
        caplog.set_level(logging.DEBUG, logger=name)
    capsys.readouterr()
    assert main(["test-connections", "-e", env]) == 1
    out, err = capsys.readouterr()
    assert_no_canary("test-connections stdout (in process)", out)
    assert_no_canary("test-connections stderr (in process)", err)

    settings = load_settings(env)
    assert_no_canary("the settings' repr", repr(settings) + settings.model_dump_json())
    resources = build_resources(settings)
    for key, resource in resources.items():
        assert_no_canary(f"the {key} resource's repr", repr(resource) + str(resource))
        assert_no_canary(f"the {key} resource's config", resource.model_dump_json())
        check = getattr(resource, "check_connection", None)
        if check is None:
            continue
        try:
            check()
        except Exception as exc:
            text = "".join(traceback.format_exception(exc)) + repr(exc) + repr(exc.__context__)
            assert_no_canary(f"the {key} connector's exception", text)
        else:
            pytest.fail(f"the {key} connector should fail with the canary password")

    with instance_for_test() as instance:  # definitions load with an instance, as in dagster
        definitions = build_definitions(settings)
        # no defs-state storage: another test's disposed instance may still sit in dagster's
        # ContextVar (DagsterInstance.dispose does not reset it; see conftest.
        # no_stale_dagster_instance), and its temporary folder may be gone by now. The
        # snapshot reads the storage deep inside dagster, so it is patched to report none
        # (a fault of the test process we cannot cause at will); our components keep no state.
        with (
            warnings.catch_warnings(),
            set_defs_state_storage(None),
            patch.object(DefsStateStorage, "get", return_value=None),
        ):
            warnings.simplefilter("ignore", DeprecationWarning)  # dagster's snapshot code
            snapshot = RepositorySnap.from_def(definitions.get_repository_def())
        assert_no_canary("the code location snapshot (UI: resources, launchpad)", serialize_value(snapshot))
        job = definitions.get_job_def("test_connections")
        result = job.execute_in_process(
            instance=instance,
            raise_on_error=False,
            run_config={"ops": {"check_connectors": {"config": {"send_test_email": True}}}},
        )
        assert not result.success
        entries = instance.all_logs(result.run_id)
        assert any("login refused" in entry.user_message for entry in entries)
        for entry in entries:
            assert_no_canary(f"the run's event {entry.dagster_event_type}", serialize_value(entry))
            assert_no_canary("the run's event (str)", str(entry))
        run = instance.get_run_by_id(result.run_id)
        assert_no_canary("the run record", serialize_value(run))
    failure = result.failure_data_for_node("check_connectors")
    assert_no_canary("the step failure", serialize_value(failure))
    assert_no_canary("the logs at DEBUG", caplog.text)
    assert_no_canary("the log records' arguments", "\n".join(repr(record.args) for record in caplog.records))


@pytest.mark.parametrize("db_fault", ["missing-database", "wrong-password"])
def test_no_leak_with_encrypted_passwords(
    postgres: PostgresServer,
    sshd: SshdServer,
    smtp_server: SmtpServer,
    canary_role: str,
    encrypt_password: Encrypt,
    write_settings: WriteSettings,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    db_fault: str,
) -> None:
    token = encrypt_password(CANARY)
    if db_fault == "missing-database":  # the role logs in with the canary, then the database is missing
        user, database = canary_role, "no_such_database"
    else:
        user, database = "postgres", "postgres"
    settings = overlay(postgres, sshd, smtp_server, db_user=user, database=database, password=token)
    path = write_settings(yaml.safe_dump({"test": settings}))
    assert_no_canary("the settings file", path.read_text())
    grep_everything("test", capsys, caplog)


def test_no_leak_with_plain_dev_passwords(
    postgres: PostgresServer,
    sshd: SshdServer,
    smtp_server: SmtpServer,
    canary_role: str,
    write_settings: WriteSettings,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    """Plain passwords (dev only) are wrapped at load time: the same guarantees hold."""
    settings = overlay(
        postgres, sshd, smtp_server, db_user=canary_role, database="no_such_database", password=CANARY
    )
    write_settings(yaml.safe_dump({"dev": settings}))
    grep_everything("dev", capsys, caplog)

    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=PROJECT_ROOT,
        env={**os.environ, "ETL_ENV": "dev", "DAGSTER_HOME": str(dagster_home)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    output = proc.stdout + proc.stderr
    assert "database.password is a plain password" in output  # our settings file was loaded
    assert_no_canary("dagster definitions validate", output)


def test_canary_tokens_decrypt_and_the_right_password_connects(
    postgres: PostgresServer,
    sshd: SshdServer,
    smtp_server: SmtpServer,
    canary_role: str,
    pg_database: str,
    encrypt_password: Encrypt,
    write_settings: WriteSettings,
) -> None:
    """Sanity: the canary really is the role's password and the token really holds it."""
    token = encrypt_password(CANARY)
    assert decrypt(token) == CANARY
    settings = overlay(postgres, sshd, smtp_server, db_user=canary_role, database=pg_database, password=token)
    write_settings(yaml.safe_dump({"test": settings}))
    database = build_resources(load_settings("test"))["database"]
    assert f"postgresql {canary_role}@" in database.check_connection()  # type: ignore[attr-defined]
