"""A checked submission through the flow's own transform, load and link (``FlowSteps``), in
a staging folder of its own: ``data/<flow>/<partition>/resubmission-<n>/``.

The partition's staged files stay as its last run left them (they are what later
submissions are checked against); the partition's lock is held throughout, so its own run
and a second submission wait. Rows still wrong go to
``errors/<flow>/<partition>/<step>.resubmission-<n>.csv`` with their reasons, in the shape of
the error file they came from, ready to be corrected and sent back again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import sqlalchemy as sa

from etl_assets.engine.catcher import ERROR_COLUMNS, CaughtErrors
from etl_assets.engine.columns import LINE
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

KIND = "resubmission"


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
        self, flow: FlowModel, folders: FoldersResource, submission: Submission, number: int
    ) -> None:
        super().__init__(flow, folders)
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
        # ledger: record this resubmission as a data object of kind=resubmission (its file,
        # rows in, resolved, still wrong) linked to the delivery of partition ``key`` it came from
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
        text += [c.line(self.origin.flow, self.origin.partition_key) for c in self.counts]
        return text


def resubmit(
    path: Path, flows: dict[str, FlowModel], folders: FoldersResource, engine: sa.Engine, now: datetime
) -> ResubmissionOutcome:
    """Check the corrected error file at ``path`` and send its rows through transform, load and
    link. ``Refused`` (nothing loaded) when it does not correct that partition's rejects."""
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
            steps = ResubmissionSteps(flow, folders, Submission(path, origin, fresh), number)
            _stage_rows(steps.stage(origin.partition_key), partition, fresh)
            _run(steps, origin.partition_key, engine, now)
            outcome.resolved = steps.resolved
            outcome.error_file, outcome.still_wrong = still_wrong_file(steps, partition, origin, number)
        outcome.counts = resolved_counts(engine, partition)
    return outcome


def _stage_rows(stage: PartitionStage, partition: PartitionStage, rows: pl.DataFrame) -> None:
    """The corrected rows as the resubmission's ``extract.parquet``, in the partition's schema."""
    schema = pl.from_arrow(
        pq.ParquetFile(partition.file("extract.parquet")).schema_arrow.empty_table()
    ).schema
    with StagedWriter(stage.file("extract.parquet"), dict(schema)) as writer:
        writer.write(rows.drop(FINGERPRINT).sort(LINE))


def _run(steps: ResubmissionSteps, key: str, engine: sa.Engine, now: datetime) -> None:
    """transform, load and link, as far as the flow's blocking checks let them go."""
    transformed = steps.transform(key)
    if _blocked(steps, "transform", transformed.caught, transformed.rows_in):
        return
    loaded = steps.load(key, engine)
    if _blocked(steps, "load", loaded.caught, loaded.loaded.rows_in):
        return
    steps.link(key, engine, now)


def _blocked(steps: FlowSteps, step: str, caught: CaughtErrors, rows_in: int) -> bool:
    """The step's blocking check failed (above ``warn_limit``): the steps after it do not run."""
    tally = StepTally(rows_in=rows_in, caught=[caught])
    return step in steps.flow.blocking_checks and steps.rejected_rows(tally).blocks


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
