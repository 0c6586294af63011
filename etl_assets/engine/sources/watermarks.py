"""A flow's watermark: how far the committed loads of a table have read (``etl_watermarks``).

The extract reads from the watermark less the overlap and stages the greatest value it read
(``watermark.json`` beside ``extract.parquet``); the load writes it inside its own transaction,
so the watermark moves only when the rows it stands for are committed, and never backwards.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa

from etl_assets.engine.ledger.record import ledger_now
from etl_assets.engine.ledger.tables import ensure_ledger, has_ledger, watermarks
from etl_assets.engine.load.sql import dialect_insert
from etl_assets.engine.staging import PartitionStage

STAGED = "watermark.json"
Kind = Literal["datetime", "date", "number", "text"]


@dataclass(frozen=True)
class Watermark:
    """The greatest value of ``column`` read, as text, and how to read it back."""

    column: str
    value: str
    kind: Kind

    @classmethod
    def of(cls, column: str, value: Any) -> Watermark:
        if isinstance(value, datetime):
            return cls(column, value.isoformat(sep=" "), "datetime")
        if isinstance(value, date):
            return cls(column, value.isoformat(), "date")
        if isinstance(value, (int, float)):
            return cls(column, repr(value), "number")
        return cls(column, str(value), "text")

    @property
    def typed(self) -> Any:
        if self.kind == "datetime":
            return datetime.fromisoformat(self.value)
        if self.kind == "date":
            return date.fromisoformat(self.value)
        if self.kind == "number":
            return float(self.value) if any(c in self.value for c in ".eE") else int(self.value)
        return self.value

    def minus(self, overlap: float) -> Any:
        """Where the next read starts: ``overlap`` seconds before (a number: that many units; a
        text column has no overlap)."""
        value = self.typed
        if self.kind in ("datetime", "date"):
            return value - timedelta(seconds=overlap)
        return value - overlap if self.kind == "number" else value


def read_watermark(engine: sa.Engine, flow: str) -> Watermark | None:
    """The flow's committed watermark; None before its first load."""
    with engine.connect() as conn:
        if not has_ledger(conn):
            return None
        row = conn.execute(
            sa.select(watermarks.c.column_name, watermarks.c.value, watermarks.c.kind).where(
                watermarks.c.flow == flow
            )
        ).first()
    return Watermark(row.column_name, row.value, row.kind) if row else None


def stage_watermark(stage: PartitionStage, watermark: Watermark | None) -> None:
    """What the load commits: the greatest value this extract read (none: nothing to move)."""
    path = stage.file(STAGED)
    if watermark is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(json.dumps(asdict(watermark)))


def commit_watermark(
    conn: sa.Connection, flow: str, stage: PartitionStage, key: str, object_id: int | None
) -> Watermark | None:
    """In the load's transaction: the staged watermark, unless the flow's is already past it."""
    path = stage.file(STAGED)
    if not path.exists():
        return None
    staged = Watermark(**json.loads(path.read_text()))
    ensure_ledger(conn)
    values = {
        "column_name": staged.column,
        "value": staged.value,
        "kind": staged.kind,
        "partition_key": key,
        "object_id": object_id,
        "committed_at": ledger_now(),
    }
    # a first watermark, unless another load of the flow wrote one at the same time
    first = conn.execute(
        dialect_insert(conn)(watermarks)
        .values(flow=flow, **values)
        .on_conflict_do_nothing(index_elements=["flow"])
    )
    if first.rowcount == 1:
        return staged
    # the row locked: two loads of the flow side by side move it one after the other
    current = conn.execute(
        sa.select(watermarks.c.column_name, watermarks.c.value, watermarks.c.kind)
        .where(watermarks.c.flow == flow)
        .with_for_update()
    ).one()
    before = Watermark(current.column_name, current.value, current.kind)
    if before.column == staged.column and before.kind == staged.kind and before.typed >= staged.typed:
        return before
    conn.execute(sa.update(watermarks).where(watermarks.c.flow == flow).values(values))
    return staged
