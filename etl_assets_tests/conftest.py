"""Shared fixtures: an isolated environment per test, and the real services on loopback.

Session-scoped services (started once, on first use, and stopped at the end):

- ``sshd``: a chrooted OpenSSH/SFTP server (:class:`SshdServer`); remote ``/outbound``
  exists and is writable by ``sshd.user``.
- ``smtp_server``: an SMTP server requiring STARTTLS and AUTH (``SMTP_AUTH``); verify its
  certificate with ``smtp_server.cafile``; read what it received with ``messages()``.
- ``postgres``: a private PostgreSQL cluster with password (scram) login.

Per test: ``pg_database`` (a fresh database on ``postgres``), ``write_settings`` (a settings
file that ``ETL_SETTINGS`` points at) and ``encrypt_password`` (an ``enc:`` token under a
key created for the test).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from etl_assets.settings import encrypt, init_key
from etl_assets.settings.secrets import key_file_path
from etl_assets_tests.services import (
    PostgresServer,
    SmtpServer,
    SshdServer,
    start_postgres,
    start_smtp,
    start_sshd,
)

# The only login the ``smtp_server`` fixture accepts.
SMTP_AUTH = ("etl-notifier", "s3cret-pass")


@pytest.fixture(autouse=True)
def no_stale_dagster_instance() -> Iterator[None]:
    """Dagster 1.13 keeps the last entered instance's defs-state storage in a ContextVar;
    when that instance has been collected, building definitions outside an instance fails
    with "Attempted to resolve undefined DagsterInstance weakref" (seen once in ~10 full
    runs). Each test starts without it, as a fresh process would."""
    from dagster._core.definitions.definitions_load_context import DefinitionsLoadContext
    from dagster._core.storage.defs_state.base import _current_storage

    DefinitionsLoadContext._instance = None  # a load context left by another test, likewise
    token = _current_storage.set(None)
    yield
    try:
        _current_storage.reset(token)
    except ValueError:
        _current_storage.set(None)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No test sees the developer's ETL_* variables or key file; ETL_HOME is private."""
    for name in list(os.environ):
        if name.startswith("ETL_"):
            monkeypatch.delenv(name)
    home = tmp_path / "etl_home"
    monkeypatch.setenv("ETL_HOME", str(home))
    monkeypatch.setenv("ETL_SECRET_KEY_FILE", str(tmp_path / "keys" / "secret.key"))
    yield home


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdServer]:
    """A private chrooted SFTP server on loopback, shared by the session.

    Log in as ``sshd.user`` with ``sshd.password`` or the key ``sshd.key_path``; trust
    ``sshd.known_hosts_path`` (``sshd.wrong_known_hosts_path`` holds another key). Remote
    absolute paths resolve under ``sshd.root``; ``sshd.put_file(remote, data)`` places a
    file (and its folders) owned by the user; ``sshd.drop_connections()`` cuts live sessions.
    Tests share it: use a unique remote folder per test.
    """
    with start_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture(scope="session")
def smtp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpServer]:
    """An SMTP server on loopback requiring STARTTLS then AUTH with ``SMTP_AUTH``.

    ``smtp_server.cafile`` verifies its certificate; ``messages()``/``deliveries()`` read
    what it received, ``wait_for(n)`` waits for n messages and ``clear()`` forgets them
    (call it first: the server is shared by the session).
    """
    with start_smtp(tmp_path_factory.mktemp("smtp"), starttls=True, auth=SMTP_AUTH) as server:
        yield server


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A private PostgreSQL cluster on loopback (user ``postgres``, ``postgres.password``).

    Use ``pg_database`` for a database of your own; ``postgres.dsn(db)`` / ``url(db)`` connect.
    """
    with start_postgres(tmp_path_factory.mktemp("pg")) as server:
        yield server


@pytest.fixture
def pg_database(postgres: PostgresServer) -> Iterator[str]:
    """The name of a fresh, empty database on ``postgres``; dropped (forcibly) after the test."""
    name = f"etl_test_{secrets.token_hex(6)}"
    postgres.create_database(name)
    try:
        yield name
    finally:
        postgres.drop_database(name)


@pytest.fixture
def write_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Path]:
    """``write_settings(text)`` writes ``text`` to a settings file in ``tmp_path``, points
    ``ETL_SETTINGS`` at it and returns its path (call again to replace it)."""

    def write(text: str) -> Path:
        path = tmp_path / "settings.yaml"
        path.write_text(text, encoding="utf-8")
        monkeypatch.setenv("ETL_SETTINGS", str(path))
        return path

    return write


@pytest.fixture
def encrypt_password() -> Callable[[str], str]:
    """``encrypt_password(plain)`` returns an ``enc:`` token; the test's key file
    (``ETL_SECRET_KEY_FILE``) is created on first use, so subprocesses decrypt it too."""

    def token(plain: str) -> str:
        if not key_file_path().is_file():
            init_key()
        return encrypt(plain)

    return token
