"""Prove the loopback test services are real and usable (sshd/SFTP, SMTP, PostgreSQL)."""

from __future__ import annotations

import smtplib
import ssl
import time
from email.message import EmailMessage

import paramiko
import psycopg
import pytest

from etl_assets_tests.conftest import SMTP_AUTH
from etl_assets_tests.services import PostgresServer, SmtpServer, SshdServer


@pytest.fixture
def smtp(smtp_server: SmtpServer) -> SmtpServer:
    """The shared STARTTLS + AUTH server (conftest); `sshd` and `postgres` come from there too.

    One session-wide sshd only: each start_sshd() re-sets the test user's password.
    """
    return smtp_server


def _ssh_client(server: SshdServer, known_hosts: str | None = None) -> paramiko.SSHClient:
    """A client that trusts only the given known_hosts file (no agent, no ~/.ssh keys)."""
    client = paramiko.SSHClient()
    client.load_host_keys(known_hosts or str(server.known_hosts_path))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return client


def _connect(client: paramiko.SSHClient, server: SshdServer, **kwargs: object) -> None:
    client.connect(
        server.host,
        port=server.port,
        username=server.user,
        allow_agent=False,
        look_for_keys=False,
        timeout=10,
        **kwargs,  # type: ignore[arg-type]
    )


def test_sftp_password_login_lists_outbound(sshd: SshdServer) -> None:
    sshd.put_file("/outbound/companies/2026-11-27.csv", b"id;name\n1;ACME\n")
    client = _ssh_client(sshd)
    try:
        _connect(client, sshd, password=sshd.password)
        sftp = client.open_sftp()
        assert "outbound" in sftp.listdir("/")
        assert sftp.listdir("/outbound/companies") == ["2026-11-27.csv"]
        with sftp.open("/outbound/companies/2026-11-27.csv") as fh:
            assert fh.read() == b"id;name\n1;ACME\n"
        # The chrooted user can write under /outbound (e.g. error files, archive moves).
        sftp.rename("/outbound/companies/2026-11-27.csv", "/outbound/done.csv")
        assert (sshd.root / "outbound" / "done.csv").exists()
    finally:
        client.close()


@pytest.mark.parametrize("with_passphrase", [False, True], ids=["key", "key-with-passphrase"])
def test_sftp_key_login(sshd: SshdServer, with_passphrase: bool) -> None:
    if with_passphrase:
        pkey = paramiko.Ed25519Key.from_private_key_file(
            str(sshd.key_with_passphrase_path), password=sshd.key_passphrase
        )
    else:
        pkey = paramiko.Ed25519Key.from_private_key_file(str(sshd.key_path))
    client = _ssh_client(sshd)
    try:
        _connect(client, sshd, pkey=pkey)
        assert "outbound" in client.open_sftp().listdir("/")
    finally:
        client.close()


def test_sftp_wrong_host_key_is_rejected(sshd: SshdServer) -> None:
    client = _ssh_client(sshd, known_hosts=str(sshd.wrong_known_hosts_path))
    try:
        with pytest.raises(paramiko.BadHostKeyException):
            _connect(client, sshd, password=sshd.password)
    finally:
        client.close()


def test_sftp_wrong_password_is_rejected(sshd: SshdServer) -> None:
    client = _ssh_client(sshd)
    try:
        with pytest.raises(paramiko.AuthenticationException):
            _connect(client, sshd, password="not-the-password")
    finally:
        client.close()


def test_sftp_drop_connections_keeps_listener(sshd: SshdServer) -> None:
    client = _ssh_client(sshd)
    try:
        _connect(client, sshd, password=sshd.password)
        sftp = client.open_sftp()
        sftp.listdir("/outbound")
        assert sshd.drop_connections() > 0
        with pytest.raises((paramiko.SSHException, EOFError, OSError)):
            for _ in range(50):  # the drop is seen within a few round trips
                sftp.listdir("/outbound")
                time.sleep(0.02)
    finally:
        client.close()
    again = _ssh_client(sshd)
    try:
        _connect(again, sshd, password=sshd.password)
        assert "outbound" in again.open_sftp().listdir("/")
    finally:
        again.close()


def _send(server: SmtpServer, subject: str) -> None:
    msg = EmailMessage()
    msg["From"] = "etl@example.test"
    msg["To"] = "ops@example.test"
    msg["Subject"] = subject
    msg.set_content("body è UTF-8\n")
    context = ssl.create_default_context(cafile=str(server.cafile))
    with smtplib.SMTP(server.host, server.port, timeout=10) as client:
        client.starttls(context=context)
        client.login(*SMTP_AUTH)
        client.send_message(msg)


def test_smtp_starttls_login_and_read_back(smtp: SmtpServer) -> None:
    smtp.clear()
    _send(smtp, "Flow companies: 3 rows rejected")
    [received] = smtp.wait_for(1)
    assert received["Subject"] == "Flow companies: 3 rows rejected"
    assert received.get_content() == "body è UTF-8\n"
    [delivery] = smtp.deliveries()
    assert delivery.rcpt_tos == ["ops@example.test"]


def test_smtp_rejects_wrong_password_and_plaintext(smtp: SmtpServer) -> None:
    context = ssl.create_default_context(cafile=str(smtp.cafile))
    with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as client:
        client.starttls(context=context)
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login(SMTP_AUTH[0], "wrong")
    with (
        smtplib.SMTP(smtp.host, smtp.port, timeout=10) as client,
        pytest.raises(smtplib.SMTPException),
    ):
        client.login(*SMTP_AUTH)  # no STARTTLS first


def test_smtp_down_then_up_on_same_port(smtp: SmtpServer) -> None:
    smtp.clear()
    port = smtp.port
    smtp.stop()
    with pytest.raises(OSError):
        smtplib.SMTP(smtp.host, port, timeout=2)
    smtp.start()
    assert smtp.port == port
    _send(smtp, "after restart")
    assert [m["Subject"] for m in smtp.wait_for(1)] == ["after restart"]


def test_postgres_password_auth(postgres: PostgresServer) -> None:
    with psycopg.connect(postgres.dsn(), connect_timeout=10) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(
            host=postgres.host,
            port=postgres.port,
            user=postgres.user,
            password="wrong",
            dbname="postgres",
            connect_timeout=10,
        )


def test_postgres_database_lifecycle_and_restart(postgres: PostgresServer) -> None:
    import sqlalchemy as sa

    postgres.create_database("etl test db")
    try:
        engine = sa.create_engine(postgres.url("etl test db"))
        with engine.connect() as conn:
            assert conn.execute(sa.text("select current_database()")).scalar() == "etl test db"
        with psycopg.connect(postgres.dsn("etl test db")) as held:
            postgres.restart()
            with pytest.raises(psycopg.OperationalError):
                held.execute("select 1")
        engine.dispose()
        with engine.connect() as conn:
            assert conn.execute(sa.text("select 1")).scalar() == 1
        engine.dispose()
    finally:
        postgres.drop_database("etl test db")
