"""transform: the map, exact duplicates collapsed, conflicting duplicates resolved.

Rows rejected here carry ``_line``, ``_error_field`` and ``_error_reason``; the catcher
joins them back to the source columns as received.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import polars as pl

from etl_assets.engine.columns import ERROR_FIELD, ERROR_REASON, LINE, SOURCE_FILE
from etl_assets.engine.reuse import reusable_outputs, transform_tags
from etl_assets.engine.staging import (
    MADE_TAG,
    NUL_FREE_TAG,
    StagedWriter,
    count_rows,
    read_batches,
    staged_tags,
)
from etl_assets.engine.transform.maps import apply_map
from etl_assets.model.flow import FlowModel
from etl_assets.model.versions import stage_version

KEPT_LINE = "_kept_line"
GROUP = "_group"
DUPLICATE_BUCKET_ROWS = 2_000_000
COLLAPSED_SCHEMA = {LINE: pl.Int64, KEPT_LINE: pl.Int64}
REJECTED_SCHEMA = {LINE: pl.Int64, ERROR_FIELD: pl.String, ERROR_REASON: pl.String}


@dataclass
class Transformed:
    """The outcomes of transform for one partition (good and rejected rows stay on disk)."""

    good_rows: int
    rejected_rows: int  # in transform_rejected.parquet: _line, _error_field, _error_reason
    collapsed: pl.DataFrame  # _line, _kept_line: exact copies of an earlier row
    rows_in: int
    reused: bool = False  # the staged outputs of an earlier run from the same input and version


def collapse_exact_duplicates(extracted: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows identical in every source column collapse into the first of them.

    A hash of each row finds the few candidates; the exact comparison of every column runs
    on those only (a hash collision can never collapse two different rows).
    """
    columns = source_columns(extracted)
    suspects = extracted.filter(_fingerprint(columns).is_duplicated())
    keyed = suspects.with_columns(pl.col(LINE).first().over(columns).alias(KEPT_LINE))
    collapsed = keyed.filter(pl.col(LINE) != pl.col(KEPT_LINE)).select(LINE, KEPT_LINE)
    if collapsed.height == 0:
        return extracted, collapsed
    return extracted.join(collapsed.select(LINE), on=LINE, how="anti").sort(LINE), collapsed


def resolve_conflicts(flow: FlowModel, mapped: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A key given twice with different values: the latest ``latest_by`` wins (then the last line).

    Only the rows whose key repeats are sorted and ranked.
    """
    key = flow.target.key
    repeated = pl.col(key).is_duplicated()
    order = [flow.dedupe.latest_by, LINE] if flow.dedupe.latest_by else [LINE]
    ranked = (
        mapped.filter(repeated)
        .sort(order, nulls_last=False)
        .with_columns(pl.col(LINE).last().over(key).alias(KEPT_LINE))
    )
    by = f" with a later {flow.source_column(flow.dedupe.latest_by)}" if flow.dedupe.latest_by else ""
    losers = ranked.filter(pl.col(LINE) != pl.col(KEPT_LINE)).select(
        LINE,
        pl.lit(flow.source_column(key)).alias(ERROR_FIELD),
        pl.format("key {} given twice: line {} wins" + by, pl.col(key), pl.col(KEPT_LINE)).alias(
            ERROR_REASON
        ),
    )
    if losers.height == 0:
        return mapped, losers
    return mapped.join(losers.select(LINE), on=LINE, how="anti").sort(LINE), losers


def transform_stage(flow: FlowModel, extract_path: Path, out_dir: Path) -> Transformed:
    """Transform a partition's ``extract.parquet`` a batch at a time into
    ``transform.parquet``, ``transform_rejected.parquet`` and ``transform_collapsed.parquet``.

    One pass maps every batch and writes the rows that passed; beside them, a 64-bit group
    hash per row (the mapped key, or the whole row for a row that failed the map) goes to a
    scratch file. Only rows whose group repeats can be duplicates: they are found a hash
    bucket at a time (memory bounded by ``DUPLICATE_BUCKET_ROWS``) and settled exactly, on
    their own values; only then, and only if some were found, is the output written again
    without them.
    """
    good_path = out_dir / "transform.parquet"
    first_pass = out_dir / "transform_first_pass.parquet"  # before duplicates are taken out
    scratch = out_dir / "transform_groups.parquet"
    failed_path = out_dir / "transform_failed.parquet"
    tags = transform_tags(extract_path, stage_version(flow, "transform"))
    if tags and (reused := _reused(out_dir, tags, extract_path)) is not None:
        return reused
    tags = {**tags, MADE_TAG: uuid4().hex} if tags else {}
    rows_in = 0
    nul_free = staged_tags(extract_path).get(NUL_FREE_TAG) == "true"
    try:
        with (
            StagedWriter(first_pass, tags=tags) as good,
            StagedWriter(scratch) as groups,
            StagedWriter(failed_path, REJECTED_SCHEMA, tags=tags) as failed,
        ):
            for batch in read_batches(extract_path):
                mapped, batch_groups = _map_batch(flow, batch, nul_free)
                passed = pl.col(ERROR_FIELD).is_null()
                good.write(mapped.filter(passed).select(LINE, SOURCE_FILE, *flow.map))
                failed.write(mapped.filter(~passed).select(LINE, ERROR_FIELD, ERROR_REASON))
                groups.write(batch_groups)
                rows_in += batch.height
        collapsed, losers = _duplicates(flow, extract_path, first_pass, scratch, rows_in)
        rejected_path = out_dir / "transform_rejected.parquet"
        with StagedWriter(out_dir / "transform_collapsed.parquet", COLLAPSED_SCHEMA, tags=tags) as written:
            written.write(collapsed)
        # transform.parquet comes last, and only whole: a step killed before it leaves none
        if collapsed.height or losers.height:
            excluded = pl.concat([collapsed.get_column(LINE), losers.get_column(LINE)]).implode()
            rejected_rows = _write_rejected(
                rejected_path, failed_path, collapsed.get_column(LINE), losers, tags
            )
            good_rows = _rewrite_without(first_pass, good_path, excluded, tags)
        else:  # nothing to take out or merge in: the staged failures are the rejected rows
            good_rows, rejected_rows = good.rows, failed.rows
            failed_path.replace(rejected_path)
            first_pass.replace(good_path)
    finally:
        for scratch_file in (scratch, failed_path, first_pass):
            scratch_file.unlink(missing_ok=True)
    return Transformed(good_rows=good_rows, rejected_rows=rejected_rows, collapsed=collapsed, rows_in=rows_in)


def _write_rejected(
    path: Path, failed_path: Path, collapsed: pl.Series, losers: pl.DataFrame, tags: dict[str, str]
) -> int:
    """The rows the map failed (less collapsed copies) and the duplicates that lost, in line
    order, a batch at a time: a file whose every row fails never sits whole in memory."""
    pending = losers.sort(LINE)
    with StagedWriter(path, REJECTED_SCHEMA, tags=tags) as writer:
        for batch in read_batches(failed_path):
            batch = batch.filter(~pl.col(LINE).is_in(collapsed.implode()))
            if batch.height == 0:
                continue
            last = batch.get_column(LINE).max()
            writer.write(pl.concat([batch, pending.filter(pl.col(LINE) <= last)]).sort(LINE))
            pending = pending.filter(pl.col(LINE) > last)
        writer.write(pending)
    return writer.rows


OUTPUTS = ("transform_collapsed.parquet", "transform_rejected.parquet", "transform.parquet")


def _reused(out_dir: Path, made_from: dict[str, str], extract_path: Path) -> Transformed | None:
    """The staged outputs of an earlier run, when all three were made by one run from the very
    extract and version this one would use (a re-delivery of identical bytes, a replay, a retry)."""
    if not reusable_outputs(out_dir, OUTPUTS, made_from):
        return None
    collapsed = pl.read_parquet(out_dir / OUTPUTS[0]).cast(COLLAPSED_SCHEMA)
    return Transformed(
        good_rows=count_rows(out_dir / OUTPUTS[2]),
        rejected_rows=count_rows(out_dir / OUTPUTS[1]),
        collapsed=collapsed,
        rows_in=count_rows(extract_path),
        reused=True,
    )


def _map_batch(flow: FlowModel, batch: pl.DataFrame, nul_free: bool) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The map applied to a batch, and its rows' group hashes (``_line``, ``_group``)."""
    mapped = apply_map(flow, batch.lazy(), batch.columns, nul_free=nul_free)
    passed = mapped.filter(pl.col(ERROR_FIELD).is_null()).select(
        LINE, pl.col(flow.target.key).cast(pl.String).hash(seed=7).alias(GROUP)
    )
    failing = mapped.filter(pl.col(ERROR_FIELD).is_not_null()).select(LINE)
    if failing.height:
        rows = batch.join(failing, on=LINE, how="semi")
        failing = rows.select(LINE, _fingerprint(source_columns(rows)).alias(GROUP))
        return mapped, pl.concat([passed, failing])
    return mapped, passed


def _duplicates(
    flow: FlowModel, extract_path: Path, good_path: Path, scratch: Path, rows: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(collapsed, losers) of the whole partition, from the rows whose group repeats."""
    buckets = max(1, -(-rows // DUPLICATE_BUCKET_ROWS))
    groups = pl.scan_parquet(scratch)
    suspects = pl.concat(
        [
            groups.filter(pl.col(GROUP) % buckets == bucket)
            .filter(pl.col(GROUP).is_duplicated())
            .select(LINE)
            .collect()
            for bucket in range(buckets)
        ]
    ).get_column(LINE)
    if suspects.is_empty():
        return pl.DataFrame(schema=COLLAPSED_SCHEMA), pl.DataFrame(schema=REJECTED_SCHEMA)
    wanted = pl.col(LINE).is_in(suspects.implode())
    raw = pl.scan_parquet(extract_path).filter(wanted).collect().sort(LINE)
    _, collapsed = collapse_exact_duplicates(raw)
    mapped = (
        pl.scan_parquet(good_path)
        .filter(wanted & ~pl.col(LINE).is_in(collapsed.get_column(LINE).implode()))
        .collect()
        .sort(LINE)
    )
    _, losers = resolve_conflicts(flow, mapped)
    return collapsed.cast(COLLAPSED_SCHEMA), losers.cast(REJECTED_SCHEMA)


def _rewrite_without(source: Path, path: Path, lines: pl.Series, tags: dict[str, str]) -> int:
    """``source`` written to ``path``, batch for batch, without these lines; the rows left."""
    with StagedWriter(path, tags=tags) as writer:
        for batch in read_batches(source):
            writer.write(batch.filter(~pl.col(LINE).is_in(lines)))
    return writer.rows


def source_columns(frame: pl.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in (LINE, SOURCE_FILE)]


def _fingerprint(columns: list[str]) -> pl.Expr:
    return pl.concat_str([pl.col(c).fill_null("\x00") for c in columns], separator="\x1f").hash()
