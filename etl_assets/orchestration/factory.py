"""The factory: one flow declaration -> extract, transform, load, link assets, the
catcher's checks, a job and its schedule. Nothing here names a flow, and no step logic
lives here: an asset body calls the engine (``etl_assets.engine.steps``) for each partition
of its run and turns the outcomes into metadata, check results and the run's e-mail.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import dagster as dg

from etl_assets.engine import catcher
from etl_assets.engine.batch_email import partition_line, record_line
from etl_assets.engine.catcher import Verdict
from etl_assets.engine.extract import SourceFileError
from etl_assets.engine.load.partition_loads import utc_now
from etl_assets.engine.load.upsert import ACTIONS
from etl_assets.engine.run_email import rejected_in, run_error_files, send_kept_emails, send_run_email
from etl_assets.engine.steps import (
    RECONCILIATION,
    ErrorFile,
    FlowSteps,
    StepTally,
    extract_verdicts,
    reconciliation,
)
from etl_assets.model.flow import STEPS, FlowModel
from etl_assets.orchestration.batches import batch_of
from etl_assets.orchestration.faults import RETRY_POLICY, connection_fault_line, is_connection_fault
from etl_assets.orchestration.jobs import flow_jobs
from etl_assets.orchestration.metadata import to_check_result, to_metadata
from etl_assets.orchestration.parking import parking_defs
from etl_assets.orchestration.partitions import partitions_def
from etl_assets.orchestration.sensors import catch_up_schedule, file_sensor
from etl_assets.resources import DatabaseResource, FilesResource, FoldersResource, MailerResource
from etl_assets.resources.errors import ConnectorError


@dataclass(frozen=True)
class FlowRuntime:
    """What a flow takes from the environment's settings."""

    timezone: str = "Europe/Rome"
    max_park_age: timedelta = timedelta(hours=24)


class FlowAssets:
    """The asset bodies of one flow: the engine's steps over a run's partitions, reported."""

    def __init__(
        self, flow: FlowModel, partitions: dg.TimeWindowPartitionsDefinition, runtime: FlowRuntime
    ) -> None:
        self.flow = flow
        self.partitions = partitions
        self.runtime = runtime

    # -- the run's e-mail --------------------------------------------------------------
    def steps_in_run(self, context: dg.AssetExecutionContext) -> list[str]:
        selection = context.run.asset_selection
        return [
            s for s in STEPS if selection is None or dg.AssetKey(self.flow.asset_name(s)) in selection
        ] or list(STEPS)

    def email(
        self,
        context: dg.AssetExecutionContext,
        step: str,
        mailer: MailerResource,
        folders: FoldersResource,
        failure: str | None = None,
        extra_files: list[ErrorFile] | None = None,
    ) -> None:
        """Send the run's e-mail from the run's last step of this flow, or from a failing one."""
        steps = self.steps_in_run(context)
        if failure is None and steps[-1] != step:
            return
        upto = steps[: steps.index(step) + 1] if step in steps else steps
        files = run_error_files(self.flow.name, context.partition_keys, upto, folders)
        files += [f for f in extra_files or [] if f[2].exists()]
        batch = batch_of(context.run)
        if batch is None:
            rejected = rejected_in(files, self.flow.source.delimiter)
            self.send(context, mailer, folders, context.partition_keys, files, rejected, failure)
            return
        for key in context.partition_keys:  # one: a batch runs a partition at a time
            mine = [f for f in files if f[0] == key]
            line = partition_line(
                self.flow.name, key, folders, mine, rejected_in(mine, self.flow.source.delimiter), failure
            )
            record_line(folders, batch, line)
            context.log.info(f"batch {batch}: {self.flow.name} {line.text()} (one e-mail when it ends)")

    def send(
        self,
        context: dg.AssetExecutionContext,
        mailer: MailerResource,
        folders: FoldersResource,
        partition_keys: list[str],
        files: list[ErrorFile],
        rejected: int,
        failure: str | None = None,
    ) -> None:
        """E-mails kept from earlier runs first, then this run's (if it rejected or failed)."""
        for kept in send_kept_emails(mailer, folders):
            context.log.info(f"sent a kept e-mail: {kept}")
        where = send_run_email(
            mailer=mailer,
            folders=folders,
            flow=self.flow.name,
            run_id=context.run.run_id,
            partition_keys=partition_keys,
            error_files=files,
            rejected=rejected,
            failure=failure,
        )
        if where:
            context.log.info(f"run e-mail: {where}")

    @contextmanager
    def failing_emails(
        self,
        context: dg.AssetExecutionContext,
        step: str,
        mailer: MailerResource,
        folders: FoldersResource,
        database: DatabaseResource | None = None,
    ) -> Iterator[None]:
        """A step that fails sends the run's e-mail with the reason, then fails the step. A
        lost database connection is retried (RETRY_POLICY): only the last try e-mails."""
        try:
            yield
        except SourceFileError as exc:
            self.email(context, step, mailer, folders, failure=str(exc))
            raise dg.Failure(description=f"{step}: {exc}", allow_retries=False) from None
        except ConnectorError as exc:
            self.email(context, step, mailer, folders, failure=str(exc))
            raise dg.Failure(description=f"{step}: {exc}", allow_retries=False) from None
        except Exception as exc:
            if database is None or not is_connection_fault(exc):
                self.email(context, step, mailer, folders, failure=f"{step}: {type(exc).__name__}: {exc}")
                raise
            tries = context.retry_number + 1
            line = connection_fault_line(exc, database, mailer.env, tries)
            if tries <= RETRY_POLICY.max_retries:
                context.log.warning(f"{step}: {line.split(' after ')[0]}; retrying (try {tries + 1})")
                raise dg.Failure(description=f"{step}: {line}") from exc
            self.email(context, step, mailer, folders, failure=f"{step}: {line}")
            raise dg.Failure(description=f"{step}: {line}", allow_retries=False) from exc

    def finish(
        self,
        context: dg.AssetExecutionContext,
        step: str,
        tally: StepTally,
        mailer: MailerResource,
        folders: FoldersResource,
        extra: dict[str, object],
        verdicts: list[Verdict],
        extra_files: list[ErrorFile] | None = None,
    ) -> dg.MaterializeResult:
        """Metadata, check results and, where due, the run's e-mail."""
        blocked = [
            v
            for v in verdicts
            if v.blocks and (step in self.flow.blocking_checks or v.check_name == RECONCILIATION)
        ]
        failure = f"{step} check {blocked[0].check_name}: {blocked[0].description}" if blocked else None
        self.email(context, step, mailer, folders, failure=failure, extra_files=extra_files)
        return dg.MaterializeResult(
            metadata=to_metadata({**tally.metadata(), **extra}),
            check_results=[to_check_result(v) for v in verdicts],
        )

    # -- the steps ---------------------------------------------------------------------
    def extract(self, context, files: FilesResource, folders: FoldersResource, mailer: MailerResource):
        steps, tally, extra = FlowSteps(self.flow, folders), StepTally(), {}
        drift: dict[str, list[str]] = {}
        changed: dict[str, str] = {}
        with self.failing_emails(context, "extract", mailer, folders):
            for key in context.partition_keys:
                outcome = steps.extract(key, self.partitions.time_window_for_partition_key(key).start, files)
                result = outcome.extracted
                if result.extra_columns:
                    drift[key] = result.extra_columns
                    context.log.warning(
                        f"{result.file}: schema drift, extra columns kept: {result.extra_columns}"
                    )
                if outcome.changed:
                    changed[key] = outcome.changed
                tally.rows_in += result.rows
                tally.rows_out += result.rows
                extra.update(
                    {
                        "source_file": result.file,
                        "sha256": result.sha256,
                        "bytes": result.size,
                        "raw_path": result.raw_path,
                        "schema_drift": result.extra_columns,
                    }
                )
        verdicts = extract_verdicts(drift, changed)
        return self.finish(context, "extract", tally, mailer, folders, extra, verdicts)

    def transform(self, context, folders: FoldersResource, mailer: MailerResource):
        steps, tally, collapsed = FlowSteps(self.flow, folders), StepTally(), 0
        with self.failing_emails(context, "transform", mailer, folders):
            for key in context.partition_keys:
                outcome = steps.transform(key)
                tally.rows_in += outcome.rows_in
                tally.rows_out += outcome.good_rows
                tally.caught.append(outcome.caught)
                collapsed += outcome.collapsed
        extra = {"collapsed_duplicates": collapsed}
        return self.finish(context, "transform", tally, mailer, folders, extra, [steps.rejected_rows(tally)])

    def load(self, context, database: DatabaseResource, folders: FoldersResource, mailer: MailerResource):
        steps, tally, counts = FlowSteps(self.flow, folders), StepTally(), dict.fromkeys(ACTIONS, 0)
        balanced = []
        with self.failing_emails(context, "load", mailer, folders, database):
            for key in context.partition_keys:
                outcome = steps.load(key, database.engine())
                for action, n in outcome.loaded.actions.items():
                    counts[action] += n
                tally.rows_in += outcome.loaded.rows_in
                tally.rows_out += outcome.loaded.rows_in - outcome.loaded.rejected.height
                tally.caught.append(outcome.caught)
                balanced.append(outcome.balance)
        verdicts = [steps.rejected_rows(tally), reconciliation(balanced)]
        return self.finish(context, "load", tally, mailer, folders, dict(counts), verdicts)

    def link(self, context, database: DatabaseResource, folders: FoldersResource, mailer: MailerResource):
        steps, tally = FlowSteps(self.flow, folders), StepTally()
        counts = {"updated": 0, "unchanged": 0, "rejected": 0, "parked": 0}
        expired_files: list[ErrorFile] = []
        extra: dict[str, object] = {}
        with self.failing_emails(context, "link", mailer, folders, database):
            now = utc_now()
            if steps.parks:
                # parked rows of earlier partitions get their chance first
                retried = steps.retry_parked(database.engine(), now, self.runtime.max_park_age)
                expired_files = retried.error_files
                tally.caught += retried.caught
                extra["resolved_from_parking"] = retried.retried.resolved
                extra["expired_from_parking"] = retried.retried.expired.height
            for key in context.partition_keys:
                outcome = steps.link(key, database.engine(), now)
                for action, n in outcome.linked.actions.items():
                    counts[action] = counts.get(action, 0) + n
                if outcome.parked_now is not None:
                    extra["parked_now"] = outcome.parked_now
                tally.rows_in += outcome.linked.rows_in
                tally.rows_out += outcome.linked.rows_in - outcome.linked.rejected.height
                tally.caught.append(outcome.caught)
        verdicts = [steps.rejected_rows(tally)]
        return self.finish(
            context, "link", tally, mailer, folders, {**counts, **extra}, verdicts, extra_files=expired_files
        )

    def parked(self, context, database: DatabaseResource, folders: FoldersResource, mailer: MailerResource):
        """Retry every parked row now; expire those whose referenced day has loaded since."""
        steps, tally = FlowSteps(self.flow, folders), StepTally()
        outcome = steps.retry_parked(database.engine(), utc_now(), self.runtime.max_park_age)
        retried, files = outcome.retried, outcome.error_files
        tally.caught = outcome.caught
        tally.rows_in = retried.resolved + retried.still_parked + retried.expired.height
        tally.rows_out = retried.resolved
        self.send(context, mailer, folders, sorted({f[0] for f in files}), files, retried.expired.height)
        metadata = {
            **tally.metadata(),
            "resolved": retried.resolved,
            "expired": retried.expired.height,
            "parked_now": outcome.parked_now,
        }
        return dg.MaterializeResult(
            metadata=to_metadata(metadata), check_results=[to_check_result(steps.rejected_rows(tally))]
        )


def build_flow_defs(flow: FlowModel, runtime: FlowRuntime) -> dg.Definitions:
    """Assets, checks, job and schedule of one flow."""
    partitions = partitions_def(flow, runtime.timezone)
    bodies = FlowAssets(flow, partitions, runtime)
    common = {
        "group_name": flow.name,
        "partitions_def": partitions,
        # a partition is the unit of work: a run each, its checks and e-mail line its own
        "backfill_policy": dg.BackfillPolicy.multi_run(max_partitions_per_run=1),
        "code_version": flow.code_version,
    }
    keys = {s: dg.AssetKey(flow.asset_name(s)) for s in STEPS}

    def check(step: str, name: str = catcher.CHECK_NAME, blocking: bool | None = None) -> dg.AssetCheckSpec:
        return dg.AssetCheckSpec(
            name,
            asset=keys[step],
            partitions_def=partitions,  # each result carries its partition in the UI
            blocking=step in flow.blocking_checks if blocking is None else blocking,
            description=f"rejected rows of {step}: pass with none, warn up to {flow.warn_limit}, fail above"
            if name == catcher.CHECK_NAME
            else "rows in = loaded + rejected + collapsed duplicates",
        )

    @dg.asset(
        name=flow.asset_name("extract"),
        check_specs=[
            dg.AssetCheckSpec(
                "schema_drift",
                asset=keys["extract"],
                partitions_def=partitions,
                description="columns not in the map",
            ),
            dg.AssetCheckSpec(
                "source_unchanged",
                asset=keys["extract"],
                partitions_def=partitions,
                description="same bytes as before",
            ),
        ],
        kinds={"sftp", "polars"},
        description=f"{flow.description}\n\nextract: the partition's file, kept (sha256) and backed up.",
        **common,
    )
    def extract(
        context: dg.AssetExecutionContext,
        files: FilesResource,
        folders: FoldersResource,
        mailer: MailerResource,
    ):
        return bodies.extract(context, files, folders, mailer)

    @dg.asset(
        name=flow.asset_name("transform"),
        deps=[extract],
        kinds={"polars"},
        check_specs=[check("transform")],
        description="transform: the map, duplicates collapsed or resolved.",
        **common,
    )
    def transform(context: dg.AssetExecutionContext, folders: FoldersResource, mailer: MailerResource):
        return bodies.transform(context, folders, mailer)

    @dg.asset(
        name=flow.asset_name("load"),
        deps=[transform],
        kinds={"sql"},
        check_specs=[check("load"), check("load", RECONCILIATION, True)],
        retry_policy=RETRY_POLICY,
        description=f"load: upsert into {flow.target.table} on {flow.target.key}, a transaction a partition.",
        **common,
    )
    def load(
        context: dg.AssetExecutionContext,
        database: DatabaseResource,
        folders: FoldersResource,
        mailer: MailerResource,
    ):
        return bodies.load(context, database, folders, mailer)

    @dg.asset(
        name=flow.asset_name("link"),
        deps=[load],
        kinds={"sql"},
        check_specs=[check("link")],
        retry_policy=RETRY_POLICY,
        description="link: reference columns from natural values.",
        **common,
    )
    def link(
        context: dg.AssetExecutionContext,
        database: DatabaseResource,
        folders: FoldersResource,
        mailer: MailerResource,
    ):
        return bodies.link(context, database, folders, mailer)

    jobs, schedules = flow_jobs(flow, keys, runtime.timezone)
    definitions = dg.Definitions(
        assets=[extract, transform, load, link],
        jobs=jobs,
        schedules=schedules
        + ([catch_up_schedule(flow, jobs[0], partitions, runtime.timezone)] if flow.sensor else []),
        sensors=[file_sensor(flow, jobs[0], partitions)] if flow.sensor else [],
    )
    if any(link.on_missing == "park" for link in flow.links):
        definitions = dg.Definitions.merge(definitions, parking_defs(flow, bodies.parked, keys["link"]))
    return definitions
