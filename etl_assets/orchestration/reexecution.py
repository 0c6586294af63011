"""Where each partition of a run starts when the run is a second go at earlier work.

A flow's four steps are one op over many partitions, so Dagster's retry of the op and its
"re-execute from failure" both run the whole op again. What landed before is in the event
log: the (step, partition)s materialized by the earlier tries of this run (a retry), or by
the runs this one re-executes "from failure" (``parent_run_id``, while each is a re-execution
from failure; "re-execute all" runs every step again). Each partition
starts at its first selected step that did not land there; a step whose blocking check
failed did not land. Its input is the staged file of the step before it, so nothing is
fetched again that was fetched once.
"""

from __future__ import annotations

import dagster as dg
from dagster._core.storage.tags import ASSET_RESUME_RETRY_TAG, RESUME_RETRY_TAG

RESUME_TAGS = (RESUME_RETRY_TAG, ASSET_RESUME_RETRY_TAG)  # set by Dagster on a from-failure run

Landed = dict[str, set[str]]  # partition key -> steps that landed for it


def blocked_by(evaluation: dg.AssetCheckEvaluation) -> bool:
    """A failed blocking check of severity ERROR: its step stops the partition."""
    return (
        evaluation.blocking and not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    )


def earlier_runs(context: dg.AssetExecutionContext) -> list[str]:
    """The runs whose work this one carries on, oldest first: its own earlier tries (a retry),
    else the runs it re-executes (none for a first run)."""
    if context.retry_number > 0:
        return [context.run.run_id]
    chain, run = [], context.run
    while run is not None and run.parent_run_id and resumes(run):
        chain.append(run.parent_run_id)
        run = context.instance.get_run_by_id(run.parent_run_id)
    return list(reversed(chain))


def resumes(run: dg.DagsterRun) -> bool:
    """A re-execution "from failure" (of steps or of assets) carries on its parent's work; one
    of "all steps" means every step again."""
    return any(run.tags.get(tag) == "true" for tag in RESUME_TAGS)


def landed_in(instance: dg.DagsterInstance, run_id: str, steps: dict[dg.AssetKey, str]) -> Landed:
    """Steps (of ``steps``: asset key -> step) that one run materialized per partition with no
    blocking check failed."""
    records = instance.get_records_for_run(
        run_id,
        of_type={dg.DagsterEventType.ASSET_MATERIALIZATION, dg.DagsterEventType.ASSET_CHECK_EVALUATION},
    ).records
    landed: Landed = {}
    blocked: set[tuple[str, str]] = set()
    for record in records:
        entry = record.event_log_entry
        materialization, evaluation = entry.asset_materialization, entry.asset_check_evaluation
        if materialization is not None and materialization.partition and materialization.asset_key in steps:
            landed.setdefault(materialization.partition, set()).add(steps[materialization.asset_key])
        if evaluation and evaluation.partition and evaluation.asset_key in steps and blocked_by(evaluation):
            blocked.add((evaluation.partition, steps[evaluation.asset_key]))
    for key, step in blocked:
        landed.get(key, set()).discard(step)
    return landed


def landed_before(context: dg.AssetExecutionContext, keys: dict[str, dg.AssetKey]) -> Landed:
    """Per partition, the steps that landed in any of the runs this one carries on (a step
    blocked in one and landed in a later one counts as landed)."""
    steps = {asset_key: step for step, asset_key in keys.items()}
    landed: Landed = {}
    for run_id in earlier_runs(context):
        for key, done in landed_in(context.instance, run_id, steps).items():
            landed[key] = landed.get(key, set()) | done
    return landed


def steps_to_run(selected: list[str], landed: set[str]) -> list[str]:
    """The selected steps from the first one that did not land (none when all landed)."""
    for index, step in enumerate(selected):
        if step not in landed:
            return selected[index:]
    return []
