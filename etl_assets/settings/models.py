"""The settings schema: one pydantic model per connector, every key checked at start-up.

Fields annotated ``Secret`` hold passwords; the loader replaces their value by a token
(see ``secrets.py``) before anything else sees the settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Environment = Literal["dev", "test", "prod"]
ENVIRONMENTS: tuple[Environment, ...] = ("dev", "test", "prod")


class _SecretMarker:
    """Marks a field whose value is a password."""


Secret = Annotated[str, _SecretMarker()]


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo in the settings file must not pass silently."""

    model_config = ConfigDict(extra="forbid")


class DatabaseSettings(StrictModel):
    """The client's target database."""

    driver: Literal["sqlite", "postgresql"] = Field(
        "sqlite", description="sqlite (a file under ETL_HOME/data) or postgresql"
    )
    path: str = Field("etl.sqlite", description="sqlite: file name under ETL_HOME/data")
    host: str = "127.0.0.1"
    port: int = Field(5432, ge=1, le=65535)
    database: str = "etl"
    user: str = "postgres"
    password: Secret | None = None
    connect_timeout: int = Field(10, ge=1, description="seconds")


class SourceDatabaseSettings(DatabaseSettings):
    """A database a flow reads from (``source.database.connector`` names it), e.g. the client's CRM."""

    path: str = Field("crm.sqlite", description="sqlite: file name under ETL_HOME/data")
    database: str = "crm"


class SftpSettings(StrictModel):
    """The server the client's files arrive on."""

    host: str
    port: int = Field(22, ge=1, le=65535)
    user: str
    password: Secret | None = None
    private_key: str | None = Field(
        None,
        description="path of a private key file: mode 0600 (or 0400), owned by the user running etl_assets",
    )
    private_key_passphrase: Secret | None = None
    known_hosts: str = Field(
        "~/.ssh/known_hosts",
        description="OpenSSH known_hosts file that must hold the server's key ([host]:port off port 22)",
    )
    allow_unknown_host_keys: bool = Field(
        False,
        description="accept a host key not in known_hosts, with a warning (dev only; a changed key is "
        "still refused)",
    )
    timeout: float = Field(10.0, gt=0, description="seconds to connect")
    retries: int = Field(3, ge=0, description="new attempts after a dropped connection")
    backoff_seconds: float = Field(1.0, ge=0, description="first wait; doubles each retry")
    folders: dict[str, str] = Field(
        default_factory=dict, description="remote folder of each flow, e.g. companies: /outbound/companies"
    )

    @model_validator(mode="after")
    def _one_login(self) -> SftpSettings:
        if self.password is None and self.private_key is None:
            raise ValueError("give a password or a private_key")
        return self


class SmtpSettings(StrictModel):
    """An SMTP relay; without one, dev writes .eml files to the outbox."""

    host: str
    port: int = Field(25, ge=1, le=65535)
    starttls: bool = False
    cafile: str | None = Field(None, description="CA bundle to verify the server's certificate")
    user: str | None = None
    password: Secret | None = None
    timeout: float = Field(10.0, gt=0)
    retries: int = Field(2, ge=0, le=10, description="tries again after a 4xx or a lost connection")
    backoff_seconds: float = Field(1.0, ge=0, description="first wait before a retry; doubles each time")


class MailSettings(StrictModel):
    """Who sends the run e-mails and who receives them."""

    sender: str = "etl_assets@localhost"
    recipients: list[str] = Field(default_factory=list)
    report_recipients: dict[str, list[str]] = Field(
        default_factory=dict, description="who receives each report, e.g. kpi_report: [sales@client]"
    )
    smtp: SmtpSettings | None = None


class HousekeepingSettings(StrictModel):
    """The daily clean-up: processed source files, and old files under ETL_HOME."""

    processed: Literal["move", "delete", "keep"] = Field(
        "move", description="processed source files: move to <folder>/processed/, delete, or keep"
    )
    retention_days: dict[Literal["backup", "data", "errors", "logs"], int] = Field(
        default_factory=lambda: {"backup": 90, "data": 30, "errors": 90, "logs": 30},
        description="files older than this many days are deleted, per folder",
    )
    hour: int = Field(3, ge=0, le=23, description="when the daily job runs (settings' timezone)")


class FlowsSettings(StrictModel):
    """Where a client's flows are declared, beside the package's sample flows."""

    dirs: list[str] = Field(
        default_factory=lambda: ["ETL_HOME/flows"],
        description="folders holding <flow>/defs.yaml; relative to ETL_HOME, which may also prefix them",
    )


class InstanceDatabaseSettings(StrictModel):
    """The PostgreSQL database holding Dagster's run, event-log and schedule storage."""

    host: str = "127.0.0.1"
    port: int = Field(5432, ge=1, le=65535)
    database: str = "dagster"
    user: str = "postgres"
    password: Secret | None = None


class InstanceSettings(StrictModel):
    """The Dagster instance of an environment (``etl-assets dagster-yaml`` writes it)."""

    storage: Literal["sqlite", "postgresql"] = Field(
        "sqlite", description="sqlite (embedded, under DAGSTER_HOME) or postgresql (instance.postgres)"
    )
    postgres: InstanceDatabaseSettings = Field(default_factory=InstanceDatabaseSettings)
    max_concurrent_runs: int = Field(3, ge=1, description="runs at a time, each a process of its own")
    backfill_runs: int = Field(2, ge=1, description="of which backfills take at most this many")
    max_runtime_seconds: int = Field(
        7200, ge=60, description="a run still STARTED after this long is marked failed by the daemon"
    )
    tick_retention_days: int = Field(30, ge=1, description="schedule and sensor ticks kept this many days")

    @model_validator(mode="after")
    def _backfills_leave_room(self) -> InstanceSettings:
        if self.backfill_runs > self.max_concurrent_runs:
            raise ValueError("backfill_runs cannot exceed max_concurrent_runs")
        return self


class BrokerSettings(StrictModel):
    """The Celery broker (RabbitMQ) the executor sends steps to."""

    host: str = "127.0.0.1"
    port: int = Field(5672, ge=1, le=65535)
    user: str = "guest"
    password: Secret | None = None
    vhost: str = Field("/", description="RabbitMQ virtual host")


class ExecutorSettings(StrictModel):
    """Where a run's work executes: in the run's own process, or on Celery workers."""

    kind: Literal["in_process", "celery"] = Field(
        "in_process", description="in_process (dev) or celery (workers on the broker, test and prod)"
    )
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    backend: str = Field("rpc://", description="Celery result backend")
    queues: dict[Literal["io", "cpu"], str] = Field(
        default_factory=lambda: {"io": "etl_io", "cpu": "etl_cpu"},
        description="queue of each kind of flow (a flow's work: io or cpu)",
    )
    worker_concurrency: dict[Literal["io", "cpu"], int] = Field(
        default_factory=lambda: {"io": 2, "cpu": 1},
        description="tasks a worker of that queue runs at once (io: bounds the SFTP sessions it opens)",
    )
    connections_per_flow: int = Field(
        2, ge=1, description="at most this many steps of one flow at once (its database connections)"
    )


class Settings(StrictModel):
    """Everything one environment needs; built by ``load_settings``."""

    env: Environment
    home: str = Field("./var", description="runtime folders; ETL_HOME overrides")
    timezone: str = "Europe/Rome"
    require_encrypted_secrets: bool = False
    max_park_age: timedelta = Field(
        timedelta(hours=24),
        description="a parked row older than this is rejected (seconds or ISO 8601, PT24H)",
    )
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    sources: dict[str, SourceDatabaseSettings] = Field(
        default_factory=dict, description="databases flows read from, by connector name, e.g. crm"
    )
    sftp: SftpSettings | None = None
    mail: MailSettings = Field(default_factory=MailSettings)
    housekeeping: HousekeepingSettings = Field(default_factory=HousekeepingSettings)
    flows: FlowsSettings = Field(default_factory=FlowsSettings)
    instance: InstanceSettings = Field(default_factory=InstanceSettings)
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _dev_only_shortcuts(self) -> Settings:
        if self.env != "dev" and self.sftp is not None and self.sftp.allow_unknown_host_keys:
            raise ValueError("sftp.allow_unknown_host_keys is allowed only in dev")
        return self

    @property
    def flow_dirs(self) -> list[Path]:
        """``flows.dirs`` as folders: ``ETL_HOME/x`` and relative ones under the home."""
        home = Path(self.home)
        return [
            home / d.removeprefix("ETL_HOME/") if not Path(d).is_absolute() else Path(d)
            for d in self.flows.dirs
        ]

    @property
    def secrets_required(self) -> bool:
        """Plain passwords are refused in prod and wherever the settings ask for it."""
        return self.env == "prod" or self.require_encrypted_secrets


def iter_secret_fields(model: BaseModel, prefix: str = "") -> Iterator[tuple[str, BaseModel, str]]:
    """Yield (dotted path, owner model, field name) for every password that is set."""
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        path = f"{prefix}{name}"
        if any(isinstance(meta, _SecretMarker) for meta in info.metadata) or (
            isinstance(value, str) and _is_secret_union(info.annotation, info.metadata)
        ):
            if value is not None:
                yield path, model, name
        elif isinstance(value, BaseModel):
            yield from iter_secret_fields(value, f"{path}.")
        elif isinstance(value, dict):  # connectors by name (sources.crm.password)
            for key, item in value.items():
                if isinstance(item, BaseModel):
                    yield from iter_secret_fields(item, f"{path}.{key}.")


def _is_secret_union(annotation: object, metadata: list[object]) -> bool:
    """``Secret | None`` keeps the marker inside the union's first argument."""
    for arg in getattr(annotation, "__args__", ()) or ():
        if any(isinstance(meta, _SecretMarker) for meta in getattr(arg, "__metadata__", ())):
            return True
    return False
