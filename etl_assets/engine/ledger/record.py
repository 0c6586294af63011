"""Writing the ledger: the model version a run uses, the delivery a partition extracted, and a
row per stage of a partition per run.

Extract and transform write their row after the stage, in a transaction of their own; load
and link write theirs inside their own transaction (``stage_done(conn, ...)``), so a load that
rolled back leaves no 'succeeded' row. A blocking check that stops the partition afterwards
turns the row 'stopped' (``stopped``); a stage that failed leaves a 'failed' row when the
database can still be written (``failed``). A few statements per partition, never per row.

The ledger never fails a stage the data did not fail: an extract or transform row the database
cannot take now (it is down) waits and goes in with the next write that gets through (the
load's own transaction, where a database down is the load's fault, retried as such). Every
write is idempotent (an object by its checksum, a stage row by its run), so doing one twice
costs a statement and changes nothing.

Beside a run's deliveries: an upload's object and its ``upload`` row, written before any run
(``uploaded``), which the run of the same bytes joins; and a resubmission's object (kind
``resubmission``, ``resubmitted``), whose stages are the resubmission run's rows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from etl_assets.engine.ledger.tables import (
    DELIVERY,
    RESUBMISSION,
    ensure_ledger,
    has_ledger,
    models,
    objects,
    stages,
)
from etl_assets.engine.load.sql import dialect_insert
from etl_assets.model.flow import STEPS, FlowModel
from etl_assets.model.versions import FlowVersions, flow_versions

SUCCEEDED, STOPPED, FAILED = "succeeded", "stopped", "failed"


def ledger_now() -> datetime:
    """Now in UTC without tzinfo, to the microsecond: a run's stages order even within a second."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class Delivery:
    """What extract kept of a partition's file (``etl_data_objects``); an upload's is where
    it was placed (an SFTP path), until its extract keeps it."""

    checksum: str
    name: str
    size: int
    rows: int
    raw_path: Path | str


@dataclass(frozen=True)
class StageRecord:
    """One stage of one partition in one run (``etl_data_object_stages``)."""

    stage: str
    rows_in: int
    rows_out: int
    rows_rejected: int
    started_at: datetime
    staged_path: Path | None = None
    error_file: Path | None = None
    status: str = SUCCEEDED
    error: str | None = None
    finished_at: datetime = field(default_factory=lambda: ledger_now())


class Ledger:
    """The ledger of one run of one flow (``run_id`` is the orchestrator's run)."""

    def __init__(self, flow: FlowModel, run_id: str, engine: Callable[[], sa.Engine]) -> None:
        self.flow = flow
        self.run_id = run_id
        self.engine = engine
        self.versions: FlowVersions = flow_versions(flow)
        self.objects: dict[str, int | None] = {}  # partition -> its delivery's id, as this run knows it
        self.pending: list[Callable[[sa.Connection], None]] = []  # writes the database has not taken yet
        self._flushing = False

    def metadata(self, step: str, key: str) -> dict[str, object]:
        """What the materialization tells of the ledger: the stage's version (the asset's code
        version when it ran), the pipeline's, and the delivery's object id."""
        found: dict[str, object] = {
            "stage_version": self.versions[step],
            "pipeline_version": self.versions.pipeline,
        }
        if self.objects.get(key) is not None:
            found["object_id"] = self.objects[key]
        return found

    # -- extract -----------------------------------------------------------------------
    def delivered(self, key: str, delivery: Delivery) -> None:
        """The delivery's object (the same bytes again: the same object), in a transaction of
        its own; its id remembered for the partition's later stages of this run."""
        self.objects.pop(key, None)
        self._now(lambda conn: self._deliver(conn, key, delivery, ledger_now()))

    def uploaded(self, key: str, delivery: Delivery, record: StageRecord) -> int:
        """An upload placed: its object (the run that extracts these bytes finds the same one)
        and its ``upload`` row, in one transaction; the database's fault raised (the caller
        decides what a ledger it cannot write costs). The object's id."""
        with self.engine().begin() as conn:
            self._deliver(conn, key, delivery, ledger_now(), kept=False)
            self._stage_row(conn, key, record)
        return self.objects[key]  # type: ignore[return-value]

    def resubmitted(self, key: str, submission: Delivery) -> None:
        """A corrected error file sent back: an object of kind ``resubmission`` (the same file
        again: the same object), its origin the partition's delivery; the partition's stages
        of this run are its (their rows, and the rows they load). Written as ``delivered``."""

        def write(conn: sa.Connection) -> None:
            origin = self._extracted(conn, key)
            self._deliver(conn, key, submission, ledger_now(), RESUBMISSION, origin)

        self.objects.pop(key, None)
        self._now(write)

    def _deliver(
        self,
        conn: sa.Connection,
        key: str,
        delivery: Delivery,
        seen: datetime,
        kind: str = DELIVERY,
        origin: int | None = None,
        kept: bool = True,
    ) -> None:
        """The object of ``delivery`` (found, else added); ``kept``: its ``raw_path`` is where
        extract keeps it, the object's from now on (an upload's was where it was placed)."""
        ensure_ledger(conn)
        find = sa.select(objects.c.id, objects.c.raw_path).where(
            objects.c.flow == self.flow.name,
            objects.c.partition_key == key,
            objects.c.checksum == delivery.checksum,
        )
        found = conn.execute(find).one_or_none()
        if found is not None and kept and kind == DELIVERY and found.raw_path != str(delivery.raw_path):
            update = sa.update(objects).where(objects.c.id == found.id)
            conn.execute(update.values(raw_path=str(delivery.raw_path)))
        object_id = found.id if found is not None else None
        if object_id is None:  # asked first: a sequence skips the ids a refused insert took
            values = {
                "flow": self.flow.name,
                "partition_key": key,
                "checksum": delivery.checksum,
                "name": delivery.name,
                "size": delivery.size,
                "rows": delivery.rows,
                "raw_path": str(delivery.raw_path),
                "first_seen": seen,
                "kind": kind,
                "origin_object_id": origin,
            }
            conn.execute(
                dialect_insert(conn)(objects)
                .values(values)
                .on_conflict_do_nothing(index_elements=["flow", "partition_key", "checksum"])
            )
            object_id = conn.execute(find).one().id
        self.objects[key] = object_id

    def object_of(self, conn: sa.Connection, key: str) -> int | None:
        """The object the partition's staged data came from: this run's extract, else the last
        extract the ledger holds (None: extracted before there was a ledger)."""
        self._flush(conn)
        if key not in self.objects:
            self.objects[key] = self._extracted(conn, key)
        return self.objects[key]

    def _extracted(self, conn: sa.Connection, key: str) -> int | None:
        """The object of the partition's last extract the ledger holds."""
        if not has_ledger(conn):
            return None
        return conn.execute(
            sa.select(stages.c.object_id)
            .where(
                stages.c.flow == self.flow.name,
                stages.c.partition_key == key,
                stages.c.stage == "extract",
                stages.c.status != FAILED,
            )
            .order_by(stages.c.finished_at.desc())
            .limit(1)
        ).scalar_one_or_none()

    # -- every stage -------------------------------------------------------------------
    def stage_done(self, conn: sa.Connection, key: str, record: StageRecord) -> None:
        """The stage's row for this run, in the caller's transaction (with the model version),
        after the writes still waiting (``committed`` once the transaction has)."""
        self._flush(conn)
        self._stage_row(conn, key, record)

    def committed(self) -> None:
        """The caller's transaction of ``stage_done`` committed: nothing waits any more."""
        self.pending.clear()

    def _stage_row(self, conn: sa.Connection, key: str, record: StageRecord) -> None:
        ensure_ledger(conn)
        self._register(conn)
        values = {
            "flow": self.flow.name,
            "partition_key": key,
            "stage": record.stage,
            "run_id": self.run_id,
            "object_id": self.object_of(conn, key),
            # a stage not of the pipeline (upload: extract's and transform's checks) has its version
            "stage_version": self.versions.stages.get(record.stage, self.versions.pipeline),
            "pipeline_version": self.versions.pipeline,
            "staged_path": str(record.staged_path) if record.staged_path else None,
            "error_file": str(record.error_file) if record.error_file else None,
            "rows_in": record.rows_in,
            "rows_out": record.rows_out,
            "rows_rejected": record.rows_rejected,
            "status": record.status,
            "error": record.error,
            "started_at": record.started_at,
            "finished_at": record.finished_at,
        }
        insert = dialect_insert(conn)(stages).values(values)
        keys = ["flow", "partition_key", "stage", "run_id"]
        # a retry of the run does the stage again: its row is the last try's
        conn.execute(
            insert.on_conflict_do_update(
                index_elements=keys, set_={c: insert.excluded[c] for c in values if c not in keys}
            )
        )

    def stage_done_now(self, key: str, record: StageRecord) -> None:
        """``stage_done`` in a transaction of its own (extract, transform); the database down,
        it waits for the next write."""
        self._now(lambda conn: self._stage_row(conn, key, record))

    def _now(self, write: Callable[[sa.Connection], None]) -> None:
        self.pending.append(write)
        try:
            with self.engine().begin() as conn:
                self._flush(conn)
        except (sa.exc.OperationalError, sa.exc.InterfaceError):
            return  # a connection fault: the writes wait (the load meets it as its own fault)
        self.pending.clear()

    def stopped(self, key: str, stage: str, reason: str) -> None:
        """A blocking check stopped the partition after the stage wrote its row."""
        self._set_status(key, stage, STOPPED, reason)

    def failed(self, key: str, stage: str, reason: str, started_at: datetime) -> None:
        """The stage failed: its row says why (best effort: the database may be what failed)."""
        record = StageRecord(stage, 0, 0, 0, started_at, status=FAILED, error=reason)
        # the failure is reported by the run; a row it cannot write (the database refuses it)
        # is not worth a second failure
        with contextlib.suppress(sa.exc.SQLAlchemyError):
            self.stage_done_now(key, record)

    def _flush(self, conn: sa.Connection) -> None:
        """The waiting writes, in order, in ``conn``'s transaction (not again from within one)."""
        if self._flushing:
            return
        self._flushing = True
        try:
            for write in list(self.pending):
                write(conn)
        finally:
            self._flushing = False

    def _set_status(self, key: str, stage: str, status: str, reason: str) -> None:
        with self.engine().begin() as conn:
            conn.execute(
                sa.update(stages)
                .where(
                    stages.c.flow == self.flow.name,
                    stages.c.partition_key == key,
                    stages.c.stage == stage,
                    stages.c.run_id == self.run_id,
                )
                .values(status=status, error=reason)
            )

    def _register(self, conn: sa.Connection) -> None:
        """The flow's pipeline version, a row the first time it is seen."""
        values = {
            "flow": self.flow.name,
            "pipeline_version": self.versions.pipeline,
            **{f"{step}_version": self.versions[step] for step in STEPS},
            "first_seen": ledger_now(),
        }
        conn.execute(
            dialect_insert(conn)(models)
            .values(values)
            .on_conflict_do_nothing(index_elements=["flow", "pipeline_version"])
        )
