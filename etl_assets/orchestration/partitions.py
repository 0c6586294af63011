"""Partitions and schedules of a flow, in the settings' timezone."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import dagster as dg

from etl_assets.engine.partition_keys import KEY_FORMATS
from etl_assets.model.flow import FlowModel

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


def schedule_for(flow: FlowModel, job: dg.UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition | None:
    """The flow's cadence as a schedule requesting the right partition."""
    spec = flow.schedule
    if spec is None:
        return None
    return dg.build_schedule_from_partitioned_job(
        job,
        name=f"{flow.name}_schedule",
        hour_of_day=spec.hour,
        minute_of_hour=spec.minute,
        day_of_month=spec.day_of_month,
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
