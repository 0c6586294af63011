"""A report as a Dagster component: ``defs/<report>/defs.yaml`` holds a ReportModel.

Two partitioned assets: ``<report>_load`` (the query's rows replace the partition's rows
of the report table) and ``<report>_export`` (workbook with a chart, CSV, PNG, e-mailed
to the report's recipients), and the schedule (the 20th at 07:00 for the month before).
"""

import time
from datetime import datetime

import dagster as dg
from pydantic import BaseModel

from etl_assets.engine.report import replace_rows, run_query, write_exports
from etl_assets.engine.staging import PartitionStage
from etl_assets.model.report import ReportModel
from etl_assets.orchestration.component_tree import component_settings
from etl_assets.orchestration.lineage import TableLoaders
from etl_assets.resources import DatabaseResource, FoldersResource, MailerResource


def build_report_defs(
    report: ReportModel, timezone: str, recipients: list[str], loaders: TableLoaders | None = None
) -> dg.Definitions:
    """Assets, job and schedule of one report; ``loaders``, the code location's flows by table,
    gives its load a dep on the flows whose tables the query reads."""
    loaders = TableLoaders() if loaders is None else loaders
    start = datetime.combine(report.start, datetime.min.time())
    partitions = (
        dg.MonthlyPartitionsDefinition(start_date=start, timezone=timezone)
        if report.partition_kind == "monthly"
        else dg.DailyPartitionsDefinition(start_date=start, timezone=timezone)
    )
    common = {"group_name": report.name, "partitions_def": partitions, "code_version": report.code_version}

    @dg.asset(
        name=f"{report.name}_load",
        deps=loaders.report_deps(report),
        kinds={"sql"},
        description=f"{report.description}\n\nquery -> {report.table}",
        **common,
    )
    def load(context: dg.AssetExecutionContext, database: DatabaseResource, folders: FoldersResource):
        started = time.perf_counter()
        window = context.partition_time_window
        with database.engine().begin() as conn:
            frame = run_query(conn, report, window.start, window.end)
            replace_rows(conn, report, context.partition_key, frame)
        frame.write_parquet(PartitionStage(report.name, context.partition_key, folders).file("load.parquet"))
        return dg.MaterializeResult(
            metadata={
                "rows": frame.height,
                "table": report.table,
                "duration_s": round(time.perf_counter() - started, 3),
            }
        )

    @dg.asset(
        name=f"{report.name}_export",
        deps=[load],
        kinds={"excel"},
        description="workbook, CSV and chart, e-mailed",
        **common,
    )
    def export(context: dg.AssetExecutionContext, folders: FoldersResource, mailer: MailerResource):
        import polars as pl

        window = context.partition_time_window
        frame = pl.read_parquet(
            PartitionStage(report.name, context.partition_key, folders).file("load.parquet")
        )
        files = write_exports(report, frame, window.start, folders.dir("export"))
        label = f"{window.start:%Y-%m}" if report.partition_kind == "monthly" else context.partition_key
        where = mailer.send(
            f"[etl_assets][{mailer.env}] {report.name} {label}: report attached",
            f"{report.description}\n\n{files.rows} rows for {label}; workbook, CSV and chart attached.",
            [files.workbook, files.csv, files.chart],
            recipients=recipients or None,
        )
        context.log.info(f"report e-mail: {where}")
        return dg.MaterializeResult(
            metadata={
                "rows": files.rows,
                "workbook": dg.MetadataValue.path(str(files.workbook)),
                "csv": dg.MetadataValue.path(str(files.csv)),
                "chart": dg.MetadataValue.path(str(files.chart)),
                "marked_characters": files.marked_characters,  # not storable in a worksheet
                "emailed": where,
            }
        )

    job = dg.define_asset_job(f"{report.name}_job", selection=dg.AssetSelection.assets(load, export))
    schedule = dg.build_schedule_from_partitioned_job(
        job,
        name=f"{report.name}_schedule",
        hour_of_day=report.schedule.hour,
        minute_of_hour=report.schedule.minute,
        day_of_month=report.schedule.day_of_month,
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    return dg.Definitions(assets=[load, export], jobs=[job], schedules=[schedule])


class ReportComponent(dg.Component):
    """A report over the target database (replaces a scheduled Talend report job)."""

    def __init__(self, report: ReportModel) -> None:
        self.report = report

    @classmethod
    def get_model_cls(cls) -> type[BaseModel]:
        return ReportModel

    @classmethod
    def load(cls, attributes: BaseModel | None, context: dg.ComponentLoadContext) -> "ReportComponent":
        if not isinstance(attributes, ReportModel):
            raise TypeError("a report's defs.yaml needs attributes")
        return cls(attributes)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        settings = component_settings(context)
        recipients = list(settings.report_recipients.get(self.report.name, []))
        return build_report_defs(self.report, settings.timezone, recipients, settings.loaders)
