"""The target table of a flow, derived from its map: created when missing."""

from __future__ import annotations

import sqlalchemy as sa

from etl_assets.engine.change_counter import LINKS, install_counter, links_counter_name
from etl_assets.engine.ddl import create_missing, lock_ddl
from etl_assets.model.flow import FlowModel, MapField
from etl_assets.model.load_modes import HISTORY_COLUMNS

ID = "id"
ETL_SOURCE_FILE = "etl_source_file"
ETL_SOURCE_LINE = "etl_source_line"
ETL_LOADED_AT = "etl_loaded_at"
ETL_ROW_HASH = "etl_row_hash"
ETL_OBJECT_ID = "etl_object_id"  # the ledger's delivery that inserted or last changed the row
ETL_DELETED_AT = "etl_deleted_at"  # snapshot: when the row's key went missing from a delivery
ETL_PARTITION = "etl_partition"  # append: the partition that appended the row
VALID_FROM, VALID_TO, IS_CURRENT = HISTORY_COLUMNS  # history: a version's life
FILLFACTOR = 90
# load columns a table made by an older version (or mode) lacks: added on its next load (a null
# column, no rewrite of the table)
ADDED_META_COLUMNS = (ETL_OBJECT_ID, ETL_DELETED_AT, ETL_PARTITION)
META_COLUMNS = (ETL_ROW_HASH, ETL_SOURCE_FILE, ETL_SOURCE_LINE, ETL_LOADED_AT, ETL_OBJECT_ID)


def column_type(spec: MapField) -> sa.types.TypeEngine:
    """The SQL type a map field loads as."""
    if spec.type == "Integer":
        return sa.BigInteger()
    if spec.type == "Decimal":
        return sa.Numeric(18, spec.scale)
    if spec.type == "Date":
        return sa.Date()
    if spec.type == "DateTime":
        return sa.DateTime()
    return sa.Text()


def target_table(flow: FlowModel, metadata: sa.MetaData | None = None) -> sa.Table:
    """``id``, one column per map field (the key unique), link columns, load metadata, the
    mode's columns. Append and history keep several rows a key: history's key is unique among
    current rows only (a partial index), append's not at all."""
    metadata = metadata or sa.MetaData()
    key, mode = flow.target.key, flow.target.mode
    columns = [
        sa.Column(
            ID, sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
        )
    ]
    for name, spec in flow.map.items():
        columns.append(
            sa.Column(
                name,
                column_type(spec),
                nullable=name != key,
                unique=name == key and mode in ("upsert", "snapshot"),
            )
        )
    for link in flow.links:
        # not indexed: the link step's UPDATEs then stay HOT (no index to touch), see fillfactor
        columns.append(sa.Column(link.column, sa.BigInteger(), nullable=True))
    columns += [
        sa.Column(ETL_ROW_HASH, sa.BigInteger()),
        sa.Column(ETL_SOURCE_FILE, sa.Text()),
        sa.Column(ETL_SOURCE_LINE, sa.BigInteger()),
        sa.Column(ETL_LOADED_AT, sa.DateTime()),
        sa.Column(ETL_OBJECT_ID, sa.BigInteger()),  # etl_data_objects.id (engine/ledger)
    ]
    columns += mode_columns(mode)
    # 10% free space a page: the link step's UPDATE of a row fits beside it (a HOT update)
    table = sa.Table(flow.target.table, metadata, *columns, postgresql_with={"fillfactor": FILLFACTOR})
    for link in flow.links:
        if link.table == flow.target.table and link.match in flow.map and link.match != key:
            sa.Index(f"ix_{flow.target.table}_{link.match}", table.c[link.match])
    if mode == "append":
        sa.Index(f"ix_{flow.target.table}_{ETL_PARTITION}", table.c[ETL_PARTITION])
    if mode == "history":
        current = table.c[IS_CURRENT].is_(True)
        sa.Index(
            f"ux_{flow.target.table}_current",
            table.c[key],
            unique=True,
            postgresql_where=current,
            sqlite_where=current,
        )
    return table


def mode_columns(mode: str) -> list[sa.Column]:
    """The columns a load mode keeps beside the rows."""
    if mode == "snapshot":
        return [sa.Column(ETL_DELETED_AT, sa.DateTime())]
    if mode == "append":
        return [sa.Column(ETL_PARTITION, sa.Text())]
    if mode == "history":
        return [
            sa.Column(VALID_FROM, sa.DateTime()),
            sa.Column(VALID_TO, sa.DateTime()),
            sa.Column(IS_CURRENT, sa.Boolean()),
        ]
    return []


def ensure_table(conn: sa.Connection, flow: FlowModel) -> sa.Table:
    """Create the target table (and its indexes) if it does not exist yet; the table with the
    column types the database has."""
    table = target_table(flow)
    create_missing(conn, table.metadata)
    # evolve: every column the table lacks; else the load's own added since the table was made
    add_missing_columns(conn, table, None if flow.schema_drift == "evolve" else ADDED_META_COLUMNS)
    if conn.dialect.name == "postgresql":
        as_found(conn, table)
        if flow.target.mode == "upsert":  # a re-load's snapshot is checked by it (load/table_snapshot)
            # only what a look-up answers with: a client's edit of another column changes no answer
            # (the stored hash still says unchanged, as the server's join would), and a column
            # a trigger names cannot change its type (ALTER TABLE ... TYPE) while it stands
            # and what a link of the table to itself resolves from (engine/link/link_snapshot)
            own = [link for link in flow.links if link.table == flow.target.table]
            matched = [c for link in own for c in (link.match, link.field)]
            install_counter(conn, table, [flow.target.key, ID, ETL_ROW_HASH, *matched])
            if own:
                references = [link.column for link in own]
                install_counter(conn, table, references, links_counter_name(table.name), LINKS)
    return table


def add_missing_columns(
    conn: sa.Connection, table: sa.Table, only: tuple[str, ...] | None = None
) -> list[str]:
    """``ALTER TABLE ... ADD COLUMN`` for each column of ``table`` (or of ``only``) the
    database's lacks (a flow that evolves with its source), in the caller's transaction; the
    names added."""
    wanted = [c for c in table.columns if only is None or c.name in only]
    found = {c["name"] for c in sa.inspect(conn).get_columns(table.name)}
    if all(c.name in found for c in wanted):
        return []
    lock_ddl(conn)  # runs side by side: one adds the columns, the others then find them
    found = {c["name"] for c in sa.inspect(conn).get_columns(table.name)}
    preparer = conn.dialect.identifier_preparer
    added = []
    for column in wanted:
        if column.name not in found:
            kind = column.type.compile(dialect=conn.dialect)
            conn.exec_driver_sql(
                f"ALTER TABLE {preparer.quote(table.name)} ADD COLUMN {preparer.quote(column.name)} {kind}"
            )
            added.append(column.name)
    return added


def as_found(conn: sa.Connection, table: sa.Table) -> None:
    """The column types of the table as the database has them: a client's own table may be
    narrower than the declaration (``integer`` for a bigint, ``varchar(40)``), and a binary
    COPY must send exactly the type the column has."""
    found = {c["name"]: c["type"] for c in sa.inspect(conn).get_columns(table.name)}
    for column in table.columns:
        if column.name in found and type(found[column.name]) is not type(column.type):
            column.type = found[column.name]
        elif isinstance(column.type, sa.Numeric) and column.name in found:
            column.type = found[column.name]  # numeric(p, s): the client's precision and scale


def column_types(table: sa.Table, dialect: sa.Dialect) -> dict[str, str]:
    """Each column's SQL type as ``dialect`` spells it: after ``ensure_table``, the database's."""
    return {column.name: column.type.compile(dialect=dialect) for column in table.columns}
