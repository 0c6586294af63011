"""The client's target database through SQLAlchemy 2 Core: SQLite in dev, PostgreSQL else."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Literal

import sqlalchemy as sa
from dagster import ConfigurableResource
from sqlalchemy.engine import URL, Engine

from etl_assets.resources.errors import ConnectorError, first_line, redact, reveal

_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()


class DatabaseResource(ConfigurableResource):
    """Target database (or a source's, ``setting`` naming its place in the settings:
    ``sources.crm``); ``password`` is a token, decrypted only to connect."""

    driver: Literal["sqlite", "postgresql"] = "sqlite"
    sqlite_file: str = ""
    host: str = "127.0.0.1"
    port: int = 5432
    database: str = "etl"
    user: str = "postgres"
    password: str = ""
    connect_timeout: int = 10
    setting: str = "database"

    @property
    def label(self) -> str:
        """Where the data goes, with no secret: for logs and test-connections."""
        if self.driver == "sqlite":
            return f"sqlite {self.sqlite_file}"
        return f"postgresql {self.user}@{self.host}:{self.port}/{self.database}"

    def _password(self) -> str | None:
        return reveal(self.setting, self.password, f"{self.setting}.password")

    def url(self) -> URL:
        """SQLAlchemy URL; its str() masks the password."""
        if self.driver == "sqlite":
            return URL.create("sqlite", database=self.sqlite_file)
        return URL.create(
            "postgresql+psycopg",
            username=self.user,
            password=self._password(),
            host=self.host,
            port=self.port,
            database=self.database,
        )

    def engine(self) -> Engine:
        """One pooled engine per process and target (steps of a run share it)."""
        key = self.model_dump_json()
        with _ENGINES_LOCK:
            engine = _ENGINES.get(key)
            if engine is None:
                engine = self._create_engine()
                _ENGINES[key] = engine
        return engine

    def _create_engine(self) -> Engine:
        if self.driver == "sqlite":
            Path(self.sqlite_file).parent.mkdir(parents=True, exist_ok=True)
            return sa.create_engine(self.url(), connect_args={"timeout": 30})
        return sa.create_engine(
            self.url(),
            pool_pre_ping=True,
            connect_args={
                "connect_timeout": self.connect_timeout,
                "application_name": "etl_assets",
                # COPY's CSV and text are UTF-8 whatever the database's encoding: the server converts
                "client_encoding": "utf8",
            },
        )

    def check_connection(self) -> str:
        """Log in and run a query; ConnectorError with the reason when that fails."""
        try:
            with self.engine().connect() as conn:
                version = conn.execute(
                    sa.text("select sqlite_version()" if self.driver == "sqlite" else "show server_version")
                ).scalar_one()
        except ConnectorError:
            raise
        except sa.exc.SQLAlchemyError as exc:
            raise ConnectorError(self.setting, self._reason(exc)) from None
        return f"{self.label} (server {version})"

    def _reason(self, exc: sa.exc.SQLAlchemyError) -> str:
        message = first_line(getattr(exc, "orig", None) or exc)
        lowered = message.lower()
        if "password authentication failed" in lowered or "no password supplied" in lowered:
            reason = f"login refused for user {self.user!r} (wrong password?)"
        elif f'database "{self.database.lower()}" does not exist' in lowered:
            reason = f"database {self.database!r} does not exist on {self.host}:{self.port}"
        elif "connection refused" in lowered or "could not translate host" in lowered or "timeout" in lowered:
            reason = f"host unreachable: {self.host}:{self.port} ({message})"
        else:
            reason = message
        return redact(f"{self.label}: {reason}", [self._safe_password()])

    def _safe_password(self) -> str | None:
        try:
            return self._password()
        except ConnectorError:
            return None
