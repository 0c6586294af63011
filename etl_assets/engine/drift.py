"""A source column the map does not name: a flow's schema-drift policy, in the manner of dlt's
schema contracts.

``keep`` (the default): the column stays in staging and the extract's ``schema_drift`` check
reports it. ``freeze``: the file fails, naming the columns. ``evolve``: the column joins the
flow as a field of the type its values show (Integer, Decimal with a decimal comma, else
String), and the load adds it to the target table (``ALTER TABLE ... ADD COLUMN``, inside the
partition's transaction).
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from etl_assets.engine.columns import LINE, SOURCE_FILE
from etl_assets.engine.transform.maps import DECIMAL_COMMA_RE, INTEGER_RE
from etl_assets.model.flow import RESERVED_COLUMNS, RESERVED_PREFIX, FlowModel, MapField, is_identifier


def extra_columns(flow: FlowModel, extract_path: Path) -> list[str]:
    """The staged file's source columns no map field reads, in the file's order."""
    mapped = {flow.source_column(n) for n in flow.map}
    names = pq.ParquetFile(extract_path).schema_arrow.names
    return [c for c in names if c not in (LINE, SOURCE_FILE) and c not in mapped]


def frozen_fault(flow: FlowModel, extra: list[str]) -> str:
    return (
        f"new column{'s' if len(extra) > 1 else ''} {', '.join(extra)} not in the map, and "
        f"{flow.name}'s schema_drift is freeze: add {'them' if len(extra) > 1 else 'it'} to the map, "
        "or set schema_drift: keep (or evolve)"
    )


def field_name(column: str) -> str:
    """A source column's target name: lower case, ``_`` for anything else than a letter or digit."""
    name = re.sub(r"[^a-z0-9_]+", "_", column.strip().lower()).strip("_")
    return name if name[:1].isalpha() else f"col_{name}"


def evolved(flow: FlowModel, extract_path: Path) -> FlowModel:
    """The flow with a field for each new source column (``evolve``); the flow itself else.
    A column whose target name is not an identifier (or is taken) stays out, as under keep."""
    if flow.schema_drift != "evolve" or not extract_path.exists():
        return flow
    extra = extra_columns(flow, extract_path)
    if not extra:
        return flow
    values = pl.read_parquet(extract_path, columns=extra)
    fields = dict(flow.map)
    for column in extra:
        name = field_name(column)
        if (
            name in fields
            or not is_identifier(name)
            or name in RESERVED_COLUMNS
            or name.startswith(RESERVED_PREFIX)
        ):
            continue
        fields[name] = inferred(column, values.get_column(column))
    return flow.model_copy(update={"map": fields}) if len(fields) > len(flow.map) else flow


def inferred(column: str, values: pl.Series) -> MapField:
    """The narrowest type every non-empty value fits: Integer, Decimal (decimal comma), String."""
    present = values.str.strip_chars().filter(values.is_not_null() & (values.str.strip_chars() != ""))
    if present.len() and present.str.contains(INTEGER_RE).all():
        return MapField(type="Integer", source=column)
    if present.len() and present.str.contains(DECIMAL_COMMA_RE).all():
        decimals = present.str.extract(r",(\d+)$").str.len_chars().fill_null(0).max()
        return MapField(type="Decimal", source=column, scale=min(int(decimals or 0), 12))  # type: ignore[call-overload]
    return MapField(type="String", source=column)
