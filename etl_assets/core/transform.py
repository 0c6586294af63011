"""transform: the map, exact duplicates collapsed, conflicting duplicates resolved.

Rows rejected here carry ``_line``, ``_error_field`` and ``_error_reason``; the catcher
joins them back to the source columns as received.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from etl_assets.core.flow_model import FlowModel
from etl_assets.core.maps import ERROR_FIELD, ERROR_REASON, LINE, SOURCE_FILE, apply_map

KEPT_LINE = "_kept_line"


@dataclass
class Transformed:
    """The three outcomes of transform for one partition."""

    good: pl.DataFrame
    rejected: pl.DataFrame  # _line, _error_field, _error_reason
    collapsed: pl.DataFrame  # _line, _kept_line: exact copies of an earlier row

    @property
    def rows_in(self) -> int:
        return self.good.height + self.rejected.height + self.collapsed.height


def collapse_exact_duplicates(extracted: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows identical in every source column collapse into the first of them.

    A hash of each row finds the few candidates; the exact comparison of every column runs
    on those only (a hash collision can never collapse two different rows).
    """
    columns = [c for c in extracted.columns if c not in (LINE, SOURCE_FILE)]
    fingerprint = pl.concat_str([pl.col(c).fill_null("\x00") for c in columns], separator="\x1f").hash()
    suspects = extracted.filter(fingerprint.is_duplicated())
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


def transform_partition(flow: FlowModel, extracted: pl.DataFrame) -> Transformed:
    """Map every row in one pass, then settle duplicates among the rows that passed."""
    unique, collapsed = collapse_exact_duplicates(extracted)
    mapped = apply_map(flow, unique.lazy(), unique.columns)
    failed = mapped.filter(pl.col(ERROR_FIELD).is_not_null()).select(LINE, ERROR_FIELD, ERROR_REASON)
    passed = mapped.filter(pl.col(ERROR_FIELD).is_null()).drop(ERROR_FIELD, ERROR_REASON)
    good, losers = resolve_conflicts(flow, passed)
    rejected = pl.concat([failed, losers]).sort(LINE)
    return Transformed(good=good, rejected=rejected, collapsed=collapsed)
