"""What a flow's partitions read: a file, a database table by its watermark, or a Python
generator (``source:`` of a flow's declaration)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from etl_assets.model.identifiers import Identifier, StrictModel
from etl_assets.model.parameters import Scalar


class DatabaseSourceSpec(StrictModel):
    """A table of another database, read incrementally by a monotonic column."""

    connector: Identifier = Field(description="a connector under sources: in the settings, e.g. crm")
    table: Identifier = Field(description="the table read")
    watermark: Identifier = Field(
        "updated_at", description="monotonic column (a timestamp or a number) changes are read by"
    )
    overlap_seconds: float = Field(
        5.0,
        ge=0,
        description="rows from this far before the watermark are read again (rows written in the "
        "watermark's own second are not lost; unchanged ones load nothing)",
    )
    columns: list[str] | None = Field(None, description="columns read (null: all)")
    order_by: list[str] = Field(default_factory=list, description="tie-breakers after the watermark")


class SourceSpec(StrictModel):
    """What each partition reads: a file (file + folder), a database table (database), or the
    records a Python generator yields (python)."""

    file: str | None = Field(None, description="file name; {start:%Y%m%d} is the partition's start")
    folder: str | None = Field(None, description="remote folder (sftp.folders.<flow> in the settings wins)")
    delimiter: str = Field(";", min_length=1, max_length=1, description="of the file and the error files")
    encoding: Literal["utf8", "cp1252"] = Field("utf8", description="utf8 (BOM or not) or cp1252")
    settle_seconds: float = Field(1.0, ge=0, description="a size change within this time = still uploading")
    database: DatabaseSourceSpec | None = Field(None, description="a table read by its watermark")
    python: str | None = Field(
        None, description="'module:function', a generator of dicts or Polars frames given a SourceContext"
    )
    options: dict[str, Scalar] | None = Field(None, description="python: what its context.options holds")
    retries: int = Field(3, ge=0, le=20, description="python: new attempts of a page that failed")
    backoff_seconds: float = Field(1.0, ge=0, description="python: first wait before a retry; doubles")

    @model_validator(mode="after")
    def _one_kind(self) -> SourceSpec:
        kinds = [k for k in ("file", "database", "python") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"a source is one of file (with folder), database or python; given: {kinds}")
        if self.file is not None and self.folder is None:
            raise ValueError("a file source needs its folder")
        if self.python is not None and ":" not in self.python:
            raise ValueError("python needs 'module:function'")
        if self.options is not None and self.python is None:
            raise ValueError("options are a python source's: a file or database source takes none")
        return self

    @property
    def kind(self) -> Literal["file", "database", "python"]:
        return "file" if self.file is not None else "database" if self.database is not None else "python"
