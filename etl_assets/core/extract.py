"""extract: the partition's file, kept as received (sha256, backup), parsed to strings.

File-level faults raise ``SourceFileError`` naming the file and the fault; the raw bytes
that arrived are kept whatever happens.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import polars as pl

from etl_assets.core.flow_model import FlowModel
from etl_assets.core.maps import LINE, SOURCE_FILE
from etl_assets.core.staging import PartitionStage
from etl_assets.resources.files import FilesResource, RemoteFile
from etl_assets.resources.folders import FoldersResource


class SourceFileError(Exception):
    """A fault of the whole file: nothing of it may be loaded."""

    def __init__(self, file: str, fault: str) -> None:
        super().__init__(f"{file}: {fault}")
        self.file = file
        self.fault = fault


@dataclass
class Extracted:
    """What extract produced for one partition."""

    file: str
    remote_path: str
    raw_path: Path
    sha256: str
    size: int
    rows: int
    columns: list[str]
    extra_columns: list[str] = field(default_factory=list)


def source_file_name(flow: FlowModel, start: datetime) -> str:
    """The file name of a partition, e.g. ``companies_20260127.csv``."""
    return flow.source.file.format(start=start)


def previous_sha256(flow: FlowModel, start: datetime, stage: PartitionStage) -> str | None:
    """The checksum recorded by the partition's last extract, if any."""
    recorded = stage.raw_dir / (source_file_name(flow, start) + ".sha256")
    return recorded.read_text().split()[0] if recorded.is_file() else None


def fetch(
    flow: FlowModel, file_name: str, files: FilesResource, stage: PartitionStage, folders: FoldersResource
) -> tuple[Path, str, RemoteFile]:
    """Download the partition's file once it has stopped growing; keep it and back it up."""
    folder = files.folder_of(flow.name, flow.source.folder)
    listed = _find(files, folder, file_name)
    if time.time() - listed.mtime < flow.source.settle_seconds:
        time.sleep(flow.source.settle_seconds)
        again = _find(files, folder, file_name)
        if (again.size, again.mtime) != (listed.size, listed.mtime):
            raise SourceFileError(
                file_name,
                f"still being uploaded (size {listed.size} -> {again.size} bytes within "
                f"{flow.source.settle_seconds:g}s); try again when the upload is complete",
            )
        listed = again
    raw_path = files.download(listed.path, stage.raw_dir / file_name)
    digest = hashlib.sha256(raw_path.read_bytes()).hexdigest()
    raw_path.with_name(file_name + ".sha256").write_text(f"{digest}  {file_name}\n")
    received = raw_path.stat().st_size
    if received != listed.size:
        raise SourceFileError(file_name, f"incomplete download: {received} of {listed.size} bytes")
    when = datetime.fromtimestamp(listed.mtime)
    backup = folders.dir("backup", flow.name, f"{when:%Y}", f"{when:%m}")
    shutil.copy2(raw_path, backup / file_name)
    return raw_path, digest, listed


def _find(files: FilesResource, folder: str, file_name: str) -> RemoteFile:
    for remote in files.list_files(folder):
        if remote.name == file_name:
            return remote
    raise SourceFileError(file_name, f"missing: no such file in {folder}")


def decode(data: bytes, encoding: str, file_name: str) -> str:
    """Bytes to text: UTF-8 with or without BOM, or cp1252; the fault names the line."""
    if not data.strip():
        raise SourceFileError(file_name, "empty file")
    codec = "utf-8-sig" if encoding == "utf8" else "cp1252"
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        hint = " (is it cp1252? set source.encoding)" if encoding == "utf8" else ""
        raise SourceFileError(
            file_name,
            f"undecodable bytes at line {line} (byte {exc.start}: {data[exc.start : exc.start + 1]!r} "
            f"is not {encoding}){hint}",
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def parse(text: str, flow: FlowModel, file_name: str) -> pl.DataFrame:
    """Every column as a string, header names trimmed, each row with its source line."""
    try:
        frame = pl.read_csv(
            io.BytesIO(text.encode("utf-8")),
            separator=flow.source.delimiter,
            infer_schema=False,
            quote_char='"',
            has_header=True,
        )
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError) as exc:
        raise SourceFileError(file_name, f"malformed CSV: {str(exc).splitlines()[0]}") from None
    frame = frame.rename({c: c.strip() for c in frame.columns})
    missing = [c for c in flow.required_columns if c not in frame.columns]
    if missing:
        raise SourceFileError(
            file_name,
            f"missing required column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(header has {', '.join(frame.columns)})",
        )
    # A record starts on the line after the previous record's last line: count the newlines
    # quoted inside each record (header is line 1).
    embedded = pl.sum_horizontal(pl.col(c).str.count_matches("\n").fill_null(0) for c in frame.columns)
    lines = (1 + embedded).cum_sum() - (1 + embedded) + 2
    return frame.with_columns(lines.cast(pl.Int64).alias(LINE), pl.lit(file_name).alias(SOURCE_FILE))


def extract_partition(
    flow: FlowModel, partition_key: str, start: datetime, files: FilesResource, folders: FoldersResource
) -> Extracted:
    """Fetch, keep, decode and parse one partition's file into ``extract.parquet``."""
    stage = PartitionStage(flow.name, partition_key, folders)
    file_name = source_file_name(flow, start)
    raw_path, digest, listed = fetch(flow, file_name, files, stage, folders)
    frame = parse(decode(raw_path.read_bytes(), flow.source.encoding, file_name), flow, file_name)
    frame.write_parquet(stage.file("extract.parquet"))
    mapped = {flow.source_column(n) for n in flow.map}
    source_columns = [c for c in frame.columns if c not in (LINE, SOURCE_FILE)]
    return Extracted(
        file=file_name,
        remote_path=listed.path,
        raw_path=raw_path,
        sha256=digest,
        size=listed.size,
        rows=frame.height,
        columns=source_columns,
        extra_columns=[c for c in source_columns if c not in mapped],
    )
