"""The stale partitions of a flow brought up to date, and only those.

``etl-assets ledger reprocess FLOW [--from STEP]``: for each partition the ledger lists stale
(``engine.ledger.show.stale_partitions``), a run from its earliest stale stage (or ``--from``)
on, replayed from the staged output of the stage before it, so the source is not fetched
again. A partition whose extract is stale (its source settings or the extract's code changed)
is run in full: only the extract reads the source. Every other partition is left as it is: no
run, no ledger row, no target row touched. Each run is tagged ``etl_assets/reprocess``.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from etl_assets.engine.ledger.show import StalePartition
from etl_assets.model.flow import STEPS
from etl_assets.orchestration.replay import REPLAY_TAG, Replayed, ReplayRefused, check_replay, run_from
from etl_assets.resources import FoldersResource

REPROCESS_TAG = "etl_assets/reprocess"


@dataclass(frozen=True)
class Reprocessed:
    """One stale partition: the step it was run from, and the run (or why it was refused)."""

    partition_key: str
    step: str
    run: Replayed | None
    refused: str | None = None

    @property
    def ok(self) -> bool:
        return self.run is not None and self.run.success


def first_step(stale: StalePartition, from_step: str | None) -> str:
    """``--from`` if given and not after the partition's earliest stale stage, else that stage:
    starting later would leave a stale stage's output in place."""
    earliest = stale.stages[0].stage
    if from_step is None or STEPS.index(from_step) > STEPS.index(earliest):
        return earliest
    return from_step


def reprocess(
    job: dg.JobDefinition,
    flow: str,
    stale: list[StalePartition],
    instance: dg.DagsterInstance,
    folders: FoldersResource,
    from_step: str | None = None,
) -> list[Reprocessed]:
    """A run per stale partition, one after the other; a refusal or failure of one does not
    stop the others (a partition is the unit of work)."""
    done = []
    for partition in stale:
        step = first_step(partition, from_step)
        tags = {REPROCESS_TAG: step}
        if step != STEPS[0]:
            try:
                check_replay(flow, partition.partition_key, step, folders)
            except ReplayRefused as refused:
                done.append(Reprocessed(partition.partition_key, step, None, str(refused)))
                continue
            tags[REPLAY_TAG] = step
        run = run_from(job, flow, partition.partition_key, step, instance, tags)
        done.append(Reprocessed(partition.partition_key, step, run))
    return done
