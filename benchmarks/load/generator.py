"""The companies file: SPEC.md format, vectorised with Polars, cached per row count."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path

import polars as pl

from benchmarks.load.common import CACHE, log
from etl_assets.samples import CITIES, PREFIXES, STREETS, SUFFIXES, SURNAMES

GENERATOR_VERSION = 1
SEED = 20260115
CHUNK_ROWS = 500_000
VAT_MULTIPLIER = 7_919_113  # odd and not a multiple of 5: a bijection modulo 10**11, so VATs are unique
VAT_ADDEND = 12_345_678_901


def _pick(index: pl.Expr, values: list[str]) -> pl.Expr:
    """``values[index]`` for an integer expression."""
    return index.replace_strict(dict(enumerate(values)), return_dtype=pl.String)


def _vat(number: pl.Expr) -> pl.Expr:
    """A unique Italian-looking VAT code (IT + 11 digits) for a row number."""
    digits = ((number * VAT_MULTIPLIER + VAT_ADDEND) % 10**11).cast(pl.String).str.zfill(11)
    return pl.concat_str([pl.lit("IT"), digits])


def companies_frame(offset: int, first: int, count: int, total: int, seed: int = SEED) -> pl.DataFrame:
    """Rows ``first .. first+count`` of a file of ``total`` rows whose numbers start at ``offset``.

    All columns are strings as the ERP writes them: decimal comma with thousands dots,
    dd/mm/yyyy dates, quoted ``;`` and quotes in some names, line breaks in some addresses,
    and ~10% of rows whose PARENT_VAT is another row of the same file.
    """
    i = pl.col("i")
    g = pl.col("g")

    def rand(salt: int, modulo: int) -> pl.Expr:
        return (g.hash(seed + salt) % modulo).cast(pl.Int64)

    surname = _pick(rand(2, len(SURNAMES)), SURNAMES)
    prefix, suffix = _pick(rand(1, len(PREFIXES)), PREFIXES), _pick(rand(3, len(SUFFIXES)), SUFFIXES)
    slug = _pick(rand(2, len(SURNAMES)), [s.lower().replace(" ", "") for s in SURNAMES])
    city = rand(4, len(CITIES))
    address = pl.concat_str([_pick(rand(5, len(STREETS)), STREETS), pl.lit(", "), (rand(6, 200) + 1)])
    staircase = pl.concat_str(
        [
            address,
            pl.lit("\nScala "),
            _pick(rand(7, 3), ["A", "B", "C"]),
            pl.lit(", interno "),
            rand(8, 30) + 1,
        ]
    )
    parent = rand(10, total)
    parent = pl.when(parent == i).then((parent + 1) % total).otherwise(parent)
    cents = rand(11, 4_999_000_000) + 1_000_000
    whole = cents // 100
    tail = [
        pl.lit("."),
        (whole // 1000 % 1000).cast(pl.String).str.zfill(3),
        pl.lit("."),
        (whole % 1000).cast(pl.String).str.zfill(3),
        pl.lit(","),
        (cents % 100).cast(pl.String).str.zfill(2),
    ]
    revenue = (
        pl.when(whole >= 1_000_000)
        .then(pl.concat_str([whole // 1_000_000, *tail]))
        .otherwise(pl.concat_str([whole // 1000 % 1000, *tail[2:]]))
    )
    return (
        pl.DataFrame({"i": pl.int_range(first, first + count, dtype=pl.Int64, eager=True)})
        .with_columns(g=i + offset)
        .select(
            pl.concat_str([pl.lit("C"), g.cast(pl.String).str.zfill(9)]).alias("COMPANY_ID"),
            _vat(g).alias("VAT_CODE"),
            pl.when(i % 7 == 3)
            .then(pl.concat_str([surname, pl.lit('; "'), prefix, pl.lit('" '), suffix]))
            .otherwise(pl.concat_str([prefix, surname, suffix], separator=" "))
            .alias("NAME"),
            pl.when(i % 9 == 4).then(staircase).otherwise(address).alias("ADDRESS"),
            _pick(city, [c for c, _ in CITIES]).alias("CITY"),
            _pick(city, [z for _, z in CITIES]).alias("ZIP"),
            pl.lit("IT").alias("COUNTRY"),
            pl.concat_str([pl.lit("info@"), slug, g, pl.lit(".it")]).alias("EMAIL"),
            pl.concat_str([pl.lit("+39 02 "), rand(12, 9_000_000) + 1_000_000]).alias("PHONE"),
            pl.when(rand(13, 10) == 0).then(_vat(parent + offset)).alias("PARENT_VAT"),
            revenue.alias("REVENUE"),
            (rand(14, 2500) + 1).cast(pl.String).alias("EMPLOYEES"),
            (pl.lit(date(1950, 1, 1)) + pl.duration(days=rand(15, 25_000)))
            .dt.strftime("%d/%m/%Y")
            .alias("FOUNDED"),
            (pl.lit(datetime(2026, 1, 14, 23, 0)) - pl.duration(seconds=rand(16, 3 * 365 * 86_400)))
            .dt.strftime("%d/%m/%Y %H:%M:%S")
            .alias("UPDATED_AT"),
        )
    )


def write_companies_csv(path: Path, rows: int, offset: int = 0, seed: int = SEED) -> dict[str, int]:
    """Write a companies file of ``rows`` rows (CRLF, ``;``, header), in chunks; its facts."""
    if rows < 2:
        raise ValueError("a companies file needs at least 2 rows (parents point at another row)")
    parents = 0
    partial = path.with_name(path.name + ".part")
    path.parent.mkdir(parents=True, exist_ok=True)
    with partial.open("wb") as out:
        for first in range(0, rows, CHUNK_ROWS):
            chunk = companies_frame(offset, first, min(CHUNK_ROWS, rows - first), rows, seed)
            parents += chunk.get_column("PARENT_VAT").is_not_null().sum()
            chunk.write_csv(out, separator=";", line_terminator="\r\n", include_header=first == 0)
    partial.replace(path)
    return {"rows": rows, "parents": parents, "bytes": path.stat().st_size}


def cached_file(rows: int) -> tuple[Path, dict[str, int]]:
    """The companies file of ``rows`` rows, generated once per row count under CACHE."""
    path = CACHE / f"companies_v{GENERATOR_VERSION}_{rows}.csv"
    return cached(path, lambda: write_companies_csv(path, rows), f"{rows:,} rows")


def cached(
    path: Path, write: Callable[[], dict[str, int]], what: str, beside: tuple[Path, ...] = ()
) -> tuple[Path, dict[str, int]]:
    """``path`` and its facts (``<path>.json``), written by ``write`` unless they (and the
    files ``beside`` it) are in the cache already."""
    facts = path.with_suffix(".json")
    if path.exists() and facts.exists() and all(p.exists() for p in beside):
        return path, json.loads(facts.read_text())
    log(f"generating {what} into {path}")
    started = time.perf_counter()
    meta = write()
    facts.write_text(json.dumps(meta))
    log(f"generated {meta['bytes'] / 1e6:.0f} MB in {time.perf_counter() - started:.1f} s")
    return path, meta
