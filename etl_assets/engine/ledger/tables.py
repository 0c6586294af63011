"""The ledger's tables (PostgreSQL and SQLite), created on first write like
``etl_partition_loads``; a column added since (``kind``, ``origin_object_id``) is added to a
database made before it, once per process and database."""

from __future__ import annotations

import sqlalchemy as sa

from etl_assets.engine.ddl import create_missing, lock_ddl
from etl_assets.engine.tables import add_missing_columns

MODELS_TABLE = "etl_data_models"
OBJECTS_TABLE = "etl_data_objects"
STAGES_TABLE = "etl_data_object_stages"
WATERMARKS_TABLE = "etl_watermarks"
LEDGER = sa.MetaData()
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite: an INTEGER PRIMARY KEY autoincrements
DELIVERY, RESUBMISSION = "delivery", "resubmission"  # etl_data_objects.kind
_MIGRATED: set[str] = set()  # the databases (by URL) whose ledger has every column, in this process

# One row per pipeline version of a flow, written when the version first runs.
models = sa.Table(
    MODELS_TABLE,
    LEDGER,
    sa.Column("flow", sa.Text, primary_key=True),
    sa.Column("pipeline_version", sa.Text, primary_key=True),
    sa.Column("extract_version", sa.Text, nullable=False),
    sa.Column("transform_version", sa.Text, nullable=False),
    sa.Column("load_version", sa.Text, nullable=False),
    sa.Column("link_version", sa.Text, nullable=False),
    sa.Column("first_seen", sa.DateTime, nullable=False),  # UTC
)

# One row per delivery of a partition (uploaded or fetched: the same bytes again are the same
# object), and per corrected error file sent back (kind resubmission, origin: the delivery).
objects = sa.Table(
    OBJECTS_TABLE,
    LEDGER,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("flow", sa.Text, nullable=False),
    sa.Column("partition_key", sa.Text, nullable=False),
    sa.Column("checksum", sa.Text, nullable=False),  # sha256 of the file as received
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("rows", sa.BigInteger, nullable=False),
    sa.Column("raw_path", sa.Text, nullable=False),  # where the delivery is kept
    sa.Column("first_seen", sa.DateTime, nullable=False),  # UTC
    sa.Column("kind", sa.Text, nullable=False, server_default=DELIVERY),  # delivery | resubmission
    sa.Column("origin_object_id", _ID, nullable=True),  # a resubmission's delivery (etl_data_objects.id)
    sa.UniqueConstraint("flow", "partition_key", "checksum", name="uq_etl_data_objects_delivery"),
)

# One row per stage of a partition per run: what it read and wrote, with which version.
stages = sa.Table(
    STAGES_TABLE,
    LEDGER,
    sa.Column("flow", sa.Text, primary_key=True),
    sa.Column("partition_key", sa.Text, primary_key=True),
    sa.Column("stage", sa.Text, primary_key=True),
    sa.Column("run_id", sa.Text, primary_key=True),  # Dagster's run
    sa.Column("object_id", _ID, nullable=True),  # etl_data_objects.id (null: extracted before the ledger)
    sa.Column("stage_version", sa.Text, nullable=False),
    sa.Column("pipeline_version", sa.Text, nullable=False),
    sa.Column("staged_path", sa.Text, nullable=True),
    sa.Column("error_file", sa.Text, nullable=True),  # the stage's rejected rows, if any
    sa.Column("rows_in", sa.BigInteger, nullable=False),
    sa.Column("rows_out", sa.BigInteger, nullable=False),
    sa.Column("rows_rejected", sa.BigInteger, nullable=False),
    sa.Column("status", sa.Text, nullable=False),  # succeeded | stopped (a blocking check) | failed
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("started_at", sa.DateTime, nullable=False),  # UTC
    sa.Column("finished_at", sa.DateTime, nullable=False),  # UTC
    sa.Index("ix_etl_data_object_stages_object", "object_id"),
)

# One row per flow reading a table by a watermark: how far its committed loads have read.
watermarks = sa.Table(
    WATERMARKS_TABLE,
    LEDGER,
    sa.Column("flow", sa.Text, primary_key=True),
    sa.Column("column_name", sa.Text, nullable=False),  # the source's watermark column
    sa.Column("value", sa.Text, nullable=False),  # the greatest value loaded, as text (ISO or number)
    sa.Column("kind", sa.Text, nullable=False),  # datetime | date | number | text: how to read value
    sa.Column("partition_key", sa.Text, nullable=False),  # the partition whose load moved it
    sa.Column("object_id", _ID, nullable=True),  # etl_data_objects.id of that extract
    sa.Column("committed_at", sa.DateTime, nullable=False),  # UTC
)


def ensure_ledger(conn: sa.Connection) -> None:
    """Create the ledger's tables where missing (in the caller's transaction, all at once; a
    table added since, alone). Runs starting side by side on a new database would both create
    them and one would fail: ``create_missing`` lets one make them, the others find them."""
    if has_ledger(conn):
        _migrate(conn)
        return
    create_missing(conn, LEDGER)
    _MIGRATED.add(str(conn.engine.url))


def _migrate(conn: sa.Connection) -> None:
    """A ledger made before ``kind`` and ``origin_object_id``: the columns added (its objects
    are deliveries), in the caller's transaction."""
    url = str(conn.engine.url)
    if url in _MIGRATED:
        return
    lock_ddl(conn)  # runs side by side: the columns added by one, found by the others
    if add_missing_columns(conn, objects):  # known for sure once this transaction committed
        conn.execute(sa.update(objects).where(objects.c.kind.is_(None)).values(kind=DELIVERY))
    else:
        _MIGRATED.add(url)


def has_ledger(conn: sa.Connection) -> bool:
    inspector = sa.inspect(conn)
    return all(inspector.has_table(name) for name in LEDGER.tables)
