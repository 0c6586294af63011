"""``etl-assets upload``: Flask Data Pipes' upload stage. A file is checked
(``engine.upload.check``) and, accepted, placed where its flow's extract reads it
(``engine.upload.place``); a refused one is placed nowhere.

Here, beside the engine's checks: the partition must be one of the flow's partitions (what its
partitions definition holds), which only the Dagster layer knows. A placed file is recorded in
the ledger of the target database (``engine.upload.record``: best effort, the reason told).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from etl_assets.engine.ledger.record import ledger_now
from etl_assets.engine.upload import Placed, Problem, UploadCheck, check_upload, place_upload
from etl_assets.engine.upload.check import partition_start
from etl_assets.engine.upload.record import UploadRecorded, record_upload
from etl_assets.model.flow import FlowModel
from etl_assets.orchestration.partitions import partitions_def
from etl_assets.resources import DatabaseResource, FilesResource, FoldersResource


@dataclass(frozen=True)
class Uploaded:
    check: UploadCheck
    placed: Placed | None  # None: refused, or a dry run
    recorded: UploadRecorded | None = None  # in the ledger (None: not placed, or no database given)


def upload(
    flow: FlowModel,
    path: Path,
    partition_key: str | None,
    files: FilesResource,
    folders: FoldersResource,
    timezone: str,
    replace: bool = False,
    dry_run: bool = False,
    database: DatabaseResource | None = None,
) -> Uploaded:
    """The file checked, then (accepted, not a dry run) placed and recorded in the ledger of
    ``database``; ``UploadRefused`` when a delivery of that name waits already and ``replace``
    is not given."""
    started = ledger_now()
    check = check_upload(flow, path, partition_key)
    key = check.partition_key
    partitions = partitions_def(flow, timezone)
    if key is not None and not partitions.has_partition_key(key):
        first = partitions.get_first_partition_key()
        check.problems.insert(
            0, Problem(path.name, f"partition {key} is outside {flow.name}'s partitions (first {first})")
        )
    if not check.accepted or dry_run or key is None:
        return Uploaded(check, None)
    start = partition_start(flow, key)
    assert start is not None  # the key came from the name, or was checked against it
    placed = place_upload(flow, path, start, files, folders, replace=replace)
    if database is None:
        return Uploaded(check, placed)
    return Uploaded(check, placed, record_upload(flow, path, check, placed, database.engine, started))
