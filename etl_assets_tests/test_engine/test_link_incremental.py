"""The incremental link on real PostgreSQL: a re-load reads and writes only the links that can
have changed, and its response stays the one a full re-resolution gives."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa
import yaml

from etl_assets.engine.columns import LINE
from etl_assets.engine.extract import parse_stream
from etl_assets.engine.link import parking
from etl_assets.engine.link.linker import link_stage
from etl_assets.engine.load.upsert import RESPONSE_SCHEMA, load_stage
from etl_assets.engine.staging import StagedWriter
from etl_assets.engine.transform.stage import transform_stage
from etl_assets.model.flow import FlowModel
from etl_assets_tests.services import PostgresServer
from etl_assets_tests.test_flows.conftest import companies_csv

DEFS = Path(__file__).resolve().parents[2] / "etl_assets" / "defs" / "companies" / "defs.yaml"
LINKS = "select external_id, parent_account_id, xmin::text from accounts order by external_id"


def company(key: str, vat: str, parent: str = "", name: str = "Rossi S.p.A.") -> str:
    return f"{key};{vat};{name};;;;IT;;;{parent};;;;14/01/2026 10:00:00"


def companies(on_missing: str = "reject") -> FlowModel:
    attributes = yaml.safe_load(DEFS.read_text(encoding="utf-8"))["attributes"]
    if on_missing == "park":
        attributes["links"][0] |= {"on_missing": "park", "after_flow": "companies"}
    return FlowModel.model_validate(attributes)


@pytest.fixture
def engine(postgres: PostgresServer, pg_database: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(postgres.url(pg_database))
    yield engine
    engine.dispose()


def deliver(engine: sa.Engine, flow: FlowModel, work: Path, *rows: str) -> dict[str, object]:
    """One delivery through extract's parser, transform, load and link (parking rows of a
    parking link as the link step does); the link's actions and rejection reasons."""
    work.mkdir(parents=True, exist_ok=True)
    data = companies_csv(*rows)
    extracted = pl.concat(list(parse_stream(io.BytesIO(data), flow, "companies_20260115.csv")))
    extracted.write_parquet(work / "extract.parquet")
    transform_stage(flow, work / "extract.parquet", work)
    good, loaded, linked = work / "transform.parquet", work / "load.parquet", work / "link.parquet"
    with engine.begin() as conn, StagedWriter(loaded, RESPONSE_SCHEMA) as response:
        load_stage(conn, flow, good, response)
    with engine.begin() as conn, StagedWriter(linked, RESPONSE_SCHEMA) as response:

        def park(link: object, parked: pl.DataFrame) -> None:
            lines = extracted.filter(pl.col(LINE).is_in(parked[LINE].implode()))
            parking.park(conn, flow, link, parked, lines, "2026-01-15", datetime(2026, 1, 15))

        def unpark(answer: pl.DataFrame) -> None:
            settled = answer.filter(pl.col("action") != "parked").get_column("target_id")
            parking.unpark(conn, flow, flow.links[0], settled.drop_nulls().to_list())

        link = link_stage(conn, flow, good, loaded, response, park=park, after_batch=unpark)
    actions = {a: n for a, n in link.actions.items() if n}
    return {**actions, "reasons": link.rejected["reason"].to_list()}


def query(engine: sa.Engine, sql: str) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(sql)]


def test_an_identical_reload_writes_no_link_and_reports_its_rejects_again(
    engine: sa.Engine, tmp_path: Path
) -> None:
    flow = companies()
    rows = [company("C1", "IT00000000001"), company("C2", "IT00000000002", "IT00000000001")]
    rows.append(company("C3", "IT00000000003", "IT99999999999"))
    first = deliver(engine, flow, tmp_path / "1", *rows)
    assert first["updated"] == 1 and first["rejected"] == 1
    before = query(engine, LINKS)
    again = deliver(engine, flow, tmp_path / "2", *rows)
    assert again == {
        "unchanged": 2,
        "rejected": 1,
        "reasons": ["unknown PARENT_VAT IT99999999999: no accounts.vat_code matches"],
    }
    assert query(engine, LINKS) == before  # not one row rewritten


def test_a_parent_changing_its_match_value_relinks_its_old_children(
    engine: sa.Engine, tmp_path: Path
) -> None:
    flow = companies()
    child = company("C2", "IT00000000002", "IT00000000001")
    other = company("C3", "IT00000000003", "IT00000000009")  # its parent arrives later
    deliver(engine, flow, tmp_path / "1", company("C1", "IT00000000001"), child, other)
    # C1 takes another VAT code; C9 takes C1's old one and C3's parent arrives: the children
    # are unchanged rows of the load, their parents are not
    second = deliver(
        engine,
        flow,
        tmp_path / "2",
        company("C1", "IT00000000009"),
        child,
        other,
        company("C9", "IT00000000001"),
    )
    assert second == {"unchanged": 2, "updated": 2, "reasons": []}
    parents = (
        "select c.external_id, p.external_id from accounts c join accounts p on p.id = c.parent_account_id"
    )
    assert sorted(query(engine, parents)) == [("C2", "C9"), ("C3", "C1")]
    # C1's VAT code now matches nobody's reference: C3 loses its parent, rejected as before
    third = deliver(engine, flow, tmp_path / "3", company("C1", "IT00000000008"), child, other)
    assert third == {
        "unchanged": 2,
        "rejected": 1,
        "reasons": ["unknown PARENT_VAT IT00000000009: no accounts.vat_code matches"],
    }


def test_a_value_made_ambiguous_by_a_new_row_rejects_the_unchanged_child(
    engine: sa.Engine, tmp_path: Path
) -> None:
    flow = companies()
    child = company("C2", "IT00000000002", "IT00000000001")
    deliver(engine, flow, tmp_path / "1", company("C1", "IT00000000001"), child)
    again = deliver(
        engine, flow, tmp_path / "2", company("C1", "IT00000000001"), child, company("C5", "IT00000000001")
    )
    assert again["reasons"] == ["ambiguous PARENT_VAT IT00000000001: 2 rows of accounts match"]


@pytest.mark.parametrize("on_missing", ["reject", "park"])
def test_a_child_left_unlinked_is_linked_once_its_parent_arrives_later(
    engine: sa.Engine, tmp_path: Path, on_missing: str
) -> None:
    flow = companies(on_missing)
    child = company("C2", "IT00000000002", "IT00000000001")
    first = deliver(engine, flow, tmp_path / "1", child)
    assert first.get("parked" if on_missing == "park" else "rejected") == 1
    again = deliver(engine, flow, tmp_path / "2", child)  # still missing: the same answer
    assert {a: n for a, n in again.items() if a != "reasons"} == {
        a: n for a, n in first.items() if a != "reasons"
    }
    later = deliver(engine, flow, tmp_path / "3", child, company("C1", "IT00000000001"))
    assert later == {"updated": 1, "unchanged": 1, "reasons": []}
    parents = (
        "select c.external_id, p.external_id from accounts c join accounts p on p.id = c.parent_account_id"
    )
    assert query(engine, parents) == [("C2", "C1")]
    if on_missing == "park":
        assert query(engine, "select count(*) from etl_parked_links") == [(0,)]


def test_a_child_whose_reference_is_cleared_in_the_table_is_relinked(
    engine: sa.Engine, tmp_path: Path
) -> None:
    """A stored link that disagrees with the stored value (a link step that never ran after a
    load, a hand edit) is found although the load left the row unchanged."""
    flow = companies()
    rows = [company("C1", "IT00000000001"), company("C2", "IT00000000002", "IT00000000001")]
    deliver(engine, flow, tmp_path / "1", *rows)
    with engine.begin() as conn:
        conn.exec_driver_sql("update accounts set parent_account_id = null")
    assert deliver(engine, flow, tmp_path / "2", *rows) == {"updated": 1, "unchanged": 1, "reasons": []}
    with engine.begin() as conn:
        conn.exec_driver_sql("update accounts set parent_account_id = id where external_id = 'C1'")
    assert deliver(engine, flow, tmp_path / "3", *rows) == {"updated": 1, "unchanged": 1, "reasons": []}
    assert query(
        engine, "select count(*) from accounts where external_id = 'C1' and parent_account_id is null"
    ) == [(1,)]
