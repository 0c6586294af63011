"""A flow declared as data: source, map, target, links, partitions, cadence, limits.

This is the schema of every ``defs/<flow>/defs.yaml`` (the Dagster component's model),
so the YAML, the CLI and Dagster validate against one definition.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails

from etl_assets.model.cadence import FlowScheduleSpec, PartitionSpec, RunRetention, SensorSpec
from etl_assets.model.derive import derive_problems
from etl_assets.model.functions import call_problem
from etl_assets.model.hooks import HookName, hook_problems
from etl_assets.model.identifiers import IDENTIFIER as IDENTIFIER  # re-exported: the SDK, the CLI
from etl_assets.model.identifiers import IDENTIFIER_RULE as IDENTIFIER_RULE
from etl_assets.model.identifiers import (
    MAX_IDENTIFIER_LENGTH,
    Identifier,
    StrictModel,
    identifier_problem,
)
from etl_assets.model.identifiers import is_identifier as is_identifier
from etl_assets.model.load_modes import LoadMode, mode_fault
from etl_assets.model.parameters import FlowParameters, Scalar
from etl_assets.model.sources import DatabaseSourceSpec as DatabaseSourceSpec
from etl_assets.model.sources import SourceSpec
from etl_assets.model.tokens import token_problems
from etl_assets.settings.models import Environment

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
# Columns the load adds to every target table (engine/tables.py), and the name it keys its
# response frames on (engine/load/upsert.py): a map field of that name would be overwritten.
RESERVED_COLUMNS = frozenset({"id", "key"})
# etl_row_hash, etl_loaded_at..., and the tables etl_parked_links, etl_partition_loads
RESERVED_PREFIX = "etl_"


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
    options: dict[str, Scalar] | None = Field(
        None,
        description="Method: keyword arguments of its function, function(expr, **options); an enc: token "
        "here (and only here) is decrypted right before the call",
    )
    scale: int = Field(2, ge=0, le=12, description="Decimal: digits after the decimal comma")
    max_length: int | None = Field(None, ge=1, description="longest value accepted")
    derive: str | None = Field(
        None, description="'{first} {last}' template of other fields, or 'module:function' (model/derive.py)"
    )
    fill: Literal["missing", "always"] = Field("missing", description="derive: where it is empty, or always")

    @model_validator(mode="after")
    def _type_options(self) -> MapField:
        if self.type in ("Date", "DateTime") and not self.format:
            raise ValueError(f"{self.type} needs a format, e.g. %d/%m/%Y")
        if self.type == "Choice" and not self.choices:
            raise ValueError("Choice needs choices")
        if self.type == "Method" and (not self.method or ":" not in self.method):
            raise ValueError("Method needs method: 'module:function'")
        if self.options is not None and self.type != "Method":
            raise ValueError(f"options are a Method's keyword arguments: a {self.type} field takes none")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern is not a valid regular expression: {exc}") from None
        return self


class TargetSpec(StrictModel):
    """The table rows go to, and how: ``mode`` (README, Flows: load modes)."""

    table: Identifier
    key: Identifier = Field(description="natural key column, a map field")
    mode: LoadMode = Field("upsert", description="upsert | snapshot | append | history")
    hard_delete: bool = Field(False, description="snapshot: delete missing keys instead of marking them")
    tracked: list[Identifier] | None = Field(None, description="history: fields whose change opens a row")


class DedupeSpec(StrictModel):
    """A key given twice: the row with the latest ``latest_by`` wins, the others are rejected."""

    latest_by: str | None = Field(None, description="map field ordering conflicting rows")


class LinkSpec(StrictModel):
    """Sets ``column`` to the id of the row of ``table`` whose ``match`` equals ``field``."""

    field: Identifier = Field(description="map field holding the reference")
    column: Identifier = Field(description="target column set to the id")
    table: Identifier = Field(description="referenced table (may be the target)")
    match: Identifier = Field(description="column of the referenced table")
    on_missing: Literal["reject", "park"] = Field(
        "reject", description="park: keep retrying until the referenced row arrives (see max_park_age)"
    )
    after_flow: Identifier | None = Field(
        None, description="park: the flow loading the referenced table; parked rows are retried after it"
    )

    @model_validator(mode="after")
    def _park_needs_flow(self) -> LinkSpec:
        if self.on_missing == "park" and not self.after_flow:
            raise ValueError("on_missing: park needs after_flow (the flow that loads the referenced table)")
        return self


class FlowModel(StrictModel):
    """A whole flow: the factory turns it into extract, transform, load and link assets."""

    name: Identifier
    description: str = ""
    source: SourceSpec
    map: dict[str, MapField] = Field(min_length=1, description="target column -> field")
    target: TargetSpec
    dedupe: DedupeSpec = Field(default_factory=DedupeSpec)
    links: list[LinkSpec] = Field(default_factory=list)
    partitions: PartitionSpec = Field(default_factory=PartitionSpec)
    schedule: FlowScheduleSpec | None = Field(default_factory=FlowScheduleSpec)
    sensor: SensorSpec | None = Field(None, description="runs requested as files arrive")
    warn_limit: int | None = Field(
        10, ge=0, description="rejected rows up to this only warn; null: rejected rows never fail"
    )
    environment: Environment | None = Field(
        None, description="the one environment this flow is built in (null: every environment)"
    )
    retention: RunRetention | None = Field(None, description="runs housekeeping keeps (null: all)")
    work: Literal["io", "cpu"] = Field("io", description="its Celery queue: io (files, databases) or cpu")
    parameters: FlowParameters | None = Field(
        None, description="runtime parameters: value_sets, overrides, local (see model/parameters.py)"
    )
    schema_drift: Literal["keep", "evolve", "freeze"] = Field(
        "keep",
        description="a source column not in the map: kept in staging and reported (keep), added to "
        "the target with an inferred type (evolve), or the file fails (freeze)",
    )
    blocking_checks: list[Step] = Field(
        default_factory=lambda: ["transform"], description="steps whose failing check stops the run"
    )
    hooks: dict[HookName, str] = Field(
        default_factory=dict,
        description="stage boundary -> 'module:function' called with a HookContext (engine/hooks.py): "
        "pre_extract, post_transform, on_load_commit (once per commit), on_failure",
    )

    @model_validator(mode="before")
    @classmethod
    def _identifiers(cls, data: Any) -> Any:
        """Every table, column and flow name checked before anything else, each error at its
        own key (``target.table``, ``links.0.match``, ``map.<name>``), naming the value."""
        return _refused(cls.__name__, data, _name_problems(data))

    @model_validator(mode="before")
    @classmethod
    def _tokens(cls, data: Any) -> Any:
        """An enc: token outside a Method's options (model/tokens.py), at its key; the token
        itself is not repeated."""
        return _refused(cls.__name__, data, [(loc, None, message) for loc, message in token_problems(data)])

    @model_validator(mode="before")
    @classmethod
    def _functions(cls, data: Any) -> Any:
        """Hooks resolve to ``function(context)``, derives to map fields with no cycle (model/derive.py):
        each at its key (``map.full_name.derive``), so definitions and compile refuse it at its line."""
        return _refused(cls.__name__, data, hook_problems(_part(data, "hooks")) + derive_problems(data))

    @model_validator(mode="before")
    @classmethod
    def _python_source(cls, data: Any) -> Any:
        """A python source resolves to a function taking its context, at ``source.python``."""
        path = _part(_part(data, "source"), "python")
        problem = call_problem(path, "source.python") if isinstance(path, str) and ":" in path else None
        return _refused(cls.__name__, data, [(("source", "python"), path, problem)] if problem else [])

    @model_validator(mode="after")
    def _references(self) -> FlowModel:
        if self.sensor is not None and self.source.kind != "file":
            raise ValueError(f"sensor: a {self.source.kind} source has no file to wait for; use a schedule")
        if self.target.key not in self.map:
            raise ValueError(f"target.key {self.target.key!r} is not a map field")
        if not self.map[self.target.key].required:
            raise ValueError(f"map.{self.target.key}: the key field must be required")
        fault = mode_fault(self.target, list(self.map))
        if fault:
            raise ValueError(fault)
        if self.dedupe.latest_by and self.dedupe.latest_by not in self.map:
            raise ValueError(f"dedupe.latest_by {self.dedupe.latest_by!r} is not a map field")
        columns: dict[str, str] = {}
        for i, link in enumerate(self.links):
            if link.field not in self.map:
                raise ValueError(f"links.{i}.field {link.field!r} is not a map field")
            if link.column in self.map:
                raise ValueError(f"links.{i}.column {link.column!r} clashes with a map field")
            if link.column in columns:
                raise ValueError(f"links.{i}.column {link.column!r} is already {columns[link.column]}")
            columns[link.column] = f"links.{i}.column"
            index = f"ix_{self.target.table}_{link.match}"  # a self-link's index (engine/tables.py)
            if link.table == self.target.table and len(index) > MAX_IDENTIFIER_LENGTH:
                raise ValueError(
                    f"links.{i}: its index {index} would be {len(index)} characters, PostgreSQL allows "
                    f"{MAX_IDENTIFIER_LENGTH}: shorten target.table or links.{i}.match"
                )
        return self

    def source_column(self, name: str) -> str:
        """The source column a map field reads (a derived field's may be absent from the file)."""
        return self.map[name].source or name.upper()

    def reads_source(self, name: str) -> bool:
        """A derive with ``fill: always`` reads no source column."""
        return self.map[name].derive is None or self.map[name].fill == "missing"

    @property
    def required_columns(self) -> list[str]:
        return [self.source_column(n) for n, f in self.map.items() if f.required and f.derive is None]

    def asset_name(self, step: str) -> str:
        return f"{self.name}_{step}"


def _refused(title: str, data: Any, problems: list[tuple[tuple[str | int, ...], Any, str]]) -> Any:
    """``data`` as it is, or a ValidationError with one error at each problem's key."""
    errors = [
        # a plain value_error: Dagster rebuilds the errors with their source line, and
        # knows pydantic's own error types only
        InitErrorDetails(type="value_error", loc=loc, input=value, ctx={"error": ValueError(message)})
        for loc, value, message in problems
    ]
    if errors:
        raise ValidationError.from_exception_data(title, errors)
    return data


def _part(data: Any, key: str) -> Any:
    """``data[key]`` of a mapping or an attribute of a model (before validation: either)."""
    if isinstance(data, dict):
        return data.get(key)
    return getattr(data, key, None) if isinstance(data, BaseModel) else None


def _name_problems(data: Any) -> list[tuple[tuple[str | int, ...], Any, str]]:
    """(loc, value, message) of each declared name that is not an identifier, or is reserved."""
    found: list[tuple[tuple[str | int, ...], Any, str]] = []

    def check(loc: tuple[str | int, ...], value: Any, reserved: str = "", where: str = "") -> None:
        if value is None:
            return  # missing: pydantic says so
        where = where or ".".join(str(part) for part in loc)
        problem = identifier_problem(where, value)
        if (
            problem is None
            and reserved == "column"
            and (value in RESERVED_COLUMNS or value.startswith(RESERVED_PREFIX))
        ):
            problem = (
                f"{where} {value!r} is reserved: id, key and names starting with {RESERVED_PREFIX} "
                "are the load's own columns"
            )
        elif problem is None and reserved == "table" and value.startswith(RESERVED_PREFIX):
            problem = (
                f"{where} {value!r} is reserved: tables starting with {RESERVED_PREFIX} are etl_assets' own"
            )
        if problem:
            found.append((loc, value, problem))

    check(("name",), _part(data, "name"))
    target = _part(data, "target")
    check(("target", "table"), _part(target, "table"), reserved="table")
    check(("target", "key"), _part(target, "key"))
    fields = _part(data, "map")
    for name in fields if isinstance(fields, dict) else ():
        check(("map", name), name, reserved="column", where="map field")
    check(("dedupe", "latest_by"), _part(_part(data, "dedupe"), "latest_by"))
    links = _part(data, "links")
    for i, link in enumerate(links if isinstance(links, list) else ()):
        check(("links", i, "field"), _part(link, "field"))
        check(("links", i, "column"), _part(link, "column"), reserved="column")
        check(("links", i, "table"), _part(link, "table"))
        check(("links", i, "match"), _part(link, "match"))
        check(("links", i, "after_flow"), _part(link, "after_flow"))
    return found


def dump(model: BaseModel) -> dict[str, Any]:
    """Plain data of a model (for export and the SDK)."""
    return model.model_dump(mode="json", exclude_defaults=False)
