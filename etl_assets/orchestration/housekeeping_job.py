"""The daily ``housekeeping`` job: tidy the SFTP folders and ETL_HOME, report every file."""

from datetime import UTC, datetime

import dagster as dg

from etl_assets.engine.housekeeping import HousekeepingReport, remove_expired, retire_partitions, tidy_sources
from etl_assets.engine.run_email import send_kept_emails
from etl_assets.model.flow import FlowModel
from etl_assets.orchestration.run_retention import retire
from etl_assets.resources import FilesResource, FoldersResource, MailerResource
from etl_assets.settings.models import HousekeepingSettings


def housekeeping_defs(
    flows: list[FlowModel], settings: HousekeepingSettings, timezone: str
) -> dg.Definitions:
    """The job and its daily schedule, for the flows given."""

    @dg.op(name="tidy_up")
    def housekeeping_op(
        context: dg.OpExecutionContext, files: FilesResource, folders: FoldersResource, mailer: MailerResource
    ) -> dg.Output[dict]:
        report = HousekeepingReport()
        tidy_sources(flows, files, folders, settings.processed, report)
        remove_expired(flows, folders, dict(settings.retention_days), report)
        now = datetime.now(UTC)
        for flow in flows:
            runs, partitions = retire(context.instance, flow, timezone, now)
            report.deleted_runs += runs
            retire_partitions(flow, partitions, folders, report)
        for kept in send_kept_emails(mailer, folders):
            context.log.info(f"sent a kept e-mail: {kept}")
        for path in report.archived:
            context.log.info(f"archived {path}")
        for path in report.unaccounted:
            context.log.warning(f"left alone (not laid out by a flow): {path}")
        for reason in report.refused_names:
            context.log.warning(f"file name refused: {reason}")
        summary = report.summary()
        context.log.info(f"housekeeping: {summary}")
        return dg.Output(
            summary,
            metadata={
                **summary,
                "archived": dg.MetadataValue.json(report.archived),
                "deleted_sources": dg.MetadataValue.json(report.deleted_sources),
                "removed": dg.MetadataValue.json(report.removed),
                "unaccounted": dg.MetadataValue.json(report.unaccounted),
                "refused_names": dg.MetadataValue.json(report.refused_names),
                "deleted_runs": dg.MetadataValue.json(report.deleted_runs),
                "retired_partitions": dg.MetadataValue.json(report.retired_partitions),
            },
        )

    @dg.job(
        name="housekeeping", description="processed source files to processed/; old files out of ETL_HOME"
    )
    def housekeeping_job() -> None:
        housekeeping_op()

    schedule = dg.ScheduleDefinition(
        name="housekeeping_schedule",
        job=housekeeping_job,
        cron_schedule=f"0 {settings.hour} * * *",
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    return dg.Definitions(jobs=[housekeeping_job], schedules=[schedule])
