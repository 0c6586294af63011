"""One e-mail for a batch of partition runs (a backfill, or ``etl-assets backfill``).

A partition is the unit of work: each partition of a batch runs alone and lands or fails on
its own. Instead of an e-mail each, a run of a batch leaves its partition's line in
``ETL_HOME/logs/batches/<batch>/``; once the batch is over, one e-mail goes out with a line
per partition (rows in, loaded, rejected, status) and every error file attached. Its subject
says how many partitions failed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import polars as pl

from etl_assets.engine.run_email import attach, partition_label, send_or_keep
from etl_assets.engine.staging import PartitionStage, count_rows, partition_dir_name
from etl_assets.resources.files import partial_name
from etl_assets.resources.folders import FoldersResource
from etl_assets.resources.mailer import MailerResource

Status = Literal["ok", "rejected rows", "failed"]
SENT = ".sent"


@dataclass
class PartitionLine:
    """What one partition of a batch did."""

    flow: str
    partition: str
    status: Status
    rows_in: int = 0
    loaded: int = 0
    rejected: int = 0
    error_files: list[tuple[str, str]] = field(default_factory=list)  # (step, path)
    failure: str | None = None
    news: str | None = None  # what a new delivery of the partition changed

    def text(self) -> str:
        counts = f"{self.rows_in} rows in, {self.loaded} loaded, {self.rejected} rejected"
        status = f"failed: {self.failure}" if self.status == "failed" else self.status
        files = ", ".join(Path(p).name for _, p in self.error_files)
        return (
            f"{self.partition}: {status}; {counts}"
            + (f"; {self.news}" if self.news else "")
            + (f"; error files: {files}" if files else "")
        )


def partition_line(
    flow: str,
    partition: str,
    folders: FoldersResource,
    error_files: Sequence[tuple[str, str, Path]],
    rejected: int,
    failure: str | None,
    news: str | None = None,
) -> PartitionLine:
    """The partition's line, from its staged files (the file's rows, the load's answer)."""
    stage = PartitionStage(flow, partition, folders)
    extracted, answer = stage.file("extract.parquet"), stage.file("load.parquet")
    loaded = (
        pl.scan_parquet(answer).filter(pl.col("action") != "rejected").select(pl.len()).collect().item()
        if answer.exists()
        else 0
    )
    status: Status = "failed" if failure else "rejected rows" if rejected else "ok"
    return PartitionLine(
        flow=flow,
        partition=partition,
        status=status,
        rows_in=count_rows(extracted) if extracted.exists() else 0,
        loaded=loaded,
        rejected=rejected,
        error_files=[(step, str(path)) for _, step, path in error_files],
        failure=failure,
        news=news,
    )


def batch_dir(folders: FoldersResource, batch: str) -> Path:
    return folders.dir("logs", "batches", batch)


def record_line(folders: FoldersResource, batch: str, line: PartitionLine) -> None:
    """Leave the partition's line for the batch's e-mail (a re-run of it replaces it)."""
    path = batch_dir(folders, batch) / f"{line.flow}_{partition_dir_name(line.partition)}.json"
    partial = path.with_name(partial_name(path.name))
    partial.write_text(json.dumps(asdict(line)), encoding="utf-8")
    partial.replace(path)


def batch_lines(folders: FoldersResource, batch: str) -> list[PartitionLine]:
    lines = [
        PartitionLine(**{**data, "error_files": [tuple(f) for f in data["error_files"]]})
        for data in (
            json.loads(p.read_text(encoding="utf-8")) for p in batch_dir(folders, batch).glob("*.json")
        )
    ]
    return sorted(lines, key=lambda line: (line.flow, line.partition))


def already_sent(folders: FoldersResource, batch: str) -> bool:
    return folders.path("logs", "batches", batch, SENT).exists()


def batch_subject(env: str, lines: Sequence[PartitionLine]) -> str:
    flows = ", ".join(sorted({line.flow for line in lines}))
    label = partition_label(sorted(line.partition for line in lines))
    failed = [line for line in lines if line.status == "failed"]
    rejected = sum(line.rejected for line in lines)
    head = f"[etl_assets][{env}] {flows} {label}"
    if failed:
        first = failed[0]
        return (
            f"{head} failed: {len(failed)} of {len(lines)} partitions "
            f"({first.partition}: {(first.failure or '').splitlines()[0][:150]}); {rejected} rows rejected"
        )
    return f"{head}: {rejected} rows rejected in {len(lines)} partitions, none failed"


def send_batch_email(
    mailer: MailerResource,
    folders: FoldersResource,
    batch: str,
    extra_lines: Iterable[PartitionLine] = (),
    what: str = "backfill",
) -> str | None:
    """The batch's one e-mail, if a partition rejected rows, failed or loaded a new delivery;
    sent once. Partitions
    that left no line (a run that died) come in ``extra_lines``. Returns where it went."""
    if already_sent(folders, batch):
        return None
    recorded = batch_lines(folders, batch)
    have = {(line.flow, line.partition) for line in recorded}
    lines = sorted(
        [*recorded, *(x for x in extra_lines if (x.flow, x.partition) not in have)],
        key=lambda line: (line.flow, line.partition),
    )
    where = None
    if any(line.status != "ok" or line.news for line in lines):
        files = [(line.flow, line.partition, step, Path(p)) for line in lines for step, p in line.error_files]
        attachments = attach(folders, f"batch_{batch}", [f for f in files if f[3].exists()])
        body = "\n".join(
            [
                f"{what.capitalize()} {batch}: {len(lines)} partitions, a line each.",
                "",
                *(f"  {line.flow} {line.text()}" for line in lines),
                "",
                "Attached error files (source columns as received, then error_step, error_field,",
                "error_reason, source_file, source_line):" if attachments else "No error file.",
                *(f"  {a.name}" for a in attachments),
            ]
        )
        message = mailer.build_message(batch_subject(mailer.env, lines), body, attachments)
        where = send_or_keep(mailer, folders, message, f"batch_{batch[:8]}")
    marker = batch_dir(folders, batch) / SENT
    marker.write_text(where or "nothing to report\n", encoding="utf-8")
    return where
