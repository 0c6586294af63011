"""extract: the partition's file, kept as received (sha256, backup), parsed to strings.

File-level faults raise ``SourceFileError`` naming the file and the fault; the raw bytes
that arrived are kept whatever happens.
"""

from __future__ import annotations

import codecs
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import BinaryIO, NoReturn
from uuid import uuid4

import polars as pl

from etl_assets.engine.catcher import ERROR_COLUMNS
from etl_assets.engine.columns import ERROR_FIELD, ERROR_REASON, LINE, SOURCE_FILE
from etl_assets.engine.deliveries import back_up, file_sha256, keep_current, keep_delivery
from etl_assets.engine.partition_keys import source_file_name
from etl_assets.engine.record_blocks import record_blocks, record_starts, with_lines
from etl_assets.engine.reuse import extract_tags, same_delivery, staged_columns
from etl_assets.engine.staging import (
    MADE_TAG,
    NUL_FREE_TAG,
    SHA256_TAG,
    PartitionStage,
    StagedWriter,
    count_rows,
    prefetched,
)
from etl_assets.model.flow import FlowModel
from etl_assets.model.versions import stage_version
from etl_assets.resources.files import FilesResource, RemoteFile
from etl_assets.resources.folders import FoldersResource

MTIME_RESOLUTION = 1.0
RESERVED_COLUMNS = {LINE, SOURCE_FILE, ERROR_FIELD, ERROR_REASON, *ERROR_COLUMNS}  # no source column's name


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
    reused: bool = False  # the same bytes as the staged extract's, by the same version: not parsed again


def previous_sha256(flow: FlowModel, start: datetime, stage: PartitionStage) -> str | None:
    """The checksum recorded by the partition's last extract, if any."""
    recorded = stage.raw_dir / (source_file_name(flow, start) + ".sha256")
    return recorded.read_text().split()[0] if recorded.is_file() else None


def fetch(
    flow: FlowModel,
    start: datetime,
    files: FilesResource,
    stage: PartitionStage,
    folders: FoldersResource,
    keeper: Executor,
) -> tuple[Path, Future[str], RemoteFile]:
    """Download the partition's file once it has stopped growing; its checksum, kept copy and
    backup are made by ``keeper`` while the caller parses it (the future gives the sha256).
    The delivery it replaces in ``raw/`` was kept under its content when it came."""
    file_name = source_file_name(flow, start)
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
    raw_path = stage.raw_dir / file_name
    keep_current(raw_path)
    raw_path = files.download(listed.path, raw_path)
    received = raw_path.stat().st_size
    if received != listed.size:
        _keep(raw_path, None)
        raise SourceFileError(
            file_name, f"still being uploaded (size {listed.size} -> {received} bytes during the download)"
        )
    backup = folders.path("backup", flow.name, f"{start:%Y}", f"{start:%m}")
    return raw_path, keeper.submit(_keep, raw_path, backup), listed


def _keep(raw_path: Path, backup: Path | None) -> str:
    """The delivery's sha256, recorded beside it; kept under its content in ``raw/deliveries``
    and, when complete, copied to the partition's ``backup`` folder."""
    digest = file_sha256(raw_path)
    raw_path.with_name(raw_path.name + ".sha256").write_text(f"{digest}  {raw_path.name}\n")
    keep_delivery(raw_path, digest)
    if backup is not None:
        back_up(raw_path, digest, backup)
    return digest


def _find(files: FilesResource, folder: str, file_name: str) -> RemoteFile:
    for remote in files.list_files(folder):
        if remote.name == file_name:
            return remote
    raise SourceFileError(file_name, f"missing: no such file in {folder}")


def _blank(block: bytes) -> bool:
    """Nothing but white space (without copying the block, as ``strip`` would)."""
    return not block or block.isspace()


def decoded_blocks(blocks: Iterable[bytes], encoding: str, file_name: str) -> Iterator[tuple[int, bytes]]:
    """Blocks of whole lines as UTF-8 without BOM, checked, each with the number of its
    first line; a fault names the line.

    UTF-8 is only validated; cp1252 is transcoded. Fails on a file with no content.
    """
    offset, line = 0, 1
    content = False
    for index, block in enumerate(blocks):
        if index == 0 and encoding == "utf8" and block.startswith(codecs.BOM_UTF8):
            block, offset = block[3:], 3
        try:
            text = block.decode("utf-8" if encoding == "utf8" else encoding)
        except UnicodeDecodeError as exc:
            _undecodable(
                file_name,
                encoding,
                offset + exc.start,
                line + block.count(b"\n", 0, exc.start),
                block[exc.start : exc.start + 1],
            )
        content = content or not _blank(block)
        yield line, block if encoding == "utf8" else text.encode("utf-8")
        offset += len(block)
        line += block.count(b"\n")
    if not content:
        raise SourceFileError(file_name, "empty file")


def _undecodable(file_name: str, encoding: str, offset: int, line: int, found: bytes) -> NoReturn:
    hint = " (is it cp1252? set source.encoding)" if encoding == "utf8" else ""
    raise SourceFileError(
        file_name, f"undecodable bytes at line {line} (byte {offset}: {found!r} is not {encoding}){hint}"
    )


def parse_stream(
    handle: BinaryIO, flow: FlowModel, file_name: str, block_size: int | None = None
) -> Iterator[pl.DataFrame]:
    """The file's records a block at a time: every column a string, header names trimmed,
    each row with its source line (line breaks inside quoted fields counted).

    Blocks are read, cut and checked on a thread of their own, ahead of the parsing.
    """
    blocks = prefetched(decoded_blocks(record_blocks(handle, block_size), flow.source.encoding, file_name))
    with closing(blocks):  # however this generator ends, the reading thread stops with it
        yield from _parsed(blocks, flow, file_name)


def _parsed(blocks: Iterable[tuple[int, bytes]], flow: FlowModel, file_name: str) -> Iterator[pl.DataFrame]:
    header = b""
    records = False
    for line, block in blocks:
        if not header:
            if _blank(block):
                continue  # blank: decoded_blocks fails an empty file at its end
            block, line = _without_blank_lines(block, line)  # the header is the first line with text
            end = block.find(b"\n") + 1 or len(block)
            header, block = block[:end], block[end:]
            columns = _columns(header, flow, file_name, line)
            line += 1
        if _blank(block):
            continue
        frame = _read_block(header, block, flow, file_name, line)
        frame = frame.rename(dict(zip(frame.columns[: len(columns)], columns, strict=True)))
        records = True
        yield with_lines(frame, file_name, line, block)
    if header and not records:  # a header and no record: no row, but the columns
        yield with_lines(pl.DataFrame(schema=dict.fromkeys(columns, pl.String)), file_name, line)


def _without_blank_lines(block: bytes, line: int) -> tuple[bytes, int]:
    """The block from its first line that is not blank, and that line's number."""
    while (end := block.find(b"\n") + 1) and _blank(block[:end]):
        block, line = block[end:], line + 1
    return block, line


def _columns(header: bytes, flow: FlowModel, file_name: str, line: int) -> list[str]:
    """The header's column names, trimmed; every required column present, none twice.

    A name unquoted twice (``A;A``, Polars would rename the second ``A_duplicated_0``) or
    twice once trimmed (``A; A``) is refused: which column holds the values is unknown; so
    is a name staging or the error file uses for its own columns. A carriage return inside
    the header means CR-only line ends: Polars ends lines at LF only, so the whole file would
    read as one header line. A NUL byte means UTF-16 (or garbage).
    """

    def malformed(fault: str) -> SourceFileError:
        return SourceFileError(file_name, f"malformed header at line {line}: {fault}")

    if b"\x00" in header:  # no column name holds one (Polars panics writing it to parquet)
        raise malformed("it holds a NUL byte (is it UTF-16? save it as UTF-8)")
    if b"\r" in header.rstrip(b"\r\n"):
        raise malformed("it holds a carriage return (CR-only line ends? save it with LF or CRLF line ends)")
    read = partial(pl.read_csv, header + b"\n", separator=flow.source.delimiter, infer_schema=False)
    try:
        names, raw = read(has_header=True).columns, read(has_header=False).row(0)
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError) as exc:
        raise malformed(_reason(exc)) from None
    # an empty name keeps the name Polars gives it ("", "_duplicated_0", ...): unnamed, not ambiguous
    columns = [(r or "").strip() or n for r, n in zip(raw, names, strict=True)]
    if twice := sorted({c for c in columns if columns.count(c) > 1}):
        raise malformed(f"column {', '.join(twice)} given twice")
    if taken := [c for c in columns if c in RESERVED_COLUMNS]:
        raise malformed(f"column {', '.join(taken)}: a name the error file or staging uses; rename it")
    missing = [c for c in flow.required_columns if c not in columns]
    if missing:
        raise SourceFileError(
            file_name,
            f"missing required column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(header has {', '.join(columns)})",
        )
    return columns


def _read_block(
    header: bytes, block: bytes, flow: FlowModel, file_name: str, first_line: int
) -> pl.DataFrame:
    try:
        return _parse(header + block, flow)
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError) as exc:
        line, reason = _first_bad_record(header, block, flow, _reason(exc))
        raise SourceFileError(file_name, f"malformed CSV at line {first_line + line}: {reason}") from None


def _parse(data: bytes, flow: FlowModel) -> pl.DataFrame:
    return pl.read_csv(
        data, separator=flow.source.delimiter, infer_schema=False, quote_char='"', has_header=True
    )


REASON_CHARS = 200


def _reason(exc: Exception) -> str:
    """The first line of Polars' message, cut short: it quotes the field it could not parse,
    which may be 10,000 characters (the reason goes into a log line and an e-mail subject)."""
    first = str(exc).splitlines()[0]
    return first if len(first) <= REASON_CHARS else first[:REASON_CHARS] + "..."


def _first_bad_record(header: bytes, block: bytes, flow: FlowModel, reason: str) -> tuple[int, str]:
    """The line (0 = the block's first) of the first record that does not parse, and why.

    Polars names no line; halving the block's records finds it in log2(records) parses,
    paid only when a block is malformed.
    """
    starts = record_starts(block)
    bounds = [*starts, len(block)]
    low, high = 0, len(starts)  # records low..high-1 fail together
    while high - low > 1:
        middle = (low + high) // 2
        try:
            _parse(header + block[bounds[low] : bounds[middle]], flow)
            low = middle
        except (pl.exceptions.ComputeError, pl.exceptions.NoDataError) as exc:
            high, reason = middle, _reason(exc)
    try:
        _parse(header + block[bounds[low] : bounds[low + 1]], flow)
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError) as exc:
        reason = _reason(exc)
    return block.count(b"\n", 0, bounds[low]), reason


class NulWatch:
    """A binary file whose reads note whether a NUL byte went by: a search of each read block
    (milliseconds for a file) spares the map a scan of every value of every row."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self.seen = False

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self.seen = self.seen or data.find(b"\x00") >= 0
        return data


def extract_partition(
    flow: FlowModel, partition_key: str, start: datetime, files: FilesResource, folders: FoldersResource
) -> Extracted:
    """Fetch, keep, decode and parse one partition's file into ``extract.parquet``, a block
    of records at a time (memory holds a block, not the file)."""
    stage = PartitionStage(flow.name, partition_key, folders)
    file_name = source_file_name(flow, start)
    staged = stage.file("extract.parquet")
    columns: list[str] = []
    # leaving the keeper waits for the checksum and the backup, whatever the parse did
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="keep") as keeper:
        raw_path, kept, listed = fetch(flow, start, files, stage, folders, keeper)
        made_from = extract_tags(file_name, listed.size, stage_version(flow, "extract"))
        parsed_from = same_delivery(staged, made_from)
        # the very bytes the staged file was parsed from, by this version: parsing is skipped
        if reused := parsed_from is not None and parsed_from == kept.result():
            rows, columns = count_rows(staged), staged_columns(staged)
        else:
            with (
                raw_path.open("rb") as handle,
                StagedWriter(staged, tags={**made_from, MADE_TAG: uuid4().hex}) as writer,
                # closed first, whatever happened: the reading thread stops before the file closes
                closing(parse_stream(watched := NulWatch(handle), flow, file_name)) as frames,
            ):
                for frame in frames:
                    writer.write(frame)
                    columns = columns or [c for c in frame.columns if c not in (LINE, SOURCE_FILE)]
                writer.tags[SHA256_TAG] = kept.result()  # the file records the bytes it holds
                if not watched.seen:
                    writer.tags[NUL_FREE_TAG] = "true"
            rows = writer.rows
    digest = kept.result()
    mapped = {flow.source_column(n) for n in flow.map}
    return Extracted(
        file=file_name,
        remote_path=listed.path,
        raw_path=raw_path,
        sha256=digest,
        size=listed.size,
        rows=rows,
        columns=columns,
        extra_columns=[c for c in columns if c not in mapped],
        reused=reused,
    )
