"""Which commit's ``on_load_commit`` hook has run: a row per (flow, partition, hook, commit).

The load inserts the row inside its own transaction (``pending``), so the row exists exactly
when the commit does. After the commit the hook is claimed with one UPDATE from ``pending``
to ``running`` (only one process can win it), called, and marked ``done``; a hook that raised
is put back to ``pending`` with its error, so re-executing the failed step calls it again.

Delivery: at most once. A process that dies between the claim and ``done`` leaves the row
``running`` and the hook is not called again for that commit (look for such rows to notify
by hand); "never twice" wins over "always".

A commit is the delivery's checksum and the flow's code version: loading the same file
again with the same declaration and hook modules (a re-execution, a re-run of the partition
whose rows come out ``unchanged``) is the same commit and does not call the hook again; a new
delivery of the partition, or a changed declaration or hook module, is a new commit.
"""

from __future__ import annotations

import sqlalchemy as sa

from etl_assets.engine.ddl import create_missing
from etl_assets.engine.load.partition_loads import utc_now
from etl_assets.engine.load.sql import dialect_insert

HOOK_RUNS_TABLE = "etl_hook_runs"
PENDING, RUNNING, DONE = "pending", "running", "done"


def hook_runs_table(metadata: sa.MetaData | None = None) -> sa.Table:
    return sa.Table(
        HOOK_RUNS_TABLE,
        metadata or sa.MetaData(),
        sa.Column("flow", sa.Text, primary_key=True),
        sa.Column("partition_key", sa.Text, primary_key=True),
        sa.Column("hook", sa.Text, primary_key=True),
        sa.Column("commit_id", sa.Text, primary_key=True),
        sa.Column("state", sa.Text, nullable=False),  # pending, running, done
        sa.Column("committed_at", sa.DateTime, nullable=False),  # UTC
        sa.Column("done_at", sa.DateTime),
        sa.Column("error", sa.Text),  # the last failure of the hook, until it succeeds
    )


def _where(table: sa.Table, flow: str, partition_key: str, hook: str, commit_id: str) -> sa.ColumnElement:
    return sa.and_(
        table.c.flow == flow,
        table.c.partition_key == partition_key,
        table.c.hook == hook,
        table.c.commit_id == commit_id,
    )


def record_commit(conn: sa.Connection, flow: str, partition_key: str, hook: str, commit_id: str) -> None:
    """Inside the load's transaction: this commit owes ``hook`` a call (kept as it is when the
    commit is one it already owed)."""
    table = hook_runs_table()
    create_missing(conn, table.metadata)
    values = {
        "flow": flow,
        "partition_key": partition_key,
        "hook": hook,
        "commit_id": commit_id,
        "state": PENDING,
        "committed_at": utc_now(),
    }
    conn.execute(dialect_insert(conn)(table).values(values).on_conflict_do_nothing())


def claim(engine: sa.Engine, flow: str, partition_key: str, hook: str, commit_id: str) -> bool:
    """After the commit: True for the one caller that may call the hook now."""
    table = hook_runs_table()
    with engine.begin() as conn:
        claimed = conn.execute(
            sa.update(table)
            .where(_where(table, flow, partition_key, hook, commit_id), table.c.state == PENDING)
            .values(state=RUNNING)
        )
    return claimed.rowcount == 1


def settle(
    engine: sa.Engine, flow: str, partition_key: str, hook: str, commit_id: str, error: str | None
) -> None:
    """The claimed hook returned (``done``) or raised (``pending`` again, with its error)."""
    table = hook_runs_table()
    values = (
        {"state": DONE, "done_at": utc_now(), "error": None}
        if error is None
        else {
            "state": PENDING,
            "error": error,
        }
    )
    with engine.begin() as conn:
        conn.execute(
            sa.update(table).where(_where(table, flow, partition_key, hook, commit_id)).values(values)
        )
