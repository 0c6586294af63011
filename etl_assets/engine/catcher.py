"""The catcher: rejected rows to ``errors/<flow>/<partition>/<step>.csv``, and the verdict
that passes, warns up to ``warn_limit`` or fails above it (the Dagster layer reports it as an
asset check).

An error file holds the source columns as received plus ``error_step, error_field,
error_reason, source_file, source_line``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import polars as pl

from etl_assets.engine.columns import ERROR_FIELD, ERROR_REASON, LINE, SOURCE_FILE
from etl_assets.engine.staging import read_batches
from etl_assets.resources.files import partial_name

ERROR_COLUMNS = ["error_step", "error_field", "error_reason", "source_file", "source_line"]
CHECK_NAME = "rejected_rows"
PREVIEW_ROWS = 10
PREVIEW_LEAD = ["error_step", "error_field", "error_reason", "source_line"]
CATCH_BATCH_ROWS = 200_000  # rejected rows joined to their source and written at a time


class Markdown(str):
    """Text the UI renders as Markdown (the table of the first rejected rows)."""


@dataclass(frozen=True)
class Verdict:
    """A check's outcome as plain data: the Dagster layer turns it into an asset check result.

    Metadata values are plain: a list or dict is shown as JSON, a ``Path`` as a path and a
    ``Markdown`` as rendered Markdown.
    """

    check_name: str
    passed: bool
    severity: Literal["WARN", "ERROR"]
    description: str
    metadata: dict[str, object] = field(default_factory=dict)

    @property
    def blocks(self) -> bool:
        """A failed check of ERROR severity: what stops the run where the check is blocking."""
        return not self.passed and self.severity == "ERROR"


@dataclass
class CaughtErrors:
    """The rejected rows of one step and partition, and where they were written."""

    step: str
    partition_key: str
    rows: pl.DataFrame  # source columns + ERROR_COLUMNS: all of them, or the first (see count)
    path: Path | None
    total: int | None = None  # the rows in the error file, when ``rows`` holds only the first

    @property
    def count(self) -> int:
        return self.rows.height if self.total is None else self.total


def _nothing(step: str, partition_key: str, path: Path) -> CaughtErrors:
    path.unlink(missing_ok=True)
    empty = pl.DataFrame(schema=dict.fromkeys(ERROR_COLUMNS, pl.String))
    return CaughtErrors(step, partition_key, empty, None)


def catch(
    step: str,
    partition_key: str,
    rejected: pl.DataFrame,
    extracted: Callable[[pl.Series], pl.DataFrame],
    path: Path,
    delimiter: str,
) -> CaughtErrors:
    """Write (or remove, when nothing was rejected) the step's error file.

    ``extracted(lines)`` gives the source rows of those lines; it is called only when
    there are rejected rows to join back to the source.
    """
    if rejected.height == 0:
        return _nothing(step, partition_key, path)
    rows = error_rows(step, rejected, extracted)
    partial = path.with_name(partial_name(path.name))
    rows.write_csv(partial, separator=delimiter)
    partial.replace(path)
    return CaughtErrors(step, partition_key, rows, path)


def catch_staged(
    step: str,
    partition_key: str,
    rejected_path: Path,
    extracted: Callable[[pl.Series], pl.DataFrame],
    path: Path,
    delimiter: str,
) -> CaughtErrors:
    """``catch`` for rejected rows staged in line order: the error file is written a batch
    at a time, and only its first rows stay in memory (for the preview)."""
    partial = path.with_name(partial_name(path.name))
    first, total = None, 0
    try:
        with partial.open("wb") as out:
            for batch in read_batches(rejected_path, min_rows=CATCH_BATCH_ROWS):
                if batch.height == 0:
                    continue
                rows = error_rows(step, batch, extracted)
                rows.write_csv(out, separator=delimiter, include_header=first is None)
                if first is None or first.height < PREVIEW_ROWS:
                    first = pl.concat([f for f in (first, rows) if f is not None], how="vertical_relaxed")
                    first = first.head(PREVIEW_ROWS)
                total += rows.height
    except BaseException:
        partial.unlink(missing_ok=True)  # no half error file left behind
        raise
    if first is None:
        partial.unlink()
        return _nothing(step, partition_key, path)
    partial.replace(path)
    return CaughtErrors(step, partition_key, first, path, total)


def error_rows(
    step: str, rejected: pl.DataFrame, extracted: Callable[[pl.Series], pl.DataFrame]
) -> pl.DataFrame:
    """Rejected rows joined back to their source columns as received, error columns last."""
    source = extracted(rejected.get_column(LINE))
    source_columns = [c for c in source.columns if c not in (LINE, SOURCE_FILE)]
    return (
        rejected.select(LINE, ERROR_FIELD, ERROR_REASON)
        .join(source, on=LINE, how="left")
        .sort(LINE)
        .select(
            *source_columns,
            pl.lit(step).alias("error_step"),
            pl.col(ERROR_FIELD).alias("error_field"),
            pl.col(ERROR_REASON).alias("error_reason"),
            pl.col(SOURCE_FILE).alias("source_file"),
            pl.col(LINE).alias("source_line"),
        )
    )


def source_rows(extract_path: Path, lines: pl.Series) -> pl.DataFrame:
    """The rows of ``extract.parquet`` at these source lines (the file is scanned, not
    loaded; row groups outside the lines' range are skipped by their statistics)."""
    return (
        pl.scan_parquet(extract_path)
        .filter(pl.col(LINE).is_between(lines.min(), lines.max()) & pl.col(LINE).is_in(lines.implode()))
        .collect()
    )


def append_parked(path: Path, expired: pl.DataFrame, delimiter: str, partition_key: str) -> CaughtErrors:
    """Add expired parked rows (source columns kept as JSON) to a partition's link error file."""
    source = pl.DataFrame(
        [json.loads(row) for row in expired.get_column("source_row")], infer_schema_length=None
    )
    rows = pl.concat(
        [
            source.cast(pl.String),
            expired.select(
                pl.lit("link").alias("error_step"),
                pl.col(ERROR_FIELD).alias("error_field"),
                pl.col(ERROR_REASON).alias("error_reason"),
                pl.col("source_file"),
                pl.col("source_line").cast(pl.String),
            ),
        ],
        how="horizontal",
    )
    if path.exists():
        rows = pl.concat(
            [pl.read_csv(path, separator=delimiter, infer_schema=False), rows], how="diagonal_relaxed"
        )
    columns = [c for c in rows.columns if c not in ERROR_COLUMNS] + ERROR_COLUMNS
    rows = rows.select(columns)
    partial = path.with_name(partial_name(path.name))
    rows.write_csv(partial, separator=delimiter)
    partial.replace(path)
    return CaughtErrors("link", partition_key, rows.tail(expired.height), path)


def check_result(caught: list[CaughtErrors], warn_limit: int | None, rows_in: int) -> Verdict:
    """Pass with no rejected row; WARN up to ``warn_limit`` (every count when None); ERROR
    above it."""
    rejected = sum(c.count for c in caught)
    files = [str(c.path) for c in caught if c.path]
    metadata: dict[str, object] = {
        "rejected": rejected,
        "warn_limit": warn_limit,
        "rows_in": rows_in,
        "error_files": files,
    }
    table = preview(caught)
    if table is not None:
        metadata["preview"] = table
    return Verdict(
        check_name=CHECK_NAME,
        passed=rejected == 0,
        severity="WARN" if warn_limit is None or rejected <= warn_limit else "ERROR",
        metadata=metadata,
        description=f"{rejected} rows rejected ({limit_text(warn_limit)})" if rejected else "no row rejected",
    )


def limit_text(warn_limit: int | None) -> str:
    return "warn, no limit" if warn_limit is None else f"warn up to {warn_limit}"


def preview(caught: list[CaughtErrors]) -> Markdown | None:
    """The first rejected rows as a table for the UI, or None when nothing was rejected: the
    reason first (a wide table is cut at the right edge of the screen), then the source
    columns as received. The error files keep SPEC.md's order, reason last."""
    frames = [c.rows for c in caught if c.count]
    if not frames:
        return None
    first = pl.concat(frames, how="diagonal_relaxed").head(PREVIEW_ROWS)
    return Markdown(markdown_table(first.select(*PREVIEW_LEAD, pl.exclude(*PREVIEW_LEAD))))


def markdown_table(frame: pl.DataFrame) -> str:
    """A small frame as a Markdown table for the UI."""

    def cell(value: object) -> str:
        return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join([header, rule, *body])
