"""An accepted upload placed where its flow's extract reads it: the flow's SFTP folder, or
ETL_HOME/import in dev (``FilesResource``), under a temporary name first and renamed once whole
(``FilesResource.upload``), so neither the extract nor the file sensor sees half a file.

A delivery already waiting under that name is not overwritten unless asked (``replace``); then
it is first backed up as extract backs up what it fetches (``deliveries.back_up``: the
partition's ``backup/<flow>/YYYY/MM/``, never over other bytes).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from etl_assets.engine.deliveries import back_up, file_sha256
from etl_assets.model.flow import FlowModel
from etl_assets.resources.files import FilesResource
from etl_assets.resources.folders import FoldersResource


class UploadRefused(Exception):
    """The upload was not placed: the line says why and what to do."""


@dataclass(frozen=True)
class Placed:
    location: str  # where the extract will read it (an SFTP path, or the import folder's file)
    sha256: str
    replaced_backup: Path | None  # where the delivery it replaced was backed up


def place_upload(
    flow: FlowModel,
    path: Path,
    start: datetime,
    files: FilesResource,
    folders: FoldersResource,
    replace: bool = False,
) -> Placed:
    """``path`` (already checked) placed in the flow's folder under its own name."""
    folder = files.folder_of(flow.name, flow.source.folder)
    target = f"{folder.rstrip('/')}/{path.name}"
    waiting = {f.name: f for f in files.list_files(folder)}.get(path.name)
    backup = None
    if waiting is not None:
        if not replace:
            raise UploadRefused(
                f"{path.name}: a delivery of that name is already waiting at {files.location(target)}; "
                "nothing placed (give --replace to back it up and replace it)"
            )
        backup = _back_up_waiting(files, waiting.path, path.name, flow, start, folders)
    files.upload(path, target)
    return Placed(files.location(target), file_sha256(path), backup)


def _back_up_waiting(
    files: FilesResource,
    remote_path: str,
    name: str,
    flow: FlowModel,
    start: datetime,
    folders: FoldersResource,
) -> Path:
    """The delivery about to be replaced, copied to the partition's backup folder."""
    with tempfile.TemporaryDirectory(prefix="etl-upload-") as scratch:
        local = files.download(remote_path, Path(scratch) / name)
        backup = folders.path("backup", flow.name, f"{start:%Y}", f"{start:%m}")
        return back_up(local, file_sha256(local), backup)
