"""Partitions and schedules of a flow, in the settings' timezone."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import dagster as dg

from etl_assets.engine.partition_keys import KEY_FORMATS
from etl_assets.model.flow import FlowModel
from etl_assets.orchestration.run_parameters import run_config_for

FIVE_MINUTES_CRON = "*/5 7-18 * * *"  # 07:00 .. 18:55, 144 partitions a day


def partitions_def(flow: FlowModel, timezone: str) -> dg.TimeWindowPartitionsDefinition:
    """Daily partitions include today (its file arrives before the 06:00 run)."""
    spec = flow.partitions
    first = spec.start
    if spec.window_days is not None:
        first = max(first, date.today() - timedelta(days=spec.window_days - 1))
    start = datetime.combine(first, datetime.min.time())
    if spec.kind == "daily":
        return dg.DailyPartitionsDefinition(start_date=start, timezone=timezone, end_offset=1)
    if spec.kind == "monthly":
        return dg.MonthlyPartitionsDefinition(start_date=start, timezone=timezone)
    return dg.TimeWindowPartitionsDefinition(
        cron_schedule=FIVE_MINUTES_CRON,
        fmt=KEY_FORMATS["five_minutes"],
        start=start,
        timezone=timezone,
        end_offset=1,
    )


def schedule_for(
    flow: FlowModel, job: dg.UnresolvedAssetJobDefinition, timezone: str
) -> dg.ScheduleDefinition | None:
    """The flow's cadence as a schedule requesting the right partition; with the schedule's
    own parameters, its runs carry them as run config (a run launched by hand picks its own)."""
    spec = flow.schedule
    if spec is None:
        return None
    name = f"{flow.name}_schedule"
    if spec.parameters is None:
        return dg.build_schedule_from_partitioned_job(
            job,
            name=name,
            hour_of_day=spec.hour,
            minute_of_hour=spec.minute,
            day_of_month=spec.day_of_month,
            default_status=dg.DefaultScheduleStatus.RUNNING,
        )
    partitions = partitions_def(flow, timezone)
    run_config = run_config_for(flow, spec.parameters)

    @dg.schedule(
        name=name,
        cron_schedule=partitions.get_cron_schedule(spec.minute, spec.hour, None, spec.day_of_month),
        job=job,
        execution_timezone=partitions.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"{flow.name} with the schedule's parameters",
    )
    def scheduled(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        # the partition build_schedule_from_partitioned_job would request: the last complete one
        with dg.partition_loading_context(effective_dt=context.scheduled_execution_time):
            key = partitions.get_last_partition_key()
        if key is None:
            return dg.SkipReason(f"{flow.name} has no partition yet")
        return dg.RunRequest(run_key=key, partition_key=key, run_config=run_config)

    return scheduled
