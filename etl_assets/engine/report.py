"""A report's work: run its query for a window, replace its rows, write the exports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
import sqlalchemy as sa

from etl_assets.engine.ddl import create_missing
from etl_assets.model.report import ReportModel

if TYPE_CHECKING:
    from openpyxl.worksheet.worksheet import Worksheet


@dataclass
class ReportFiles:
    """What one partition of a report produced."""

    rows: int
    workbook: Path
    csv: Path
    chart: Path
    marked_characters: int = 0  # characters a worksheet cannot hold, written as MARK


BINDS = ("start", "end")  # the bind parameters a run gives the query (compile checks the query's)


def window_binds(start: datetime, end: datetime) -> dict[str, datetime]:
    """The query's parameters for ``[start, end)``: naive local times, as the tables hold them."""
    return dict(zip(BINDS, (start.replace(tzinfo=None), end.replace(tzinfo=None)), strict=True))


def run_query(conn: sa.Connection, report: ReportModel, start: datetime, end: datetime) -> pl.DataFrame:
    """The query's rows for ``[start, end)``."""
    result = conn.execute(sa.text(report.query), window_binds(start, end))
    columns = list(result.keys())
    return pl.DataFrame(
        [tuple(row) for row in result], schema=columns, orient="row", infer_schema_length=None
    )


def replace_rows(conn: sa.Connection, report: ReportModel, partition_key: str, frame: pl.DataFrame) -> None:
    """Delete the partition's rows and insert the new ones: a re-run never doubles."""
    rows = frame.with_columns(pl.lit(partition_key).alias(report.partition_column))
    metadata = sa.MetaData()
    columns = [sa.Column(report.partition_column, sa.Text, nullable=False, index=True)]
    for name, dtype in frame.schema.items():
        columns.append(sa.Column(name, _sql_type(dtype)))
    table = sa.Table(report.table, metadata, *columns)
    create_missing(conn, metadata)
    conn.execute(sa.delete(table).where(table.c[report.partition_column] == partition_key))
    if rows.height:
        conn.execute(table.insert(), rows.to_dicts())


def _sql_type(dtype: pl.DataType) -> sa.types.TypeEngine:
    if dtype.is_integer():
        return sa.BigInteger()
    if isinstance(dtype, pl.Decimal) or dtype.is_float():
        return sa.Numeric(18, 2)
    return sa.Text()


def write_exports(report: ReportModel, frame: pl.DataFrame, start: datetime, export_dir: Path) -> ReportFiles:
    """``.csv``, ``.xlsx`` (data sheet, totals, a bar chart) and the chart as ``.png``."""
    base = export_dir / report.export.file.format(start=start)
    chart = report.export.chart
    totals = (
        frame.group_by(chart.category).agg(pl.col(chart.value).sum()).sort(chart.category)
        if frame.height
        else pl.DataFrame(schema={chart.category: pl.String, chart.value: pl.Float64})
    )
    frame.write_csv(base.with_suffix(".csv"), separator=";")
    marked = _workbook(report, frame, totals, base.with_suffix(".xlsx"))
    _png(chart.title, totals, chart.category, chart.value, base.with_suffix(".png"))
    return ReportFiles(
        frame.height, base.with_suffix(".xlsx"), base.with_suffix(".csv"), base.with_suffix(".png"), marked
    )


MARK = "\ufffd"  # stands, visibly, for a character a worksheet cannot hold


def _cell(value: object) -> object:
    return float(value) if value is not None and type(value).__name__ == "Decimal" else value


class _SafeRows:
    """Rows for a worksheet as values, never formulas: a string that starts with ``=`` stays
    text, and control characters a worksheet cannot hold become ``MARK`` (counted)."""

    def __init__(self) -> None:
        from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

        self.illegal = ILLEGAL_CHARACTERS_RE
        self.marked = 0

    def append(self, sheet: Worksheet, values: Sequence[object]) -> None:
        row = []
        for value in values:
            value = _cell(value)
            if isinstance(value, str):
                value, n = self.illegal.subn(MARK, value)
                self.marked += n
            row.append(value)
        sheet.append(row)
        for cell in sheet[sheet.max_row]:
            if cell.data_type == "f":  # openpyxl reads a leading "=" as a formula
                cell.data_type = "s"


def _workbook(report: ReportModel, frame: pl.DataFrame, totals: pl.DataFrame, path: Path) -> int:
    """The workbook; returns how many characters it had to mark."""
    # imported here: openpyxl costs ~0.4 s, paid by every code-location load otherwise
    from openpyxl import Workbook
    from openpyxl.chart import BarChart, Reference

    book, rows = Workbook(), _SafeRows()
    sheet = book.active
    sheet.title = report.export.sheet
    rows.append(sheet, frame.columns)
    for row in frame.iter_rows():
        rows.append(sheet, row)
    chart_spec = report.export.chart
    summary = book.create_sheet("Totals")
    rows.append(summary, [chart_spec.category, chart_spec.value])
    for row in totals.iter_rows():
        rows.append(summary, row)
    chart = BarChart()
    chart.title = chart_spec.title
    chart.y_axis.title = chart_spec.value
    chart.x_axis.title = chart_spec.category
    data = Reference(summary, min_col=2, min_row=1, max_row=max(totals.height, 1) + 1)
    categories = Reference(summary, min_col=1, min_row=2, max_row=max(totals.height, 1) + 1)
    chart.add_data(data, titles_from_data=True)
    chart.set_categories(categories)
    summary.add_chart(chart, "D2")
    book.save(path)
    return rows.marked


def _png(title: str, totals: pl.DataFrame, category: str, value: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4), dpi=100)
    labels = [str(c) for c in totals.get_column(category).to_list()]
    axes.bar(labels, [float(v or 0) for v in totals.get_column(value).to_list()], color="#4472C4")
    axes.set_title(title)
    axes.set_xlabel(category)
    axes.set_ylabel(value)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
