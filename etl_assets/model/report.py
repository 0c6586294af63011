"""A report declared as data: a query over the target database per partition, the table
it fills, the files it exports and who receives them."""

from __future__ import annotations

import hashlib
from datetime import date

from pydantic import Field

from etl_assets.model.cadence import ScheduleSpec
from etl_assets.model.flow import IDENTIFIER
from etl_assets.model.identifiers import StrictModel


class ChartSpec(StrictModel):
    """One bar chart: ``value`` summed per ``category``."""

    title: str
    category: str = Field(pattern=IDENTIFIER)
    value: str = Field(pattern=IDENTIFIER)


class ExportSpec(StrictModel):
    """Files written to ETL_HOME/export/: ``<file>.xlsx``, ``.csv`` and the chart's ``.png``."""

    file: str = Field(description="name without extension; {start:%Y-%m} is the partition's start")
    sheet: str = "KPI"
    chart: ChartSpec


class ReportModel(StrictModel):
    """A monthly (or daily) report: query -> table -> workbook, CSV, chart -> e-mail."""

    name: str = Field(pattern=IDENTIFIER)
    description: str = ""
    query: str = Field(description="SQL with :start and :end (the partition's window)")
    table: str = Field(pattern=IDENTIFIER, description="replaced for the partition in one transaction")
    partition_column: str = Field("month", pattern=IDENTIFIER, description="holds the partition key")
    export: ExportSpec
    partition_kind: str = Field("monthly", pattern="^(monthly|daily)$")
    start: date = date(2025, 1, 1)
    schedule: ScheduleSpec = Field(default_factory=lambda: ScheduleSpec(day_of_month=20, hour=7))

    @property
    def code_version(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:12]
