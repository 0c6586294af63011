"""link's look-ups from the links snapshot (issue 23) on the private cluster: used while the
table's two counters prove nobody but this partition's load wrote since the last link, the
server's joins otherwise (a client's UPDATE of a reference or of a matched value, a parking
retry); the answers and the stored references are those of the server's joins every time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa

from etl_assets.engine.link import link_snapshot
from etl_assets.engine.link.linker import link_stage
from etl_assets.engine.load import table_snapshot
from etl_assets.engine.load import upsert as loader
from etl_assets.engine.load.upsert import RESPONSE_SCHEMA, load_stage
from etl_assets.engine.staging import StagedWriter
from etl_assets_tests.services import PostgresServer
from etl_assets_tests.test_flows.test_loader_pg import FLOW, many
from etl_assets_tests.test_flows.test_table_snapshot import paired_engines

LINKS = (
    "select a.external_id, p.external_id from accounts a left join accounts p on p.id = a.parent_account_id "
    "order by a.external_id"
)


class Links:
    """One database and one ETL_HOME: each delivery loaded and linked as the steps do (the
    snapshots written after each commit); ``snapshots`` False: the links snapshot is removed
    before every link, so each link takes the server's joins (the reference)."""

    def __init__(self, engine: sa.Engine, home: Path, snapshots: bool) -> None:
        self.engine, self.home, self.snapshots = engine, home, snapshots
        self.lookups: list[str] = []

    @property
    def snapshot_file(self) -> Path:
        return self.home / "data" / FLOW.name / ".table_snapshot" / "accounts.links.parquet"

    def deliver(self, partition: str, frame: pl.DataFrame) -> tuple[list[tuple], list[tuple]]:
        """Load and link ``frame`` as ``partition``: the link's response and the stored links."""
        folder = self.home / "data" / FLOW.name / partition
        folder.mkdir(parents=True, exist_ok=True)
        good, loaded, linked = (folder / f"{s}.parquet" for s in ("transform", "load", "link"))
        with StagedWriter(good) as writer:
            for start in range(0, frame.height, 20):
                writer.write(frame.slice(start, 20))
        with self.engine.begin() as conn, StagedWriter(loaded, RESPONSE_SCHEMA) as response:
            outcome = load_stage(conn, FLOW, good, response)
        for write in outcome.after_commit:
            write(self.engine)
        if not self.snapshots:
            self.snapshot_file.unlink(missing_ok=True)
        with self.engine.begin() as conn, StagedWriter(linked, RESPONSE_SCHEMA) as response:
            outcome = link_stage(conn, FLOW, good, loaded, response)
        for write in outcome.after_commit:
            write(self.engine)
        self.lookups.append(outcome.lookup)
        answer = pl.read_parquet(linked).select("key", "action", "reason").sort("key").rows()
        return answer, self.query(LINKS)

    def sql(self, statement: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(statement))

    def query(self, statement: str) -> list[tuple]:
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(statement)).all()]


@pytest.fixture
def both(
    postgres: PostgresServer, pg_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Links, Links]]:
    """The same deliveries with the links snapshot and without it, each in its database; first
    loads of 10 rows or more are bulk loads (the snapshot starts from the empty table)."""
    monkeypatch.setattr(loader, "INITIAL_LOAD_MIN_ROWS", 10)
    with paired_engines(postgres, pg_database) as (ours, reference):
        yield Links(ours, tmp_path / "with", True), Links(reference, tmp_path / "without", False)


def companies(
    parents: dict[int, int | None], vats: dict[int, str] | None = None, count: int = 30
) -> pl.DataFrame:
    """``count`` companies C000000..; row n's parent is company ``parents[n]`` (by its VAT code,
    or an unknown one for -1); ``vats`` gives some rows another VAT code."""
    frame = many(count)
    vat = frame.get_column("vat_code").to_list()
    for n, code in (vats or {}).items():
        vat[n] = code
    parent = [None] * count
    for n, p in parents.items():
        parent[n] = "IT99999999999" if p == -1 else (None if p is None else vat[p])
    return frame.with_columns(
        pl.Series("vat_code", vat, pl.String), pl.Series("parent_vat", parent, pl.String)
    )


def vat(n: int) -> str:
    """Company n's VAT code, as ``many`` makes it."""
    return f"IT0000000000{n:06d}"


def same(both: tuple[Links, Links], partition: str, frame: pl.DataFrame) -> list[tuple]:
    with_snapshot, reference = (links.deliver(partition, frame) for links in both)
    assert with_snapshot == reference
    return with_snapshot[1]


def test_links_resolve_from_the_snapshot_as_the_server_resolves_them(both: tuple[Links, Links]) -> None:
    ours, _ = both
    first = companies({1: 0, 2: 0, 3: -1, 4: 1})
    stored = same(both, "2026-01-01", first)
    assert stored[1:5] == [
        ("C000001", "C000000"),
        ("C000002", "C000000"),
        ("C000003", None),
        ("C000004", "C000001"),
    ]
    same(both, "2026-01-01", first)  # an identical re-load
    # the next day: C000003's parent now known, C000004 repointed, C000000 (a parent) with a new
    # VAT code (its children no longer match it), a row made ambiguous, a new row with a parent
    delta = companies({1: 0, 2: 0, 3: 5, 4: 2, 7: 6}, vats={0: "IT55555555555", 8: vat(6)}, count=31)
    delta = delta.with_columns(
        pl.when(pl.col("external_id") == "C000030")
        .then(pl.lit(vat(2)))
        .otherwise(pl.col("parent_vat"))
        .alias("parent_vat")
    )
    # C000001 kept as it was, pointing at C000000's old VAT code: unchanged, its link now stale
    old = pl.when(pl.col("external_id") == "C000001").then(pl.lit(vat(0))).otherwise(pl.col("parent_vat"))
    answer, stored = (
        links.deliver("2026-01-02", delta.with_columns(old.alias("parent_vat"))) for links in both
    )
    assert answer == stored
    links_now = dict(answer[1])
    assert links_now["C000004"] == "C000002" and links_now["C000003"] == "C000005"
    assert links_now["C000030"] == "C000002"
    reasons = {key: reason for key, action, reason in answer[0] if action == "rejected"}
    assert f"unknown PARENT_VAT {vat(0)}" in reasons["C000001"]
    assert f"ambiguous PARENT_VAT {vat(6)}" in reasons["C000007"]
    assert ours.lookups == ["links snapshot"] * 3
    assert ours.snapshot_file.exists()


def test_a_write_nobody_accounted_for_sends_the_link_to_the_server_and_back(
    both: tuple[Links, Links], monkeypatch: pytest.MonkeyPatch
) -> None:
    ours, _ = both
    monkeypatch.setattr(link_snapshot, "REBUILD_MIN_ROWS", 10)  # a partition of 30 reads it back
    first = companies({1: 0, 2: 0, 4: 1})
    same(both, "2026-01-01", first)
    # a client repoints a reference: the links counter moved, the server's joins put it right
    for links in both:
        links.sql(
            "update accounts set parent_account_id = (select id from accounts where external_id = 'C000009') where external_id = 'C000001'"
        )
    assert ("C000001", "C000000") in same(both, "2026-01-01", first)
    # a client changes a matched value without the row hash: the change counter moved
    for links in both:
        links.sql("update accounts set vat_code = 'IT77777777777' where external_id = 'C000000'")
    same(both, "2026-01-01", first)  # C000001's parent no longer matches: rejected, as the server says
    same(both, "2026-01-01", first)  # read back after the server's joins: the snapshot again
    assert ours.lookups == ["links snapshot", "server", "server", "links snapshot"]
    # a partition too small to pay the read-back: no snapshot is kept, every answer the server's
    monkeypatch.setattr(link_snapshot, "REBUILD_MIN_ROWS", 1000)
    for links in both:
        links.sql("update accounts set parent_account_id = null where external_id = 'C000002'")
    same(both, "2026-01-01", first)
    same(both, "2026-01-01", first)
    assert ours.lookups[-2:] == ["server", "server"] and not ours.snapshot_file.exists()


def test_an_uncounted_write_of_a_reference_keeps_no_snapshot(both: tuple[Links, Links]) -> None:
    """Another transaction's UPDATE of a reference (open still, as another partition's link):
    the links counter moved without us, so the link takes the server's joins and, its partition
    too small to pay a read-back, leaves no snapshot behind."""
    ours, _ = both
    same(both, "2026-01-01", companies({1: 0}))
    assert ours.snapshot_file.exists()
    other = ours.engine.connect()
    try:
        other.begin()
        other.execute(sa.text("update accounts set parent_account_id = id where external_id = 'C000005'"))
        ours.deliver("2026-01-02", companies({1: 0, 2: 0}))
        other.rollback()  # rolled back: the counter keeps its move all the same
    finally:
        other.close()
    assert ours.lookups[-1] == "server" and not ours.snapshot_file.exists()


def test_a_table_over_the_row_limit_keeps_no_snapshot_and_links_as_the_server_does(
    both: tuple[Links, Links], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bounded memory: neither snapshot holds more than ``MAX_ROWS`` rows (a 10M-row table took
    the flow to 2.4 GB). Under the limit both are kept; once the table passes it, each load and
    link takes the server's joins, drops the files and answers as before."""
    ours, _ = both
    for module in (table_snapshot, link_snapshot):
        monkeypatch.setattr(module, "MAX_ROWS", 40)
    table_file = ours.snapshot_file.with_name("accounts.parquet")
    same(both, "2026-01-01", companies({1: 0, 2: 0, 4: 1}))
    assert ours.snapshot_file.exists() and table_file.exists()
    # the next day's delivery brings 20 new companies: 50 rows, over the limit
    same(both, "2026-01-02", companies({1: 0, 2: 3, 4: 1, 45: 44, 46: -1}, count=50))
    assert not ours.snapshot_file.exists() and not table_file.exists()
    stored = dict(same(both, "2026-01-02", companies({1: 0, 2: 3, 4: 1, 45: 44, 46: -1}, count=50)))
    assert stored["C000002"] == "C000003" and stored["C000045"] == "C000044"
    assert ours.lookups == ["links snapshot", "server", "server"]
    assert not ours.snapshot_file.exists() and not table_file.exists()
