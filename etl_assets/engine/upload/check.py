"""An upload checked before it is accepted: the checks extract and transform would make, run
on the file where it is, in a scratch folder, so a bad file is refused at the door with the
reason instead of failing a run later.

The name must be the flow's file name for the partition (the partition is read from the name
when not given); the bytes must decode as the flow's encoding and the header hold the required
columns (extract's own parser, which names the line); then the map is applied (transform's own
code) and the rows it would reject are counted by field and reason. Nothing is written outside
the scratch folder.
"""

from __future__ import annotations

import tempfile
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import polars as pl

from etl_assets.engine import drift
from etl_assets.engine.columns import ERROR_FIELD, ERROR_REASON, LINE, SOURCE_FILE
from etl_assets.engine.extract import SourceFileError, parse_stream
from etl_assets.engine.partition_keys import KEY_FORMATS, partition_key_for_file, source_file_name
from etl_assets.engine.staging import StagedWriter
from etl_assets.engine.transform.stage import transform_stage
from etl_assets.model.flow import FlowModel


@dataclass(frozen=True)
class Problem:
    """One reason an upload is refused, or one kind of row the map would reject."""

    file: str
    reason: str
    line: int | None = None
    field: str | None = None

    def text(self) -> str:
        """``file:line: field: reason``, the parts known."""
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.field + ': ' if self.field else ''}{self.reason}"


@dataclass(frozen=True)
class Rejection:
    """Rows the map would reject for one field and reason."""

    field: str
    reason: str
    rows: int
    first_line: int


@dataclass
class UploadCheck:
    """What the checks found: the partition, the rows, the problems (none: accepted)."""

    file: str
    partition_key: str | None = None
    rows: int = 0
    problems: list[Problem] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    extra_columns: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return not self.problems

    @property
    def rejected(self) -> int:
        return sum(r.rows for r in self.rejections)


def partition_start(flow: FlowModel, partition_key: str) -> datetime | None:
    """The start of a partition from its key (None for a key not of this flow's shape)."""
    try:
        return datetime.strptime(partition_key, KEY_FORMATS[flow.partitions.kind])
    except ValueError:
        return None


def check_name(flow: FlowModel, name: str, partition_key: str | None) -> tuple[str | None, Problem | None]:
    """The partition the file is for, or the problem with its name."""
    named = partition_key_for_file(flow, name)
    if partition_key is None:
        if named is None:
            return None, Problem(name, f"not a {flow.name} file name: expected {flow.source.file}")
        return named, None
    start = partition_start(flow, partition_key)
    if start is None:
        return None, Problem(name, f"partition {partition_key!r} is not a {flow.name} partition key")
    expected = source_file_name(flow, start)
    if name != expected:
        return None, Problem(
            name, f"partition {partition_key} of {flow.name} reads {expected}: rename the file"
        )
    return partition_key, None


def check_upload(flow: FlowModel, path: Path, partition_key: str | None = None) -> UploadCheck:
    """Every check of the upload at ``path``; its problems empty when it may be placed."""
    check = UploadCheck(path.name)
    if flow.source.kind != "file":
        check.problems.append(
            Problem(path.name, f"{flow.name} reads a {flow.source.kind} source, not files: nothing to upload")
        )
        return check
    check.partition_key, problem = check_name(flow, path.name, partition_key)
    if problem:
        check.problems.append(problem)
    with tempfile.TemporaryDirectory(prefix="etl-upload-") as scratch:
        extract_path = Path(scratch) / "extract.parquet"
        try:
            check.rows = _parse(flow, path, extract_path)
        except SourceFileError as fault:  # undecodable, empty, malformed, a required column missing
            check.problems.append(Problem(path.name, fault.fault))
            return check
        columns = pl.read_parquet_schema(extract_path)
        mapped = {flow.source_column(n) for n in flow.map}
        check.extra_columns = [c for c in columns if c not in (LINE, SOURCE_FILE) and c not in mapped]
        if flow.schema_drift == "freeze" and check.extra_columns:
            check.problems.append(Problem(path.name, drift.frozen_fault(flow, check.extra_columns)))
        check.rejections = _dry_run(drift.evolved(flow, extract_path), extract_path, Path(scratch))
    if flow.warn_limit is not None and check.rejected > flow.warn_limit:
        check.problems += [
            Problem(path.name, f"{r.reason} ({r.rows} rows)", r.first_line, r.field) for r in check.rejections
        ]
        check.problems.append(
            Problem(
                path.name,
                f"{check.rejected} rows would be rejected, above {flow.name}'s warn_limit "
                f"{flow.warn_limit}: correct the file",
            )
        )
    return check


def _parse(flow: FlowModel, path: Path, extract_path: Path) -> int:
    """The file parsed as extract parses it, into ``extract_path``; its rows."""
    with (
        path.open("rb") as handle,
        StagedWriter(extract_path) as writer,
        closing(parse_stream(handle, flow, path.name)) as frames,
    ):
        for frame in frames:
            writer.write(frame)
    return writer.rows


def _dry_run(flow: FlowModel, extract_path: Path, scratch: Path) -> list[Rejection]:
    """The map applied as transform applies it; rejected rows counted by field and reason."""
    transform_stage(flow, extract_path, scratch)
    rejected = pl.read_parquet(scratch / "transform_rejected.parquet")
    counted = (
        rejected.group_by(ERROR_FIELD, ERROR_REASON)
        .agg(pl.len().alias("rows"), pl.col(LINE).min().alias("first_line"))
        .sort("first_line")
    )
    return [
        Rejection(row[ERROR_FIELD] or "", row[ERROR_REASON] or "", row["rows"], row["first_line"])
        for row in counted.iter_rows(named=True)
    ]
