"""test-connections on real services: all OK, and each connector failing for each reason.

The CLI runs as a subprocess (``python -m etl_assets.cli``), exactly as an operator runs it,
for the OK, e-mail, exit-status and dev cases; the matrix of failure reasons calls the same
entry point (``etl_assets.cli.main``) in process, to keep the suite fast. The Dagster job
runs in process through the code location's definitions.
"""

from __future__ import annotations

import email
import email.policy
import logging
import os
import pwd
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import ExecuteInProcessResult, instance_for_test

from etl_assets.cli import main
from etl_assets.definitions import build_definitions
from etl_assets.resources import ConnectorError, MailerResource, build_resources
from etl_assets.settings import load_settings
from etl_assets_tests.conftest import SMTP_AUTH
from etl_assets_tests.services import PostgresServer, SmtpServer, SshdServer
from etl_assets_tests.services._net import free_port

FOLDERS = {"companies": "/outbound/companies", "offers": "/outbound/offers"}
Config = dict[str, Any]
Encrypt = Callable[[str], str]
WriteSettings = Callable[[str], Path]


@pytest.fixture(scope="module")
def remote_folders(sshd: SshdServer) -> dict[str, str]:
    """The flows' remote folders exist on the SFTP server, owned by the SFTP user."""
    pw = pwd.getpwnam(sshd.user)
    for folder in FOLDERS.values():
        path = sshd.root / folder.lstrip("/")
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, pw.pw_uid, pw.pw_gid)
    return FOLDERS


def good_config(
    postgres: PostgresServer,
    database: str,
    sshd: SshdServer,
    smtp_server: SmtpServer,
    folders: dict[str, str],
    enc: Encrypt,
) -> Config:
    """The ``test`` overlay of a settings file where every connector works (enc: passwords)."""
    return {
        "database": {
            "driver": "postgresql",
            "host": postgres.host,
            "port": postgres.port,
            "database": database,
            "user": postgres.user,
            "password": enc(postgres.password),
            "connect_timeout": 3,
        },
        "sftp": {
            "host": sshd.host,
            "port": sshd.port,
            "user": sshd.user,
            "password": enc(sshd.password),
            "known_hosts": str(sshd.known_hosts_path),
            "folders": dict(folders),
            "timeout": 5,
            "retries": 0,
            "backoff_seconds": 0.05,
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
                "password": enc(SMTP_AUTH[1]),
                "timeout": 5,
            },
        },
    }


@pytest.fixture
def good(
    postgres: PostgresServer,
    pg_database: str,
    sshd: SshdServer,
    smtp_server: SmtpServer,
    remote_folders: dict[str, str],
    encrypt_password: Encrypt,
) -> Config:
    """``good_config`` on a fresh database, the key in this test's key file; no mail received yet."""
    smtp_server.clear()
    return good_config(postgres, pg_database, sshd, smtp_server, remote_folders, encrypt_password)


def settings_yaml(test_overlay: Config) -> str:
    """A whole settings file: shipped-style global keys plus the given ``test`` overlay."""
    return yaml.safe_dump(
        {"timezone": "Europe/Rome", "database": {"driver": "sqlite"}, "dev": {}, "test": test_overlay}
    )


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``etl-assets ARGS`` as a subprocess with this test's environment."""
    return subprocess.run(
        [sys.executable, "-m", "etl_assets.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def result_lines(stdout: str) -> dict[str, tuple[str, str]]:
    """``{connector: (OK|FAIL, detail)}`` from the CLI's output."""
    found = {}
    for line in stdout.splitlines():
        match = re.match(r"^(database|sftp|mail)\s+(OK|FAIL)\s+(.*)$", line)
        if match:
            found[match.group(1)] = (match.group(2), match.group(3))
    return found


def test_all_ok_through_the_cli(good: Config, write_settings: WriteSettings) -> None:
    write_settings(settings_yaml(good))
    proc = run_cli("test-connections", "-e", "test")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = result_lines(proc.stdout)
    assert {name: status for name, (status, _) in lines.items()} == {
        "database": "OK",
        "sftp": "OK",
        "mail": "OK",
    }, proc.stdout
    assert "postgresql" in lines["database"][1]
    assert "/outbound/companies" in lines["sftp"][1] and "/outbound/offers" in lines["sftp"][1]
    assert "starttls" in lines["mail"][1]


def test_send_test_email_reaches_the_smtp_server(
    good: Config, write_settings: WriteSettings, smtp_server: SmtpServer
) -> None:
    write_settings(settings_yaml(good))
    proc = run_cli("test-connections", "-e", "test", "--send-test-email")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "test e-mail sent" in result_lines(proc.stdout)["mail"][1]
    [message] = smtp_server.wait_for(1)
    assert "[etl_assets][test]" in message["Subject"]
    [delivery] = smtp_server.deliveries()
    assert delivery.rcpt_tos == ["ops@client.example"]


def _set(config: Config, dotted: str, value: Any) -> None:
    node = config
    *parents, last = dotted.split(".")
    for part in parents:
        node = node[part]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value


_DELETE = object()


def _empty_known_hosts(tmp: Path) -> str:
    path = tmp / "empty_known_hosts"
    path.write_text("")
    return str(path)


# (case id, connector, {dotted key: value or a factory of it}, regex the reason must match)
FAILURES: list[tuple[str, str, dict[str, Any], str]] = [
    (
        "database-wrong-password",
        "database",
        {"database.password": lambda ctx: ctx.enc("not-the-db-password")},
        r"login refused for user 'postgres' \(wrong password\?\)",
    ),
    (
        "database-unreachable",
        "database",
        {"database.port": lambda ctx: free_port()},
        r"host unreachable: 127\.0\.0\.1:\d+",
    ),
    (
        "database-missing",
        "database",
        {"database.database": "no_such_database"},
        r"database 'no_such_database' does not exist on 127\.0\.0\.1:\d+",
    ),
    (
        "sftp-wrong-password",
        "sftp",
        {"sftp.password": lambda ctx: ctx.enc("not-the-sftp-password")},
        r"login refused for user 'etltest'",
    ),
    (
        "sftp-unreachable",
        "sftp",
        {"sftp.port": lambda ctx: free_port()},
        r"host unreachable: 127\.0\.0\.1:\d+",
    ),
    (
        "sftp-unknown-host-key",
        "sftp",
        {"sftp.known_hosts": lambda ctx: _empty_known_hosts(ctx.tmp)},
        r"unknown host key: \[127\.0\.0\.1\]:\d+ is not in .*empty_known_hosts",
    ),
    (
        "sftp-changed-host-key",
        "sftp",
        {"sftp.known_hosts": lambda ctx: str(ctx.sshd.wrong_known_hosts_path)},
        r"host key changed: .*known_hosts_wrong",
    ),
    (
        "sftp-missing-known-hosts-file",
        "sftp",
        {"sftp.known_hosts": lambda ctx: str(ctx.tmp / "nowhere" / "known_hosts")},
        r"known_hosts file .*nowhere/known_hosts not found",
    ),
    (
        "sftp-missing-remote-folder",
        "sftp",
        {"sftp.folders": {"companies": "/outbound/companies", "offers": "/outbound/no_such_folder"}},
        r"remote folder /outbound/no_such_folder \(offers\) is missing",
    ),
    (
        "smtp-wrong-password",
        "mail",
        {"mail.smtp.password": lambda ctx: ctx.enc("not-the-smtp-password")},
        r"login refused for user 'etl-notifier' \(wrong password\?\)",
    ),
    (
        "smtp-unreachable",
        "mail",
        {"mail.smtp.port": lambda ctx: free_port()},
        r"host unreachable: 127\.0\.0\.1:\d+",
    ),
    (
        "smtp-starttls-off",
        "mail",
        {"mail.smtp.starttls": False},
        r"SMTP AUTH extension not supported by server\. \(does the server need starttls: true\?\)",
    ),
    (
        "smtp-untrusted-certificate",
        "mail",
        {"mail.smtp.cafile": _DELETE},
        r"TLS failed \(.*certificate verify failed",
    ),
]


class _Ctx:
    """What a failure case's value factories may use."""

    def __init__(self, enc: Encrypt, tmp: Path, sshd: SshdServer) -> None:
        self.enc, self.tmp, self.sshd = enc, tmp, sshd


def _apply(config: Config, changes: dict[str, Any], ctx: _Ctx) -> None:
    for dotted, value in changes.items():
        _set(config, dotted, value(ctx) if callable(value) else value)


@pytest.mark.parametrize(
    ("connector", "changes", "reason"),
    [case[1:] for case in FAILURES],
    ids=[case[0] for case in FAILURES],
)
def test_each_failure_is_one_fail_line_with_its_reason(
    good: Config,
    write_settings: WriteSettings,
    encrypt_password: Encrypt,
    tmp_path: Path,
    sshd: SshdServer,
    capsys: pytest.CaptureFixture[str],
    connector: str,
    changes: dict[str, Any],
    reason: str,
) -> None:
    """The CLI's entry point in process (the subprocess runs above prove the wiring): fast."""
    _apply(good, changes, _Ctx(encrypt_password, tmp_path, sshd))
    write_settings(settings_yaml(good))
    status_code = main(["test-connections", "-e", "test"])
    out, err = capsys.readouterr()
    assert status_code == 1, out + err
    lines = result_lines(out)
    assert set(lines) == {"database", "sftp", "mail"}, out
    status, detail = lines[connector]
    assert status == "FAIL", out
    assert re.search(reason, detail), detail
    others = {name: s for name, (s, _) in lines.items() if name != connector}
    assert set(others.values()) == {"OK"}, out  # one fault does not hide the others
    assert "Traceback" not in err


def test_a_failure_through_the_cli_exits_1(
    good: Config, write_settings: WriteSettings, sshd: SshdServer
) -> None:
    good["sftp"]["known_hosts"] = str(sshd.wrong_known_hosts_path)
    write_settings(settings_yaml(good))
    proc = run_cli("test-connections", "-e", "test")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    status, detail = result_lines(proc.stdout)["sftp"]
    assert status == "FAIL" and "host key changed" in detail, proc.stdout
    assert proc.stderr == ""


@pytest.mark.parametrize("with_passphrase", [False, True], ids=["key", "key-with-passphrase"])
def test_sftp_private_key_login(
    good: Config,
    write_settings: WriteSettings,
    encrypt_password: Encrypt,
    sshd: SshdServer,
    capsys: pytest.CaptureFixture[str],
    with_passphrase: bool,
) -> None:
    del good["sftp"]["password"]
    if with_passphrase:
        good["sftp"]["private_key"] = str(sshd.key_with_passphrase_path)
        good["sftp"]["private_key_passphrase"] = encrypt_password(sshd.key_passphrase)
    else:
        good["sftp"]["private_key"] = str(sshd.key_path)
    write_settings(settings_yaml(good))
    assert main(["test-connections", "-e", "test"]) == 0
    assert result_lines(capsys.readouterr().out)["sftp"][0] == "OK"


def test_broken_settings_exit_2_with_the_dotted_key(good: Config, write_settings: WriteSettings) -> None:
    good["sftp"]["port"] = "not-a-port"
    write_settings(settings_yaml(good))
    proc = run_cli("test-connections", "-e", "test")
    assert proc.returncode == 2
    assert "sftp.port" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def run_job(*, send_test_email: bool = False) -> tuple[ExecuteInProcessResult, str]:
    """Run the code location's ``test_connections`` job for env test; return it and its logs.

    The logs are every message of the run's event log (what the UI shows), one per line.
    """
    with instance_for_test() as instance:  # definitions load with an instance, as in dagster
        job = build_definitions(load_settings("test")).get_job_def("test_connections")
        result = job.execute_in_process(
            instance=instance,
            raise_on_error=False,
            run_config={"ops": {"check_connectors": {"config": {"send_test_email": send_test_email}}}},
        )
        logs = "\n".join(entry.user_message for entry in instance.all_logs(result.run_id))
    return result, logs


def test_dagster_job_succeeds_when_all_ok(
    good: Config, write_settings: WriteSettings, smtp_server: SmtpServer
) -> None:
    write_settings(settings_yaml(good))
    result, logs = run_job(send_test_email=True)
    assert result.success, logs
    for name in ("database", "sftp", "mail"):
        assert re.search(rf"{name}\s+OK", logs), logs
    [message] = smtp_server.wait_for(1)
    assert "[etl_assets][test]" in message["Subject"]


def test_dagster_job_fails_with_the_reason(
    good: Config, write_settings: WriteSettings, encrypt_password: Encrypt, sshd: SshdServer
) -> None:
    good["sftp"]["password"] = encrypt_password("not-the-sftp-password")
    write_settings(settings_yaml(good))
    result, logs = run_job()
    assert not result.success
    failure = result.failure_data_for_node("check_connectors")
    assert failure is not None
    description = failure.user_failure_data.description if failure.user_failure_data else ""
    assert "1 of 3 connectors failed" in (description or "")
    assert f"login refused for user '{sshd.user}'" in (description or "")
    assert re.search(r"sftp\s+FAIL\s+.*login refused", logs), logs
    assert re.search(r"database\s+OK", logs) and re.search(r"mail\s+OK", logs), logs


def test_dev_defaults_all_ok_and_test_email_goes_to_the_outbox(isolated_env: Path) -> None:
    """The shipped settings in dev: SQLite, ETL_HOME/import, .eml outbox; no server needed."""
    proc = run_cli("test-connections", "-e", "dev")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = result_lines(proc.stdout)
    assert {name: status for name, (status, _) in lines.items()} == {
        "database": "OK",
        "sftp": "OK",
        "mail": "OK",
    }
    assert str(isolated_env / "data" / "etl.sqlite") in lines["database"][1]
    outbox = isolated_env / "logs" / "outbox"
    assert list(outbox.glob("*.eml")) == []

    proc = run_cli("test-connections", "-e", "dev", "--send-test-email")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [eml] = list(outbox.glob("*.eml"))
    with eml.open("rb") as handle:
        message = email.message_from_binary_file(handle, policy=email.policy.default)
    assert "[etl_assets][dev]" in message["Subject"]
    assert message["To"] == "operators@localhost"
    assert not list(outbox.glob(".*.part"))


def test_test_email_without_recipients_says_so(good: Config, write_settings: WriteSettings) -> None:
    good["mail"]["recipients"] = []
    write_settings(settings_yaml(good))
    mailer = build_resources(load_settings("test"))["mailer"]
    assert isinstance(mailer, MailerResource)
    assert mailer.check_connection().startswith("smtp etl-notifier@")  # login alone is fine
    with pytest.raises(ConnectorError, match="no recipients: set mail.recipients"):
        mailer.check_connection(send_test_email=True)


def test_test_email_refused_without_login_gives_the_server_reply(
    good: Config, write_settings: WriteSettings
) -> None:
    del good["mail"]["smtp"]["user"], good["mail"]["smtp"]["password"]
    write_settings(settings_yaml(good))
    mailer = build_resources(load_settings("test"))["mailer"]
    assert isinstance(mailer, MailerResource)
    with pytest.raises(ConnectorError, match="the server refused: 530 5.7.0 Authentication required"):
        mailer.check_connection(send_test_email=True)
    # the plain check already asks the server whether it would take a message from us
    with pytest.raises(ConnectorError, match="the server refused: 530 5.7.0 Authentication required"):
        mailer.check_connection()


def test_a_message_the_server_defers_is_sent_again_with_back_off(
    good: Config, write_settings: WriteSettings, smtp_server: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    """SMTP 4xx (busy, greylisting): retried with back-off; a 5xx or a lasting 4xx is not."""
    good["mail"]["smtp"]["backoff_seconds"] = 0.2
    write_settings(settings_yaml(good))
    mailer = build_resources(load_settings("test"))["mailer"]
    smtp_server.clear()
    smtp_server.defer_next(2)  # the real server answers 451 twice
    caplog.set_level(logging.WARNING, logger="etl_assets.mailer")
    mailer.send("[etl_assets][test] deferred", "body")
    [message] = smtp_server.wait_for(1)
    assert message["Subject"] == "[etl_assets][test] deferred"
    assert caplog.text.count("451 4.3.0 Try again later") == 2 and "retry 2/2" in caplog.text

    smtp_server.defer_next(5)
    with pytest.raises(ConnectorError, match=r"the server refused: 451 4\.3\.0 .* after 3 tries$"):
        mailer.send("[etl_assets][test] still deferred", "body")
    assert len(smtp_server.messages()) == 1
