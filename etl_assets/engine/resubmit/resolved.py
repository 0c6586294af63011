"""Which rejected rows a resubmission resolved, kept in the target beside the data.

A row is resolved in the transaction of the step that rejected it (transform and load
rejects: the load's; link rejects: the link's), so resolution and loading commit together:
sent again, a resolved row is skipped, never loaded twice. A row is known by its partition,
the step that rejected it, its source line and a fingerprint of its values as received: a
partition re-run with another delivery has other rows at those lines, and they are not
taken for resolved.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import sqlalchemy as sa

from etl_assets.engine.columns import LINE, SOURCE_FILE
from etl_assets.engine.ddl import create_missing
from etl_assets.engine.load.partition_loads import utc_now
from etl_assets.engine.load.sql import dialect_insert
from etl_assets.engine.staging import PartitionStage

RESOLVED_TABLE = "etl_resolved_rejects"
FINGERPRINT = "_fingerprint"


def resolved_table(metadata: sa.MetaData | None = None) -> sa.Table:
    return sa.Table(
        RESOLVED_TABLE,
        metadata or sa.MetaData(),
        sa.Column("flow", sa.Text, primary_key=True),
        sa.Column("partition_key", sa.Text, primary_key=True),
        sa.Column("step", sa.Text, primary_key=True),  # the step that rejected the row
        sa.Column("source_line", sa.BigInteger, primary_key=True),
        sa.Column("fingerprint", sa.Text, nullable=False),  # of the row as first received
        sa.Column("resubmission", sa.Integer, nullable=False),  # which one resolved it
        sa.Column("resolved_at", sa.DateTime, nullable=False),  # UTC
    )


def fingerprints(rows: pl.DataFrame) -> pl.DataFrame:
    """``LINE`` and a sha256 of each row's source values as received (bookkeeping left out)."""
    columns = sorted(c for c in rows.columns if not c.startswith("_"))

    def digest(values: tuple) -> str:
        pairs = zip(columns, values, strict=True)
        text = "\x1f".join(f"{c}={'' if v is None else 'v' + str(v)}" for c, v in pairs)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    prints = [digest(values) for values in rows.select(columns).iter_rows()]
    return pl.DataFrame({LINE: rows.get_column(LINE), FINGERPRINT: pl.Series(prints, dtype=pl.String)})


def rejected_lines(stage: PartitionStage, step: str) -> pl.DataFrame:
    """The lines a step rejected in the partition's last run, from its staged files
    (``LINE``, ``SOURCE_FILE`` and the fingerprint of the row as received)."""
    if step == "transform":
        lines = _lines(stage.file("transform_rejected.parquet"), None)
    else:
        lines = _lines(stage.file(f"{step}.parquet"), pl.col("action") == "rejected")
    extract = stage.file("extract.parquet")
    if lines.is_empty() or not extract.exists():
        return pl.DataFrame(schema={LINE: pl.Int64, SOURCE_FILE: pl.String, FINGERPRINT: pl.String})
    source = pl.scan_parquet(extract).filter(pl.col(LINE).is_in(lines.implode())).collect()
    return source.select(pl.col(LINE).cast(pl.Int64), SOURCE_FILE).join(
        fingerprints(source).with_columns(pl.col(LINE).cast(pl.Int64)), on=LINE
    )


def _lines(path: Path, where: pl.Expr | None) -> pl.Series:
    if not path.exists():
        return pl.Series(LINE, [], dtype=pl.Int64)
    scan = pl.scan_parquet(path)
    scan = scan if where is None else scan.filter(where)
    return scan.select(pl.col(LINE).cast(pl.Int64)).unique().collect().get_column(LINE)


def already_resolved(conn: sa.Connection, flow: str, partition_key: str, step: str) -> pl.DataFrame:
    """The lines of a partition's step resolved so far, with the fingerprint they had."""
    schema = {LINE: pl.Int64, FINGERPRINT: pl.String}
    if not sa.inspect(conn).has_table(RESOLVED_TABLE):
        return pl.DataFrame(schema=schema)
    table = resolved_table()
    rows = conn.execute(
        sa.select(table.c.source_line, table.c.fingerprint).where(
            table.c.flow == flow, table.c.partition_key == partition_key, table.c.step == step
        )
    ).all()
    return pl.DataFrame(rows, schema=schema, orient="row")


def record_resolved(
    conn: sa.Connection, flow: str, partition_key: str, step: str, lines: pl.DataFrame, number: int
) -> int:
    """Rows (``LINE``, fingerprint) resolved by resubmission ``number``, inside the caller's
    transaction (the partition's lock held: no other submission of it in between); a row
    resolved already stays as it was. How many were new."""
    lines = lines.join(already_resolved(conn, flow, partition_key, step), on=[LINE, FINGERPRINT], how="anti")
    if lines.is_empty():
        return 0
    table = resolved_table()
    create_missing(conn, table.metadata)
    now = utc_now()
    values = [
        {
            "flow": flow,
            "partition_key": partition_key,
            "step": step,
            "source_line": line,
            "fingerprint": fingerprint,
            "resubmission": number,
            "resolved_at": now,
        }
        for line, fingerprint in lines.select(LINE, FINGERPRINT).iter_rows()
    ]
    insert = dialect_insert(conn)(table)
    # a line resolved for an earlier delivery of the partition holds another row now: replaced
    conn.execute(
        insert.on_conflict_do_update(
            index_elements=["flow", "partition_key", "step", "source_line"],
            set_={c: insert.excluded[c] for c in ("fingerprint", "resubmission", "resolved_at")},
        ),
        values,
    )
    return lines.height


@dataclass(frozen=True)
class StepResolution:
    """A step's rejects in a partition, and how many of them a resubmission resolved."""

    step: str
    rejected: int
    resolved: int

    def line(self, flow: str, partition_key: str) -> str:
        return f"{self.resolved} of {self.rejected} rejects of {flow} {partition_key} {self.step} resolved"


def resolved_counts(engine: sa.Engine, stage: PartitionStage) -> list[StepResolution]:
    """Per step that rejected rows in the partition's last run: rejected and resolved."""
    counts = []
    with engine.connect() as conn:
        for step in ("transform", "load", "link"):
            rejected = rejected_lines(stage, step)
            if rejected.is_empty():
                continue
            done = already_resolved(conn, stage.flow, stage.partition_key, step)
            resolved = rejected.join(done, on=[LINE, FINGERPRINT], how="semi").height
            counts.append(StepResolution(step, rejected.height, resolved))
    return counts
