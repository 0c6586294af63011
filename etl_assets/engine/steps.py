"""One partition through one step: what a Dagster asset of a flow does, as plain calls.

Each method takes a partition key and the connections it needs and returns an outcome of
plain data (counts, the rows caught, verdicts); the Dagster layer loops over a run's
partitions and turns outcomes into metadata and check results. Nothing here names a flow.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import sqlalchemy as sa

from etl_assets.engine import catcher, deliveries, drift
from etl_assets.engine.catcher import CaughtErrors, Verdict
from etl_assets.engine.columns import ERROR_FIELD, ERROR_REASON, LINE
from etl_assets.engine.deliveries import DeliveryChange
from etl_assets.engine.extract import Extracted, SourceFileError, extract_partition, previous_sha256
from etl_assets.engine.hooks import Hooks, LoadCounts, commit_id
from etl_assets.engine.ledger.record import Delivery, Ledger, StageRecord, ledger_now
from etl_assets.engine.link import parking
from etl_assets.engine.link.linker import link_stage
from etl_assets.engine.link.parking import Retried, retry_parked
from etl_assets.engine.load.modes import load_delivery
from etl_assets.engine.load.partition_loads import lock_partition, record_load
from etl_assets.engine.load.refusals import RowRefusedInBulk
from etl_assets.engine.load.response import RESPONSE_SCHEMA, Outcome
from etl_assets.engine.sources import SourceInputs, commit_watermark, extract_generated, extract_table
from etl_assets.engine.staging import PartitionStage, StagedWriter, count_rows
from etl_assets.engine.transform.stage import transform_stage
from etl_assets.model.flow import FlowModel, LinkSpec
from etl_assets.model.versions import flow_versions
from etl_assets.resources.files import FilesResource
from etl_assets.resources.folders import FoldersResource

ErrorFile = tuple[str, str, Path]  # (partition key, step, path of its error file)


@dataclass
class StepTally:
    """Counts and timing of one step over the partitions of a run."""

    started: float = field(default_factory=time.perf_counter)
    rows_in: int = 0
    rows_out: int = 0
    caught: list[CaughtErrors] = field(default_factory=list)

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


@dataclass(frozen=True)
class ExtractOutcome:
    """A partition's file, kept and staged; ``changed`` says how, when its bytes changed."""

    extracted: Extracted
    changed: str | None


@dataclass(frozen=True)
class TransformOutcome:
    rows_in: int
    good_rows: int
    collapsed: int
    caught: CaughtErrors
    reused: bool = False  # the staged outputs of an earlier run from the same extract and version


@dataclass(frozen=True)
class LoadOutcome:
    loaded: Outcome
    caught: CaughtErrors
    balance: dict[str, object]  # rows in, loaded, rejected, collapsed: for the reconciliation
    change: DeliveryChange | None = None  # a new delivery's rows added, changed, missing


@dataclass(frozen=True)
class LinkOutcome:
    linked: Outcome
    caught: CaughtErrors
    parked_now: int | None  # rows of the flow still parked, for a flow that parks


@dataclass(frozen=True)
class ParkingOutcome:
    """Parked rows retried: the resolved ones linked, the expired ones in error files."""

    retried: Retried
    error_files: list[ErrorFile]
    caught: list[CaughtErrors]
    parked_now: int


class FlowSteps:
    """The steps of one flow over one ETL_HOME, a partition at a time; with a ``ledger``, each
    stage of each partition leaves its row there (engine/ledger)."""

    def __init__(
        self,
        flow: FlowModel,
        folders: FoldersResource,
        hooks: Hooks | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        self.flow = flow
        self.folders = folders
        self.hooks = hooks or Hooks(flow)
        self.ledger = ledger

    def _error_file(self, key: str, step: str, rejected: int) -> Path | None:
        return self.stage(key).error_file(step) if rejected else None

    def _stage_done(
        self, conn: sa.Connection, key: str, step: str, result: Outcome, started: datetime, path: Path
    ) -> None:
        """The ledger's row of a load or link, in that step's own transaction."""
        if self.ledger is None:
            return
        rejected = result.rejected.height
        record = StageRecord(
            step,
            result.rows_in,
            result.rows_in - rejected,
            rejected,
            started,
            path,
            self._error_file(key, step, rejected),
        )
        self.ledger.stage_done(conn, key, record)

    # -- staged files of a partition ---------------------------------------------------
    def stage(self, key: str) -> PartitionStage:
        return PartitionStage(self.flow.name, key, self.folders)

    def staged(self, key: str, name: str) -> Path:
        """A staged file the step needs; missing, it names the step to run first."""
        path = self.stage(key).file(name)
        if not path.exists():
            raise SourceFileError(
                name, f"staged data of partition {key} is missing: materialize the step before"
            )
        return path

    def count(self, key: str, name: str) -> int:
        """Rows of a staged file, from its metadata (the file is not read)."""
        return count_rows(self.staged(key, name))

    def extracted(self, key: str) -> Callable[[pl.Series], pl.DataFrame]:
        """The partition's source rows at given lines, read from disk only when asked."""
        return lambda lines: catcher.source_rows(self.staged(key, "extract.parquet"), lines)

    @property
    def parks(self) -> list[LinkSpec]:
        return [link for link in self.flow.links if link.on_missing == "park"]

    # -- the steps ---------------------------------------------------------------------
    def extract(
        self, key: str, start: datetime, files: FilesResource, inputs: SourceInputs | None = None
    ) -> ExtractOutcome:
        """The partition's file fetched (or its table's changes read, or its generator's records),
        kept (sha256), backed up and staged; ``pre_extract`` first. ``inputs``: what a table or a
        generator is read with."""
        started = ledger_now()
        self.hooks.call("pre_extract", key)
        kind = self.flow.source.kind
        with self.stage(key).lock():
            before = previous_sha256(self.flow, start, self.stage(key)) if kind == "file" else None
            if kind == "file":
                result = extract_partition(self.flow, key, start, files, self.folders)
            elif inputs is None:
                raise ValueError(f"{self.flow.name}: a {kind} source is read with SourceInputs")
            elif kind == "database":
                result, _ = extract_table(self.flow, key, inputs, self.folders)
            else:
                result = extract_generated(self.flow, key, inputs, self.folders)
            if self.flow.schema_drift == "freeze" and result.extra_columns:
                raise SourceFileError(result.file, drift.frozen_fault(self.flow, result.extra_columns))
            changed = None
            # a table's or a generator's extract differs from run to run by nature: not a new delivery
            if before and before != result.sha256:
                changed = f"{result.file}: sha256 {before[:12]}... -> {result.sha256[:12]}..."
                deliveries.remember_loaded(self.stage(key), deliveries.delivery_name(before, result.file))
        if self.ledger is not None:
            kept = deliveries.kept_path(result.raw_path, result.sha256)
            delivery = Delivery(result.sha256, result.file, result.size, result.rows, kept)
            self.ledger.delivered(key, delivery)
            staged = self.stage(key).file("extract.parquet")
            self.ledger.stage_done_now(
                key, StageRecord("extract", result.rows, result.rows, 0, started, staged)
            )
        return ExtractOutcome(result, changed)

    def transform(self, key: str) -> TransformOutcome:
        """The map applied, duplicates collapsed or resolved, bad rows to the error file."""
        stage, started = self.stage(key), ledger_now()
        with stage.lock():
            outcome = self._transform(key, stage)
        self.hooks.call("post_transform", key, staged_file=stage.file("transform.parquet"))
        if self.ledger is not None:
            record = StageRecord(
                "transform",
                outcome.rows_in,
                outcome.good_rows,
                outcome.caught.count,
                started,
                stage.file("transform.parquet"),
                outcome.caught.path if outcome.caught.count else None,
            )
            self.ledger.stage_done_now(key, record)
        return outcome

    def _transform(self, key: str, stage: PartitionStage) -> TransformOutcome:
        flow = drift.evolved(self.flow, self.staged(key, "extract.parquet"))
        result = transform_stage(flow, self.staged(key, "extract.parquet"), stage.dir)
        caught = catcher.catch_staged(
            "transform",
            key,
            stage.file("transform_rejected.parquet"),
            self.extracted(key),
            stage.error_file("transform"),
            self.flow.source.delimiter,
        )
        counts = (result.rows_in, result.good_rows, result.collapsed.height)
        return TransformOutcome(*counts, caught, result.reused)

    def load(self, key: str, engine: sa.Engine) -> LoadOutcome:
        """The upsert of the partition's good rows, in one transaction; then ``on_load_commit``,
        unless this commit called it already."""
        stage = self.stage(key)
        good = self.staged(key, "transform.parquet")
        commit = commit_id(stage, flow_versions(self.flow).pipeline)
        # the response file appears only once the transaction committed
        try:
            loaded = self._load(key, engine, good, commit, bulk=True)
        except RowRefusedInBulk:  # rolled back: again in batches, where refused rows are found
            loaded = self._load(key, engine, good, commit, bulk=False)
        self.hooks.after_commit(engine, key, commit, stage.file("load.parquet"), LoadCounts.of(loaded))
        with stage.lock():
            change = deliveries.delivery_change(stage)
            deliveries.reported(stage)  # told once: in this load's metadata and its run's e-mail
        caught = catcher.catch(
            "load",
            key,
            rejections(loaded.rejected, self.flow.source_column(self.flow.target.key)),
            self.extracted(key),
            stage.error_file("load"),
            self.flow.source.delimiter,
        )
        return LoadOutcome(loaded, caught, self.balance(key, loaded), change)

    def _load(self, key: str, engine: sa.Engine, good: Path, commit: str, bulk: bool) -> Outcome:
        """The partition's one transaction; the response file appears once it committed (and
        the ledger's row of the load with it)."""
        started = ledger_now()
        with (
            self.stage(key).lock(),
            StagedWriter(self.stage(key).file("load.parquet"), RESPONSE_SCHEMA) as response,
            engine.begin() as conn,
        ):
            lock_partition(conn, self.flow.name, key)
            flow = drift.evolved(self.flow, self.stage(key).file("extract.parquet"))
            object_id = self.ledger.object_of(conn, key) if self.ledger is not None else None
            transform_rejected = self.count(key, "transform_rejected.parquet")
            loaded = load_delivery(
                conn,
                flow,
                good,
                response,
                partition=key,
                bulk=bulk,
                object_id=object_id,
                rejected_before=transform_rejected,
            )
            self.record_load(conn, key, loaded)
            # a table's watermark moves with the rows it stands for, or not at all
            commit_watermark(conn, self.flow.name, self.stage(key), key, object_id)
            self.hooks.record(conn, key, commit)
            self._stage_done(conn, key, "load", loaded, started, response.path)
        if self.ledger is not None:
            self.ledger.committed()
        loaded.committed(engine)  # the table's snapshot: true only once committed
        return loaded

    def record_load(self, conn: sa.Connection, key: str, loaded: Outcome) -> None:
        """What the load's transaction records beside the rows: when the partition loaded."""
        record_load(conn, self.flow.name, key, loaded.rows_in)

    def record_link(self, conn: sa.Connection, key: str, linked: Outcome) -> None:
        """What the link's transaction records beside the references: nothing, for a partition
        (a resubmission records the rejects it resolved)."""

    def balance(self, key: str, result: Outcome) -> dict[str, object]:
        """The partition's counts: rows in the file, loaded, rejected, collapsed."""
        rejected = self.count(key, "transform_rejected.parquet") + result.rejected.height
        return {
            "partition": key,
            "rows_in": self.count(key, "extract.parquet"),
            "loaded": result.rows_in - result.rejected.height,
            "rejected": rejected,
            "collapsed": self.count(key, "transform_collapsed.parquet"),
        }

    def link(self, key: str, engine: sa.Engine, now: datetime) -> LinkOutcome:
        """The partition's reference columns set; a missing reference parked (at ``now``, UTC)
        or rejected."""
        stage = self.stage(key)
        good = self.staged(key, "transform.parquet")
        loaded_path = self.staged(key, "load.parquet")
        extracted = self.extracted(key)
        parked_now, started = None, ledger_now()
        with (
            stage.lock(),
            StagedWriter(stage.file("link.parquet"), RESPONSE_SCHEMA) as response,
            engine.begin() as conn,
        ):
            lock_partition(conn, self.flow.name, key)

            def park_rows(link: LinkSpec, rows: pl.DataFrame) -> None:
                if rows.height:
                    parking.park(conn, self.flow, link, rows, extracted(rows[LINE]), key, now)

            def unpark(answer: pl.DataFrame) -> None:
                settled = answer.filter(pl.col("action") != "parked").get_column("target_id")
                for link in self.parks:
                    parking.unpark(conn, self.flow, link, settled.drop_nulls().to_list())

            linked = link_stage(
                conn, self.flow, good, loaded_path, response, park=park_rows, after_batch=unpark
            )
            self.record_link(conn, key, linked)
            if self.parks:
                parked_now = parking.count_parked(conn, self.flow.name)
            self._stage_done(conn, key, "link", linked, started, response.path)
        if self.ledger is not None:
            self.ledger.committed()
        linked.committed(engine)  # the links snapshot: true only once committed
        field_name = self.flow.source_column(self.flow.links[0].field) if self.flow.links else ""
        caught = catcher.catch(
            "link",
            key,
            rejections(linked.rejected, field_name),
            extracted,
            stage.error_file("link"),
            self.flow.source.delimiter,
        )
        return LinkOutcome(linked, caught, parked_now)

    def retry_parked(self, engine: sa.Engine, now: datetime, max_age: timedelta) -> ParkingOutcome:
        """Every parked row of the flow tried again; the expired ones join their partition's
        link error file. ``now`` is UTC (``utc_now``)."""
        with engine.begin() as conn:
            retried = retry_parked(conn, self.flow, now=now, max_age=max_age)
            parked_now = parking.count_parked(conn, self.flow.name)
        files, caught = self.write_expired(retried.expired)
        return ParkingOutcome(retried, files, caught, parked_now)

    def write_expired(self, expired: pl.DataFrame) -> tuple[list[ErrorFile], list[CaughtErrors]]:
        """Expired parked rows join the link error file of the partition they came from."""
        files, caught = [], []
        for (partition_key,), rows in expired.group_by(["partition_key"], maintain_order=True):
            path = self.stage(partition_key).error_file("link")
            found = catcher.append_parked(path, rows, self.flow.source.delimiter, partition_key)
            files.append((partition_key, "link", path))
            caught.append(found)
        return files, caught

    # -- verdicts ----------------------------------------------------------------------
    def rejected_rows(self, tally: StepTally) -> Verdict:
        """The catcher's check of a step: pass, warn up to ``warn_limit``, fail above."""
        return catcher.check_result(tally.caught, self.flow.warn_limit, tally.rows_in)


def rejections(response: pl.DataFrame, field_name: str) -> pl.DataFrame:
    """The rejected rows of a response frame, as the catcher takes them: the field a row names
    (a value the target cannot hold), else ``field_name``."""
    named = pl.col("field") if "field" in response.columns else pl.lit(None, pl.String)
    return response.filter(pl.col("action") == "rejected").select(
        LINE, pl.coalesce(named, pl.lit(field_name)).alias(ERROR_FIELD), pl.col("reason").alias(ERROR_REASON)
    )
