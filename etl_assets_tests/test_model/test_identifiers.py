"""Names in a flow's declaration are identifiers, and SQL quotes them everywhere.

A hostile table, column or flow name is refused when the declaration loads (by the model and
through Dagster's component loader, with the file and line), naming the field and the value.
A name SQL reserves (``user``, ``select``, ``order``, ``group``, ``limit``...) is allowed: it
goes CSV -> extract -> transform -> load -> link on PostgreSQL (COPY, the upsert, a first load
that drops and rebuilds the indexes, the link's joins) and on SQLite, with values that look
like SQL stored as they are.
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa
import yaml
from pydantic import ValidationError

from etl_assets.engine.extract import parse_stream
from etl_assets.engine.link.linker import link_stage
from etl_assets.engine.load import upsert
from etl_assets.engine.load.upsert import RESPONSE_SCHEMA, load_stage
from etl_assets.engine.staging import StagedWriter
from etl_assets.engine.transform.stage import transform_stage
from etl_assets.model.flow import FlowModel
from etl_assets_tests.services import PostgresServer

PROJECT = Path(__file__).resolve().parents[2]
COMPANIES = yaml.safe_load((PROJECT / "etl_assets/defs/companies/defs.yaml").read_text())["attributes"]
OFFERS = yaml.safe_load((PROJECT / "etl_assets/defs/offers/defs.yaml").read_text())["attributes"]
RULE = "lower-case letters, digits and _ only, starting with a letter, at most 63 characters"
HOSTILE = [
    "x; drop table y",
    'accounts"; drop table accounts; --',
    "Accounts",  # PostgreSQL would fold it unquoted: one name, two spellings
    "_line",  # the engine's own frame columns start with _
    "vat_code\n",
    "1st",
    "naïve",
    "",
    "a" * 64,  # PostgreSQL would cut it to 63 without a word
]


def declaration(base: dict[str, Any], path: tuple[str | int, ...], value: object) -> dict[str, Any]:
    """A copy of ``base`` with the name at ``path`` set to ``value`` (a map key renamed)."""
    document = copy.deepcopy(base)
    if path[0] == "map":
        fields = document["map"]
        document["map"] = {(value if name == path[1] else name): spec for name, spec in fields.items()}
        return document
    owner: Any = document
    for part in path[:-1]:
        owner = owner[part]
    owner[path[-1]] = value
    return document


def refusal(document: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    with pytest.raises(ValidationError) as caught:
        FlowModel.model_validate(document)
    return [(tuple(e["loc"]), e["msg"]) for e in caught.value.errors()]


NAME_FIELDS = [
    (COMPANIES, ("name",), "name"),
    (COMPANIES, ("target", "table"), "target.table"),
    (COMPANIES, ("target", "key"), "target.key"),
    (COMPANIES, ("dedupe", "latest_by"), "dedupe.latest_by"),
    (COMPANIES, ("links", 0, "field"), "links.0.field"),
    (COMPANIES, ("links", 0, "column"), "links.0.column"),
    (COMPANIES, ("links", 0, "table"), "links.0.table"),
    (COMPANIES, ("links", 0, "match"), "links.0.match"),
    (OFFERS, ("links", 0, "after_flow"), "links.0.after_flow"),
]


@pytest.mark.parametrize("value", HOSTILE, ids=repr)
@pytest.mark.parametrize(("base", "path", "where"), NAME_FIELDS, ids=[w for _, _, w in NAME_FIELDS])
def test_a_hostile_name_is_refused_naming_the_field_and_the_value(
    base: dict[str, Any], path: tuple[str | int, ...], where: str, value: str
) -> None:
    errors = refusal(declaration(base, path, value))
    assert errors == [(path, f"Value error, {where} {value!r} is not an identifier: {RULE}")]


@pytest.mark.parametrize("value", HOSTILE, ids=repr)
def test_a_hostile_column_in_the_map_is_refused(value: str) -> None:
    document = declaration(COMPANIES, ("map", "city"), value)
    assert refusal(document) == [
        (("map", value), f"Value error, map field {value!r} is not an identifier: {RULE}")
    ]


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("map", "city"), "id", "map field 'id' is reserved: id, key and names starting with etl_"),
        (("map", "city"), "key", "map field 'key' is reserved: id, key and names starting with etl_"),
        (("map", "city"), "etl_loaded_at", "map field 'etl_loaded_at' is reserved"),
        (("links", 0, "column"), "id", "links.0.column 'id' is reserved"),
        (("target", "table"), "etl_parked_links", "target.table 'etl_parked_links' is reserved"),
    ],
)
def test_a_name_the_load_uses_itself_is_refused(
    path: tuple[str | int, ...], value: str, message: str
) -> None:
    ((loc, msg),) = refusal(declaration(COMPANIES, path, value))
    assert loc == (path if path[0] != "map" else ("map", value))
    assert msg.startswith(f"Value error, {message}"), msg


def test_two_links_into_one_column_and_a_too_long_index_name_are_refused() -> None:
    document = copy.deepcopy(COMPANIES)
    document["links"].append(dict(document["links"][0], field="vat_code"))
    assert refusal(document) == [
        ((), "Value error, links.1.column 'parent_account_id' is already links.0.column")
    ]
    long_table = "t" * 60  # a name that fits; the self-link's index ix_<table>_vat_code does not
    document = declaration(COMPANIES, ("target", "table"), long_table)
    document = declaration(document, ("links", 0, "table"), long_table)
    assert refusal(document) == [
        (
            (),
            f"Value error, links.0: its index ix_{long_table}_vat_code would be 72 characters, "
            "PostgreSQL allows 63: shorten target.table or links.0.match",
        )
    ]


def test_every_bad_name_is_reported_at_once() -> None:
    document = declaration(COMPANIES, ("target", "table"), "t;")
    document = declaration(document, ("links", 0, "match"), "M")
    assert [loc for loc, _ in refusal(document)] == [("target", "table"), ("links", 0, "match")]


def test_dagster_reports_a_hostile_name_with_its_file_and_line(tmp_path: Path) -> None:
    """What ``dg check defs`` / the UI show: the component loader's error, at the YAML line."""
    from dagster.components.testing import create_defs_folder_sandbox

    text = (PROJECT / "etl_assets/defs/companies/defs.yaml").read_text()
    assert "    table: accounts\n" in text
    text = text.replace("    table: accounts\n", "    table: 'accounts; drop table accounts'\n")
    line = text.splitlines().index("    table: 'accounts; drop table accounts'") + 1
    with warnings.catch_warnings(), create_defs_folder_sandbox() as sandbox:
        warnings.simplefilter("ignore")
        folder = sandbox.defs_folder_path / "hostile"
        folder.mkdir()
        (folder / "defs.yaml").write_text(text)
        with pytest.raises(Exception, match="Error while loading component") as caught:  # noqa: SIM117
            with sandbox.load_component_and_build_defs(defs_path=folder):
                pass
    cause: BaseException | None = caught.value
    while cause is not None and not isinstance(cause, ValidationError):
        cause = cause.__cause__ or cause.__context__
    assert isinstance(cause, ValidationError), caught.value
    (error,) = cause.errors()
    assert error["loc"] == (f"attributes.target.table at {folder / 'defs.yaml'}:{line}",)
    assert error["msg"] == (
        f"Value error, target.table 'accounts; drop table accounts' is not an identifier: {RULE}"
    )


# --- names SQL reserves, end to end ------------------------------------------------------

RESERVED_WORDS_FLOW = {
    "name": "select",
    "source": {"file": "select_{start:%Y%m%d}.csv", "folder": "/outbound/select"},
    "map": {
        "select": {"type": "String", "source": "USER", "required": True},
        "order": {"type": "String", "source": "ORDER", "required": True},
        "group": {"type": "Integer", "source": "GROUP"},
        "from": {"type": "Decimal", "source": "FROM", "scale": 2},
        "table": {"type": "Date", "source": "TABLE", "format": "%d/%m/%Y"},
        "parent": {"type": "String", "source": "PARENT"},
    },
    "target": {"table": "user", "key": "select"},  # "user" unquoted is CURRENT_USER in PostgreSQL
    "links": [{"field": "parent", "column": "limit", "table": "user", "match": "order"}],
}
# values that look like SQL (quotes, comments, %, backslashes, psycopg placeholders): data
ROWS = [
    ['K1\'; drop table "user"; --', "O'1", "1", "10,50", "01/02/2025", ""],
    ["K2 100%", "O%2", "2", "20,00", "02/02/2025", "O'1"],
    ["K3 \\N back\\slash", "O\\3", "3", "", "", "O%2"],
    ["K4 %(select)s {order} %s", "O4 $1", "", "1,00", "", "O'missing"],
]


def csv_bytes(rows: list[list[str]]) -> bytes:
    """A ``;`` file, every field quoted (quotes doubled) as an ERP writes awkward values."""

    def line(values: list[str]) -> str:
        return ";".join('"' + v.replace('"', '""') + '"' for v in values)

    return (
        "\r\n".join([line(["USER", "ORDER", "GROUP", "FROM", "TABLE", "PARENT"])] + [line(r) for r in rows])
        + "\r\n"
    ).encode()


def run_partition(engine: sa.Engine, flow: FlowModel, data: bytes, work: Path) -> tuple[dict, dict]:
    """The engine's own stages as the Dagster steps call them: extract's parser, transform,
    load and link in one transaction each; their actions."""
    work.mkdir(parents=True, exist_ok=True)
    pl.concat(list(parse_stream(io.BytesIO(data), flow, "select_20250201.csv"))).write_parquet(
        work / "extract.parquet"
    )
    transform_stage(flow, work / "extract.parquet", work)
    good, loaded, linked = work / "transform.parquet", work / "load.parquet", work / "link.parquet"
    with engine.begin() as conn, StagedWriter(loaded, RESPONSE_SCHEMA) as response:
        load = load_stage(conn, flow, good, response)
    with engine.begin() as conn, StagedWriter(linked, RESPONSE_SCHEMA) as response:
        link = link_stage(conn, flow, good, loaded, response)
    return load.actions, {**link.actions, "reasons": link.rejected["reason"].to_list()}


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'target.sqlite'}"
    else:
        postgres: PostgresServer = request.getfixturevalue("postgres")
        url = postgres.url(request.getfixturevalue("pg_database"))
    engine = sa.create_engine(url)
    yield engine
    engine.dispose()


def stored(engine: sa.Engine) -> list[tuple]:
    quote = engine.dialect.identifier_preparer.quote_identifier
    columns = ", ".join(quote(c) for c in ("select", "order", "group", "from", "table", "limit"))
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(f"SELECT {columns} FROM {quote('user')} ORDER BY {quote('select')}").all()
        ids = dict(conn.exec_driver_sql(f"SELECT {quote('order')}, id FROM {quote('user')}").all())
    return [
        (
            row[0],
            row[1],
            row[2],
            _money(row[3]),
            _day(row[4]),
            next((o for o, i in ids.items() if i == row[5]), None),
        )
        for row in rows
    ]


def _money(value: object) -> str | None:
    """numeric(18,2) as text with its 2 decimals (SQLite gives back 20 for 20.00)."""
    return None if value is None else f"{Decimal(str(value)):.2f}"


def _day(value: object) -> object:
    """A date as ISO text (SQLite stores it so)."""
    return value.isoformat() if isinstance(value, date) else value


def test_reserved_words_as_names_load_and_link_end_to_end(engine: sa.Engine, tmp_path: Path) -> None:
    flow = FlowModel.model_validate(RESERVED_WORDS_FLOW)
    load, link = run_partition(engine, flow, csv_bytes(ROWS), tmp_path / "run1")
    assert load == {"inserted": 4, "updated": 0, "unchanged": 0, "rejected": 0}
    assert (link["updated"], link["rejected"]) == (2, 1)
    assert link["reasons"] == ["unknown PARENT O'missing: no user.order matches"]
    assert stored(engine) == [
        ('K1\'; drop table "user"; --', "O'1", 1, "10.50", "2025-02-01", None),
        ("K2 100%", "O%2", 2, "20.00", "2025-02-02", "O'1"),
        ("K3 \\N back\\slash", "O\\3", 3, None, None, "O%2"),
        ("K4 %(select)s {order} %s", "O4 $1", None, "1.00", None, None),
    ]

    # the same file again changes nothing; a corrected row updates only itself
    load, link = run_partition(engine, flow, csv_bytes(ROWS), tmp_path / "run2")
    assert load == {"inserted": 0, "updated": 0, "unchanged": 4, "rejected": 0}
    changed = [ROWS[0], ROWS[1], ROWS[2], [*ROWS[3][:5], "O\\3"]]
    load, link = run_partition(engine, flow, csv_bytes(changed), tmp_path / "run3")
    assert load == {"inserted": 0, "updated": 1, "unchanged": 3, "rejected": 0}  # parent is a column too
    assert (link["updated"], link["rejected"]) == (1, 0)
    assert stored(engine)[3][5] == "O\\3"


def test_a_first_load_with_reserved_words_rebuilds_its_indexes(
    postgres: PostgresServer, pg_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path that locks the table, drops its indexes, COPYs and builds them again."""
    monkeypatch.setattr(upsert, "INITIAL_LOAD_MIN_ROWS", 50)
    flow = FlowModel.model_validate(RESERVED_WORDS_FLOW)
    rows = [
        [f"K{n:03d} '\"; --", f"O{n:03d}", str(n), "1,00", "", f"O{n - 1:03d}" if n else ""]
        for n in range(60)
    ]
    engine = sa.create_engine(postgres.url(pg_database))
    try:
        load, link = run_partition(engine, flow, csv_bytes(rows), tmp_path / "run")
        assert load["inserted"] == 60 and (link["updated"], link["rejected"]) == (59, 0)
        with engine.connect() as conn:
            indexes = (
                conn.exec_driver_sql("SELECT indexdef FROM pg_indexes WHERE tablename = 'user' ORDER BY 1")
                .scalars()
                .all()
            )
        assert indexes == [
            'CREATE INDEX ix_user_order ON public."user" USING btree ("order")',
            'CREATE UNIQUE INDEX user_pkey ON public."user" USING btree (id)',
            'CREATE UNIQUE INDEX user_select_key ON public."user" USING btree ("select")',
        ]
    finally:
        engine.dispose()
