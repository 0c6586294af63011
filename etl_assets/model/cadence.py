"""When a flow runs and what it keeps: its partitions, schedule, sensor and run retention."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import Field, model_validator

from etl_assets.model.identifiers import StrictModel
from etl_assets.model.parameters import FlowParameters


class PartitionSpec(StrictModel):
    """Which partitions exist."""

    kind: Literal["daily", "monthly", "five_minutes"] = "daily"
    start: date = date(2025, 1, 1)
    window_days: int | None = Field(
        None, ge=1, description="only the last N days exist (keeps 5-minute partitions few enough for the UI)"
    )
    backfill_chunk: int = Field(
        16,
        ge=1,
        description="consecutive partitions a backfill's run takes (each still lands or fails alone); "
        "a run costs a process, so a month is two runs, side by side on two cores",
    )


class ScheduleSpec(StrictModel):
    """When the schedule runs (settings' timezone)."""

    hour: int = Field(6, ge=0, le=23)
    minute: int = Field(0, ge=0, le=59)
    day_of_month: int | None = Field(None, ge=1, le=28)


class FlowScheduleSpec(ScheduleSpec):
    """A flow's schedule, and the runtime parameters its runs take (the schedule's config)."""

    parameters: FlowParameters | None = Field(
        None,
        description="value_sets / overrides / local of the scheduled runs (launched runs pick theirs)",
    )


class SensorSpec(StrictModel):
    """Start a run when the partition's file has arrived and stopped growing."""

    minimum_interval_seconds: int = Field(30, ge=5, description="how often the folder is listed")


class RunRetention(StrictModel):
    """How long housekeeping keeps a flow's runs in the Dagster instance, and the staged data
    and error files of their partitions with them: by age or by count, never both."""

    days: int | None = Field(None, ge=1, description="runs older than this are deleted")
    amount: int | None = Field(None, ge=1, description="only the newest N runs are kept")

    @model_validator(mode="after")
    def _one_rule(self) -> RunRetention:
        if self.days is not None and self.amount is not None:
            raise ValueError("retention: days or amount, never both (unset one of them)")
        if self.days is None and self.amount is None:
            raise ValueError("retention: give days or amount")
        return self
