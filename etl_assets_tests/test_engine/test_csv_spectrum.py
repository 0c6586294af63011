"""csv-spectrum (github.com/max-mapper/csv-spectrum), the public acid test of CSV readers:
each of its 12 files through extract, transform and load into PostgreSQL, as a flow of
String fields, and the target's values against the expected JSON.

The files under ``data/csv_spectrum/csvs`` are byte for byte the repository's (CRLF kept,
no final line break where it has none); ``json`` holds the expected records.
``location_coordinates`` is latin-1: its degree sign is the single byte 0xB0 (in both its
CSV and its JSON), so it runs as a cp1252 flow, and a utf8 flow refuses it as a file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from etl_assets.engine.extract import SourceFileError
from etl_assets.engine.steps import FlowSteps
from etl_assets.model.flow import FlowModel
from etl_assets.resources import FoldersResource
from etl_assets.resources.files import LocalFilesResource
from etl_assets_tests.services import PostgresServer

DATA = Path(__file__).parents[1] / "data" / "csv_spectrum"
CASES = sorted(path.stem for path in (DATA / "csvs").glob("*.csv"))
LATIN_1 = {"location_coordinates"}  # the spectrum's one file that is not UTF-8
PARTITION, START = "2026-01-15", datetime(2026, 1, 15)


def expected_records(case: str) -> list[dict[str, str]]:
    raw = (DATA / "json" / f"{case}.json").read_bytes()
    return json.loads(raw.decode("cp1252" if case in LATIN_1 else "utf-8"))


def field_name(header: str) -> str:
    """A target column for a spectrum header (``Contact Phone Number`` -> ``col_contact_phone_number``;
    the prefix keeps ``key`` and ``id``, names the load reserves, usable)."""
    return "col_" + re.sub(r"[^a-z0-9]+", "_", header.lower()).strip("_")


def spectrum_flow(case: str, encoding: str) -> FlowModel:
    """One String field per column of the case, the first one the key; no other rule."""
    headers = list(expected_records(case)[0])
    fields = {
        field_name(h): {"type": "String", "source": h, "required": i == 0} for i, h in enumerate(headers)
    }
    return FlowModel.model_validate(
        {
            "name": f"spectrum_{case}",
            "source": {
                "file": f"{case}_{{start:%Y%m%d}}.csv",
                "folder": "/outbound/spectrum",
                "delimiter": ",",
                "encoding": encoding,
                "settle_seconds": 0,
            },
            "map": fields,
            "target": {"table": f"spectrum_{case}", "key": field_name(headers[0])},
            "schedule": None,
        }
    )


def as_loaded(value: str) -> str | None:
    """The value the target holds for a source value: the map stores an empty value as NULL
    (``maps._raw``: so ``required`` and ``default`` see it as missing). The spectrum's ``""``
    (cases empty, empty_crlf) is the one value that differs; every other value is the
    JSON's, character for character."""
    return None if value == "" else value


@pytest.fixture(scope="module")
def spectrum_engine(postgres: PostgresServer) -> Iterator[sa.Engine]:
    with postgres.own_engine("etl_spectrum") as engine:
        yield engine


def run_flow(flow: FlowModel, case: str, home: Path, engine: sa.Engine) -> FlowSteps:
    """The case's file as the partition's delivery, through extract, transform and load."""
    imported = home / "import"
    imported.mkdir(parents=True, exist_ok=True)
    (imported / f"{case}_{START:%Y%m%d}.csv").write_bytes((DATA / "csvs" / f"{case}.csv").read_bytes())
    steps = FlowSteps(flow, FoldersResource(home=str(home)))
    steps.extract(PARTITION, START, LocalFilesResource(root=str(imported)))
    transformed = steps.transform(PARTITION)
    assert transformed.caught.count == 0 and transformed.collapsed == 0
    loaded = steps.load(PARTITION, engine)
    balance = loaded.balance
    assert balance["rows_in"] == balance["loaded"] == len(expected_records(case))
    assert not steps.stage(PARTITION).error_file("transform").exists()
    return steps


def test_the_spectrum_has_its_twelve_cases() -> None:
    assert CASES == [
        "comma_in_quotes",
        "empty",
        "empty_crlf",
        "escaped_quotes",
        "json",
        "location_coordinates",
        "newlines",
        "newlines_crlf",
        "quotes_and_newlines",
        "simple",
        "simple_crlf",
        "utf8",
    ]
    # the CRLF files kept their CRLFs (a checkout or an editor may turn them into LF)
    for case in ("empty_crlf", "newlines_crlf", "simple_crlf"):
        data = (DATA / "csvs" / f"{case}.csv").read_bytes()
        assert data.count(b"\r\n") == data.count(b"\n") > 0, case
    assert b"\r" not in (DATA / "csvs" / "newlines.csv").read_bytes()


@pytest.mark.parametrize("case", CASES)
def test_each_case_loads_the_expected_values(case: str, spectrum_engine: sa.Engine, tmp_path: Path) -> None:
    flow = spectrum_flow(case, "cp1252" if case in LATIN_1 else "utf8")
    run_flow(flow, case, tmp_path / "etl_home", spectrum_engine)
    columns = ", ".join(f'"{name}"' for name in flow.map)
    with spectrum_engine.connect() as conn:
        stored = conn.exec_driver_sql(
            f'SELECT {columns}, etl_source_line FROM "{flow.target.table}" ORDER BY etl_source_line'
        ).all()
    expected = expected_records(case)
    assert [tuple(row[:-1]) for row in stored] == [tuple(as_loaded(v) for v in r.values()) for r in expected]
    # each record's source line: after the header, counting the line breaks quoted in records
    lines, line = [], 2
    for record in expected:
        lines.append(line)
        line += 1 + sum(value.count("\n") for value in record.values())
    assert [row[-1] for row in stored] == lines


def test_a_crlf_inside_a_quoted_field_stays_a_crlf(spectrum_engine: sa.Engine, tmp_path: Path) -> None:
    flow = spectrum_flow("newlines_crlf", "utf8")
    run_flow(flow, "newlines_crlf", tmp_path / "etl_home", spectrum_engine)
    with spectrum_engine.connect() as conn:
        value = conn.exec_driver_sql(
            f'SELECT col_a FROM "{flow.target.table}" WHERE etl_source_line = 3'
        ).scalar_one()
    assert value.encode() == b"Once upon \r\na time"


def test_the_latin_1_case_in_a_utf8_flow_fails_as_a_file_naming_the_byte(
    spectrum_engine: sa.Engine, tmp_path: Path
) -> None:
    with pytest.raises(SourceFileError) as caught:
        run_flow(
            spectrum_flow("location_coordinates", "utf8"), "location_coordinates", tmp_path, spectrum_engine
        )
    assert caught.value.file == "location_coordinates_20260115.csv"
    assert caught.value.fault == (
        "undecodable bytes at line 2 (byte 72: b'\\xb0' is not utf8) (is it cp1252? set source.encoding)"
    )
