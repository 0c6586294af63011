"""A flow declared as data: source, map, target, links, partitions, cadence, limits.

This is the schema of every ``defs/<flow>/defs.yaml`` (the Dagster component's model),
so the YAML, the CLI and Dagster validate against one definition.
"""

from __future__ import annotations

import hashlib
import re
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FieldType = Literal[
    "String",
    "UppercaseString",
    "TitlecaseString",
    "Integer",
    "Decimal",
    "Date",
    "DateTime",
    "Email",
    "URL",
    "Phone",
    "Choice",
    "Method",
]
Step = Literal["transform", "load", "link"]
STEPS = ("extract", "transform", "load", "link")  # a flow's assets, in order
IDENTIFIER = r"^[a-z][a-z0-9_]*$"


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MapField(StrictModel):
    """One target column: where it comes from, its type and its validation."""

    type: FieldType = Field(description="field transformation, as in Flask Data Pipes")
    source: str | None = Field(None, description="source column; default: the name in upper case")
    required: bool = Field(False, description="a missing value rejects the row")
    default: str | None = Field(None, description="used when the source value is empty")
    pattern: str | None = Field(None, description="regular expression the source value must match")
    format: str | None = Field(None, description="Date/DateTime: strptime format, e.g. %d/%m/%Y")
    choices: list[str] | None = Field(None, description="Choice: the allowed values")
    method: str | None = Field(None, description="Method: 'module:function' taking and returning a pl.Expr")
    scale: int = Field(2, ge=0, le=12, description="Decimal: digits after the decimal comma")
    max_length: int | None = Field(None, ge=1, description="longest value accepted")

    @model_validator(mode="after")
    def _type_options(self) -> MapField:
        if self.type in ("Date", "DateTime") and not self.format:
            raise ValueError(f"{self.type} needs a format, e.g. %d/%m/%Y")
        if self.type == "Choice" and not self.choices:
            raise ValueError("Choice needs choices")
        if self.type == "Method" and (not self.method or ":" not in self.method):
            raise ValueError("Method needs method: 'module:function'")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern is not a valid regular expression: {exc}") from None
        return self


class SourceSpec(StrictModel):
    """The file each partition reads."""

    file: str = Field(description="file name; {start:%Y%m%d} is the partition's start")
    folder: str = Field(description="remote folder (sftp.folders.<flow> in the settings wins)")
    delimiter: str = Field(";", min_length=1, max_length=1)
    encoding: Literal["utf8", "cp1252"] = Field("utf8", description="utf8 (BOM or not) or cp1252")
    settle_seconds: float = Field(1.0, ge=0, description="a size change within this time = still uploading")


class TargetSpec(StrictModel):
    """The table rows are upserted into."""

    table: str = Field(pattern=IDENTIFIER)
    key: str = Field(pattern=IDENTIFIER, description="natural key column, a map field")


class DedupeSpec(StrictModel):
    """A key given twice: the row with the latest ``latest_by`` wins, the others are rejected."""

    latest_by: str | None = Field(None, description="map field ordering conflicting rows")


class LinkSpec(StrictModel):
    """Sets ``column`` to the id of the row of ``table`` whose ``match`` equals ``field``."""

    field: str = Field(pattern=IDENTIFIER, description="map field holding the reference")
    column: str = Field(pattern=IDENTIFIER, description="target column set to the id")
    table: str = Field(pattern=IDENTIFIER, description="referenced table (may be the target)")
    match: str = Field(pattern=IDENTIFIER, description="column of the referenced table")
    on_missing: Literal["reject", "park"] = Field(
        "reject", description="park: keep retrying until the referenced row arrives (see max_park_age)"
    )
    after_flow: str | None = Field(
        None, description="park: the flow loading the referenced table; parked rows are retried after it"
    )

    @model_validator(mode="after")
    def _park_needs_flow(self) -> LinkSpec:
        if self.on_missing == "park" and not self.after_flow:
            raise ValueError("on_missing: park needs after_flow (the flow that loads the referenced table)")
        return self


class PartitionSpec(StrictModel):
    """Which partitions exist."""

    kind: Literal["daily", "monthly", "five_minutes"] = "daily"
    start: date = date(2025, 1, 1)
    window_days: int | None = Field(
        None, ge=1, description="only the last N days exist (keeps 5-minute partitions few enough for the UI)"
    )
    backfill_chunk: int = Field(
        16,
        ge=1,
        description="consecutive partitions a backfill's run takes (each still lands or fails alone); "
        "a run costs a process, so a month is two runs, side by side on two cores",
    )


class ScheduleSpec(StrictModel):
    """When the schedule runs (settings' timezone)."""

    hour: int = Field(6, ge=0, le=23)
    minute: int = Field(0, ge=0, le=59)
    day_of_month: int | None = Field(None, ge=1, le=28)


class SensorSpec(StrictModel):
    """Start a run when the partition's file has arrived and stopped growing."""

    minimum_interval_seconds: int = Field(30, ge=5, description="how often the folder is listed")


class FlowModel(StrictModel):
    """A whole flow: the factory turns it into extract, transform, load and link assets."""

    name: str = Field(pattern=IDENTIFIER)
    description: str = ""
    source: SourceSpec
    map: dict[str, MapField] = Field(min_length=1, description="target column -> field")
    target: TargetSpec
    dedupe: DedupeSpec = Field(default_factory=DedupeSpec)
    links: list[LinkSpec] = Field(default_factory=list)
    partitions: PartitionSpec = Field(default_factory=PartitionSpec)
    schedule: ScheduleSpec | None = Field(default_factory=ScheduleSpec)
    sensor: SensorSpec | None = Field(None, description="runs requested as files arrive")
    warn_limit: int = Field(10, ge=0, description="rejected rows up to this only warn")
    blocking_checks: list[Step] = Field(
        default_factory=lambda: ["transform"], description="steps whose failing check stops the run"
    )

    @model_validator(mode="after")
    def _references(self) -> FlowModel:
        for name in self.map:
            if not re.match(IDENTIFIER, name):
                raise ValueError(f"map.{name}: column names are lower_snake_case")
        if self.target.key not in self.map:
            raise ValueError(f"target.key {self.target.key!r} is not a map field")
        if not self.map[self.target.key].required:
            raise ValueError(f"map.{self.target.key}: the key field must be required")
        if self.dedupe.latest_by and self.dedupe.latest_by not in self.map:
            raise ValueError(f"dedupe.latest_by {self.dedupe.latest_by!r} is not a map field")
        for i, link in enumerate(self.links):
            if link.field not in self.map:
                raise ValueError(f"links.{i}.field {link.field!r} is not a map field")
            if link.column in self.map:
                raise ValueError(f"links.{i}.column {link.column!r} clashes with a map field")
        return self

    def source_column(self, name: str) -> str:
        """The source column a map field reads."""
        return self.map[name].source or name.upper()

    @property
    def required_columns(self) -> list[str]:
        return [self.source_column(n) for n, f in self.map.items() if f.required]

    @property
    def code_version(self) -> str:
        """Changes whenever the declaration (map included) changes: stale partitions show."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:12]

    def asset_name(self, step: str) -> str:
        return f"{self.name}_{step}"


def dump(model: BaseModel) -> dict[str, Any]:
    """Plain data of a model (for export and the SDK)."""
    return model.model_dump(mode="json", exclude_defaults=False)
