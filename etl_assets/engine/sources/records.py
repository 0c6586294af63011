"""Records of a table or a generator kept and staged as a file's are: the raw extract kept as
Parquet with its sha256 (the "raw bytes"), backed up, then staged as ``extract.parquet`` with
every column a string and each record's line (its row number in the extract)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import polars as pl

from etl_assets.engine.columns import LINE, SOURCE_FILE
from etl_assets.engine.deliveries import back_up, file_sha256, keep_current, keep_delivery
from etl_assets.engine.extract import RESERVED_COLUMNS, Extracted, SourceFileError
from etl_assets.engine.partition_keys import source_file_name
from etl_assets.engine.staging import PartitionStage, StagedWriter
from etl_assets.model.flow import FlowModel
from etl_assets.resources.files import partial_name
from etl_assets.resources.folders import FoldersResource

# how a table's dates and times are staged, so a map's Date/DateTime format can read them
DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"
DATE_FORMAT = "%Y-%m-%d"


def upper_columns(frame: pl.DataFrame, where: str) -> pl.DataFrame:
    """Columns named in upper case, as a file's header usually is: a map field finds its column
    by default (``email`` reads ``EMAIL``). Two names the same but for case are refused."""
    upper = [c.upper() for c in frame.columns]
    if twice := sorted({c for c in upper if upper.count(c) > 1}):
        raise SourceFileError(where, f"columns {', '.join(twice)} differ only by case: rename one")
    if taken := [c for c in upper if c in RESERVED_COLUMNS]:
        raise SourceFileError(where, f"column {', '.join(taken)}: a name staging uses; rename it")
    return frame.rename(dict(zip(frame.columns, upper, strict=True)))


def as_strings(frame: pl.DataFrame) -> pl.DataFrame:
    """Every column a string, as the file parser gives them (dates and times in fixed formats)."""

    def text(name: str, dtype: pl.DataType) -> pl.Expr:
        column = pl.col(name)
        if isinstance(dtype, pl.Datetime):
            return column.dt.to_string(DATETIME_FORMAT)
        if isinstance(dtype, pl.Date):
            return column.dt.to_string(DATE_FORMAT)
        if isinstance(dtype, (pl.List, pl.Struct, pl.Array)):
            return column.map_batches(lambda s: s.to_frame().write_ndjson(), return_dtype=pl.String)
        return column.cast(pl.String)

    return frame.select(text(n, d).alias(n) for n, d in frame.schema.items())


def stage_records(
    flow: FlowModel, key: str, start: datetime, frame: pl.DataFrame, folders: FoldersResource, origin: str
) -> Extracted:
    """``frame`` (columns in upper case) kept as the partition's raw Parquet with its checksum,
    backed up, and staged as strings; ``origin`` says where the records came from."""
    stage = PartitionStage(flow.name, key, folders)
    file_name = source_file_name(flow, start)
    missing = [c for c in flow.required_columns if c not in frame.columns]
    if missing:
        raise SourceFileError(
            origin, f"missing required column {', '.join(missing)} (it has {', '.join(frame.columns)})"
        )
    raw_path = stage.raw_dir / file_name
    keep_current(raw_path)  # the extract of an earlier run, kept under its content
    _write_whole(frame, raw_path)
    digest = file_sha256(raw_path)
    raw_path.with_name(raw_path.name + ".sha256").write_text(f"{digest}  {raw_path.name}\n")
    keep_delivery(raw_path, digest)
    back_up(raw_path, digest, folders.path("backup", flow.name, f"{start:%Y}", f"{start:%m}"))
    staged = as_strings(frame).with_columns(
        pl.int_range(1, frame.height + 1, dtype=pl.Int64).alias(LINE), pl.lit(file_name).alias(SOURCE_FILE)
    )
    with StagedWriter(stage.file("extract.parquet")) as writer:
        writer.write(staged)
    mapped = {flow.source_column(n) for n in flow.map}
    return Extracted(
        file=file_name,
        remote_path=origin,
        raw_path=raw_path,
        sha256=digest,
        size=raw_path.stat().st_size,
        rows=frame.height,
        columns=frame.columns,
        extra_columns=[c for c in frame.columns if c not in mapped],
    )


def _write_whole(frame: pl.DataFrame, path: Path) -> None:
    """The raw Parquet appears complete or not at all."""
    partial = path.with_name(partial_name(path.name))
    try:
        frame.write_parquet(partial)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
