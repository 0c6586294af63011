"""Batches of partition runs: a backfill (the daemon's, from the UI or ``dagster job backfill``)
and ``etl-assets backfill`` (a run per partition in one process, no daemon).

Every partition runs alone (``BackfillPolicy.multi_run(1)``), so it lands or fails on its
own. A run of a batch leaves its partition's line instead of sending an e-mail
(``engine.batch_email``); the batch's one e-mail goes out when it is over: from the
``backfill_emails`` sensor for the daemon's backfills, from the command for its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg
from dagster._core.execution.backfill import BULK_ACTION_TERMINAL_STATUSES

from etl_assets.engine.batch_email import SENT, PartitionLine, batch_lines, send_batch_email
from etl_assets.model.flow import STEPS
from etl_assets.resources import FoldersResource, MailerResource

BACKFILL_TAG = "dagster/backfill"  # set by Dagster on every run of a backfill
BATCH_TAG = "etl_assets/batch"  # set by ``etl-assets backfill`` on its runs
PARTITION_TAG = "dagster/partition"
RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


def partition_of(run: dg.DagsterRun) -> str:
    """The partition of a run: its tag, or the range of one a backfill's run carries."""
    start, end = (run.tags.get(tag) for tag in RANGE_TAGS)
    return run.tags.get(PARTITION_TAG) or (start if start == end and start else f"{start}...{end}")


def batch_of(run: dg.DagsterRun) -> str | None:
    """The batch a run belongs to, or None for a run of its own (it e-mails itself)."""
    return run.tags.get(BACKFILL_TAG) or run.tags.get(BATCH_TAG)


def flow_of(run: dg.DagsterRun) -> str:
    """The flow whose steps the run materializes (asset keys are ``<flow>_<step>``)."""
    for key in sorted(run.asset_selection or [], key=lambda k: k.to_user_string()):
        flow, _, step = key.to_user_string().rpartition("_")
        if step in STEPS:
            return flow
    return run.job_name.removesuffix("_job")


def lines_of_dead_runs(
    runs: Sequence[dg.DagsterRun], recorded: Sequence[PartitionLine]
) -> list[PartitionLine]:
    """A failed run that left no line (it died, or failed before its first step)."""
    have = {(line.flow, line.partition) for line in recorded}
    lines = []
    for run in runs:
        key = partition_of(run)
        if (
            run.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
            and (
                flow_of(run),
                key,
            )
            not in have
        ):
            reason = f"run {run.run_id[:8]} ended {run.status.value.lower()} before it could report"
            lines.append(PartitionLine(flow=flow_of(run), partition=key, status="failed", failure=reason))
    return lines


def backfill_emails_sensor() -> dg.SensorDefinition:
    """Once a backfill is over, its one e-mail (a line per partition, every error file)."""

    @dg.sensor(
        name="backfill_emails",
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="one e-mail per finished backfill: a line per partition, every error file attached",
    )
    def backfill_emails(
        context: dg.SensorEvaluationContext, mailer: MailerResource, folders: FoldersResource
    ) -> dg.SkipReason:
        sent = []
        for folder in sorted(folders.dir("logs", "batches").iterdir()):
            backfill = context.instance.get_backfill(folder.name) if folder.is_dir() else None
            if backfill is None or (folder / SENT).exists():
                continue  # a batch of etl-assets backfill (it e-mails itself), or done
            if backfill.status not in BULK_ACTION_TERMINAL_STATUSES:
                continue
            runs = context.instance.get_runs(dg.RunsFilter(tags={BACKFILL_TAG: backfill.backfill_id}))
            extra = lines_of_dead_runs(runs, batch_lines(folders, backfill.backfill_id))
            where = send_batch_email(mailer, folders, backfill.backfill_id, extra)
            sent.append(f"{backfill.backfill_id}: {where or 'nothing rejected or failed, no e-mail'}")
            context.log.info(f"backfill {backfill.backfill_id} over: {sent[-1]}")
        return dg.SkipReason("; ".join(sent) if sent else "no finished backfill waiting for its e-mail")

    return backfill_emails


@dataclass(frozen=True)
class PartitionRun:
    partition: str
    success: bool
    run_id: str


def run_batch(
    job: dg.JobDefinition,
    partition_keys: Sequence[str],
    instance: dg.DagsterInstance,
    mailer: MailerResource,
    folders: FoldersResource,
) -> tuple[str, list[PartitionRun], str | None]:
    """A run per partition, one after the other in this process; then the batch's e-mail.
    Returns the batch id, the runs and where the e-mail went."""
    batch = f"cli-{uuid.uuid4().hex[:12]}"
    runs = []
    for key in partition_keys:
        result = job.execute_in_process(
            partition_key=key, instance=instance, tags={BATCH_TAG: batch}, raise_on_error=False
        )
        runs.append(PartitionRun(key, result.success, result.run_id))
    records = [r for r in (instance.get_run_by_id(run.run_id) for run in runs) if r is not None]
    extra = lines_of_dead_runs(records, batch_lines(folders, batch))
    where = send_batch_email(mailer, folders, batch, extra, what="etl-assets backfill")
    return batch, runs, where
