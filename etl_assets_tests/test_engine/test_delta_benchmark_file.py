"""The benchmark's daily delta (issue 23) is what its checks assume: a delivery of the first
file's rows with 1% changed, some of them repointed at another parent, 0.5% missing, as many
new, and every reference naming a row of the delivery (so a fresh load of it links as the
delta does). A wrong delta would make the benchmark's counts check against wrong numbers."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from benchmarks.load.deltafile import missing_file, write_delta_csv
from benchmarks.load.generator import write_companies_csv

ROWS = 40_000


def read(path: Path) -> pl.DataFrame:
    return pl.read_csv(path, separator=";", infer_schema=False)


def test_the_delta_has_the_changes_its_facts_say(tmp_path: Path) -> None:
    first_path, delta_path = tmp_path / "first.csv", tmp_path / "delta.csv"
    write_companies_csv(first_path, ROWS)
    facts = write_delta_csv(delta_path, ROWS)
    first, delta = read(first_path), read(delta_path)

    assert delta.height == facts["rows"] == ROWS - facts["missing"] + facts["new"]
    assert 0.004 * ROWS < facts["missing"] < 0.006 * ROWS and facts["new"] == facts["missing"]
    assert 0.008 * ROWS < facts["changed"] < 0.012 * ROWS and 0 < facts["relinked"] < facts["changed"]
    missing = set(missing_file(delta_path).read_text().split())
    assert len(missing) == facts["missing"]
    assert missing == set(first["COMPANY_ID"]) - set(delta["COMPANY_ID"])

    both = first.join(delta, on="COMPANY_ID", suffix="_d")
    assert both.height == ROWS - facts["missing"]
    differs = both.filter(
        (pl.col("NAME") != pl.col("NAME_d"))
        | (pl.col("UPDATED_AT") != pl.col("UPDATED_AT_d"))
        | pl.col("PARENT_VAT").ne_missing(pl.col("PARENT_VAT_d"))
    )
    assert differs.height == facts["changed"]
    assert both.filter(pl.col("PARENT_VAT").ne_missing(pl.col("PARENT_VAT_d"))).height == facts["relinked"]
    assert (both["VAT_CODE"] == both["VAT_CODE_d"]).all()  # references stay valid
    referenced = delta["PARENT_VAT"].drop_nulls()
    assert referenced.is_in(delta["VAT_CODE"].implode()).all()
    assert delta["COMPANY_ID"].n_unique() == delta.height and delta["VAT_CODE"].n_unique() == delta.height
