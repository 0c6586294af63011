"""A flow's load mode (``target.mode``) chosen: upsert (upsert.py), snapshot (the upsert,
then snapshot.py), append (append.py) or history (history.py). Every mode answers with the
same response frame (inserted / updated / unchanged / rejected a line) and tallies the rows
it deleted beside it."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from etl_assets.engine.load.append import PartitionAppend
from etl_assets.engine.load.history import PartitionHistory
from etl_assets.engine.load.response import Outcome
from etl_assets.engine.load.snapshot import apply_snapshot, deletion_refusal
from etl_assets.engine.load.upsert import PartitionUpsert, load_stage
from etl_assets.engine.staging import StagedWriter, count_rows
from etl_assets.model.flow import FlowModel

DELETED = "deleted"


def load_delivery(
    conn: sa.Connection,
    flow: FlowModel,
    good_path: Path,
    response: StagedWriter,
    *,
    partition: str,
    bulk: bool = True,
    object_id: int | None = None,
    rejected_before: int = 0,
) -> Outcome:
    """One partition's delivery loaded in the caller's transaction, the way its mode says.
    ``rejected_before``: the rows transform rejected, which count against ``warn_limit``
    before a snapshot may delete."""
    rows = count_rows(good_path)
    mode = flow.target.mode
    options = {"expected_rows": rows, "bulk": bulk, "object_id": object_id}
    if mode == "append":
        load: PartitionUpsert = PartitionAppend(conn, flow, partition=partition, **options)
    elif mode == "history":
        load = PartitionHistory(conn, flow, **options)
    else:
        load = PartitionUpsert(conn, flow, **options)
    outcome = load_stage(conn, flow, good_path, response, load=load)
    if mode == "append":
        outcome.actions[DELETED] = load.deleted  # type: ignore[attr-defined]
    if mode == "snapshot":
        refusal = deletion_refusal(flow, rejected_before + outcome.rejected.height, rows)
        done = apply_snapshot(conn, flow, good_path, refusal, load.now)
        outcome.actions[DELETED] = done.deleted
        outcome.notes.update(done.metadata())
    return outcome
