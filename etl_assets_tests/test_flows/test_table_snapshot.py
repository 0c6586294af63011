"""A re-load's look-up from the table's snapshot (issue 23) on the private cluster: used while
the table's change counter proves nobody else wrote, and the server's join again otherwise
(a client's UPDATE or DELETE, a rolled-back load); the target is the same either way."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from etl_assets.engine.columns import LINE
from etl_assets.engine.load import upsert as loader
from etl_assets.engine.load.response import Outcome
from etl_assets.engine.load.table_snapshot import SNAPSHOT_DIR, TableSnapshot
from etl_assets.engine.load.upsert import RESPONSE_SCHEMA, load_stage
from etl_assets.engine.staging import StagedWriter
from etl_assets.engine.tables import ensure_table
from etl_assets_tests.services import PostgresServer
from etl_assets_tests.test_flows.test_loader_pg import FLOW, many, rows

STORED = "select external_id, id, name, vat_code, etl_row_hash from accounts order by external_id"
Scenario = Callable[["Loads"], None]


class Loads:
    """One database and one ETL_HOME: partitions' deliveries loaded the way the load step
    does (the snapshot written after the commit), with or without the table's snapshot."""

    def __init__(self, engine: sa.Engine, home: Path, snapshots: bool) -> None:
        self.engine, self.home, self.snapshots = engine, home, snapshots
        self.answers: list[list[tuple]] = []
        self.lookups: list[str] = []
        self.built: list[str] = []

    def load(self, partition: str, frame: pl.DataFrame, monkeypatch: pytest.MonkeyPatch) -> Outcome:
        with self.engine.begin() as conn:
            loaded = self.load_in(conn, partition, frame, monkeypatch)
        return self.committed(partition, loaded)

    def load_in(
        self, conn: sa.Connection, partition: str, frame: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
    ) -> Outcome:
        """The load's work in ``conn``'s transaction, which the caller commits."""
        folder = self.home / "data" / FLOW.name / partition
        folder.mkdir(parents=True, exist_ok=True)
        good = folder / "transform.parquet"
        with StagedWriter(good) as writer:
            for start in range(0, frame.height, 20):
                writer.write(frame.slice(start, 20))
        with monkeypatch.context() as patch:
            if not self.snapshots:
                patch.setattr(loader, "opened", lambda *args: TableSnapshot())
            with StagedWriter(folder / "load.parquet", RESPONSE_SCHEMA) as response:
                return load_stage(conn, FLOW, good, response)

    def committed(self, partition: str, loaded: Outcome) -> Outcome:
        """What the load step does once the load's transaction committed."""
        for write in loaded.after_commit:
            write(self.engine)
        answer = pl.read_parquet(self.home / "data" / FLOW.name / partition / "load.parquet")
        self.answers.append(answer.select("key", "target_id", "action").rows())
        self.lookups.append(loaded.lookup)
        self.built.append(loaded.snapshot)
        return loaded

    def sql(self, statement: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(statement))

    def stored(self) -> list[tuple]:
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(STORED)).all()]

    @property
    def snapshot_file(self) -> Path:
        return self.home / "data" / FLOW.name / SNAPSHOT_DIR / "accounts.parquet"


@contextmanager
def paired_engines(postgres: PostgresServer, pg_database: str) -> Iterator[tuple[sa.Engine, sa.Engine]]:
    """The test's database and a reference database of its own, dropped after."""
    reference = f"etl_test_{secrets.token_hex(6)}"
    postgres.create_database(reference)
    engines = [sa.create_engine(postgres.url(db)) for db in (pg_database, reference)]
    try:
        yield engines[0], engines[1]
    finally:
        for engine in engines:
            engine.dispose()
        postgres.drop_database(reference)


@pytest.fixture
def databases(postgres: PostgresServer, pg_database: str, tmp_path: Path) -> Iterator[tuple[Loads, Loads]]:
    """The same loads with the snapshot and without it (the reference), each in its database."""
    with paired_engines(postgres, pg_database) as (ours, reference):
        yield Loads(ours, tmp_path / "with", True), Loads(reference, tmp_path / "without", False)


def delta() -> pl.DataFrame:
    """The first delivery again, another order: 3 names changed, 2 keys missing, 2 new."""
    kept = many(60).filter(~pl.col("external_id").is_in(["C000002", "C000040"]))
    changed = pl.col("external_id").is_in(["C000005", "C000031", "C000058"])
    kept = kept.with_columns(pl.when(changed).then(pl.lit("Cambiato")).otherwise("name").alias("name"))
    fresh = rows("N1", "N2").with_columns(pl.col(LINE) + 100)
    return pl.concat([kept, fresh]).sample(fraction=1.0, shuffle=True, seed=7)


def client_update(loads: Loads) -> None:
    """Another column than the key, id and hash: no look-up changes, the snapshot stays valid."""
    loads.sql("update accounts set name = 'A mano' where external_id = 'C000007'")


def client_key_update(loads: Loads) -> None:
    loads.sql("update accounts set external_id = 'C000007X' where external_id = 'C000007'")


def client_delete(loads: Loads) -> None:
    loads.sql("delete from accounts where external_id = 'C000009'")


def client_insert(loads: Loads) -> None:
    """A row of the client's own, no row hash: not in the next delivery (the whole table is
    then read back for the snapshot), written over by a later one."""
    loads.sql("insert into accounts (external_id, vat_code, name) values ('K1', 'IT1', 'Del cliente')")


def rolled_back(loads: Loads) -> None:
    with loads.engine.connect() as conn, conn.begin() as transaction:
        conn.execute(sa.text("update accounts set etl_row_hash = 1 where external_id = 'C000011'"))
        transaction.rollback()


def no_interference(loads: Loads) -> None:
    """Only the link step's UPDATE of its reference column, which the counter does not watch."""
    loads.sql("update accounts set parent_account_id = id where external_id = 'C000003'")


@pytest.mark.parametrize("bulk_first_load", [False, True], ids=["small-first-load", "bulk-first-load"])
@pytest.mark.parametrize(
    "between",
    [no_interference, client_update, client_key_update, client_delete, client_insert, rolled_back],
    ids=["nothing", "client-update", "client-key-update", "client-delete", "client-insert", "rolled-back"],
)
def test_a_reload_is_looked_up_in_the_snapshot_unless_someone_else_wrote(
    databases: tuple[Loads, Loads],
    between: Scenario,
    bulk_first_load: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if bulk_first_load:  # the first load's own path (indexes dropped, one COPY): its rows known here
        monkeypatch.setattr(loader, "INITIAL_LOAD_MIN_ROWS", 10)
    for loads in databases:
        loads.load("2026-01-01", many(60), monkeypatch)
        assert loads.load("2026-01-01", many(60), monkeypatch).actions["unchanged"] == 60
        between(loads)
        loads.load("2026-01-01", many(60), monkeypatch)  # the interference put right
        loads.load("2026-01-02", delta(), monkeypatch)  # another partition of the flow
        loads.load("2026-01-01", many(60), monkeypatch)  # back: its rows written over by the other
        loads.load("2026-01-03", rows("C000001", "K1", name="Ultimo"), monkeypatch)
    with_snapshot, reference = databases
    assert with_snapshot.answers == reference.answers
    assert with_snapshot.stored() == reference.stored()
    assert reference.lookups == ["server"] * 6
    unseen = between in (no_interference, client_update)
    after_interference = "table snapshot" if unseen else "server"
    # the first load into an empty table under its lock: the empty table is its snapshot
    first = "table snapshot" if bulk_first_load else "server"
    assert with_snapshot.lookups == [first, "table snapshot", after_interference] + ["table snapshot"] * 3
    assert with_snapshot.snapshot_file.exists()
    # the table read back whole only when the delivery did not cover it (the client's own row)
    rebuilt = "read whole" if between in (client_insert, client_key_update) else "the load's rows"
    assert with_snapshot.built == [
        "updated" if bulk_first_load else "the load's rows",
        "kept",
        "kept" if unseen else rebuilt,
        "updated",
        "updated",
        "updated",
    ]


def test_the_reload_after_a_client_edit_puts_its_row_back(
    databases: tuple[Loads, Loads], monkeypatch: pytest.MonkeyPatch
) -> None:
    loads = databases[0]
    loads.load("2026-01-01", many(60), monkeypatch)
    client_delete(loads)
    client_update(loads)
    loaded = loads.load("2026-01-01", many(60), monkeypatch)
    assert loaded.lookup == "server"
    # the edited row's stored hash is still the file's: the hash pre-filter skips it, as without
    # the snapshot (the edit only makes the look-up go to the server); the deleted row comes back
    assert loaded.actions == {"inserted": 1, "updated": 0, "unchanged": 59, "rejected": 0}
    actions = {key: action for key, _, action in loads.answers[-1] if action != "unchanged"}
    assert actions == {"C000009": "inserted"}


def test_a_snapshot_of_another_table_of_the_same_name_is_not_used(
    databases: tuple[Loads, Loads], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table dropped and made again: the counter of the new one may reach the same value."""
    loads = databases[0]
    loads.load("2026-01-01", many(60), monkeypatch)
    value = int(pq.read_schema(loads.snapshot_file).metadata[b"counter"])
    loads.sql("drop table accounts")
    with loads.engine.begin() as conn:
        ensure_table(conn, FLOW)
    loads.sql(f"select setval('etl_changes_accounts', {value})")
    assert loads.load("2026-01-01", many(60), monkeypatch).lookup == "server"
    assert loads.answers[-1] == [(k, i, "inserted") for k, i, _ in loads.answers[-1]]


def test_loads_side_by_side_leave_no_snapshot_the_next_load_could_trust(
    databases: tuple[Loads, Loads], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two partitions' loads at the same time, the second committing while the first is still
    open: neither can prove the other's rows into a snapshot; the next load looks up on the
    server and the table is what it is without snapshots."""
    for loads in databases:
        loads.load("2026-01-01", many(60), monkeypatch)
        with loads.engine.connect() as first:
            first.begin()
            opened = loads.load_in(
                first, "2026-01-01", many(60).with_columns(name=pl.lit("Primo")), monkeypatch
            )
            # other keys (the same ones would wait for the first's row locks): commits while it is open
            loads.load("2026-01-02", rows("N7", "N8"), monkeypatch)
            first.commit()
        loads.committed("2026-01-01", opened)
        loads.load("2026-01-01", many(60), monkeypatch)
    with_snapshot, reference = databases
    assert with_snapshot.answers == reference.answers
    assert with_snapshot.stored() == reference.stored()
    assert with_snapshot.lookups[-1] == "server"
    # the second: another writer open when it looked (none); the first: its own writes proven in
    # its transaction (updated), but the counter had moved at its commit: not written either
    assert with_snapshot.built[1:3] == ["none", "updated"]
