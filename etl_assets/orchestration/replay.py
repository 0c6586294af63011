"""A partition run again from one step on, from the staged output of the step before it.

``etl-assets replay FLOW PARTITION --from transform|load|link``: a real run of the flow's job
(recorded in the instance, shown in the UI, e-mailing as any run does) that selects only the
steps from ``--from`` on, for the one partition, tagged ``etl_assets/replay_from=<step>``. The
source is not fetched again: the first step reads the staged files (``engine.staging``) the
earlier steps left, so a corrected map or a fixed target is tried without a new delivery.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from etl_assets.engine.staging import PartitionStage
from etl_assets.model.flow import STEPS
from etl_assets.resources import FoldersResource

REPLAY_TAG = "etl_assets/replay_from"
FAILURE_PREFIX = "dagster._core.definitions.events.Failure: "
REPLAY_STEPS = STEPS[1:]  # extract's input is the source: a full run


class ReplayRefused(Exception):
    """The replay cannot run: the line says what is missing and what to do."""


@dataclass(frozen=True)
class Replayed:
    run_id: str
    success: bool
    failure: str | None


def check_replay(flow: str, partition_key: str, step: str, folders: FoldersResource) -> None:
    """Refuse a replay whose first step would find no staged input."""
    if step not in REPLAY_STEPS:
        raise ReplayRefused(f"--from {step}: replay starts at one of {', '.join(REPLAY_STEPS)}")
    missing = PartitionStage(flow, partition_key, folders).missing_inputs(step)
    if missing:
        names = ", ".join(str(path) for path in missing)
        raise ReplayRefused(
            f"{flow} {partition_key}: cannot replay from {step}, staged file missing: {names}; "
            f"run the partition in full first (e.g. etl-assets backfill {flow} --from {partition_key})"
        )


def replay(
    job: dg.JobDefinition,
    flow: str,
    partition_key: str,
    step: str,
    instance: dg.DagsterInstance,
    folders: FoldersResource,
) -> Replayed:
    """One run of ``job`` for the partition, from ``step`` on; refused (``ReplayRefused``) when
    the step's staged input is missing."""
    check_replay(flow, partition_key, step, folders)
    return run_from(job, flow, partition_key, step, instance, {REPLAY_TAG: step})


def run_from(
    job: dg.JobDefinition,
    flow: str,
    partition_key: str,
    step: str,
    instance: dg.DagsterInstance,
    tags: dict[str, str],
) -> Replayed:
    """One in-process run of ``job`` for the partition, selecting the steps from ``step`` on;
    its failure line as the run's e-mail says it."""
    selection = [dg.AssetKey(f"{flow}_{s}") for s in STEPS[STEPS.index(step) :]]
    result = job.execute_in_process(
        partition_key=partition_key,
        asset_selection=selection,
        instance=instance,
        tags=tags,
        raise_on_error=False,
    )
    failure = None
    if not result.success:
        failures = [e for e in result.all_events if e.is_step_failure]
        error = failures[0].step_failure_data.error if failures else None
        # the partition's line, without the exception's class Dagster puts before it
        failure = error.message.strip().removeprefix(FAILURE_PREFIX) if error else "the run failed"
    return Replayed(result.run_id, result.success, failure)
