"""A flow's ``retention``: its runs beyond it leave the Dagster instance, and the staged data
and error files of the partitions no kept run covers go with them (housekeeping)."""

from __future__ import annotations

from datetime import datetime, timedelta

import dagster as dg

from etl_assets.model.flow import STEPS, FlowModel, RunRetention
from etl_assets.orchestration.partitions import partitions_def

FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
RANGE = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


def flow_runs(instance: dg.DagsterInstance, flow: FlowModel) -> list[dg.RunRecord]:
    """The flow's finished runs, newest first: its jobs' (``<flow>_...``) and any run of its
    assets (a backfill's)."""
    keys = {dg.AssetKey(flow.asset_name(step)) for step in STEPS}
    records = instance.get_run_records(filters=dg.RunsFilter(statuses=FINISHED))
    mine = [
        r
        for r in records
        if r.dagster_run.job_name.startswith(f"{flow.name}_")
        or keys & set(r.dagster_run.asset_selection or ())
    ]
    return sorted(mine, key=lambda r: r.create_timestamp, reverse=True)


def split_by_retention(
    records: list[dg.RunRecord], retention: RunRetention, now: datetime
) -> tuple[list[dg.RunRecord], list[dg.RunRecord]]:
    """(kept, expired), newest first."""
    if retention.amount is not None:
        return records[: retention.amount], records[retention.amount :]
    cutoff = now - timedelta(days=retention.days or 0)
    kept = [r for r in records if r.create_timestamp >= cutoff]
    return kept, [r for r in records if r.create_timestamp < cutoff]


def partitions_of(run: dg.DagsterRun, flow: FlowModel, timezone: str) -> set[str]:
    """The partitions a run covered: its one partition, or its range."""
    if "dagster/partition" in run.tags:
        return {run.tags["dagster/partition"]}
    if all(tag in run.tags for tag in RANGE):
        window = dg.PartitionKeyRange(run.tags[RANGE[0]], run.tags[RANGE[1]])
        return set(partitions_def(flow, timezone).get_partition_keys_in_range(window))
    return set()


def retire(
    instance: dg.DagsterInstance, flow: FlowModel, timezone: str, now: datetime
) -> tuple[list[str], list[str]]:
    """Delete the flow's runs beyond its retention; (their ids, the partitions no kept run
    covers, whose files may go)."""
    if flow.retention is None:
        return [], []
    kept, expired = split_by_retention(flow_runs(instance, flow), flow.retention, now)
    still = set().union(*(partitions_of(r.dagster_run, flow, timezone) for r in kept))
    gone = set().union(*(partitions_of(r.dagster_run, flow, timezone) for r in expired)) - still
    for record in expired:
        instance.delete_run(record.dagster_run.run_id)
    return [r.dagster_run.run_id for r in expired], sorted(gone)
