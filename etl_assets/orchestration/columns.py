"""A flow's columns as the asset page shows them: the target's schema and the column lineage.

Both come from the declaration (the map and the links) as ``engine.tables`` turns it into a
table, so the UI shows them before the first load; a load's materialization adds the table
as the database has it (a client's own table may be narrower than the declaration).
"""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from etl_assets.engine.tables import ID, META_COLUMNS, target_table
from etl_assets.model.derive import derive_requires
from etl_assets.model.flow import FlowModel
from etl_assets.orchestration.lineage import TableLoaders

# the target's dialect in test and prod; a dev SQLite file names some types its own way
DIALECT = postgresql.dialect()
TABLE_NAME = "dagster/table_name"
COLUMN_SCHEMA = "dagster/column_schema"
COLUMN_LINEAGE = "dagster/column_lineage"


def sql_type(column: sa.Column) -> str:
    return column.type.compile(dialect=DIALECT)


def column_description(flow: FlowModel, name: str) -> str | None:
    """What fills the column: the map field and its source column, the link, or the load."""
    if name in flow.map:
        spec = flow.map[name]
        origin = f"from {', '.join(source_columns_of(flow, name))}"
        if spec.derive is not None:
            origin = (
                f"derived by {spec.derive} ({'always' if spec.fill == 'always' else 'where empty'}) {origin}"
            )
        return f"{spec.type} {origin}" + (" (required)" if spec.required else "")
    link = next((link for link in flow.links if link.column == name), None)
    if link is not None:
        return f"id of the {link.table} row whose {link.match} is {link.field} (link step)"
    if name == ID:
        return "row id, given by the database"
    if name in META_COLUMNS:
        return "set by the load"
    return None


def source_columns_of(flow: FlowModel, name: str) -> list[str]:
    """The source columns a map field's value comes from: its own; a derived field's, and
    those of the fields its derive requires (and theirs)."""
    spec = flow.map[name]
    own = [flow.source_column(name)] if flow.reads_source(name) else []
    required = derive_requires(spec.derive) if spec.derive else []
    return list(dict.fromkeys([*own, *(c for r in required for c in source_columns_of(flow, r))]))


def table_schema(flow: FlowModel, types: Mapping[str, str] | None = None) -> dg.TableSchema:
    """The target's columns with their SQL types: as declared, or ``types`` (the database's, a
    load's ``column_types``)."""
    declared = target_table(flow)
    types = types or {column.name: sql_type(column) for column in declared.columns}
    columns = []
    for name, kind in types.items():
        column = declared.c.get(name)  # None: a column the client's table has beyond the map
        constraints = (
            None
            if column is None
            else dg.TableColumnConstraints(
                nullable=bool(column.nullable), unique=bool(column.unique or column.primary_key)
            )
        )
        columns.append(
            dg.TableColumn(name, kind, description=column_description(flow, name), constraints=constraints)
        )
    return dg.TableSchema(columns=columns)


def source_schema(flow: FlowModel) -> dg.TableSchema:
    """The source file's columns the map reads (a file's columns are text)."""
    columns = dict.fromkeys(c for name in flow.map for c in source_columns_of(flow, name))
    return dg.TableSchema(columns=[dg.TableColumn(name, "text") for name in columns])


def load_lineage(flow: FlowModel) -> dg.TableColumnLineage:
    """Each mapped target column <- the source column its map field reads (the extract's)."""
    extract = dg.AssetKey(flow.asset_name("extract"))
    return dg.TableColumnLineage(
        deps_by_column={
            name: [dg.TableColumnDep(asset_key=extract, column_name=c) for c in source_columns_of(flow, name)]
            for name in flow.map
        }
    )


def link_lineage(flow: FlowModel, loaders: TableLoaders) -> dg.TableColumnLineage:
    """Each link column <- the field it matches on (this flow's load) and the ``match`` column of
    the linked table (the load of the flow that loads it; this flow's own when it links to
    itself)."""
    own = dg.AssetKey(flow.asset_name("load"))
    deps: dict[str, list[dg.TableColumnDep]] = {}
    for link in flow.links:
        found = [dg.TableColumnDep(asset_key=own, column_name=link.field)]
        loading = loaders.loading(link.table)
        if not loading and link.table == flow.target.table:  # the flow built alone (the SDK's compile)
            loading = (flow,)
        for other in loading:
            found.append(
                dg.TableColumnDep(asset_key=dg.AssetKey(other.asset_name("load")), column_name=link.match)
            )
        deps[link.column] = list(dict.fromkeys(found))
    return dg.TableColumnLineage(deps_by_column=deps)


def step_metadata(flow: FlowModel, step: str, loaders: TableLoaders) -> dict[str, object]:
    """The column metadata of one step's asset spec."""
    if step == "extract":
        return {COLUMN_SCHEMA: source_schema(flow)}
    if step == "load":
        return {
            TABLE_NAME: flow.target.table,
            COLUMN_SCHEMA: table_schema(flow),
            COLUMN_LINEAGE: load_lineage(flow),
        }
    if step == "link" and flow.links:
        return {COLUMN_LINEAGE: link_lineage(flow, loaders)}
    return {}
