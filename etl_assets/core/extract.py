"""extract: the partition's file, kept as received (sha256, backup), parsed to strings.

File-level faults raise ``SourceFileError`` naming the file and the fault; the raw bytes
that arrived are kept whatever happens.
"""

from __future__ import annotations

import codecs
import hashlib
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import NoReturn

import polars as pl

from etl_assets.core.flow_model import FlowModel
from etl_assets.core.maps import LINE, SOURCE_FILE
from etl_assets.core.staging import PartitionStage
from etl_assets.resources.files import FilesResource, RemoteFile
from etl_assets.resources.folders import FoldersResource

VALIDATE_CHUNK = 16 << 20
MTIME_RESOLUTION = 1.0


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


def file_sha256(path: Path) -> str:
    """sha256 of a file read in 1 MB blocks (a large file is never held twice)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    # SFTP gives whole seconds: a file touched 1.9 s ago may show as 1 s, hence the margin
    if time.time() - listed.mtime < flow.source.settle_seconds + MTIME_RESOLUTION:
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
    digest = file_sha256(raw_path)
    raw_path.with_name(file_name + ".sha256").write_text(f"{digest}  {file_name}\n")
    received = raw_path.stat().st_size
    if received != listed.size:
        raise SourceFileError(
            file_name, f"still being uploaded (size {listed.size} -> {received} bytes during the download)"
        )
    when = datetime.fromtimestamp(listed.mtime)
    backup = folders.dir("backup", flow.name, f"{when:%Y}", f"{when:%m}")
    shutil.copy2(raw_path, backup / file_name)
    return raw_path, digest, listed


def _find(files: FilesResource, folder: str, file_name: str) -> RemoteFile:
    for remote in files.list_files(folder):
        if remote.name == file_name:
            return remote
    raise SourceFileError(file_name, f"missing: no such file in {folder}")


def check_utf8(blocks: Iterable[bytes], file_name: str) -> None:
    """Fail with the line of the first byte that is not UTF-8, or when there is no content;
    reads block by block, so a large file is never held in memory for this."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = lines = 0
    content = False
    for block in blocks:
        pending = len(decoder.getstate()[0])  # bytes of a character cut by the last block
        try:
            decoder.decode(block)
        except UnicodeDecodeError as exc:
            local = max(exc.start - pending, 0)
            _undecodable(
                file_name,
                "utf8",
                offset + local,
                lines + block[:local].count(b"\n") + 1,
                block[local : local + 1],
            )
        content = content or bool(block.strip().lstrip(codecs.BOM_UTF8))
        offset += len(block)
        lines += block.count(b"\n")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        _undecodable(file_name, "utf8", offset, lines + 1, b"(a character cut at the end of the file)")
    if not content:
        raise SourceFileError(file_name, "empty file")


def decode(data: bytes, encoding: str, file_name: str) -> bytes:
    """The file as UTF-8 bytes without BOM, checked; the fault names the line.

    UTF-8 input is only validated (in blocks, no second copy); cp1252 is transcoded.
    """
    if encoding == "utf8":
        check_utf8((data[i : i + VALIDATE_CHUNK] for i in range(0, len(data), VALIDATE_CHUNK)), file_name)
        return data[3:] if data.startswith(codecs.BOM_UTF8) else data
    if not data.strip():
        raise SourceFileError(file_name, "empty file")
    try:
        return data.decode("cp1252").encode("utf-8")
    except UnicodeDecodeError as exc:
        _undecodable(
            file_name,
            encoding,
            exc.start,
            data[: exc.start].count(b"\n") + 1,
            data[exc.start : exc.start + 1],
        )


def _undecodable(file_name: str, encoding: str, offset: int, line: int, found: bytes) -> NoReturn:
    hint = " (is it cp1252? set source.encoding)" if encoding == "utf8" else ""
    raise SourceFileError(
        file_name, f"undecodable bytes at line {line} (byte {offset}: {found!r} is not {encoding}){hint}"
    )


def parse(data: bytes | str | Path, flow: FlowModel, file_name: str) -> pl.DataFrame:
    """Every column as a string, header names trimmed, each row with its source line."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        frame = pl.read_csv(
            raw,
            separator=flow.source.delimiter,
            infer_schema=False,
            quote_char='"',
            has_header=True,
        )
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError) as exc:
        raise SourceFileError(file_name, f"malformed CSV: {str(exc).splitlines()[0]}") from None
    frame = frame.rename({c: c.strip().strip("\r") for c in frame.columns})
    # CRLF inside quoted fields becomes LF, as in a file written with LF line ends
    frame = frame.with_columns(pl.all().str.replace_all("\r\n", "\n", literal=True))
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
    if flow.source.encoding == "utf8":
        # Polars reads the file itself (and drops a BOM): no copy of it in Python
        with raw_path.open("rb") as handle:
            check_utf8(iter(lambda: handle.read(VALIDATE_CHUNK), b""), file_name)
        frame = parse(raw_path, flow, file_name)
    else:
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
