"""A checked submission through the flow's own transform, load and link (``FlowSteps``), in
a staging folder of its own: ``data/<flow>/<partition>/resubmission-<n>/``.

The partition's staged files stay as its last run left them (they are what later
submissions are checked against); the partition's lock is held throughout, so its own run
and a second submission wait. Rows still wrong go to
``errors/<flow>/<partition>/<step>.resubmission-<n>.csv`` with their reasons, in the shape of
the error file they came from, ready to be corrected and sent back again.

In the ledger a submission is a data object of its own (kind ``resubmission``, the same file
again the same object), linked to the partition's delivery; its transform, load and link
rows carry the resubmission's run, and the rows it loads its object's id (``etl_object_id``).
The submitted file is kept in ``resubmission-<n>/raw/`` with its sha256, which is also its
load's commit for ``on_load_commit`` (``hooks.commit_id``): the same file sent twice calls the
hook once.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import sqlalchemy as sa

from etl_assets.engine.catcher import ERROR_COLUMNS, CaughtErrors
from etl_assets.engine.columns import LINE
from etl_assets.engine.deliveries import file_sha256
from etl_assets.engine.hooks import Hooks
from etl_assets.engine.ledger.record import Delivery, Ledger, ledger_now
from etl_assets.engine.ledger.tables import RESUBMISSION
from etl_assets.engine.load.response import Outcome
from etl_assets.engine.resubmit.resolved import (
    FINGERPRINT,
    StepResolution,
    already_resolved,
    record_resolved,
    resolved_counts,
)
from etl_assets.engine.resubmit.submission import Origin, Submission, origin_of, read_submission
from etl_assets.engine.staging import PartitionStage, StagedWriter
from etl_assets.engine.steps import FlowSteps, StepTally
from etl_assets.model.flow import FlowModel
from etl_assets.resources.files import partial_name
from etl_assets.resources.folders import FoldersResource

KIND = RESUBMISSION


@dataclass(frozen=True)
class ResubmissionStage(PartitionStage):
    """The staged files of one resubmission, inside its partition's folder."""

    number: int = 1

    @property
    def dir(self) -> Path:
        path = super().dir / f"{KIND}-{self.number}"
        path.mkdir(exist_ok=True)
        return path

    def error_file(self, step: str) -> Path:
        """A step's rejects of this resubmission, kept with its staged files until they are
        joined into the one error file an operator corrects next (``still_wrong_file``)."""
        return self.dir / f"{step}_errors.csv"


class ResubmissionSteps(FlowSteps):
    """The flow's steps over one resubmission: its rows staged apart, the rejects it
    resolved recorded in the transaction that loaded (or linked) them."""

    def __init__(
        self,
        flow: FlowModel,
        folders: FoldersResource,
        submission: Submission,
        number: int,
        hooks: Hooks | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        super().__init__(flow, folders, hooks, ledger)
        self.submission = submission
        self.number = number
        self.resolved = 0

    def stage(self, key: str) -> PartitionStage:
        return ResubmissionStage(self.flow.name, key, self.folders, self.number)

    def record_load(self, conn: sa.Connection, key: str, loaded: Outcome) -> None:
        """Not the partition's load (its time and row count stay): the rejects resolved."""
        if self.submission.origin.step in ("transform", "load"):
            self._record(conn, key, loaded.rejected.get_column(LINE))

    def record_link(self, conn: sa.Connection, key: str, linked: Outcome) -> None:
        if self.submission.origin.step == "link":
            refused = pl.scan_parquet(self.stage(key).file("load.parquet")).filter(
                pl.col("action") == "rejected"
            )
            lines = refused.select(LINE).collect().get_column(LINE)
            self._record(conn, key, pl.concat([lines, linked.rejected.get_column(LINE)]))

    def _record(self, conn: sa.Connection, key: str, refused: pl.Series) -> None:
        """The submitted rows that passed transform and were not ``refused`` since: resolved."""
        good = pl.scan_parquet(self.stage(key).file("transform.parquet")).select(LINE).collect()
        lines = (
            self.submission.rows.select(LINE, FINGERPRINT)
            .join(good, on=LINE, how="semi")
            .filter(~pl.col(LINE).is_in(refused.implode()))
        )
        self.resolved += record_resolved(
            conn, self.flow.name, key, self.submission.origin.step, lines, self.number
        )


@dataclass
class ResubmissionOutcome:
    """What a submission did: rows loaded, skipped as resolved before, still wrong."""

    origin: Origin
    number: int | None  # None: nothing left to run (every row resolved before)
    submitted: int
    already_resolved: int
    object_id: int | None = None  # its data object in the ledger (None: not run, or not written yet)
    resolved: int = 0
    still_wrong: int = 0
    error_file: Path | None = None
    counts: list[StepResolution] = field(default_factory=list)

    def lines(self) -> list[str]:
        where = f"{self.origin.flow} {self.origin.partition_key} {self.origin.step}"
        head = f"resubmission {self.number} of {where}" if self.number else f"resubmission of {where}"
        text = [
            f"{head}: {self.submitted} rows submitted, {self.resolved} resolved, "
            f"{self.already_resolved} resolved before (skipped), {self.still_wrong} still wrong"
        ]
        if self.error_file:
            text.append(f"still wrong, with their reasons: {self.error_file}")
        if self.object_id is not None:
            where = f"{self.origin.flow} {self.origin.partition_key}"
            text.append(f"ledger: data object {self.object_id} (etl-assets ledger show {where})")
        text += [c.line(self.origin.flow, self.origin.partition_key) for c in self.counts]
        return text


def resubmit(
    path: Path,
    flows: dict[str, FlowModel],
    folders: FoldersResource,
    engine: sa.Engine,
    now: datetime,
    run_id: str,
) -> ResubmissionOutcome:
    """Check the corrected error file at ``path`` and send its rows through transform, load and
    link, in the ledger under ``run_id`` (the orchestrator's run). ``Refused`` (nothing
    loaded) when it does not correct that partition's rejects."""
    origin, flow = origin_of(path, flows)
    partition = PartitionStage(flow.name, origin.partition_key, folders)
    with partition.lock():
        submission = read_submission(path, origin, flow, partition)
        with engine.connect() as conn:
            done = already_resolved(conn, flow.name, origin.partition_key, origin.step)
        fresh = submission.rows.join(done, on=[LINE, FINGERPRINT], how="anti")
        outcome = ResubmissionOutcome(
            origin, None, submission.rows.height, submission.rows.height - fresh.height
        )
        if fresh.height:
            number = 1 + sum(1 for p in partition.dir.glob(f"{KIND}-*") if p.is_dir())
            outcome.number = number
            ledger = Ledger(flow, run_id, lambda: engine)
            steps = ResubmissionSteps(
                flow, folders, Submission(path, origin, fresh), number, Hooks(flow, run_id), ledger
            )
            stage = steps.stage(origin.partition_key)
            ledger.resubmitted(origin.partition_key, _keep(path, stage, submission.rows.height))
            _stage_rows(stage, partition, fresh)
            _run(steps, origin.partition_key, engine, now)
            outcome.object_id = ledger.objects.get(origin.partition_key)
            outcome.resolved = steps.resolved
            outcome.error_file, outcome.still_wrong = still_wrong_file(steps, partition, origin, number)
        outcome.counts = resolved_counts(engine, partition)
    return outcome


def _keep(path: Path, stage: PartitionStage, rows: int) -> Delivery:
    """The submitted file kept in the resubmission's ``raw/`` with its sha256 beside it, as
    extract keeps a delivery (what the load's commit is known by)."""
    kept = stage.raw_dir / path.name
    shutil.copy2(path, kept)
    digest = file_sha256(kept)
    kept.with_name(kept.name + ".sha256").write_text(f"{digest}  {kept.name}\n")
    return Delivery(digest, path.name, kept.stat().st_size, rows, kept)


def _stage_rows(stage: PartitionStage, partition: PartitionStage, rows: pl.DataFrame) -> None:
    """The corrected rows as the resubmission's ``extract.parquet``, in the partition's schema."""
    schema = pl.from_arrow(
        pq.ParquetFile(partition.file("extract.parquet")).schema_arrow.empty_table()
    ).schema
    with StagedWriter(stage.file("extract.parquet"), dict(schema)) as writer:
        writer.write(rows.drop(FINGERPRINT).sort(LINE))


def _run(steps: ResubmissionSteps, key: str, engine: sa.Engine, now: datetime) -> None:
    """transform, load and link, as far as the flow's blocking checks let them go; a step that
    failed leaves its 'failed' row in the ledger, as in a run."""
    step, started = "transform", ledger_now()
    try:
        transformed = steps.transform(key)
        if _blocked(steps, step, key, transformed.caught, transformed.rows_in):
            return
        step, started = "load", ledger_now()
        loaded = steps.load(key, engine)
        if _blocked(steps, step, key, loaded.caught, loaded.loaded.rows_in):
            return
        step, started = "link", ledger_now()
        steps.link(key, engine, now)
    except Exception as exc:
        if steps.ledger is not None:
            steps.ledger.failed(key, step, f"{type(exc).__name__}: {exc}", started)
        raise


def _blocked(steps: FlowSteps, step: str, key: str, caught: CaughtErrors, rows_in: int) -> bool:
    """The step's blocking check failed (above ``warn_limit``): the steps after it do not run,
    the step's ledger row says 'stopped'."""
    tally = StepTally(rows_in=rows_in, caught=[caught])
    verdict = steps.rejected_rows(tally)
    blocked = step in steps.flow.blocking_checks and verdict.blocks
    if blocked and steps.ledger is not None:
        steps.ledger.stopped(key, step, verdict.description)
    return blocked


def still_wrong_file(
    steps: ResubmissionSteps, partition: PartitionStage, origin: Origin, number: int
) -> tuple[Path | None, int]:
    """The resubmission's rejects of every step in one file, in line order, shaped as the error
    file they came from: ``errors/<flow>/<partition>/<step>.resubmission-<n>.csv``."""
    stage = steps.stage(origin.partition_key)
    frames = [
        pl.read_csv(p, separator=steps.flow.source.delimiter, infer_schema=False)
        for step in ("transform", "load", "link")
        if (p := stage.error_file(step)).exists()
    ]
    if not frames:
        return None, 0
    rows = pl.concat(frames, how="diagonal_relaxed")
    columns = [c for c in rows.columns if c not in ERROR_COLUMNS] + ERROR_COLUMNS
    rows = rows.select(columns).sort(pl.col("source_line").cast(pl.Int64))
    path = partition.error_file(f"{origin.step}.{KIND}-{number}")
    partial = path.with_name(partial_name(path.name))
    rows.write_csv(partial, separator=steps.flow.source.delimiter)
    partial.replace(path)
    return path, rows.height
