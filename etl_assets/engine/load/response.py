"""The response frame of a load or link step: a row per input row with its key, the target
id, the action and the reason; and its tallies over a partition."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

from etl_assets.engine.columns import ERROR_FIELD, ERROR_REASON, LINE

ACTIONS = ("inserted", "updated", "unchanged", "rejected")
RESPONSE_SCHEMA = {
    LINE: pl.Int64,
    "key": pl.String,
    "target_id": pl.Int64,
    "action": pl.String,
    "reason": pl.String,
}


@dataclass
class Outcome:
    """What a load or link step did for one partition, tallied batch by batch."""

    actions: dict[str, int]
    rows_in: int = 0
    rejected: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=RESPONSE_SCHEMA))
    # a load's target columns and their SQL types as the database has them (the UI shows them)
    column_types: dict[str, str] = field(default_factory=dict)
    # what a load mode did beside the rows (a snapshot's deletions), for the load's metadata
    notes: dict[str, object] = field(default_factory=dict)
    # how a load looked up the rows it writes over: the server's join or the table's snapshot
    lookup: str = "server"
    snapshot: str = "none"  # how the table's snapshot was made for the next load (load/table_snapshot)
    # what is written once the load's transaction committed (a table's snapshot), given the engine
    after_commit: list[Callable[[object], None]] = field(default_factory=list)

    def committed(self, engine: object) -> None:
        """What is written once the step's transaction committed (``after_commit``)."""
        for write in self.after_commit:
            write(engine)

    def add(self, answer: pl.DataFrame) -> None:
        """Count one batch's response frame."""
        self.rows_in += answer.height
        for action, n in answer.group_by("action").len().iter_rows():
            self.actions[action] = self.actions.get(action, 0) + n
        refused = answer.filter(pl.col("action") == "rejected")
        self.rejected = pl.concat([self.rejected, refused], how="diagonal_relaxed")


def in_order(lines: pl.Series, refused: pl.DataFrame, loaded: pl.DataFrame) -> pl.DataFrame:
    """A batch's answers in the order of its lines."""
    if refused.height == 0:
        return loaded
    answers = pl.concat([loaded, refused], how="diagonal_relaxed")
    return lines.to_frame().join(answers, on=LINE, how="left", maintain_order="left")


def refused_answer(prepared: pl.DataFrame, refused: pl.DataFrame) -> pl.DataFrame:
    """Response rows for refused lines: rejected, with the field (kept beside the response
    schema for the error file) and the reason."""
    return (
        prepared.select(LINE, "key")
        .join(refused, on=LINE, how="inner", maintain_order="right")
        .select(
            LINE,
            "key",
            pl.lit(None, pl.Int64).alias("target_id"),
            pl.lit("rejected").alias("action"),
            pl.col(ERROR_REASON).alias("reason"),
            pl.col(ERROR_FIELD).alias("field"),
        )
        .cast({**RESPONSE_SCHEMA, "field": pl.String})
    )


def respond(keyed: pl.DataFrame, written: pl.DataFrame) -> pl.DataFrame:
    """The response frame: each line's key, target id and action (``keyed``: the prepared
    rows with their look-up, ``written``: the keys inserted or updated).

    Only a new key or a changed hash can have been written: those few rows are joined with
    ``written`` and their answers scattered into place; every other row is ``unchanged``
    (a daily delta's 99%: no join of every key of the batch)."""
    rows = keyed.select(LINE, "key", pl.col("_before_id").alias("target_id"))
    sent = keyed.select(pl.col("_before_id").is_null() | ~pl.col("_unchanged")).to_series()
    answered = (
        rows.with_row_index("_at")
        .filter(sent)
        .join(written, on="key", how="inner")
        .select("_at", "_written_id", pl.col("target_id").is_null().alias("_new"))
    )
    target_id = rows.get_column("target_id").cast(pl.Int64)
    action = pl.repeat("unchanged", rows.height, dtype=pl.String, eager=True)
    if answered.height:
        at = answered.get_column("_at")
        target_id = target_id.scatter(at, answered.get_column("_written_id"))
        told = pl.when("_new").then(pl.lit("inserted")).otherwise(pl.lit("updated"))
        action = action.scatter(at, answered.select(told).to_series())
    return rows.with_columns(
        target_id.alias("target_id"), action.alias("action"), pl.lit(None, pl.String).alias("reason")
    ).cast(RESPONSE_SCHEMA)
