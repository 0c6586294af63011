"""The snapshot load mode: the delivery is the whole truth for its scope (the whole table: a
daily full export), so a target row whose key is missing from it is gone at the source.

After the upsert and in its transaction, such rows are marked deleted (``etl_deleted_at``)
or, with ``hard_delete``, deleted; a marked row whose key comes back is cleared. The deletion
is refused (the rows still load) when the delivery's rejected rows are above ``warn_limit``
or it brought no row: a delivery cut short must not empty the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl
import sqlalchemy as sa

from etl_assets.engine.load.sql import stage_rows
from etl_assets.engine.tables import ETL_DELETED_AT, ensure_table
from etl_assets.model.flow import FlowModel


@dataclass(frozen=True)
class SnapshotResult:
    """What the snapshot did beside the upsert: for the load's metadata and the e-mail."""

    deleted: int
    restored: int
    skipped: str | None  # why no row was deleted, when the deletion was refused

    def metadata(self) -> dict[str, object]:
        shown: dict[str, object] = {"snapshot_deleted": self.deleted, "snapshot_restored": self.restored}
        if self.skipped:
            shown["snapshot_deletion_skipped"] = self.skipped
        return shown


def snapshot_news(notes: dict[str, object]) -> str | None:
    """One line for the run's e-mail when the snapshot deleted, restored or refused to delete."""
    if "snapshot_deleted" not in notes:
        return None
    deleted, restored = notes["snapshot_deleted"], notes["snapshot_restored"]
    skipped = notes.get("snapshot_deletion_skipped")
    if not (deleted or restored or skipped):
        return None
    if skipped:
        return f"snapshot whose deletions were skipped ({skipped}), {restored} keys back"
    return f"snapshot of the whole table: {deleted} rows whose key is missing deleted, {restored} keys back"


def deletion_refusal(flow: FlowModel, rejected: int, good_rows: int) -> str | None:
    """Why this delivery may not delete (None: it may), from the partition's rejected rows
    (transform's and load's) against ``warn_limit``, as the catcher judges them."""
    if good_rows == 0:
        return "the delivery brought no row: nothing deleted"
    if flow.warn_limit is not None and rejected > flow.warn_limit:
        return f"{rejected} rows rejected, above warn_limit {flow.warn_limit}: nothing deleted"
    return None


def apply_snapshot(
    conn: sa.Connection, flow: FlowModel, good_path: Path, refusal: str | None, now: datetime
) -> SnapshotResult:
    """Clear the marks of keys that came back, then delete or mark the keys the delivery
    lacks (unless ``refusal``), in the caller's transaction. Keys the load rejected as
    unfit still count as delivered (they are in ``transform.parquet``)."""
    table = ensure_table(conn, flow)
    key = flow.target.key
    keys = pl.read_parquet(good_path, columns=[key])
    staging = stage_rows(conn, keys, table, [key])
    try:
        delivered = sa.select(staging.c[key]).where(staging.c[key] == table.c[key]).exists()
        restored = 0
        if not flow.target.hard_delete:
            restore = sa.update(table).where(table.c[ETL_DELETED_AT].is_not(None), delivered)
            restored = conn.execute(restore.values({ETL_DELETED_AT: None})).rowcount
        if refusal is not None:
            return SnapshotResult(0, restored, refusal)
        if flow.target.hard_delete:
            deleted = conn.execute(sa.delete(table).where(~delivered)).rowcount
        else:
            mark = sa.update(table).where(table.c[ETL_DELETED_AT].is_(None), ~delivered)
            deleted = conn.execute(mark.values({ETL_DELETED_AT: now})).rowcount
        return SnapshotResult(deleted, restored, None)
    finally:
        staging.drop(conn)
