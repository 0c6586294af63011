"""A corrected error file read and checked against the rejects it claims to correct.

The file's place names its origin: ``.../<flow>/<partition>/<step>.csv`` (an error file as
the catcher wrote it) or ``<step>.resubmission-<n>.csv`` (the still-wrong rows of an earlier
resubmission). It is refused, whole and with every reason, when its header is not the one
the catcher wrote for that flow, when a row was not rejected by that step of that partition
(a row added, a line changed, a file of another flow or partition), or a line is given twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from etl_assets.engine.catcher import ERROR_COLUMNS
from etl_assets.engine.columns import LINE, SOURCE_FILE
from etl_assets.engine.partition_keys import KEY_FORMATS
from etl_assets.engine.resubmit.resolved import FINGERPRINT, rejected_lines
from etl_assets.engine.staging import PartitionStage
from etl_assets.model.flow import FlowModel

_NAME = re.compile(r"^(?P<step>transform|load|link)(?:\.resubmission-(?P<number>[0-9]+))?\.csv$")
REASONS_SHOWN = 5  # lines named per reason; the count says how many more


def is_resubmission_errors(name: str) -> bool:
    """``<step>.resubmission-<n>.csv``: the still-wrong rows of a resubmission (housekeeping
    keeps them as it keeps error files)."""
    match = _NAME.match(name)
    return match is not None and match.group("number") is not None


class Refused(Exception):
    """A submission refused whole: one line per reason, nothing loaded."""

    def __init__(self, path: Path, reasons: list[str]) -> None:
        super().__init__(f"{path}: refused: " + "; ".join(reasons))
        self.path = path
        self.reasons = reasons


@dataclass(frozen=True)
class Origin:
    """Which error file a submission corrects: the flow, partition and step that rejected it."""

    flow: str
    partition_key: str
    step: str


def origin_of(path: Path, flows: dict[str, FlowModel]) -> tuple[Origin, FlowModel]:
    """The origin a file's place names (``<flow>/<partition>/<step>.csv``)."""
    match = _NAME.match(path.name)
    if match is None:
        raise Refused(path, ["the name is not <step>.csv (transform, load or link) as the catcher writes it"])
    flow_name, folder = path.parent.parent.name, path.parent.name
    flow = flows.get(flow_name)
    if flow is None:
        raise Refused(
            path, [f"no flow {flow_name!r}: the file's place must be <flow>/<partition>/<step>.csv"]
        )
    key_format = KEY_FORMATS[flow.partitions.kind]
    try:
        key = datetime.strptime(folder, key_format.replace(":", "-")).strftime(key_format)
    except ValueError:
        raise Refused(path, [f"{folder!r} is not a partition of {flow_name}"]) from None
    return Origin(flow_name, key, match.group("step")), flow


@dataclass(frozen=True)
class Submission:
    """The corrected rows as source rows (source columns, ``LINE``, ``SOURCE_FILE``) with the
    fingerprint of the row each corrects, as first received."""

    path: Path
    origin: Origin
    rows: pl.DataFrame


def expected_header(stage: PartitionStage) -> list[str]:
    """The header the catcher wrote for the partition: its source columns, then the error columns."""
    names = pq.ParquetFile(stage.file("extract.parquet")).schema_arrow.names
    return [c for c in names if c not in (LINE, SOURCE_FILE)] + ERROR_COLUMNS


def read_submission(path: Path, origin: Origin, flow: FlowModel, stage: PartitionStage) -> Submission:
    """The file read as text and checked; ``Refused`` with every reason found."""
    if not stage.file("extract.parquet").exists():
        raise Refused(
            path, [f"partition {origin.partition_key} of {origin.flow} has no staged data to check against"]
        )
    header = expected_header(stage)
    try:
        frame = pl.read_csv(path, separator=flow.source.delimiter, infer_schema=False, quote_char='"')
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError) as exc:
        raise Refused(
            path, [f"not a CSV file with {flow.source.delimiter!r} between fields: {exc}"]
        ) from None
    if frame.columns != header:
        raise Refused(path, [_header_reason(frame.columns, header, origin.flow)])
    reasons = _row_reasons(frame, origin, rejected_lines(stage, origin.step))
    if reasons:
        raise Refused(path, reasons)
    rejected = rejected_lines(stage, origin.step)
    rows = frame.select(
        *[c for c in header if c not in ERROR_COLUMNS],
        pl.col("source_line").cast(pl.Int64).alias(LINE),
        pl.col("source_file").alias(SOURCE_FILE),
    ).join(rejected.select(LINE, FINGERPRINT), on=LINE)
    return Submission(path, origin, rows)


def _header_reason(found: list[str], header: list[str], flow: str) -> str:
    added = [c for c in found if c not in header]
    missing = [c for c in header if c not in found]
    if not added and not missing:
        return f"columns in another order than the error file of {flow}: keep its header as written"
    parts = [f"columns not in the error file of {flow}: {', '.join(added)}"] if added else []
    parts += [f"columns missing: {', '.join(missing)}"] if missing else []
    return "; ".join(parts) + " (correct values only, keep the header as written)"


def _lines_text(lines: list[object]) -> str:
    shown = ", ".join(str(v) for v in lines[:REASONS_SHOWN])
    return shown + (f" and {len(lines) - REASONS_SHOWN} more" if len(lines) > REASONS_SHOWN else "")


def _row_reasons(frame: pl.DataFrame, origin: Origin, rejected: pl.DataFrame) -> list[str]:
    """Why rows do not correct rejects of the origin: each reason names its source lines."""
    where = f"{origin.step} of {origin.flow} {origin.partition_key}"
    lines = frame.with_row_index("_row", offset=2).with_columns(
        pl.col("source_line").cast(pl.Int64, strict=False).alias(LINE)
    )
    reasons = []
    bad = lines.filter(pl.col(LINE).is_null())
    if bad.height:
        reasons.append(f"rows {_lines_text(bad['_row'].to_list())} of the file: source_line is not a number")
    twice = lines.filter(pl.col(LINE).is_not_null() & pl.col(LINE).is_duplicated())
    if twice.height:
        reasons.append(f"source lines given twice: {_lines_text(twice[LINE].unique().sort().to_list())}")
    known = lines.filter(pl.col(LINE).is_not_null()).join(rejected, on=LINE, how="left")
    added = known.filter(pl.col(FINGERPRINT).is_null())
    if added.height:
        reasons.append(
            f"source lines {_lines_text(added[LINE].to_list())} were not rejected by {where}: "
            "only rows of its error file can be sent back"
        )
    other_file = known.filter(
        pl.col(FINGERPRINT).is_not_null() & (pl.col("source_file") != pl.col(SOURCE_FILE))
    )
    if other_file.height:
        reasons.append(
            f"source lines {_lines_text(other_file[LINE].to_list())}: source_file is not "
            f"{other_file[SOURCE_FILE][0]}, the file {where} rejected them from"
        )
    return reasons
