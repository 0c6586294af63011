"""A database source: the rows of a table changed since the flow's watermark.

The partition reads ``watermark >= last committed watermark - overlap`` up to the end of its
window, ordered by the watermark (then ``order_by``): rows written in the watermark's own second
after the last read are not lost, and rows read again are unchanged for the upsert (their row
hash), so nothing is loaded twice. Timestamps are compared as the source keeps them (naive, in
the settings' timezone, as the partition's window is).
"""

from __future__ import annotations

from datetime import datetime

import polars as pl
import sqlalchemy as sa

from etl_assets.engine.extract import Extracted, SourceFileError
from etl_assets.engine.sources.inputs import SourceInputs
from etl_assets.engine.sources.records import stage_records, upper_columns
from etl_assets.engine.sources.watermarks import Watermark, read_watermark, stage_watermark
from etl_assets.engine.staging import PartitionStage
from etl_assets.model.flow import FlowModel
from etl_assets.model.sources import DatabaseSourceSpec
from etl_assets.resources.folders import FoldersResource


def extract_table(
    flow: FlowModel, key: str, inputs: SourceInputs, folders: FoldersResource
) -> tuple[Extracted, Watermark | None]:
    """The partition's changed rows kept and staged; the watermark its load will commit."""
    spec = flow.source.database
    assert spec is not None
    connector = inputs.sources.connector(spec.connector)
    origin = f"{connector.setting}.{spec.table}"
    since = read_watermark(inputs.target(), flow.name) if inputs.target is not None else None
    with connector.engine().connect() as conn:
        table = _table(conn, spec, origin)
        query = _changes(table, spec, since, inputs.end)
        frame = pl.read_database(query, conn, infer_schema_length=None)
    if frame.height == 0 and not frame.columns:  # no row: the table's columns all the same
        frame = pl.DataFrame(schema=dict.fromkeys((c.name for c in query.selected_columns), pl.String))
    newest = frame.get_column(spec.watermark).max() if frame.height else None
    watermark = Watermark.of(spec.watermark, newest) if newest is not None else None
    extracted = stage_records(flow, key, inputs.start, upper_columns(frame, origin), folders, origin)
    stage_watermark(PartitionStage(flow.name, key, folders), watermark)
    return extracted, watermark


def _table(conn: sa.Connection, spec: DatabaseSourceSpec, origin: str) -> sa.Table:
    try:
        table = sa.Table(spec.table, sa.MetaData(), autoload_with=conn)
    except sa.exc.NoSuchTableError:
        raise SourceFileError(origin, f"no table {spec.table!r} in the source database") from None
    wanted = [spec.watermark, *spec.order_by, *(spec.columns or [])]
    if missing := [c for c in wanted if c not in table.c]:
        raise SourceFileError(
            origin, f"no column {', '.join(missing)} (it has {', '.join(c.name for c in table.c)})"
        )
    return table


def _changes(table: sa.Table, spec: DatabaseSourceSpec, since: Watermark | None, end: datetime) -> sa.Select:
    columns = [table.c[c] for c in spec.columns] if spec.columns else list(table.c)
    if spec.columns and spec.watermark not in spec.columns:
        columns.append(table.c[spec.watermark])  # read to move the watermark
    mark = table.c[spec.watermark]
    query = sa.select(*columns).order_by(mark, *(table.c[c] for c in spec.order_by))
    if since is not None and since.column == spec.watermark:
        query = query.where(mark >= since.minus(spec.overlap_seconds))
    if isinstance(mark.type, (sa.DateTime, sa.Date)):
        query = query.where(mark < end.replace(tzinfo=None))  # changes up to the partition's end
    return query
