"""Batches of partitions: a backfill (the daemon's, from the UI or ``dagster job backfill``)
and ``etl-assets backfill`` (ranged runs one after the other in one process, no daemon).

A batch runs its partitions in ranged runs of up to the flow's ``partitions.backfill_chunk``
(``BackfillPolicy.multi_run``); inside a run each partition lands or fails on its own
(``flow_run``). A run of a batch leaves a line per partition instead of sending an e-mail
(``engine.batch_email``); the batch's one e-mail goes out when it is over: from the
``backfill_emails`` sensor for the daemon's backfills, from the command for its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dagster as dg
from dagster._core.execution.backfill import BULK_ACTION_TERMINAL_STATUSES, PartitionBackfill

from etl_assets.engine.batch_email import SENT, PartitionLine, batch_lines, send_batch_email
from etl_assets.model.flow import STEPS
from etl_assets.resources import FoldersResource, MailerResource

BACKFILL_TAG = "dagster/backfill"  # set by Dagster on every run of a backfill
BATCH_TAG = "etl_assets/batch"  # set by ``etl-assets backfill`` on its runs
RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


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


def missing_lines(
    expected: Iterable[tuple[str, str]], recorded: Sequence[PartitionLine], reason: str
) -> list[PartitionLine]:
    """A line for each (flow, partition) of the batch that left none: its run died, or failed
    before its first step."""
    have = {(line.flow, line.partition) for line in recorded}
    return [
        PartitionLine(flow=flow, partition=key, status="failed", failure=reason)
        for flow, key in sorted(set(expected) - have)
    ]


def backfill_partitions(backfill: PartitionBackfill, runs: Sequence[dg.DagsterRun]) -> set[tuple[str, str]]:
    """(flow, partition) of every flow step a backfill targets."""
    data = backfill.asset_backfill_data
    if data is None:  # a job's backfill: its partitions, for the flows its runs ran
        return {(flow_of(run), key) for run in runs for key in backfill.partition_names or []}
    found = set()
    for target in data.target_subset.iterate_asset_partitions():
        flow, _, step = target.asset_key.to_user_string().rpartition("_")
        if step in STEPS and target.partition_key is not None:
            found.add((flow, target.partition_key))
    return found


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
            extra = missing_lines(
                backfill_partitions(backfill, runs),
                batch_lines(folders, backfill.backfill_id),
                "its run ended before it could report (see the backfill's runs)",
            )
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


def contiguous_chunks(
    keys: Sequence[str], partitions: dg.TimeWindowPartitionsDefinition, size: int
) -> list[list[str]]:
    """The keys as ranges of consecutive partitions, at most ``size`` each: a run each (a
    ranged run covers a range, and ``--partitions`` may leave gaps)."""
    ordered = sorted(set(keys), key=lambda k: partitions.time_window_for_partition_key(k).start)
    chunks: list[list[str]] = []
    for key in ordered:
        last = chunks[-1] if chunks else None
        if last and len(last) < size and partitions.get_next_partition_key(last[-1]) == key:
            last.append(key)
        else:
            chunks.append([key])
    return chunks


def run_batch(
    job: dg.JobDefinition,
    partition_keys: Sequence[str],
    instance: dg.DagsterInstance,
    mailer: MailerResource,
    folders: FoldersResource,
    chunk: int,
) -> tuple[str, list[PartitionRun], str | None]:
    """The partitions as ranged runs of up to ``chunk``, one after the other in this process
    (each partition lands or fails on its own inside its run); then the batch's e-mail.
    Returns the batch id, a line per partition and where the e-mail went."""
    batch = f"cli-{uuid.uuid4().hex[:12]}"
    flow = flow_of_job(job)
    run_of: dict[str, str] = {}
    for keys in contiguous_chunks(partition_keys, job.partitions_def, chunk):  # type: ignore[arg-type]
        tags = {BATCH_TAG: batch}
        if len(keys) > 1:
            tags |= dict(zip(RANGE_TAGS, (keys[0], keys[-1]), strict=True))
        result = job.execute_in_process(
            partition_key=keys[0] if len(keys) == 1 else None,
            instance=instance,
            tags=tags,
            raise_on_error=False,
        )
        run_of |= dict.fromkeys(keys, result.run_id)
    recorded = batch_lines(folders, batch)
    extra = missing_lines(((flow, key) for key in run_of), recorded, "its run ended before it could report")
    failed = {line.partition for line in [*recorded, *extra] if line.flow == flow and line.status == "failed"}
    where = send_batch_email(mailer, folders, batch, extra, what="etl-assets backfill")
    runs = [PartitionRun(key, key not in failed, run_id) for key, run_id in run_of.items()]
    return batch, runs, where


def flow_of_job(job: dg.JobDefinition) -> str:
    """The flow of a flow's ``<flow>_job``."""
    return job.name.removesuffix("_job")
