"""Where a run's work executes, chosen by the settings: in the run's process, or on Celery
workers through the broker (``dagster-celery``, RabbitMQ here).

The unit a worker takes is a flow's op for the run's partitions: a partition's extract,
transform, load and link stay together on one worker (its lock and transaction are its own,
its staged files under the shared ETL_HOME). A flow goes to the queue of its kind of work
(``work: io`` or ``cpu`` in its declaration). Tasks are acknowledged late and given back when
their worker dies, so another worker runs the step again; the load's idempotency and the
partition's lock see that nothing doubles.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import dagster as dg

from etl_assets.settings import Settings, decrypt

QUEUE_TAG = "dagster-celery/queue"  # the op tag dagster-celery routes a step by
BROKER_ENV = "ETL_CELERY_BROKER_URL"  # the broker's URL with its password, never written down
BACKEND_ENV = "ETL_CELERY_BACKEND"
# late acknowledgement: a task is taken off the queue when it finished, not when it started;
# one task at a time per worker slot, so a dying worker gives back only what it was running
CELERY_SOURCE = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
}


def broker_url(settings: Settings, password: str | None = None) -> str:
    broker = settings.executor.broker
    login = quote(broker.user, safe="") + (f":{quote(password, safe='')}" if password else "")
    vhost = "/" if broker.vhost == "/" else quote(broker.vhost, safe="")  # "//": the default vhost
    return f"pyamqp://{login}@{broker.host}:{broker.port}/{vhost}"


def celery_config(settings: Settings) -> dict[str, Any]:
    """The executor's config: the broker's URL from ``BROKER_ENV`` when it has a password."""
    has_password = settings.executor.broker.password is not None
    return {
        "broker": {"env": BROKER_ENV} if has_password else broker_url(settings),
        "backend": settings.executor.backend,
        "config_source": dict(CELERY_SOURCE),
    }


def executor_environment(settings: Settings, worker: bool = False) -> dict[str, str]:
    """What a process that sends steps (or, ``worker``, runs them) needs: the broker's URL with
    its password (a worker always gets the URL there), and the result backend."""
    password = settings.executor.broker.password
    if settings.executor.kind != "celery" or (password is None and not worker):
        return {}
    clear = decrypt(password, "executor.broker.password") if password is not None else None
    return {BROKER_ENV: broker_url(settings, clear), BACKEND_ENV: settings.executor.backend}


def executor_for(settings: Settings) -> dg.ExecutorDefinition:
    """The environment's executor for every job of the code location."""
    if settings.executor.kind == "in_process":
        return dg.in_process_executor
    from dagster_celery import celery_executor

    return celery_executor.configured(celery_config(settings), name="celery")


def op_placement(queue: str | None, flow: str) -> dict[str, Any]:
    """A flow op's queue (Celery) and concurrency pool (``connections_per_flow`` at a time);
    in process (no queue), neither: the run queue's limits are the only ones."""
    if queue is None:
        return {}
    return {"op_tags": {QUEUE_TAG: queue}, "pool": pool_of(flow)}


def pool_of(flow: str) -> str:
    """The Dagster concurrency pool of a flow's op."""
    return f"etl_flow_{flow}"
