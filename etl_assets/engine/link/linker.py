"""link: set reference columns from natural values, after load (the parent may be in the
same file). A reference that matches no row rejects the link, not the loaded row, or, for
a link with ``on_missing: park``, is parked until the referenced row arrives.

Incremental: every row's reference is resolved against one look-up of the partition's
values (reasons and the response need nothing more), but a stored link is read and written
only where it can differ from that answer: rows the load inserted or updated, and rows it
left unchanged whose stored link no longer names a current row matching their value (never
resolved: rejected or parked before; or its parent changed its match value, was deleted or
superseded), which one query finds on the server (``stale_links``), or a join on the table's
links snapshot while it is proven true (``link_snapshot``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl
import sqlalchemy as sa

from etl_assets.engine.columns import LINE
from etl_assets.engine.link.link_snapshot import LinkSnapshot
from etl_assets.engine.load.response import RESPONSE_SCHEMA, Outcome
from etl_assets.engine.load.sql import fetch_frame, stage_rows, within_staged_range
from etl_assets.engine.staging import RowStream, StagedWriter, read_batches
from etl_assets.engine.tables import ID, IS_CURRENT, ensure_table, target_table
from etl_assets.model.flow import FlowModel, LinkSpec

FRESH = "_fresh"  # the load inserted the row: its link columns are still empty
KEPT = "_kept"  # the load left the row unchanged: its stored link stands unless stale_links says not
SPARSE_IDS = 4  # ids spread over more than this times their count: staged, not read as a range
LINK_BATCH_ROWS = 500_000  # narrow rows: fewer, larger lookups (each may scan the referenced table)
VALUES_SHAPE = sa.Table("_values", sa.MetaData(), sa.Column("value", sa.Text()))


def _lookup(conn: sa.Connection, link: LinkSpec, flow: FlowModel, values: pl.Series) -> pl.DataFrame:
    """``match value -> id`` for the referenced rows, ambiguous values marked.

    The values (distinct, no null) go to a staging table and are joined in the database
    (one streamed result, not thousands of bound parameters).
    """
    schema = {"_value": pl.String, "_ref_id": pl.Int64, "_matches": pl.UInt32}
    ref = referenced_table(conn, flow, link)
    if ref is None or values.is_empty():  # None: the referenced flow has not loaded anything yet
        return pl.DataFrame(schema=schema)
    staging = stage_rows(conn, pl.DataFrame({"value": values.cast(pl.String)}), VALUES_SHAPE, ["value"])
    try:
        joined = sa.select(sa.cast(ref.c[link.match], sa.Text), ref.c[ID]).join(
            staging, staging.c.value == sa.cast(ref.c[link.match], sa.Text)
        )
        if IS_CURRENT in ref.c:  # a history table: a reference means the key's current version
            joined = joined.where(ref.c[IS_CURRENT].is_(True))
        found = fetch_frame(conn, joined, {"_value": pl.String, "_ref_id": pl.Int64})
    finally:
        staging.drop(conn)
    return found.group_by("_value").agg(pl.col("_ref_id").min(), pl.len().alias("_matches")).cast(schema)


def referenced_table(conn: sa.Connection, flow: FlowModel, link: LinkSpec) -> sa.Table | None:
    """The table ``link`` points into; None while it does not exist."""
    if link.table == flow.target.table:
        return target_table(flow)
    if sa.inspect(conn).has_table(link.table):
        return sa.Table(link.table, sa.MetaData(), autoload_with=conn)
    return None


def stale_links(
    conn: sa.Connection, flow: FlowModel, table: sa.Table, link: LinkSpec, ids: pl.Series
) -> pl.Series:
    """Of these rows (the load left them unchanged), those whose stored link is not a current
    row of the referenced table matching their stored value: a null value with a link, a value
    with none, or a link to a parent whose match value changed, that was deleted or is no
    longer current. Every other row's link is the value's one match, or the value is now
    ambiguous (rejected without a write, as before): its link stands without being read.

    One join on the server, by the parent's primary key; only the stale ids come back.
    A row whose stored value differs from the file's (``latest_by`` kept a newer one) is
    judged by its stored value, the one its link must agree with.
    """
    if ids.is_empty():
        return pl.Series(ID, [], pl.Int64)
    if conn.dialect.name == "postgresql":
        # the estimate of a join over the partition passes jit_above_cost: compiling it took
        # 1.6 s at 1M rows, longer than the join (this transaction only: link's statements)
        conn.exec_driver_sql("SET LOCAL jit = off")
    child = table.alias("_child")
    value, stored = child.c[link.field], child.c[link.column]
    drifted = sa.and_(value.is_(None), stored.is_not(None))
    ref = referenced_table(conn, flow, link)
    if ref is None:
        query = sa.select(child.c[ID]).where(drifted)
    else:
        parent = ref.alias("_parent")
        on = [parent.c[ID] == stored, sa.cast(parent.c[link.match], sa.Text) == sa.cast(value, sa.Text)]
        if IS_CURRENT in parent.c:  # a history table: a reference means the key's current version
            on.append(parent.c[IS_CURRENT].is_(True))
        query = (
            sa.select(child.c[ID])
            .select_from(child.outerjoin(parent, sa.and_(*on)))
            .where(sa.or_(drifted, sa.and_(value.is_not(None), parent.c[ID].is_(None))))
        )
    low, high = ids.min(), ids.max()
    if high - low + 1 <= SPARSE_IDS * ids.len():  # a load's rows: mostly consecutive ids
        found = fetch_frame(conn, query.where(child.c[ID].between(low, high)), {ID: pl.Int64})
    else:
        shape = sa.Table("_ids", sa.MetaData(), sa.Column(ID, sa.BigInteger()))
        staging = stage_rows(conn, ids.to_frame(ID), shape, [ID])
        try:
            found = fetch_frame(conn, query.where(child.c[ID] == staging.c[ID]), {ID: pl.Int64})
        finally:
            staging.drop(conn)
    return found.get_column(ID).filter(found.get_column(ID).is_in(ids.implode()))


def current_links(conn: sa.Connection, table: sa.Table, link: LinkSpec, ids: list[int]) -> pl.DataFrame:
    """``id -> link column`` as stored now, to write only what changes."""
    if not ids:
        return pl.DataFrame(schema={ID: pl.Int64, "_stored": pl.Int64})
    shape = sa.Table("_ids", sa.MetaData(), sa.Column(ID, sa.BigInteger()))
    staging = stage_rows(conn, pl.DataFrame({ID: ids}, schema={ID: pl.Int64}), shape, [ID])
    try:
        joined = sa.select(sa.cast(table.c[ID], sa.Text), table.c[link.column]).join(
            staging, staging.c[ID] == table.c[ID]
        )
        joined = within_staged_range(conn, joined, table.c[ID], staging.c[ID])
        stored = fetch_frame(conn, joined, {"_id": pl.String, "_stored": pl.Int64})
    finally:
        staging.drop(conn)
    return stored.select(pl.col("_id").cast(pl.Int64).alias(ID), "_stored")


ParkRows = Callable[[LinkSpec, pl.DataFrame], None]


def lookup_partition(
    conn: sa.Connection, flow: FlowModel, good_path: Path, snapshot: LinkSnapshot | None = None
) -> dict[str, pl.DataFrame]:
    """Each link's ``match value -> id`` for every value of the partition, by link column.

    One look-up a partition, not one a batch: a look-up joins its values with the whole
    referenced table (a scan of it, or an index probe a value), and link's own UPDATEs
    change no match column, so the answer holds for every batch (one join instead of two
    at 1M rows, of twenty at 10M).
    """
    found = {}
    for link in flow.links:
        values = (
            pl.scan_parquet(good_path)
            .select(pl.col(link.field).cast(pl.String).alias("value"))
            .drop_nulls()
            .unique()
            .collect()
            .get_column("value")
        )
        valid = snapshot is not None and snapshot.valid
        found[link.column] = snapshot.found(link, values) if valid else _lookup(conn, link, flow, values)
    return found


def resolve_references(
    conn: sa.Connection,
    flow: FlowModel,
    link: LinkSpec,
    refs: pl.DataFrame,
    found: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """``refs`` (with ``_value``) plus ``_ref_id`` and ``reason`` (null when settable);
    ``found``: the link's look-up already made for these values (else made here)."""
    if found is None:
        found = _lookup(conn, link, flow, refs.get_column("_value").drop_nulls().unique())
    resolved = refs.join(found, on="_value", how="left")
    column = flow.source_column(link.field)
    return resolved.with_columns(
        pl.when(pl.col("_value").is_null())
        .then(pl.lit(None, pl.String))
        .when(pl.col("_ref_id").is_null())
        .then(pl.format(f"unknown {column} {{}}: no {link.table}.{link.match} matches", pl.col("_value")))
        .when(pl.col("_matches") > 1)
        .then(
            pl.format(
                f"ambiguous {column} {{}}: {{}} rows of {link.table} match",
                pl.col("_value"),
                pl.col("_matches"),
            )
        )
        .alias("reason")
    )


def link_partition(
    conn: sa.Connection,
    flow: FlowModel,
    good: pl.DataFrame,
    loaded: pl.DataFrame,
    park: ParkRows | None = None,
    found: dict[str, pl.DataFrame] | None = None,
    stale: dict[str, pl.Series] | None = None,
    snapshot: LinkSnapshot | None = None,
    table: sa.Table | None = None,
) -> pl.DataFrame:
    """Apply every link of the flow to the partition's loaded rows; one response frame.

    ``good`` and ``loaded`` are the same lines in the same order. Unknown references of a
    parking link go to ``park`` (action ``parked``); the others are rejected. ``found``:
    look-ups made for the whole partition (``lookup_partition``); ``stale``: ``stale_links``
    of the partition's unchanged rows (else asked for this batch); ``table``: the target as
    ``ensure_table`` gave it (else ensured here).

    Only rows whose link can differ are resolved: rows the load wrote, stale ones, and those
    whose value is now ambiguous. Any other row the load left unchanged keeps a stored link
    that is its value's one match (or no value and no link): it answers ``unchanged`` without
    a join (a daily delta's 99%).
    """
    table = ensure_table(conn, flow) if table is None else table
    linkable = loaded.get_column("action") != "rejected"  # a row the load rejected has no link
    rows = loaded.filter(linkable).select(
        LINE,
        "key",
        "target_id",
        (pl.col("action") == "inserted").alias(FRESH),
        (pl.col("action") == "unchanged").alias(KEPT),
    )
    good = good.filter(linkable)
    responses = []
    for link in flow.links:
        refs = rows.with_columns(good.get_column(link.field).cast(pl.String).alias("_value")).with_row_index(
            "_at"
        )
        answers = (found or {}).get(link.column)
        if answers is None:
            answers = _lookup(conn, link, flow, refs.get_column("_value").drop_nulls().unique())
        kept = refs.filter(pl.col(KEPT)).get_column("target_id")
        relink = stale[link.column] if stale is not None else stale_links(conn, flow, table, link, kept)
        ambiguous = answers.filter(pl.col("_matches") > 1).get_column("_value")
        untouched = (
            pl.col(KEPT)
            & ~pl.col("target_id").is_in(relink.implode())
            & ~pl.col("_value").is_in(ambiguous.implode()).fill_null(False)
        )
        resolved = resolve_references(conn, flow, link, refs.filter(~untouched), answers)
        parking = link.on_missing == "park" and park is not None
        waiting = pl.col("_ref_id").is_null() & pl.col("_value").is_not_null() & pl.lit(parking)
        if parking:
            park(link, resolved.filter(waiting).select(LINE, "key", "target_id", "_value"))
        settable = resolved.filter(pl.col("reason").is_null()).select(
            pl.col("target_id").alias(ID), pl.col("_ref_id").alias(link.column), FRESH
        )
        changed = set_links(conn, table, link, settable, snapshot)
        answered = resolved.select(
            "_at",
            pl.when(waiting)
            .then(pl.lit("parked"))
            .when(pl.col("reason").is_not_null())
            .then(pl.lit("rejected"))
            .when(pl.col("target_id").is_in(changed.implode()))
            .then(pl.lit("updated"))
            .otherwise(pl.lit("unchanged"))
            .alias("action"),
            "reason",
        )
        responses.append(_in_line_order(refs.select(LINE, "key", "target_id"), answered))
    if not responses:
        return pl.DataFrame(schema=RESPONSE_SCHEMA)
    if len(responses) == 1:  # one row per line already; in line order, as with several links
        answer = responses[0]
        return (answer if answer.get_column(LINE).is_sorted() else answer.sort(LINE)).cast(RESPONSE_SCHEMA)
    return _one_row_per_line(pl.concat(responses))


def _in_line_order(rows: pl.DataFrame, answered: pl.DataFrame) -> pl.DataFrame:
    """``rows`` answered ``unchanged`` (no reason) but where ``answered`` (by row index ``_at``)
    says otherwise: the resolved rows scattered back in place, not a sort or a join."""
    action = pl.repeat("unchanged", rows.height, dtype=pl.String, eager=True).alias("action")
    reason = pl.repeat(None, rows.height, dtype=pl.String, eager=True).alias("reason")
    if answered.height:
        at = answered.get_column("_at")
        action.scatter(at, answered.get_column("action"))
        reason.scatter(at, answered.get_column("reason"))
    return rows.with_columns(action, reason)


def link_stage(
    conn: sa.Connection,
    flow: FlowModel,
    good_path: Path,
    loaded_path: Path,
    response: StagedWriter,
    park: ParkRows | None = None,
    after_batch: Callable[[pl.DataFrame], None] | None = None,
) -> Outcome:
    """Link a partition a batch at a time: ``load.parquet`` holds a response row for each
    row of ``transform.parquet``, in the same order."""
    fields = sorted({link.field for link in flow.links})
    outcome = Outcome({"updated": 0, "unchanged": 0, "rejected": 0, "parked": 0})
    transformed = RowStream(good_path, [LINE, *fields])
    table = ensure_table(conn, flow)
    snapshot = LinkSnapshot.opened(conn, flow, table, good_path, loaded_path)
    found = lookup_partition(conn, flow, good_path, snapshot)
    # one check for the whole partition, not one a batch (on the server, each joins the
    # referenced table; link's own UPDATEs change no match value, so it holds for every batch)
    kept = (
        pl.scan_parquet(loaded_path)
        .filter(pl.col("action") == "unchanged")
        .select("target_id")
        .collect()
        .get_column("target_id")
    )
    stale = {
        link.column: snapshot.stale(link, kept)
        if snapshot.valid
        else stale_links(conn, flow, table, link, kept)
        for link in flow.links
    }
    for loaded in read_batches(loaded_path, [LINE, "key", "target_id", "action"], LINK_BATCH_ROWS):
        if loaded.height == 0:
            continue
        good = transformed.take(loaded.height)
        if not good.get_column(LINE).equals(loaded.get_column(LINE)):
            raise ValueError(f"{loaded_path} does not match {good_path}: run the load step again")
        answer = link_partition(
            conn, flow, good, loaded, park=park, found=found, stale=stale, snapshot=snapshot, table=table
        )
        response.write(answer)
        if after_batch is not None:
            after_batch(answer)
        outcome.add(answer)
    outcome.after_commit, outcome.lookup = snapshot.close(), snapshot.kind
    return outcome


def set_links(
    conn: sa.Connection,
    table: sa.Table,
    link: LinkSpec,
    settable: pl.DataFrame,
    snapshot: LinkSnapshot | None = None,
) -> pl.Series:
    """Set the link column where it differs; returns the ids that changed.

    Only the rows whose stored value differs are staged and updated: a re-load writes nothing.
    Rows the load just inserted (``_fresh``) have no link yet: their stored value is not
    read. The UPDATE compares again, so a wrong guess can only cost a write, never a change.
    """
    if settable.height == 0:
        return pl.Series(ID, [], pl.Int64)
    known = settable.filter(~pl.col(FRESH)) if FRESH in settable.columns else settable
    ids = known.get_column(ID).to_list()
    valid = snapshot is not None and snapshot.valid
    stored = snapshot.stored(link, ids) if valid else current_links(conn, table, link, ids)
    changes = (
        settable.join(stored, on=ID, how="left")
        .filter(pl.col(link.column).ne_missing(pl.col("_stored")))
        .select(ID, link.column)
    )
    if changes.height == 0:
        return pl.Series(ID, [], pl.Int64)
    staging = stage_rows(conn, changes, _link_shape(table, link), [ID, link.column])
    try:
        statement = (
            sa.update(table)
            .where(table.c[ID] == staging.c[ID])
            # the batch's id range: the join reads that slice of the primary key, not every
            # id below it (a first load's batches hold consecutive ids)
            .where(table.c[ID].between(changes.get_column(ID).min(), changes.get_column(ID).max()))
            .where(table.c[link.column].is_distinct_from(staging.c[link.column]))
            .values({link.column: staging.c[link.column]})
            .returning(table.c[ID])
        )
        # streamed by COPY on PostgreSQL: 100k changed ids cost 0.4 s as Python rows
        changed = fetch_frame(conn, statement, {ID: pl.Int64}).get_column(ID)
        if snapshot is not None and snapshot.active:
            snapshot.updated(link, changes)
        return changed
    finally:
        staging.drop(conn)


def _link_shape(table: sa.Table, link: LinkSpec) -> sa.Table:
    return sa.Table(
        "_shape", sa.MetaData(), sa.Column(ID, sa.BigInteger()), sa.Column(link.column, sa.BigInteger())
    )


def _one_row_per_line(frame: pl.DataFrame) -> pl.DataFrame:
    """With several links, a line is rejected if any link rejects it, updated if any updated."""
    rank = pl.col("action").replace_strict(
        {"rejected": 0, "parked": 1, "updated": 2, "unchanged": 3}, return_dtype=pl.Int8
    )
    return frame.sort([LINE, rank]).unique(LINE, keep="first", maintain_order=True).cast(RESPONSE_SCHEMA)
