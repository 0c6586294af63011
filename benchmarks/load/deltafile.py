"""The daily delta (issue 23): the first file's next delivery, generated beside it and cached.

The same N rows in which ~1% changed (a new NAME and a later UPDATED_AT, so the upsert's
``latest_by`` takes them; ~9% of them are parents, whose VAT_CODE other rows point at, kept
so every reference stays valid), 0.1% of rows of those changed with a PARENT_VAT pointing at
another parent (links really change), ~0.5% of the rows missing and as many new rows (new
COMPANY_ID and VAT_CODE, ~10% with a parent among the new rows). Only rows no row points at
go missing: every PARENT_VAT of the delivery names a row of the delivery, so a fresh load of
it links as the delta does. Which row is what follows from a hash of its row number.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from benchmarks.load.common import CACHE
from benchmarks.load.generator import CHUNK_ROWS, GENERATOR_VERSION, SEED, cached, companies_frame

DELTA_VERSION = 1
BUCKETS = 100_000
MISSING_BELOW = 552  # of BUCKETS, among the ~90.5% of rows no row points at: ~0.5% of all rows
CHANGED = (1_000, 2_000)  # 1% of the rows
RELINKED_BELOW = 1_100  # of the changed, 0.1% of the rows: PARENT_VAT points at another parent
CHANGED_AT = "15/01/2026 22:00:00"  # later than every UPDATED_AT of the first file


def _referenced(rows: int) -> pl.Series:
    """The VAT codes the first file's PARENT_VAT names (the parents), sorted."""
    parts = [
        companies_frame(0, first, min(CHUNK_ROWS, rows - first), rows).get_column("PARENT_VAT").drop_nulls()
        for first in range(0, rows, CHUNK_ROWS)
    ]
    return pl.concat(parts).unique().sort()


def _relinked(frame: pl.DataFrame, parents: pl.Series) -> pl.Series:
    """For each row, a parent's VAT other than its own and its current parent (of three in a row
    of the sorted parents, at most two are excluded)."""
    start = (pl.col("_n").hash(SEED + 2) % len(parents)).cast(pl.Int64)
    picks = frame.select(
        "VAT_CODE", "PARENT_VAT", *(((start + k) % len(parents)).alias(f"c{k}") for k in range(3))
    ).with_columns(pl.col(f"c{k}").map_batches(parents.gather, return_dtype=pl.String) for k in range(3))

    def free(name: str) -> pl.Expr:
        return (pl.col(name) != pl.col("VAT_CODE")) & pl.col(name).ne_missing(pl.col("PARENT_VAT"))

    chosen = pl.when(free("c0")).then("c0").when(free("c1")).then("c1").otherwise("c2")
    return picks.select(chosen.alias("PARENT_VAT")).get_column("PARENT_VAT")


def delta_chunk(first: int, count: int, rows: int, parents: pl.Series) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows ``first .. first+count`` of the delivery (missing ones left out, changes applied),
    and the keys and flags of the rows left out or changed."""
    frame = companies_frame(0, first, count, rows).with_columns(
        _n=pl.int_range(first, first + count, dtype=pl.Int64)
    )
    bucket = (pl.col("_n").hash(SEED + 1) % BUCKETS).cast(pl.Int64)
    pointed = pl.col("VAT_CODE").is_in(parents.implode())
    frame = frame.with_columns(
        _missing=(bucket < MISSING_BELOW) & ~pointed,
        _changed=(bucket >= CHANGED[0]) & (bucket < CHANGED[1]),
        _relinked=(bucket >= CHANGED[0]) & (bucket < RELINKED_BELOW),
        _parent=pointed,
    )
    relinked = frame.filter("_relinked")
    frame = frame.with_columns(
        pl.when("_changed").then(pl.lit(CHANGED_AT)).otherwise("UPDATED_AT").alias("UPDATED_AT"),
        pl.when(pl.col("_changed") & ~pl.col("_relinked"))
        .then(pl.concat_str([pl.col("NAME"), pl.lit(" (changed)")]))
        .otherwise("NAME")
        .alias("NAME"),
    )
    if relinked.height:
        moved = relinked.select("_n", _relinked(relinked, parents).alias("_new_parent"))
        frame = frame.join(moved, on="_n", how="left", maintain_order="left").with_columns(
            pl.coalesce("_new_parent", "PARENT_VAT").alias("PARENT_VAT")
        )
        frame = frame.drop("_new_parent")
    flags = frame.filter(pl.col("_missing") | pl.col("_changed")).select(
        "COMPANY_ID", "_missing", "_changed", "_relinked", "_parent"
    )
    kept = frame.filter(~pl.col("_missing")).drop("_n", "_missing", "_changed", "_relinked", "_parent")
    return kept, flags


def write_delta_csv(path: Path, rows: int) -> dict[str, int]:
    """The delivery after the first file of ``rows`` rows; its facts, the missing keys beside."""
    parents = _referenced(rows)
    counts = dict.fromkeys(("changed", "relinked", "parents_changed", "missing", "parents"), 0)
    partial = path.with_name(path.name + ".part")
    path.parent.mkdir(parents=True, exist_ok=True)
    missing_keys: list[pl.Series] = []
    with partial.open("wb") as out:
        for first in range(0, rows, CHUNK_ROWS):
            kept, flags = delta_chunk(first, min(CHUNK_ROWS, rows - first), rows, parents)
            missing_keys.append(flags.filter("_missing").get_column("COMPANY_ID"))
            counts["missing"] += int(flags.get_column("_missing").sum())
            counts["changed"] += int(flags.get_column("_changed").sum())
            counts["relinked"] += int(flags.get_column("_relinked").sum())
            counts["parents_changed"] += int(flags.filter("_changed").get_column("_parent").sum())
            counts["parents"] += int(kept.get_column("PARENT_VAT").is_not_null().sum())
            kept.write_csv(out, separator=";", line_terminator="\r\n", include_header=first == 0)
        new = companies_frame(rows, 0, max(counts["missing"], 2), max(counts["missing"], 2))
        new.write_csv(out, separator=";", line_terminator="\r\n", include_header=False)
    counts["new"] = new.height
    counts["new_with_parent"] = int(new.get_column("PARENT_VAT").is_not_null().sum())
    counts["parents"] += counts["new_with_parent"]
    counts["rows"] = rows - counts["missing"] + counts["new"]
    pl.concat(missing_keys).to_frame().write_csv(missing_file(path), include_header=False)
    partial.replace(path)
    return {**counts, "bytes": path.stat().st_size}


def missing_file(delta: Path) -> Path:
    """The keys (COMPANY_ID) of the first file's rows the delivery lacks, one a line."""
    return delta.with_suffix(".missing")


def cached_delta(rows: int) -> tuple[Path, dict[str, int]]:
    """The delta of the first file of ``rows`` rows, generated once per row count under CACHE."""
    path = CACHE / f"companies_v{GENERATOR_VERSION}_{rows}_delta_v{DELTA_VERSION}.csv"
    what = f"the delta of {rows:,} rows"
    return cached(path, lambda: write_delta_csv(path, rows), what, beside=(missing_file(path),))
