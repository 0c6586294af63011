"""The Dagster instance of an environment, written from our settings: ``dagster.yaml``.

dev keeps Dagster's embedded SQLite storage under ``DAGSTER_HOME``; test and prod put run,
event-log and schedule storage in PostgreSQL. The password never enters the file: the file
names an environment variable (``PASSWORD_ENV``), and ``instance_environment`` gives its
value, decrypted from the settings, to the processes ``etl-assets exec`` starts.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from etl_assets.settings import Settings, decrypt

SHIPPED_INSTANCE = Path(__file__).resolve().parents[1] / "dagster.yaml"
PASSWORD_ENV = "ETL_DAGSTER_PG_PASSWORD"
# Dagster's Postgres storage breaks on SQLAlchemy 2.1's default driver for postgresql://
# (psycopg 3: "NOTIFY run_events, $1"); psycopg2 is what it is written for (GROUND.md).
STORAGE_SCHEME = "postgresql+psycopg2"
HEADER = (
    "# Written by `etl-assets dagster-yaml -e {env}` from the settings' `instance` section: edit\n"
    "# the settings and write it again rather than editing this file. The storage password is\n"
    f"# read from ${PASSWORD_ENV}, which `etl-assets exec -e {{env}} -- <command>` sets.\n"
)


def instance_config(settings: Settings) -> dict[str, Any]:
    """The shipped instance (run queue, limits, run monitoring) with this environment's
    storage, concurrency and retention."""
    config = copy.deepcopy(yaml.safe_load(SHIPPED_INSTANCE.read_text(encoding="utf-8")))
    instance = settings.instance
    # Dagster takes the run limits either in run_queue or, beside the pools, in concurrency.runs
    queue = config["run_queue"]
    limits = queue.pop("tag_concurrency_limits")
    for limit in limits:
        if limit["key"] == "dagster/backfill":
            limit["limit"] = instance.backfill_runs
    del queue["max_concurrent_runs"]
    config["concurrency"] = {
        "runs": {"max_concurrent_runs": instance.max_concurrent_runs, "tag_concurrency_limits": limits},
        # at most connections_per_flow steps of one flow at once (each flow's op is its own pool)
        "pools": {"default_limit": settings.executor.connections_per_flow, "granularity": "op"},
    }
    config["run_monitoring"]["max_runtime_seconds"] = instance.max_runtime_seconds
    days = instance.tick_retention_days
    config["retention"] = {
        "schedule": {"purge_after_days": days},
        "sensor": {"purge_after_days": {"skipped": min(days, 7), "failure": days, "success": days}},
    }
    if instance.storage == "postgresql":
        database = instance.postgres
        postgres_db: dict[str, Any] = {
            "username": database.user,
            "hostname": database.host,
            "port": database.port,
            "db_name": database.database,
            "scheme": STORAGE_SCHEME,
        }
        if database.password is not None:
            postgres_db["password"] = {"env": PASSWORD_ENV}
        config["storage"] = {"postgres": {"postgres_db": postgres_db}}
    return config


def instance_yaml(settings: Settings) -> str:
    """``dagster.yaml``'s text for the settings' environment."""
    body = yaml.safe_dump(instance_config(settings), sort_keys=False, default_flow_style=False)
    return HEADER.format(env=settings.env) + body


def instance_environment(settings: Settings) -> dict[str, str]:
    """What the instance's processes need in their environment: the storage password, if any."""
    password = settings.instance.postgres.password
    if settings.instance.storage != "postgresql" or password is None:
        return {}
    return {PASSWORD_ENV: decrypt(password, "instance.postgres.password")}
