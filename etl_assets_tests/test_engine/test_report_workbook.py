"""What we write is safe to open: the KPI workbook holds values, never formulas, and marks the
characters a worksheet cannot hold instead of failing the report (real openpyxl, read back)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path

import polars as pl
import yaml
from openpyxl import load_workbook

from etl_assets.engine.report import MARK, write_exports
from etl_assets.model.report import ReportModel

DEFS = Path(__file__).resolve().parents[2] / "etl_assets" / "defs" / "kpi_report" / "defs.yaml"
FORMULA = '=HYPERLINK("http://x","y")'


def test_formulas_stay_text_and_control_characters_are_marked(tmp_path: Path) -> None:
    report = ReportModel.model_validate(yaml.safe_load(DEFS.read_text())["attributes"])
    frame = pl.DataFrame(
        {
            "account": ["C1", "C2", "C3"],
            "account_name": [FORMULA, "Ctl\x07Bell\x1bEsc", "Rossi S.p.A."],
            "status": ["WON", "=1+1", "OPEN"],
            "offers": [1, 2, 3],
            "amount": [Decimal("10.50"), Decimal("2.00"), Decimal("3.25")],
        }
    )
    files = write_exports(report, frame, datetime(2025, 6, 1), tmp_path)
    assert files.marked_characters == 2

    book = load_workbook(files.workbook)
    cells = {c.value: c.data_type for row in book["KPI"].iter_rows() for c in row}
    assert cells[FORMULA] == "s" and cells["=1+1"] == "s"  # text, as received: never a formula
    assert f"Ctl{MARK}Bell{MARK}Esc" in cells
    assert not [c for sheet in book for row in sheet.iter_rows() for c in row if c.data_type == "f"]
    totals = {row[0].value: row[1].value for row in book["Totals"].iter_rows(min_row=2)}
    assert totals == {"=1+1": 2.0, "OPEN": 3.25, "WON": 10.5}
