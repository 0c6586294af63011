"""The body of a flow's steps: a run's partitions, one at a time, through the selected steps.

The four steps of a flow are the four assets of one Dagster op (``factory.build_flow_defs``),
so a run over a range of partitions does each partition's extract, transform, load and link
before the next partition's, and reports each (step, partition) as it lands: a materialization
and the catcher's check evaluations carrying their partition. A partition whose step fails
(its file missing or corrupt, a blocking check failed, a connector down) stops there and is
reported failed; the other partitions of the run go on and land. The op fails at the end when
a partition failed, so the run and the backfill show exactly which (step, partition) did not
materialize, and "re-execute failed" retries only those.

A lost database connection fails the op at once for Dagster's ``RetryPolicy``; the retry, and
a "re-execute from failure" of a failed run, start each partition at its first step that did
not land before (``reexecution``), from the staged file of the step before it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

import dagster as dg

from etl_assets.engine.catcher import Verdict
from etl_assets.engine.extract import SourceFileError
from etl_assets.engine.hooks import HookError, Hooks
from etl_assets.engine.ledger.record import Ledger, ledger_now
from etl_assets.engine.load.partition_loads import utc_now
from etl_assets.engine.load.response import ACTIONS
from etl_assets.engine.load.snapshot import snapshot_news
from etl_assets.engine.sources import SourceInputs
from etl_assets.engine.steps import ErrorFile, FlowSteps, ParkingOutcome, StepTally
from etl_assets.engine.verdicts import RECONCILIATION, extract_verdicts, reconciliation
from etl_assets.model.flow import STEPS, FlowModel
from etl_assets.orchestration.columns import COLUMN_SCHEMA, table_schema
from etl_assets.orchestration.faults import RETRY_POLICY, connection_fault_line, is_connection_fault
from etl_assets.orchestration.metadata import to_check_evaluation, to_check_result, to_metadata
from etl_assets.orchestration.provenance import provenance_tags
from etl_assets.orchestration.reexecution import landed_before, steps_to_run
from etl_assets.orchestration.run_report import RunReport
from etl_assets.resources import (
    DatabaseResource,
    FilesResource,
    FoldersResource,
    MailerResource,
    SourcesResource,
)
from etl_assets.resources.errors import ConnectorError


@dataclass(frozen=True)
class FlowRuntime:
    """What a flow takes from the environment's settings."""

    timezone: str = "Europe/Rome"
    max_park_age: timedelta = timedelta(hours=24)
    # the Celery queue of each kind of work (a flow's ``work``); none: steps run in the run's process
    queues: Mapping[str, str] = field(default_factory=dict)


@dataclass
class StepReport:
    """What one step did for one partition: its metadata, its checks, and a blocking check's
    failure (the partition stops there)."""

    metadata: dict[str, object]
    verdicts: list[Verdict]
    failure: str | None = None


@dataclass
class Resources:
    files: FilesResource
    folders: FoldersResource
    mailer: MailerResource
    database: DatabaseResource
    sources: SourcesResource = field(default_factory=SourcesResource)


class StepFailed(Exception):
    """A partition's step failed for a reason of its own: its line for the e-mail and the UI."""


@dataclass
class RunState:
    """A run's partitions so far: the steps each ran, the failures, parking's retry."""

    ran: dict[str, list[str]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    parking: ParkingOutcome | None = None
    news: dict[str, str] = field(default_factory=dict)  # what a partition's new delivery changed


class FlowRun:
    """The steps of one flow over a run's partitions, reported to Dagster as they land."""

    def __init__(
        self, flow: FlowModel, partitions: dg.TimeWindowPartitionsDefinition, runtime: FlowRuntime
    ) -> None:
        self.flow = flow
        self.partitions = partitions
        self.runtime = runtime
        self.keys = {s: dg.AssetKey(flow.asset_name(s)) for s in STEPS}

    def __call__(self, context: dg.AssetExecutionContext, resources: Resources) -> None:
        selected = [s for s in STEPS if self.keys[s] in context.selected_asset_keys]
        if not selected:  # checks alone: they are evaluated by the steps they check
            raise dg.Failure(
                description=f"select a step of {self.flow.name}: its checks run with the step they check",
                allow_retries=False,
            )
        landed = landed_before(context, self.keys)
        ledger = Ledger(self.flow, context.run.run_id, resources.database.engine)
        hooks = Hooks(self.flow, context.run.run_id)
        steps, state = FlowSteps(self.flow, resources.folders, hooks, ledger), RunState()
        report = RunReport(self.flow, context, resources.mailer, resources.folders)
        try:
            for key in context.partition_keys:
                todo = steps_to_run(selected, landed.get(key, set()))
                if not todo:  # landed in an earlier try, or in the run this one re-executes
                    state.ran[key] = list(selected)
                    continue
                # the steps it landed before count as this run's: their error files, its e-mail
                state.ran[key] = selected[: len(selected) - len(todo)]
                failure = self.run_partition(context, key, todo, steps, resources, state)
                if failure:
                    state.failures[key] = failure
        except _LastingFault as fault:
            state.failures[fault.key] = str(fault)
            self.on_failure(context, steps, fault.key, state.ran[fault.key][-1], str(fault))
            self.send_report(context, report, state, resources.folders)
            raise dg.Failure(description=str(fault), allow_retries=False) from fault.__cause__
        self.send_report(context, report, state, resources.folders)
        if state.failures:
            lines = [f"{key}: {line}" for key, line in state.failures.items()]
            good = len(context.partition_keys) - len(state.failures)
            raise dg.Failure(
                description=(
                    f"{len(state.failures)} of {len(context.partition_keys)} partitions failed "
                    f"({good} landed): " + "; ".join(lines)
                    if len(context.partition_keys) > 1
                    else lines[0].partition(": ")[2]
                ),
                allow_retries=False,
            )

    def run_partition(
        self,
        context: dg.AssetExecutionContext,
        key: str,
        selected: list[str],
        steps: FlowSteps,
        resources: Resources,
        state: RunState,
    ) -> str | None:
        """The partition through the selected steps, each reported as it lands; the failure
        line of the step that stopped it, or None."""
        ran = state.ran.setdefault(key, [])
        for step in selected:
            ran.append(step)
            started = ledger_now()
            try:
                self.refuse_if_stopped(step, key, selected, steps)
                outcome = self.step(context, step, key, steps, resources, state)
            except StepFailed as failed:
                if steps.ledger is not None:
                    steps.ledger.failed(key, step, str(failed), started)
                self.on_failure(context, steps, key, step, str(failed))
                return str(failed)
            if steps.ledger is not None:
                outcome.metadata.update(steps.ledger.metadata(step, key))
            self.log(context, step, key, outcome)
            steps.stage(key).mark_stopped(step, outcome.failure)
            if outcome.failure:
                if steps.ledger is not None:
                    steps.ledger.stopped(key, step, outcome.failure)
                self.on_failure(context, steps, key, step, outcome.failure)
                return outcome.failure
        return None

    def on_failure(
        self, context: dg.AssetExecutionContext, steps: FlowSteps, key: str, step: str, line: str
    ) -> None:
        """The flow's ``on_failure`` hook told of the partition's failed step; its own fault is
        logged and never replaces the failure it was told of."""
        try:
            steps.hooks.call("on_failure", key, step=step, error=line)
        except HookError as exc:
            context.log.error(f"{self.flow.name} {key}: {exc}")

    def send_report(
        self, context: dg.AssetExecutionContext, report: RunReport, state: RunState, folders: FoldersResource
    ) -> None:
        """The run's e-mail. One it cannot prepare because a folder refuses writes (a full disk,
        a read-only mount) fails the run with the partitions' lines and that folder's, at once:
        a retry would meet the same folder, and a library's error names no folder."""
        try:
            report.send(state.ran, state.failures, self.parked_files(state), state.news)
        except Exception as exc:
            fault = folders.write_fault(exc)
            if fault is None:
                raise
            context.log.exception(f"{self.flow.name}: the run's e-mail could not be prepared")
            lines = [f"{key}: {line}" for key, line in state.failures.items()]
            raise dg.Failure(
                description="; ".join([*lines, f"run e-mail not sent: {fault}"]), allow_retries=False
            ) from exc

    @staticmethod
    def refuse_if_stopped(step: str, key: str, selected: list[str], steps: FlowSteps) -> None:
        """A step run without the earlier step whose blocking check stopped the partition (a
        retry "from failure" re-runs only what failed) would load what the check refused."""
        for earlier in STEPS[: STEPS.index(step)]:
            reason = None if earlier in selected else steps.stage(key).stopped_by(earlier)
            if reason:
                raise StepFailed(
                    f"{step}: not run, {reason}; run the partition again from {earlier} "
                    "(e.g. a backfill of it with every step) once its file is corrected"
                )

    @staticmethod
    def parked_files(state: RunState) -> list[ErrorFile]:
        return [f for f in state.parking.error_files if f[2].exists()] if state.parking else []

    # -- one step of one partition ------------------------------------------------------
    def step(
        self,
        context: dg.AssetExecutionContext,
        step: str,
        key: str,
        steps: FlowSteps,
        resources: Resources,
        state: RunState,
    ) -> StepReport:
        """The step for the partition; a fault turned into the partition's line."""
        try:
            if step == "extract":
                return self.extract(context, key, steps, resources)
            if step == "transform":
                return self.transform(key, steps)
            if step == "load":
                return self.load(key, steps, resources.database, state)
            return self.link(key, steps, resources.database, state)
        except HookError as exc:  # it names the hook; the partition's step fails, the run goes on
            context.log.error(f"{self.flow.name} {key} {step}: {exc}")
            raise StepFailed(f"{step}: {exc}") from None
        except (SourceFileError, ConnectorError) as exc:
            # it names the file or the connector; a download the local disk refused, the folder
            fault = resources.folders.write_fault(exc)
            if fault is not None:
                context.log.error(f"{self.flow.name} {key} {step}: {exc}")
                raise StepFailed(f"{step}: {fault}") from None
            raise StepFailed(str(exc)) from None
        except Exception as exc:
            fault = resources.folders.write_fault(exc)  # a full or read-only folder under ETL_HOME
            if fault is not None:
                context.log.exception(f"{self.flow.name} {key} {step} failed")
                raise StepFailed(f"{step}: {fault}") from exc
            if step not in ("load", "link") or not is_connection_fault(exc):
                context.log.exception(f"{self.flow.name} {key} {step} failed")
                raise StepFailed(f"{step}: {type(exc).__name__}: {exc}") from exc
            tries = context.retry_number + 1
            line = connection_fault_line(exc, resources.database, resources.mailer.env, tries)
            if tries <= RETRY_POLICY.max_retries:
                context.log.warning(f"{step}: {line.split(' after ')[0]}; retrying (try {tries + 1})")
                raise dg.Failure(description=f"{step}: {line}") from exc
            raise _LastingFault(key, f"{step}: {line}") from exc

    def log(self, context: dg.AssetExecutionContext, step: str, key: str, outcome: StepReport) -> None:
        """The (step, partition)'s materialization with its provenance (the UI's stale marks),
        then its checks, as the UI shows them."""
        asset_key = self.keys[step]
        metadata = to_metadata(outcome.metadata)
        sha = outcome.metadata.get("sha256") if step == "extract" else None
        tags = provenance_tags(context, asset_key, key, str(sha) if sha else None)
        context.log_event(
            dg.AssetMaterialization(asset_key=asset_key, partition=key, metadata=metadata, tags=tags)
        )
        for verdict in outcome.verdicts:
            context.log_event(to_check_evaluation(verdict, asset_key, key, self.blocks_on(step, verdict)))

    def blocks_on(self, step: str, verdict: Verdict) -> bool:
        return step in self.flow.blocking_checks or verdict.check_name == RECONCILIATION

    def finish(
        self, step: str, tally: StepTally, extra: dict[str, object], verdicts: list[Verdict]
    ) -> StepReport:
        blocked = [v for v in verdicts if v.blocks and self.blocks_on(step, v)]
        failure = f"{step} check {blocked[0].check_name}: {blocked[0].description}" if blocked else None
        return StepReport({**tally.metadata(), **extra}, verdicts, failure)

    def extract(
        self, context: dg.AssetExecutionContext, key: str, steps: FlowSteps, resources: Resources
    ) -> StepReport:
        tally = StepTally()
        window = self.partitions.time_window_for_partition_key(key)
        inputs = SourceInputs(window.start, window.end, resources.sources, resources.database.engine)
        outcome = steps.extract(key, window.start, resources.files, inputs)
        result = outcome.extracted
        if result.extra_columns:
            context.log.warning(f"{result.file}: schema drift, extra columns kept: {result.extra_columns}")
        tally.rows_in = tally.rows_out = result.rows
        extra = {
            "source_file": result.file,
            "sha256": result.sha256,
            "bytes": result.size,
            "raw_path": result.raw_path,
            "schema_drift": result.extra_columns,
            "reused_staged_extract": result.reused,
        }
        verdicts = extract_verdicts(
            {key: result.extra_columns} if result.extra_columns else {},
            {key: outcome.changed} if outcome.changed else {},
        )
        return self.finish("extract", tally, extra, verdicts)

    def transform(self, key: str, steps: FlowSteps) -> StepReport:
        tally = StepTally()
        outcome = steps.transform(key)
        tally.rows_in, tally.rows_out = outcome.rows_in, outcome.good_rows
        tally.caught.append(outcome.caught)
        extra = {"collapsed_duplicates": outcome.collapsed, "reused_staged_output": outcome.reused}
        return self.finish("transform", tally, extra, [steps.rejected_rows(tally)])

    def load(self, key: str, steps: FlowSteps, database: DatabaseResource, state: RunState) -> StepReport:
        tally, counts = StepTally(), dict.fromkeys(ACTIONS, 0)
        outcome = steps.load(key, database.engine())
        counts.update(outcome.loaded.actions)
        if outcome.change is not None:
            counts.update(outcome.change.metadata())
            state.news[key] = outcome.change.line()
        snapshot = snapshot_news(outcome.loaded.notes)
        if snapshot:  # the e-mail: "The file is a new delivery ...; snapshot ..."
            state.news[key] = "; ".join(filter(None, [state.news.get(key), snapshot]))
        tally.rows_in = outcome.loaded.rows_in
        tally.rows_out = outcome.loaded.rows_in - outcome.loaded.rejected.height
        tally.caught.append(outcome.caught)
        verdicts = [steps.rejected_rows(tally), reconciliation([outcome.balance])]
        # how the rows were looked up: the table's snapshot, or the server's join (load/table_snapshot)
        extra: dict[str, object] = {**counts, **outcome.loaded.notes, "looked_up_in": outcome.loaded.lookup}
        if outcome.loaded.column_types:  # the table as the database has it
            extra[COLUMN_SCHEMA] = table_schema(self.flow, outcome.loaded.column_types)
        return self.finish("load", tally, extra, verdicts)

    def link(self, key: str, steps: FlowSteps, database: DatabaseResource, state: RunState) -> StepReport:
        tally = StepTally()
        counts: dict[str, object] = {"updated": 0, "unchanged": 0, "rejected": 0, "parked": 0}
        now = utc_now()
        if steps.parks and state.parking is None:
            # parked rows of earlier partitions get their chance first, once a run
            state.parking = steps.retry_parked(database.engine(), now, self.runtime.max_park_age)
            tally.caught += state.parking.caught
            counts["resolved_from_parking"] = state.parking.retried.resolved
            counts["expired_from_parking"] = state.parking.retried.expired.height
        outcome = steps.link(key, database.engine(), now)
        counts.update(outcome.linked.actions)
        counts["looked_up_in"] = outcome.linked.lookup  # the links snapshot, or the server's joins
        if outcome.parked_now is not None:
            counts["parked_now"] = outcome.parked_now
        tally.rows_in = outcome.linked.rows_in
        tally.rows_out = outcome.linked.rows_in - outcome.linked.rejected.height
        tally.caught.append(outcome.caught)
        return self.finish("link", tally, counts, [steps.rejected_rows(tally)])

    # -- the parking flow's retry asset -----------------------------------------------
    def parked(self, context, database: DatabaseResource, folders: FoldersResource, mailer: MailerResource):
        """Retry every parked row now; expire those whose referenced day has loaded since."""
        steps, tally = FlowSteps(self.flow, folders), StepTally()
        outcome = steps.retry_parked(database.engine(), utc_now(), self.runtime.max_park_age)
        retried, files = outcome.retried, outcome.error_files
        tally.caught = outcome.caught
        tally.rows_in = retried.resolved + retried.still_parked + retried.expired.height
        tally.rows_out = retried.resolved
        RunReport(self.flow, context, mailer, folders).send_one(
            sorted({f[0] for f in files}), files, retried.expired.height
        )
        metadata = {
            **tally.metadata(),
            "resolved": retried.resolved,
            "expired": retried.expired.height,
            "parked_now": outcome.parked_now,
        }
        return dg.MaterializeResult(
            metadata=to_metadata(metadata), check_results=[to_check_result(steps.rejected_rows(tally))]
        )


class _LastingFault(Exception):
    """A connection fault after the last try: the partition fails and the run stops."""

    def __init__(self, key: str, line: str) -> None:
        super().__init__(line)
        self.key = key
