"""A flow's jobs and their clocks: the whole flow, the extracts refresh, the nightly re-run.

Dagster wants one partitions definition per asset job, so each flow gets its own jobs:
``<flow>_job``, ``<flow>_extracts_refresh`` (extract and its quality checks, every 4 hours)
and ``<flow>_nightly`` (every step again, at night): the partial flows of the Celery talk.
"""

from __future__ import annotations

import dagster as dg

from etl_assets.model.flow import FlowModel
from etl_assets.orchestration.partitions import schedule_for

EXTRACTS_REFRESH_CRON = "0 */4 * * *"
NIGHTLY_CRON = "30 1 * * *"


def latest_materialized(context: dg.ScheduleEvaluationContext, key: dg.AssetKey) -> str | None:
    """The newest partition this asset was materialized for (the one worth re-running)."""
    done = context.instance.get_materialized_partitions(key)
    return max(done) if done else None


def rerun_schedule(
    name: str, cron: str, job: dg.UnresolvedAssetJobDefinition, extract_key: dg.AssetKey, timezone: str
) -> dg.ScheduleDefinition:
    """Re-run the newest partition already loaded; skip when there is none yet."""

    @dg.schedule(
        name=name,
        cron_schedule=cron,
        job=job,
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    def rerun(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        key = latest_materialized(context, extract_key)
        if key is None:
            return dg.SkipReason(f"{extract_key.to_user_string()} has no partition yet")
        return dg.RunRequest(
            run_key=f"{name}:{context.scheduled_execution_time:%Y%m%d%H%M}:{key}", partition_key=key
        )

    return rerun


def flow_jobs(
    flow: FlowModel, keys: dict[str, dg.AssetKey], timezone: str
) -> tuple[list[dg.UnresolvedAssetJobDefinition], list[dg.ScheduleDefinition]]:
    """The flow's three jobs and their schedules."""
    steps = dg.AssetSelection.assets(*keys.values())
    full = dg.define_asset_job(f"{flow.name}_job", selection=steps, description=f"the whole {flow.name} flow")
    refresh = dg.define_asset_job(
        f"{flow.name}_extracts_refresh",
        selection=dg.AssetSelection.assets(keys["extract"]),
        description="extract again with its quality checks (schema drift, source unchanged)",
    )
    nightly = dg.define_asset_job(
        f"{flow.name}_nightly",
        selection=steps,
        description="every step again for the newest loaded partition",
    )
    schedules = [
        rerun_schedule(
            f"{flow.name}_extracts_refresh_schedule",
            EXTRACTS_REFRESH_CRON,
            refresh,
            keys["extract"],
            timezone,
        ),
        rerun_schedule(f"{flow.name}_nightly_schedule", NIGHTLY_CRON, nightly, keys["extract"], timezone),
    ]
    main = schedule_for(flow, full, timezone)
    return [full, refresh, nightly], ([main] if main else []) + schedules
