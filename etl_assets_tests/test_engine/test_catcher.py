"""The catcher's preview in the UI leads with the reason; the error file keeps SPEC.md's order."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from etl_assets.engine import catcher
from etl_assets.engine.columns import ERROR_FIELD, ERROR_REASON, LINE, SOURCE_FILE


def test_preview_leads_with_the_reason_and_the_file_keeps_spec_order(tmp_path: Path) -> None:
    source = pl.DataFrame(
        {
            LINE: [2, 3],
            SOURCE_FILE: ["companies_20260115.csv"] * 2,
            "COMPANY_ID": ["C1", "C2"],
            "NAME": ["Rossi S.p.A.", "Bianchi S.n.c."],
            "FOUNDED": ["31/02/2019", "01/01/2020"],
        }
    )
    rejected = pl.DataFrame({LINE: [2], ERROR_FIELD: ["FOUNDED"], ERROR_REASON: ["not a date: '31/02/2019'"]})
    path = tmp_path / "transform.csv"
    caught = catcher.catch("transform", "2026-01-15", rejected, lambda lines: source, path, ";")

    header, rule, row = str(catcher.preview([caught])).splitlines()
    assert header == (
        "| error_step | error_field | error_reason | source_line | COMPANY_ID | NAME | FOUNDED | source_file |"
    )
    assert row == (
        "| transform | FOUNDED | not a date: '31/02/2019' | 2 | C1 | Rossi S.p.A. | 31/02/2019 "
        "| companies_20260115.csv |"
    )
    assert path.read_text(encoding="utf-8").splitlines()[0] == (
        "COMPANY_ID;NAME;FOUNDED;error_step;error_field;error_reason;source_file;source_line"
    )
    check = catcher.check_result([caught], warn_limit=10, rows_in=2)
    assert str(check.metadata["preview"]).startswith("| error_step | error_field | error_reason |")
    assert (check.passed, check.severity) == (False, "WARN")
