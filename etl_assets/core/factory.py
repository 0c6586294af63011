"""The factory: one flow declaration -> extract, transform, load, link assets, the
catcher's checks, a job and its schedule. Nothing here names a flow.
"""

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl

from etl_assets.core import catcher, parking
from etl_assets.core.extract import SourceFileError, extract_partition, previous_sha256
from etl_assets.core.flow_model import STEPS, FlowModel, LinkSpec
from etl_assets.core.jobs import flow_jobs
from etl_assets.core.linker import link_stage
from etl_assets.core.loader import ACTIONS, RESPONSE_SCHEMA, Outcome, load_stage
from etl_assets.core.maps import ERROR_FIELD, ERROR_REASON, LINE
from etl_assets.core.parking import retry_parked
from etl_assets.core.partitions import partitions_def
from etl_assets.core.run_email import send_kept_emails, send_run_email
from etl_assets.core.sensors import catch_up_schedule, file_sensor
from etl_assets.core.staging import PartitionStage, StagedWriter, count_rows
from etl_assets.core.transform import transform_stage
from etl_assets.resources import DatabaseResource, FilesResource, FoldersResource, MailerResource
from etl_assets.resources.errors import ConnectorError

RECONCILIATION = "reconciliation"
REFERENCED_LOADED_AT = "etl_assets/referenced_loaded_at"


@dataclass(frozen=True)
class FlowRuntime:
    """What a flow takes from the environment's settings."""

    timezone: str = "Europe/Rome"
    max_park_age: timedelta = timedelta(hours=24)


@dataclass
class StepTally:
    """Counts and timing of one step over the partitions of a run."""

    started: float = field(default_factory=time.perf_counter)
    rows_in: int = 0
    rows_out: int = 0
    caught: list[catcher.CaughtErrors] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return sum(c.count for c in self.caught)

    def metadata(self) -> dict[str, object]:
        seconds = max(time.perf_counter() - self.started, 1e-9)
        metadata: dict[str, object] = {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "rejected": self.rejected,
            "duration_s": round(seconds, 3),
            "rows_per_s": round(self.rows_in / seconds, 1),
        }
        preview = catcher.preview(self.caught)
        if preview is not None:
            metadata["rejected_preview"] = preview
        return metadata


class FlowSteps:
    """The step bodies of one flow; the Dagster assets are thin wrappers around them."""

    def __init__(
        self, flow: FlowModel, partitions: dg.TimeWindowPartitionsDefinition, runtime: "FlowRuntime"
    ) -> None:
        self.flow = flow
        self.partitions = partitions
        self.runtime = runtime

    # -- helpers shared by every step -------------------------------------------------
    def stage(self, key: str, folders: FoldersResource) -> PartitionStage:
        return PartitionStage(self.flow.name, key, folders)

    def steps_in_run(self, context: dg.AssetExecutionContext) -> list[str]:
        selection = context.run.asset_selection
        return [
            s for s in STEPS if selection is None or dg.AssetKey(self.flow.asset_name(s)) in selection
        ] or list(STEPS)

    def error_files(self, context: dg.AssetExecutionContext, folders: FoldersResource, upto: str) -> list:
        """The error files this run wrote, for the steps up to and including ``upto``."""
        steps = self.steps_in_run(context)
        steps = steps[: steps.index(upto) + 1] if upto in steps else steps
        found = []
        for key in context.partition_keys:
            for step in steps:
                path = self.stage(key, folders).error_file(step)
                if path.exists():
                    found.append((key, step, path))
        return found

    def rejected_in_run(self, files: list) -> int:
        """Rows in the run's error files (records, not lines: fields may hold line breaks)."""
        delimiter = self.flow.source.delimiter
        return sum(
            pl.scan_csv(p, separator=delimiter, infer_schema=False).select(pl.len()).collect().item()
            for _, _, p in files
        )

    def email(
        self,
        context: dg.AssetExecutionContext,
        step: str,
        mailer: MailerResource,
        folders: FoldersResource,
        failure: str | None = None,
        extra_files: list | None = None,
    ) -> None:
        """Send the run's e-mail from the run's last step of this flow, or from a failing one."""
        if failure is None and self.steps_in_run(context)[-1] != step:
            return
        files = self.error_files(context, folders, step) + [f for f in extra_files or [] if f[2].exists()]
        self.send(
            context, mailer, folders, context.partition_keys, files, self.rejected_in_run(files), failure
        )

    def send(
        self,
        context: dg.AssetExecutionContext,
        mailer: MailerResource,
        folders: FoldersResource,
        partition_keys: list[str],
        files: list,
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
        self, context: dg.AssetExecutionContext, step: str, mailer: MailerResource, folders: FoldersResource
    ) -> Iterator[None]:
        """A step that fails sends the run's e-mail with the reason, then fails the step."""
        try:
            yield
        except SourceFileError as exc:
            self.email(context, step, mailer, folders, failure=str(exc))
            raise dg.Failure(description=f"{step}: {exc}", allow_retries=False) from None
        except ConnectorError as exc:
            self.email(context, step, mailer, folders, failure=str(exc))
            raise dg.Failure(description=f"{step}: {exc}") from None
        except Exception as exc:
            self.email(context, step, mailer, folders, failure=f"{step}: {type(exc).__name__}: {exc}")
            raise

    def finish(
        self,
        context: dg.AssetExecutionContext,
        step: str,
        tally: StepTally,
        mailer: MailerResource,
        folders: FoldersResource,
        extra: dict | None = None,
        checks: list[dg.AssetCheckResult] | None = None,
        extra_files: list | None = None,
    ) -> dg.MaterializeResult:
        """Metadata, check results and, where due, the run's e-mail."""
        checks = checks or []
        blocked = [
            c
            for c in checks
            if not c.passed
            and c.severity == dg.AssetCheckSeverity.ERROR
            and (step in self.flow.blocking_checks or c.check_name == RECONCILIATION)
        ]
        if blocked:
            self.email(
                context,
                step,
                mailer,
                folders,
                failure=f"{step} check {blocked[0].check_name}: {blocked[0].description}",
                extra_files=extra_files,
            )
        else:
            self.email(context, step, mailer, folders, extra_files=extra_files)
        return dg.MaterializeResult(metadata={**tally.metadata(), **(extra or {})}, check_results=checks)

    def count(self, key: str, folders: FoldersResource, name: str) -> int:
        """Rows of a staged file, from its metadata (the file is not read)."""
        return count_rows(self.staged(key, folders, name))

    def extracted(self, key: str, folders: FoldersResource) -> "Callable[[pl.Series], pl.DataFrame]":
        """The partition's source rows at given lines, read from disk only when asked."""
        return lambda lines: catcher.source_rows(self.staged(key, folders, "extract.parquet"), lines)

    def staged(self, key: str, folders: FoldersResource, name: str) -> Path:
        """A staged file the step needs; missing, it names the step to run first."""
        path = self.stage(key, folders).file(name)
        if not path.exists():
            raise SourceFileError(
                name, f"staged data of partition {key} is missing: materialize the step before"
            )
        return path

    # -- the four steps ---------------------------------------------------------------
    def extract(self, context, files: FilesResource, folders: FoldersResource, mailer: MailerResource):
        tally, extra = StepTally(), {}
        drift: dict[str, list[str]] = {}
        changed: dict[str, str] = {}
        with self.failing_emails(context, "extract", mailer, folders):
            for key in context.partition_keys:
                window = self.partitions.time_window_for_partition_key(key)
                before = previous_sha256(self.flow, window.start, self.stage(key, folders))
                result = extract_partition(self.flow, key, window.start, files, folders)
                if result.extra_columns:
                    drift[key] = result.extra_columns
                if before and before != result.sha256:
                    changed[key] = f"{result.file}: sha256 {before[:12]}... -> {result.sha256[:12]}..."
                tally.rows_in += result.rows
                tally.rows_out += result.rows
                extra.update(
                    {
                        "source_file": result.file,
                        "sha256": result.sha256,
                        "bytes": result.size,
                        "raw_path": dg.MetadataValue.path(str(result.raw_path)),
                        "schema_drift": dg.MetadataValue.json(result.extra_columns),
                    }
                )
                if result.extra_columns:
                    context.log.warning(
                        f"{result.file}: schema drift, extra columns kept: {result.extra_columns}"
                    )
        checks = [
            dg.AssetCheckResult(
                check_name="schema_drift",
                passed=not drift,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"extra_columns": dg.MetadataValue.json(drift)},
                description="extra columns kept in staging" if drift else "the columns expected",
            ),
            dg.AssetCheckResult(
                check_name="source_unchanged",
                passed=not changed,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"changed": dg.MetadataValue.json(changed)},
                description="the source file changed since its last extract: re-run the partition"
                if changed
                else "same bytes as the last extract (or a first extract)",
            ),
        ]
        return self.finish(context, "extract", tally, mailer, folders, extra, checks)

    def transform(self, context, folders: FoldersResource, mailer: MailerResource):
        tally, collapsed = StepTally(), 0
        with self.failing_emails(context, "transform", mailer, folders):
            for key in context.partition_keys:
                stage = self.stage(key, folders)
                result = transform_stage(self.flow, self.staged(key, folders, "extract.parquet"), stage.dir)
                tally.rows_in += result.rows_in
                tally.rows_out += result.good_rows
                collapsed += result.collapsed.height
                tally.caught.append(
                    catcher.catch_staged(
                        "transform",
                        key,
                        stage.file("transform_rejected.parquet"),
                        self.extracted(key, folders),
                        stage.error_file("transform"),
                        self.flow.source.delimiter,
                    )
                )
        check = catcher.check_result(tally.caught, self.flow.warn_limit, tally.rows_in)
        return self.finish(
            context, "transform", tally, mailer, folders, {"collapsed_duplicates": collapsed}, [check]
        )

    def load(self, context, database: DatabaseResource, folders: FoldersResource, mailer: MailerResource):
        tally, counts = StepTally(), dict.fromkeys(ACTIONS, 0)
        balanced = []
        with self.failing_emails(context, "load", mailer, folders):
            for key in context.partition_keys:
                stage = self.stage(key, folders)
                good = self.staged(key, folders, "transform.parquet")
                # the response file appears only once the transaction committed
                with (
                    StagedWriter(stage.file("load.parquet"), RESPONSE_SCHEMA) as response,
                    database.engine().begin() as conn,
                ):
                    loaded = load_stage(conn, self.flow, good, response)
                for action, n in loaded.actions.items():
                    counts[action] += n
                tally.rows_in += loaded.rows_in
                tally.rows_out += loaded.rows_in - loaded.rejected.height
                rejected = _rejections(loaded.rejected, self.flow.source_column(self.flow.target.key))
                tally.caught.append(
                    catcher.catch(
                        "load",
                        key,
                        rejected,
                        self.extracted(key, folders),
                        stage.error_file("load"),
                        self.flow.source.delimiter,
                    )
                )
                balanced.append(self.reconcile(key, folders, loaded))
        checks = [
            catcher.check_result(tally.caught, self.flow.warn_limit, tally.rows_in),
            _reconciliation_result(balanced),
        ]
        return self.finish(context, "load", tally, mailer, folders, dict(counts), checks)

    def reconcile(self, key: str, folders: FoldersResource, result: Outcome) -> dict:
        """The partition's counts: rows in the file, loaded, rejected, collapsed."""
        loaded = result.rows_in - result.rejected.height
        rows_in = self.count(key, folders, "extract.parquet")
        rejected = self.count(key, folders, "transform_rejected.parquet") + result.rejected.height
        collapsed = self.count(key, folders, "transform_collapsed.parquet")
        return {
            "partition": key,
            "rows_in": rows_in,
            "loaded": loaded,
            "rejected": rejected,
            "collapsed": collapsed,
        }

    def link(self, context, database: DatabaseResource, folders: FoldersResource, mailer: MailerResource):
        tally = StepTally()
        counts = {"updated": 0, "unchanged": 0, "rejected": 0, "parked": 0}
        expired_files: list = []
        extra: dict[str, object] = {}
        with self.failing_emails(context, "link", mailer, folders):
            now = datetime.now().replace(microsecond=0)
            if self.parks:
                # parked rows of earlier partitions get their chance first
                with database.engine().begin() as conn:
                    retried = retry_parked(conn, self.flow, now=now, max_age=self.runtime.max_park_age)
                expired_files, caught = self.write_expired(retried.expired, folders)
                tally.caught += caught
                extra.update(
                    {
                        "resolved_from_parking": retried.resolved,
                        "expired_from_parking": retried.expired.height,
                    }
                )
            for key in context.partition_keys:
                stage = self.stage(key, folders)
                good = self.staged(key, folders, "transform.parquet")
                loaded_path = self.staged(key, folders, "load.parquet")
                extracted = self.extracted(key, folders)
                with (
                    StagedWriter(stage.file("link.parquet"), RESPONSE_SCHEMA) as response,
                    database.engine().begin() as conn,
                ):

                    def park_rows(link, rows, conn=conn, key=key, extracted=extracted) -> None:  # noqa: ANN001
                        if rows.height:
                            parking.park(conn, self.flow, link, rows, extracted(rows[LINE]), key, now)

                    def unpark(answer: pl.DataFrame, conn=conn) -> None:  # noqa: ANN001
                        settled = answer.filter(pl.col("action") != "parked").get_column("target_id")
                        for link in self.parks:
                            parking.unpark(conn, self.flow, link, settled.drop_nulls().to_list())

                    linked = link_stage(
                        conn, self.flow, good, loaded_path, response, park=park_rows, after_batch=unpark
                    )
                    if self.parks:
                        extra["parked_now"] = parking.count_parked(conn, self.flow.name)
                for action, n in linked.actions.items():
                    counts[action] = counts.get(action, 0) + n
                tally.rows_in += linked.rows_in
                tally.rows_out += linked.rows_in - linked.rejected.height
                field = self.flow.source_column(self.flow.links[0].field) if self.flow.links else ""
                tally.caught.append(
                    catcher.catch(
                        "link",
                        key,
                        _rejections(linked.rejected, field),
                        extracted,
                        stage.error_file("link"),
                        self.flow.source.delimiter,
                    )
                )
        check = catcher.check_result(tally.caught, self.flow.warn_limit, tally.rows_in)
        return self.finish(
            context, "link", tally, mailer, folders, {**counts, **extra}, [check], extra_files=expired_files
        )

    @property
    def parks(self) -> list[LinkSpec]:
        return [link for link in self.flow.links if link.on_missing == "park"]

    def write_expired(self, expired: pl.DataFrame, folders: FoldersResource) -> tuple[list, list]:
        """Expired parked rows join the link error file of the partition they came from."""
        files, caught = [], []
        for (partition_key,), rows in expired.group_by(["partition_key"], maintain_order=True):
            path = self.stage(partition_key, folders).error_file("link")
            found = catcher.append_parked(path, rows, self.flow.source.delimiter, partition_key)
            files.append((partition_key, "link", path))
            caught.append(found)
        return files, caught

    def parked(self, context, database: DatabaseResource, folders: FoldersResource, mailer: MailerResource):
        """Retry every parked row now; after a load of the referenced flow, expire the rest."""
        tally = StepTally()
        loaded_at = context.run.tags.get(REFERENCED_LOADED_AT)
        now = datetime.now().replace(microsecond=0)
        with database.engine().begin() as conn:
            retried = retry_parked(
                conn,
                self.flow,
                now=now,
                max_age=self.runtime.max_park_age,
                referenced_loaded_at=datetime.fromisoformat(loaded_at) if loaded_at else None,
            )
            parked_now = parking.count_parked(conn, self.flow.name)
        files, tally.caught = self.write_expired(retried.expired, folders)
        tally.rows_in = retried.resolved + retried.still_parked + retried.expired.height
        tally.rows_out = retried.resolved
        self.send(context, mailer, folders, sorted({f[0] for f in files}), files, retried.expired.height)
        check = catcher.check_result(tally.caught, self.flow.warn_limit, tally.rows_in)
        metadata = {
            **tally.metadata(),
            "resolved": retried.resolved,
            "expired": retried.expired.height,
            "parked_now": parked_now,
            "referenced_loaded_at": loaded_at or "",
        }
        return dg.MaterializeResult(metadata=metadata, check_results=[check])


def _rejections(response: pl.DataFrame, field: str) -> pl.DataFrame:
    return response.filter(pl.col("action") == "rejected").select(
        LINE, pl.lit(field).alias(ERROR_FIELD), pl.col("reason").alias(ERROR_REASON)
    )


def _reconciliation_result(balanced: list[dict]) -> dg.AssetCheckResult:
    """rows in = loaded + rejected + collapsed duplicates, for every partition."""
    off = [b for b in balanced if b["rows_in"] != b["loaded"] + b["rejected"] + b["collapsed"]]
    totals = {k: sum(b[k] for b in balanced) for k in ("rows_in", "loaded", "rejected", "collapsed")}
    return dg.AssetCheckResult(
        check_name=RECONCILIATION,
        passed=not off,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={**totals, "unbalanced_partitions": dg.MetadataValue.json(off)},
        description=(
            f"rows in {totals['rows_in']} = loaded {totals['loaded']} + rejected {totals['rejected']} "
            f"+ collapsed {totals['collapsed']}"
            if not off
            else f"unbalanced: {off}"
        ),
    )


def build_flow_defs(flow: FlowModel, runtime: FlowRuntime) -> dg.Definitions:
    """Assets, checks, job and schedule of one flow."""
    partitions = partitions_def(flow, runtime.timezone)
    steps = FlowSteps(flow, partitions, runtime)
    common = {
        "group_name": flow.name,
        "partitions_def": partitions,
        "backfill_policy": dg.BackfillPolicy.single_run(),
        "code_version": flow.code_version,
    }
    keys = {s: dg.AssetKey(flow.asset_name(s)) for s in STEPS}

    def check(step: str, name: str = catcher.CHECK_NAME, blocking: bool | None = None) -> dg.AssetCheckSpec:
        return dg.AssetCheckSpec(
            name,
            asset=keys[step],
            blocking=step in flow.blocking_checks if blocking is None else blocking,
            description=f"rejected rows of {step}: pass with none, warn up to {flow.warn_limit}, fail above"
            if name == catcher.CHECK_NAME
            else "rows in = loaded + rejected + collapsed duplicates",
        )

    @dg.asset(
        name=flow.asset_name("extract"),
        check_specs=[
            dg.AssetCheckSpec("schema_drift", asset=keys["extract"], description="columns not in the map"),
            dg.AssetCheckSpec("source_unchanged", asset=keys["extract"], description="same bytes as before"),
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
        return steps.extract(context, files, folders, mailer)

    @dg.asset(
        name=flow.asset_name("transform"),
        deps=[extract],
        kinds={"polars"},
        check_specs=[check("transform")],
        description="transform: the map, duplicates collapsed or resolved.",
        **common,
    )
    def transform(context: dg.AssetExecutionContext, folders: FoldersResource, mailer: MailerResource):
        return steps.transform(context, folders, mailer)

    @dg.asset(
        name=flow.asset_name("load"),
        deps=[transform],
        kinds={"sql"},
        check_specs=[check("load"), check("load", RECONCILIATION, True)],
        description=f"load: upsert into {flow.target.table} on {flow.target.key}, a transaction a partition.",
        **common,
    )
    def load(
        context: dg.AssetExecutionContext,
        database: DatabaseResource,
        folders: FoldersResource,
        mailer: MailerResource,
    ):
        return steps.load(context, database, folders, mailer)

    @dg.asset(
        name=flow.asset_name("link"),
        deps=[load],
        kinds={"sql"},
        check_specs=[check("link")],
        description="link: reference columns from natural values.",
        **common,
    )
    def link(
        context: dg.AssetExecutionContext,
        database: DatabaseResource,
        folders: FoldersResource,
        mailer: MailerResource,
    ):
        return steps.link(context, database, folders, mailer)

    jobs, schedules = flow_jobs(flow, keys, runtime.timezone)
    definitions = dg.Definitions(
        assets=[extract, transform, load, link],
        jobs=jobs,
        schedules=schedules
        + ([catch_up_schedule(flow, jobs[0], partitions, runtime.timezone)] if flow.sensor else []),
        sensors=[file_sensor(flow, jobs[0], partitions)] if flow.sensor else [],
    )
    if steps.parks:
        definitions = dg.Definitions.merge(definitions, _parking_defs(flow, steps, keys["link"]))
    return definitions


def _parking_defs(flow: FlowModel, steps: FlowSteps, link_key: dg.AssetKey) -> dg.Definitions:
    """``<flow>_parked``: the parked rows, retried after each load of the referenced flows."""
    name = flow.asset_name("parked")

    @dg.asset(
        name=name,
        group_name=flow.name,
        deps=[link_key],
        kinds={"sql"},
        check_specs=[
            dg.AssetCheckSpec(catcher.CHECK_NAME, asset=dg.AssetKey(name), description="expired parked rows")
        ],
        description="Rows waiting for their referenced row; retried after each load of "
        + ", ".join(sorted({str(x.after_flow) for x in steps.parks})),
    )
    def parked(
        context: dg.AssetExecutionContext,
        database: DatabaseResource,
        folders: FoldersResource,
        mailer: MailerResource,
    ):
        return steps.parked(context, database, folders, mailer)

    job = dg.define_asset_job(f"{name}_retry", selection=dg.AssetSelection.assets(parked))
    sensors = []
    for after_flow in sorted({str(x.after_flow) for x in steps.parks}):

        @dg.asset_sensor(
            name=f"{name}_after_{after_flow}",
            asset_key=dg.AssetKey(f"{after_flow}_link"),
            job=job,
            default_status=dg.DefaultSensorStatus.RUNNING,
            description=f"retry parked {flow.name} rows after each {after_flow} load",
        )
        def after_load(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry) -> dg.RunRequest:
            loaded_at = datetime.fromtimestamp(asset_event.timestamp).replace(microsecond=0).isoformat()
            return dg.RunRequest(
                run_key=f"{asset_event.run_id}:{asset_event.timestamp}",
                tags={REFERENCED_LOADED_AT: loaded_at},
            )

        sensors.append(after_load)
    return dg.Definitions(assets=[parked], jobs=[job], sensors=sensors)
