"""Housekeeping: processed source files leave the SFTP folder (only once backed up), and
files past their folder's retention leave ETL_HOME. A file it cannot account for (not
laid out by the flows) is never removed, only reported; nor is a delivery kept under
``data/`` whose bytes are not under ``backup/``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from etl_assets.engine.deliveries import backups_of, delivered_name, file_sha256
from etl_assets.engine.partition_keys import partition_key_for_file
from etl_assets.engine.resubmit.submission import is_resubmission_errors
from etl_assets.engine.staging import PartitionStage, partition_dir_name
from etl_assets.model.flow import STEPS, FlowModel
from etl_assets.resources.files import FilesResource
from etl_assets.resources.folders import FoldersResource

DAY = 86_400


@dataclass
class HousekeepingReport:
    """What housekeeping did and what it left alone, for the run's metadata."""

    archived: list[str] = field(default_factory=list)
    deleted_sources: list[str] = field(default_factory=list)
    not_yet_processed: list[str] = field(default_factory=list)
    removed: dict[str, list[str]] = field(default_factory=dict)
    unaccounted: list[str] = field(default_factory=list)
    not_backed_up: list[str] = field(default_factory=list)  # expired deliveries kept: no backup
    refused_names: list[str] = field(default_factory=list)  # file names never used (names.py)
    deleted_runs: list[str] = field(default_factory=list)  # past their flow's retention
    retired_partitions: list[str] = field(default_factory=list)  # "<flow> <key>": files removed

    def summary(self) -> dict[str, int]:
        return {
            "archived_sources": len(self.archived),
            "deleted_sources": len(self.deleted_sources),
            "sources_not_yet_processed": len(self.not_yet_processed),
            **{f"removed_{folder}": len(paths) for folder, paths in sorted(self.removed.items())},
            "unaccounted_files_left": len(self.unaccounted),
            "deliveries_kept_not_backed_up": len(self.not_backed_up),
            "refused_file_names": len(self.refused_names),
            "deleted_runs": len(self.deleted_runs),
            "retired_partitions": len(self.retired_partitions),
        }


def backed_up(
    flow: FlowModel, file_name: str, stage: PartitionStage, folders: FoldersResource, size: int
) -> bool:
    """Loaded, kept under data/ with its sha256, and the same bytes under backup/."""
    raw = stage.raw_dir / file_name
    recorded = raw.with_name(file_name + ".sha256")
    if not (raw.is_file() and recorded.is_file() and stage.file("load.parquet").is_file()):
        return False
    digest = recorded.read_text().split()[0]
    if raw.stat().st_size != size:
        return False  # the remote file changed since it was loaded: not processed
    return in_backup(flow, file_name, digest, folders)


def in_backup(flow: FlowModel, file_name: str, digest: str, folders: FoldersResource) -> bool:
    """Are these bytes of the flow's file among its backups (any month, any delivery)?"""
    copies = backups_of(folders.path("backup", flow.name), file_name)
    return any(file_sha256(copy) == digest for copy in copies)


def _delivery(relative: Path, flows: dict[str, FlowModel]) -> tuple[FlowModel, str] | None:
    """``data/<flow>/<partition>/raw/[deliveries/]<file>``: the flow and the file's delivered
    name; None for any other staged file."""
    parts = relative.parts
    if len(parts) not in (4, 5) or parts[2] != "raw" or (len(parts) == 5 and parts[3] != "deliveries"):
        return None
    name = delivered_name(relative.name) if len(parts) == 5 else relative.name
    flow = flows.get(parts[0])
    if flow is None or partition_key_for_file(flow, name) is None:
        return None
    return flow, name


def tidy_sources(
    flows: list[FlowModel],
    files: FilesResource,
    folders: FoldersResource,
    mode: Literal["move", "delete", "keep"],
    report: HousekeepingReport,
) -> None:
    """Move (or delete) every source file whose partition was loaded and backed up."""
    if mode == "keep":
        return
    for flow in flows:
        if flow.source.kind != "file":  # nothing arrives in a folder for a table or a generator
            continue
        folder = files.folder_of(flow.name, flow.source.folder)
        listing = files.list_files(folder)
        # flows may share a folder: each refused name once
        report.refused_names += [r for r in listing.refused if r not in report.refused_names]
        for remote in listing:
            key = partition_key_for_file(flow, remote.name)
            if key is None:
                continue
            stage = PartitionStage(flow.name, key, folders)
            if not backed_up(flow, remote.name, stage, folders, remote.size):
                report.not_yet_processed.append(remote.path)
            elif mode == "move":
                report.archived.append(files.archive(remote, folder))
            else:
                files.remove(remote.path)
                report.deleted_sources.append(remote.path)


def _accounted(folder: str, relative: Path, flows: dict[str, FlowModel]) -> bool:
    """Is this file one the flows lay out under ``folder``?"""
    parts = relative.parts
    if folder == "logs" and parts[0] == "unsent":
        return False  # e-mails waiting to be sent: never removed
    if folder == "logs":
        return (
            (parts[0] == "outbox" and len(parts) == 2 and relative.suffix == ".eml")
            or (parts[0] == "mail" and len(parts) == 3 and relative.suffix == ".csv")
            or (
                parts[0] == "batches"
                and len(parts) == 3
                and (relative.suffix == ".json" or relative.name == ".sent")
            )
        )
    if len(parts) < 3 or parts[0] not in flows:
        return False
    flow = flows[parts[0]]
    if folder == "backup":
        return len(parts) == 4 and partition_key_for_file(flow, delivered_name(parts[3])) is not None
    if folder == "errors":
        named = relative.stem in (*STEPS, "parked") or is_resubmission_errors(relative.name)
        return len(parts) == 3 and named and relative.suffix == ".csv"
    return folder == "data"  # data/<flow>/<partition>/...: staged by the steps


def remove_expired(
    flows: list[FlowModel],
    folders: FoldersResource,
    retention_days: dict[str, int],
    report: HousekeepingReport,
    now: float | None = None,
) -> None:
    """Delete accounted files older than their folder's retention; report the others."""
    now = now or time.time()
    by_name = {flow.name: flow for flow in flows}
    for folder, days in sorted(retention_days.items()):
        root = folders.path(folder)  # type: ignore[arg-type]
        cutoff = now - days * DAY
        removed = report.removed.setdefault(folder, [])
        for dirpath, _dirnames, filenames in os.walk(root):
            for name in filenames:
                path = Path(dirpath) / name
                if path.stat().st_mtime >= cutoff:
                    continue
                relative = path.relative_to(root)
                if folder == "data" and not _backed_up_delivery(path, relative, by_name, folders):
                    report.not_backed_up.append(str(path))
                elif _accounted(folder, relative, by_name):
                    path.unlink()
                    removed.append(str(path))
                elif relative.parts[0] != "unsent":
                    report.unaccounted.append(str(path))
        _remove_empty_dirs(root)


def _backed_up_delivery(
    path: Path, relative: Path, flows: dict[str, FlowModel], folders: FoldersResource
) -> bool:
    """A file of ``data/`` that is not a delivery, or a delivery whose bytes are in backup/."""
    delivery = _delivery(relative, flows)
    if delivery is None:
        return True
    flow, name = delivery
    return in_backup(flow, name, file_sha256(path), folders)


def retire_partitions(
    flow: FlowModel, keys: list[str], folders: FoldersResource, report: HousekeepingReport
) -> None:
    """The staged data and error files of partitions whose last run left the instance (the
    flow's ``retention``); a delivery whose bytes are not under ``backup/`` stays, counted."""
    by_name = {flow.name: flow}
    for key in keys:
        for folder in ("data", "errors"):
            root = folders.path(folder, flow.name, partition_dir_name(key))  # type: ignore[arg-type]
            for path in sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []:
                relative = path.relative_to(folders.path(folder))  # type: ignore[arg-type]
                if folder == "data" and not _backed_up_delivery(path, relative, by_name, folders):
                    report.not_backed_up.append(str(path))
                else:
                    path.unlink()
            if root.is_dir():
                _remove_empty_dirs(root.parent)
        report.retired_partitions.append(f"{flow.name} {key}")


def _remove_empty_dirs(root: Path) -> None:
    for dirpath, _dirnames, _filenames in os.walk(root, topdown=False):
        path = Path(dirpath)
        if path != root and not any(path.iterdir()):
            path.rmdir()
