"""Reading the ledger: a flow's objects and their stage rows, and the partitions last processed
by an older version of a stage (stale). A ledger made before a column was added gets it
(``ensure_ledger``) before it is read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from etl_assets.engine.ledger.record import FAILED
from etl_assets.engine.ledger.tables import RESUBMISSION, ensure_ledger, has_ledger, objects, stages
from etl_assets.engine.resubmit.resolved import StepResolution
from etl_assets.model.flow import STEPS, FlowModel
from etl_assets.model.versions import flow_versions


@dataclass(frozen=True)
class StaleStage:
    """A stage whose last run on the partition used another version than the current one."""

    stage: str
    recorded: str
    current: str
    run_id: str


@dataclass(frozen=True)
class StalePartition:
    """A partition and its stale stages, earliest stage first."""

    partition_key: str
    stages: list[StaleStage]


def stale_partitions(engine: sa.Engine, flow: FlowModel) -> list[StalePartition]:
    """The partitions of ``flow`` whose last run of a stage (failed runs aside) used a version
    of that stage other than the current one, sorted by key; each with its stale stages,
    earliest first (reprocessing from the first one makes the partition current)."""
    current = flow_versions(flow)
    # a resubmission's stages ran over a few corrected rows, not over the partition
    resubmissions = sa.select(objects.c.id).where(objects.c.kind == RESUBMISSION)
    with engine.begin() as conn:
        if not has_ledger(conn):
            return []
        ensure_ledger(conn)
        rows = conn.execute(
            sa.select(stages.c.partition_key, stages.c.stage, stages.c.stage_version, stages.c.run_id)
            .where(
                stages.c.flow == flow.name,
                stages.c.status != FAILED,
                sa.or_(stages.c.object_id.is_(None), stages.c.object_id.not_in(resubmissions)),
            )
            .order_by(stages.c.finished_at)
        ).all()
    last: dict[tuple[str, str], tuple[str, str]] = {}
    for key, stage, version, run_id in rows:  # oldest first: the last one seen wins
        last[(key, stage)] = (version, run_id)
    found: dict[str, list[StaleStage]] = {}
    for (key, stage), (version, run_id) in last.items():
        if stage in current.stages and version != current[stage]:
            found.setdefault(key, []).append(StaleStage(stage, version, current[stage], run_id))
    return [
        StalePartition(key, sorted(found[key], key=lambda s: STEPS.index(s.stage))) for key in sorted(found)
    ]


def object_rows(engine: sa.Engine, flow: str, partition_key: str | None = None) -> list[dict[str, object]]:
    """The flow's objects (of one partition, if given), newest first, each with its stage rows
    (``stages``, in run order)."""
    with engine.begin() as conn:
        if not has_ledger(conn):
            return []
        ensure_ledger(conn)
        query = sa.select(objects).where(objects.c.flow == flow)
        stage_query = sa.select(stages).where(stages.c.flow == flow)
        if partition_key is not None:
            query = query.where(objects.c.partition_key == partition_key)
            stage_query = stage_query.where(stages.c.partition_key == partition_key)
        found = [dict(row._mapping) for row in conn.execute(query.order_by(objects.c.first_seen.desc()))]
        stage_rows = conn.execute(stage_query.order_by(stages.c.started_at)).all()
    by_object: dict[object, list[dict[str, object]]] = {}
    for row in stage_rows:
        by_object.setdefault(row.object_id, []).append(dict(row._mapping))
    for item in found:
        item["stages"] = by_object.get(item["id"], [])
    return found


def format_objects(found: list[dict[str, object]], rejects: Sequence[StepResolution] = ()) -> str:
    """``ledger show``'s text: an object a block (a resubmission names the delivery it
    corrects), its stages a line each; then the partition's rejects, resolved or not."""
    if not found:
        return "no data objects recorded"
    blocks = []
    for item in found:
        kind = f"  resubmission of object {item['origin_object_id']}" if item["kind"] == RESUBMISSION else ""
        head = (
            f"object {item['id']}  partition {item['partition_key']}  {item['name']}{kind}  "
            f"{item['size']} bytes  {item['rows']} rows  sha256 {str(item['checksum'])[:16]}...\n"
            f"  kept: {item['raw_path']}  first seen {item['first_seen']:%Y-%m-%d %H:%M:%S} UTC"
        )
        lines = [
            f"  {'stage':<10} {'version':<13} {'status':<10} {'in':>8} {'out':>8} {'rejected':>8}  "
            f"{'finished (UTC)':<19}  run"
        ]
        for s in item["stages"]:  # type: ignore[union-attr]
            lines.append(
                f"  {s['stage']:<10} {s['stage_version']:<13} {s['status']:<10} {s['rows_in']:>8} "
                f"{s['rows_out']:>8} {s['rows_rejected']:>8}  "
                f"{s['finished_at']:%Y-%m-%d %H:%M:%S}  {s['run_id']}"
            )
            for label in ("staged_path", "error_file", "error"):
                if s[label]:
                    lines.append(f"    {label.replace('_', ' ')}: {s[label]}")
        blocks.append("\n".join([head, *lines]))
    if rejects:
        lines = ["rejects of the partition's last run, resolved by resubmissions:"]
        lines += [f"  {r.step:<10} rejected {r.rejected:>8}  resolved {r.resolved:>8}" for r in rejects]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def format_stale(flow: str, found: list[StalePartition]) -> str:
    """``ledger stale``'s text: a partition a line, its stale stages with recorded -> current."""
    if not found:
        return f"{flow}: no stale partitions"
    lines = [f"{flow}: {len(found)} stale partition(s)"]
    for partition in found:
        parts = ", ".join(f"{s.stage} {s.recorded} -> {s.current}" for s in partition.stages)
        lines.append(f"  {partition.partition_key}  {parts}  (last run {partition.stages[0].run_id})")
    return "\n".join(lines)
