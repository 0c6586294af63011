"""Corrected rejects sent back, as Dagster runs: the ``resubmit`` job (one run per file,
tagged ``etl_assets/resubmission``, so the UI lists them) and a sensor that starts it for each
corrected error file dropped into ``ETL_HOME/resubmit/<flow>/<partition>/<step>.csv``.

The sensor moves a file aside before asking for its run (``resubmit/.taken/<stamp>/...``,
never deleted), so it is asked for once; the run is where it is accepted or refused.
"""

import time
from pathlib import Path

import dagster as dg

from etl_assets.engine.load.partition_loads import utc_now
from etl_assets.engine.resubmit.run import KIND, ResubmissionOutcome, resubmit
from etl_assets.engine.resubmit.submission import Refused
from etl_assets.engine.run_email import send_run_email
from etl_assets.model.flow import FlowModel
from etl_assets.resources import DatabaseResource, FoldersResource, MailerResource

JOB = "resubmit"
TAG = "etl_assets/resubmission"
TAKEN = ".taken"
SETTLE_SECONDS = 5.0  # a file not written to for this long is complete (no half uploads taken)


class ResubmitConfig(dg.Config):
    """The corrected error file to send back."""

    path: str


def resubmit_defs(flows: list[FlowModel]) -> dg.Definitions:
    """The job and its sensor, for the flows given."""
    by_name = {flow.name: flow for flow in flows}

    @dg.op(name="resubmit_file")
    def resubmit_op(
        context: dg.OpExecutionContext,
        config: ResubmitConfig,
        database: DatabaseResource,
        folders: FoldersResource,
        mailer: MailerResource,
    ) -> dg.Output[list[str]]:
        path = Path(config.path)
        try:
            outcome = resubmit(path, by_name, folders, database.engine(), utc_now(), context.run.run_id)
        except Refused as refused:
            flow, partition_key = _named_by(path)
            where = send_run_email(
                mailer=mailer,
                folders=folders,
                flow=flow,
                run_id=context.run.run_id,
                partition_keys=[partition_key],
                error_files=[],
                rejected=0,
                failure=f"resubmission refused: {'; '.join(refused.reasons)}",
            )
            context.log.info(f"run e-mail: {where}")
            raise dg.Failure(
                description=str(refused),
                metadata={"reasons": dg.MetadataValue.json(refused.reasons)},
                allow_retries=False,
            ) from None
        lines = outcome.lines()
        for line in lines:
            context.log.info(line)
        if where := _email_still_wrong(mailer, folders, outcome, context.run.run_id):
            context.log.info(f"run e-mail: {where}")
        origin = outcome.origin
        metadata = {
            "kind": KIND,
            "file": config.path,
            "resubmission": outcome.number,
            "object_id": outcome.object_id,
            "submitted": outcome.submitted,
            "resolved": outcome.resolved,
            "already_resolved": outcome.already_resolved,
            "still_wrong": outcome.still_wrong,
            "error_file": str(outcome.error_file or ""),
        }
        context.log_event(
            dg.AssetObservation(
                asset_key=by_name[origin.flow].asset_name("load"),
                partition=origin.partition_key,
                metadata=metadata,
            )
        )
        return dg.Output(lines, metadata={"resolved": outcome.resolved, "still_wrong": outcome.still_wrong})

    @dg.job(name=JOB, description="Send a corrected error file back through transform, load and link.")
    def resubmit_job() -> None:
        resubmit_op()

    @dg.sensor(
        name="resubmit_sensor",
        job_name=JOB,  # by name: a sensor holding the job is rebuilt when resources bind (a warning)
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="sends back each corrected error file dropped into ETL_HOME/resubmit/<flow>/<partition>/",
    )
    def resubmit_sensor(context: dg.SensorEvaluationContext, folders: FoldersResource) -> dg.SensorResult:
        root = folders.dir("resubmit")
        requests = []
        for path in dropped(root):
            taken = take(root, path)
            requests.append(
                dg.RunRequest(
                    run_key=str(taken.relative_to(root)),
                    run_config={"ops": {"resubmit_file": {"config": {"path": str(taken)}}}},
                    tags={TAG: "/".join(path.relative_to(root).parts)},
                )
            )
            context.log.info(f"{path}: taken to {taken}")
        if not requests:
            return dg.SensorResult(skip_reason=dg.SkipReason("no corrected error file in resubmit/"))
        return dg.SensorResult(run_requests=requests)

    return dg.Definitions(jobs=[resubmit_job], sensors=[resubmit_sensor])


def _email_still_wrong(
    mailer: MailerResource, folders: FoldersResource, outcome: ResubmissionOutcome, run_id: str
) -> str | None:
    """The run's one e-mail when rows came back still wrong: their error file attached, as any
    run that rejected rows sends it (SPEC: one e-mail per run that produced error files)."""
    if not outcome.still_wrong or outcome.error_file is None:
        return None
    origin = outcome.origin
    return send_run_email(
        mailer=mailer,
        folders=folders,
        flow=origin.flow,
        run_id=run_id,
        partition_keys=[origin.partition_key],
        error_files=[(origin.partition_key, f"{origin.step}.{KIND}-{outcome.number}", outcome.error_file)],
        rejected=outcome.still_wrong,
    )


def _named_by(path: Path) -> tuple[str, str]:
    """The flow and partition a refused file's folders name (``<flow>/<partition>/<step>.csv``),
    for the subject of its e-mail: the file may name no flow we know."""
    return path.parent.parent.name or "resubmit", path.parent.name


def dropped(root: Path, now: float | None = None) -> list[Path]:
    """``<flow>/<partition>/<name>.csv`` files under ``root`` no longer being written."""
    now = now or time.time()
    return sorted(
        p
        for p in root.glob("*/*/*.csv")
        if not p.parts[-3].startswith(".")
        and not p.name.startswith(".")
        and now - p.stat().st_mtime >= SETTLE_SECONDS
    )


def take(root: Path, path: Path) -> Path:
    """The file moved aside to ``.taken/<stamp>/<flow>/<partition>/<name>`` (its run reads it there)."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{time.monotonic_ns() % 1_000_000:06d}"
    target = root / TAKEN / stamp / path.relative_to(root)
    target.parent.mkdir(parents=True, exist_ok=True)
    path.replace(target)
    return target
