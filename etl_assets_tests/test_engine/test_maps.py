"""Map fields compiled to Polars: typed values and per-row reasons, one pass."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import polars as pl
import pytest

from etl_assets.engine.transform.maps import ERROR_FIELD, ERROR_REASON, LINE, SOURCE_FILE, apply_map
from etl_assets.model.flow import FlowModel


def flow_with(fields: dict) -> FlowModel:
    return FlowModel.model_validate(
        {
            "name": "sample",
            "source": {"file": "s_{start:%Y%m%d}.csv", "folder": "/in"},
            "target": {"table": "sample", "key": "external_id"},
            "map": {"external_id": {"type": "String", "source": "ID", "required": True}, **fields},
        }
    )


def run(fields: dict, column: str, values: list[str | None]) -> pl.DataFrame:
    frame = pl.DataFrame(
        {
            LINE: list(range(2, 2 + len(values))),
            SOURCE_FILE: "f.csv",
            "ID": [str(i) for i in range(len(values))],
            column: values,
        },
        schema_overrides={column: pl.String},
    )
    return apply_map(flow_with(fields), frame.lazy(), frame.columns)


@pytest.mark.parametrize(
    ("spec", "raw", "value"),
    [
        ({"type": "String"}, "  Rossi  ", "Rossi"),
        ({"type": "UppercaseString"}, "it0123", "IT0123"),
        ({"type": "TitlecaseString"}, "città di castello", "Città Di Castello"),
        ({"type": "Integer"}, "1.250", 1250),
        ({"type": "Decimal"}, "1.234.567,89", Decimal("1234567.89")),
        ({"type": "Decimal", "scale": 3}, "-0,125", Decimal("-0.125")),
        ({"type": "Date", "format": "%d/%m/%Y"}, "29/02/2024", date(2024, 2, 29)),
        (
            {"type": "DateTime", "format": "%d/%m/%Y %H:%M:%S"},
            "01/03/2025 07:05:09",
            datetime(2025, 3, 1, 7, 5, 9),
        ),
        ({"type": "Email"}, "Info@Rossi.IT", "info@rossi.it"),
        ({"type": "URL"}, "https://rossi.it/x", "https://rossi.it/x"),
        ({"type": "Phone"}, "+39 02 123.4567", "+39021234567"),
        ({"type": "Choice", "choices": ["OPEN", "WON"]}, "WON", "WON"),
        ({"type": "String", "default": "IT"}, "", "IT"),
        ({"type": "Method", "method": "etl_assets_tests.test_engine.map_functions:reverse"}, "abc", "cba"),
    ],
)
def test_field_types_convert(spec: dict, raw: str, value: object) -> None:
    out = run({"field": {**spec, "source": "RAW"}}, "RAW", [raw])
    assert out["field"].to_list() == [value]
    assert out[ERROR_FIELD].to_list() == [None]


@pytest.mark.parametrize(
    ("spec", "raw", "reason"),
    [
        ({"type": "Integer"}, "12a", "not an integer: '12a'"),
        ({"type": "Decimal"}, "1,2,3", "not a number with decimal comma: '1,2,3'"),
        (
            {"type": "Integer"},
            "9.223.372.036.854.775.808",
            "out of range for the column's bigint: '9.223.372.036.854.775.808'",
        ),
        (
            {"type": "Decimal", "scale": 2},
            "1" * 17 + ",5",
            f"out of range for the column's numeric(18,2): '{'1' * 17},5'",
        ),
        ({"type": "Date", "format": "%d/%m/%Y"}, "31/02/2019", "not a date in format %d/%m/%Y: '31/02/2019'"),
        ({"type": "Email"}, "rossi.at.it", "not an e-mail address: 'rossi.at.it'"),
        ({"type": "URL"}, "rossi dot it", "not a URL: 'rossi dot it'"),
        ({"type": "Phone"}, "call me", "not a phone number: 'call me'"),
        ({"type": "Choice", "choices": ["OPEN", "WON"]}, "LOST", "not one of OPEN, WON: 'LOST'"),
        ({"type": "String", "required": True}, "  ", "required value missing"),
        (
            {"type": "String", "pattern": "^[A-Z]{2}[0-9]{3}$"},
            "I123",
            "does not match ^[A-Z]{2}[0-9]{3}$: 'I123'",
        ),
        ({"type": "String", "max_length": 3}, "abcd", "longer than 3: 'abcd'"),
        (
            {"type": "Method", "method": "etl_assets_tests.test_engine.map_functions:reverse"},
            "bad",
            "rejected by etl_assets_tests.test_engine.map_functions:reverse: 'bad'",
        ),
    ],
)
def test_bad_values_reject_the_row_with_field_and_reason(spec: dict, raw: str, reason: str) -> None:
    out = run({"field": {**spec, "source": "RAW"}}, "RAW", [raw])
    assert out[ERROR_FIELD].to_list() == ["RAW"]
    assert out[ERROR_REASON].to_list() == [reason]


def test_first_error_in_map_order_wins_and_good_rows_pass() -> None:
    fields = {
        "a": {"type": "Integer", "source": "A"},
        "b": {"type": "Date", "source": "B", "format": "%d/%m/%Y"},
    }
    frame = pl.DataFrame(
        {
            LINE: [2, 3, 4],
            SOURCE_FILE: "f",
            "ID": ["1", "2", None],
            "A": ["x", "1", "2"],
            "B": ["bad", "bad", "01/01/2020"],
        }
    )
    out = apply_map(flow_with(fields), frame.lazy(), frame.columns)
    assert out[ERROR_FIELD].to_list() == ["A", "B", "ID"]
    assert out[LINE].to_list() == [2, 3, 4]


def test_missing_optional_column_is_null_not_an_error() -> None:
    frame = pl.DataFrame({LINE: [2], SOURCE_FILE: "f", "ID": ["1"]})
    out = apply_map(flow_with({"city": {"type": "String"}}), frame.lazy(), frame.columns)
    assert out["city"].to_list() == [None]
    assert out[ERROR_FIELD].to_list() == [None]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"d": {"type": "Date"}}, "Date needs a format"),
        ({"c": {"type": "Choice"}}, "Choice needs choices"),
        ({"m": {"type": "Method"}}, "Method needs method"),
        ({"p": {"type": "String", "pattern": "("}}, "pattern is not a valid regular expression"),
        ({"x": {"type": "Nope"}}, "Input should be 'String'"),
    ],
)
def test_bad_declarations_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        flow_with(fields)
