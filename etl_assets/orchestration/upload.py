"""``etl-assets upload``: Flask Data Pipes' upload stage. A file is checked
(``engine.upload.check``) and, accepted, placed where its flow's extract reads it
(``engine.upload.place``); a refused one is placed nowhere.

Here, beside the engine's checks: the partition must be one of the flow's partitions (what its
partitions definition holds), which only the Dagster layer knows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from etl_assets.engine.upload import Placed, Problem, UploadCheck, check_upload, place_upload
from etl_assets.engine.upload.check import partition_start
from etl_assets.model.flow import FlowModel
from etl_assets.orchestration.partitions import partitions_def
from etl_assets.resources import FilesResource, FoldersResource


@dataclass(frozen=True)
class Uploaded:
    check: UploadCheck
    placed: Placed | None  # None: refused, or a dry run


def upload(
    flow: FlowModel,
    path: Path,
    partition_key: str | None,
    files: FilesResource,
    folders: FoldersResource,
    timezone: str,
    replace: bool = False,
    dry_run: bool = False,
) -> Uploaded:
    """The file checked, then (accepted, not a dry run) placed; ``UploadRefused`` when a
    delivery of that name waits already and ``replace`` is not given."""
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
    # ledger: record the upload here (flow, partition key, placed.location, placed.sha256,
    # check.rows, check.rejected, placed.replaced_backup) once engine/ledger/ exists
    return Uploaded(check, placed)
