"""A flow's job and its clocks: the whole flow, the extracts refresh, the nightly re-run.

Dagster wants one partitions definition per asset job, so each flow gets its own job,
``<flow>_job``. The partial flows of the Celery talk are schedules of that job with an asset
selection: ``<flow>_extracts_refresh_schedule`` (extract and its quality checks, every 4 hours)
and ``<flow>_nightly_schedule`` (every step again, at night). Not jobs of their own: each job
costs every load of the code location its resolution against the whole asset graph and its
snapshot (run config schema and all), about 20 ms a job, and a location of a hundred flows
paid it three hundred times.
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
    name: str,
    cron: str,
    job: dg.UnresolvedAssetJobDefinition,
    extract_key: dg.AssetKey,
    timezone: str,
    checks: list[dg.AssetCheckKey] | None = None,
) -> dg.ScheduleDefinition:
    """Re-run the newest partition already loaded; skip when there is none yet. With
    ``checks``, only the extract and those checks of it (else the whole job)."""

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
            run_key=f"{name}:{context.scheduled_execution_time:%Y%m%d%H%M}:{key}",
            partition_key=key,
            asset_selection=None if checks is None else [extract_key],
            asset_check_keys=checks,
        )

    return rerun


def flow_jobs(
    flow: FlowModel, keys: dict[str, dg.AssetKey], extract_checks: list[str], timezone: str
) -> tuple[list[dg.UnresolvedAssetJobDefinition], list[dg.ScheduleDefinition]]:
    """The flow's job and its schedules; ``extract_checks`` name the checks the extracts
    refresh runs with the extract."""
    full = dg.define_asset_job(
        f"{flow.name}_job",
        selection=dg.AssetSelection.assets(*keys.values()),
        description=f"the whole {flow.name} flow",
    )
    refresh_checks = [dg.AssetCheckKey(keys["extract"], name) for name in extract_checks]
    schedules = [
        rerun_schedule(
            f"{flow.name}_extracts_refresh_schedule",
            EXTRACTS_REFRESH_CRON,
            full,
            keys["extract"],
            timezone,
            checks=refresh_checks,
        ),
        rerun_schedule(f"{flow.name}_nightly_schedule", NIGHTLY_CRON, full, keys["extract"], timezone),
    ]
    main = schedule_for(flow, full, timezone)
    return [full], ([main] if main else []) + schedules
