"""An upload placed, in the ledger: its data object (flow, partition, checksum, name, size,
rows) and a stage row ``upload`` (run ``upload:<UTC time>``: there is no Dagster run), so
``etl-assets ledger show`` lists it before its run; the run that extracts these bytes finds the
same object (the same checksum) and its stage rows join it.

Best effort: the file is placed already when the ledger is written, and a target database that
does not answer does not undo that; the caller is told why (a line to print) and the run that
extracts the file records its object anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

from etl_assets.engine.ledger.record import Delivery, Ledger, StageRecord, ledger_now
from etl_assets.engine.upload.check import UploadCheck
from etl_assets.engine.upload.place import Placed
from etl_assets.model.flow import FlowModel
from etl_assets.resources.errors import ConnectorError

UPLOAD = "upload"  # the stage row's stage, and its run's prefix


@dataclass(frozen=True)
class UploadRecorded:
    """The object's id, or (None) why the ledger could not be written now."""

    object_id: int | None
    warning: str | None = None


def record_upload(
    flow: FlowModel,
    path: Path,
    check: UploadCheck,
    placed: Placed,
    engine: Callable[[], sa.Engine],
    started: datetime,
) -> UploadRecorded:
    """The placed file's object and its ``upload`` row (rows in the file; the rows the map
    would reject), in one transaction of the target database."""
    key = check.partition_key
    assert key is not None  # placed: its partition is known
    now = ledger_now()
    ledger = Ledger(flow, f"{UPLOAD}:{now:%Y-%m-%dT%H:%M:%S.%f}", engine)
    delivery = Delivery(placed.sha256, path.name, path.stat().st_size, check.rows, placed.location)
    record = StageRecord(UPLOAD, check.rows, check.rows - check.rejected, check.rejected, started)
    try:
        return UploadRecorded(ledger.uploaded(key, delivery, record))
    except (sa.exc.SQLAlchemyError, ConnectorError) as exc:  # psycopg names host and port, no password
        first = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
        return UploadRecorded(
            None,
            f"placed, but not in the ledger: the target database refused it ({first}); "
            f"the run of {flow.name} {key} records the delivery when it extracts it",
        )
