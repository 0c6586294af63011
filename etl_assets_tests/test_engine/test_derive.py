"""Derived map fields: a template or a Method over other fields' typed values, filled where
the source value is missing (or always), then typed and validated like a value read from the
file; a derive over a field the map lacks, or a cycle, is refused at its key."""

from __future__ import annotations

from datetime import date

import dagster as dg
import polars as pl
import pytest
from pydantic import ValidationError

from etl_assets.engine.transform.maps import ERROR_FIELD, ERROR_REASON, LINE, SOURCE_FILE, apply_map
from etl_assets.model.versions import method_modules, stage_version
from etl_assets.orchestration.columns import load_lineage, source_columns_of
from etl_assets_tests.test_engine.test_maps import flow_with

NAMES = {
    "first_name": {"type": "TitlecaseString", "source": "FIRST"},
    "last_name": {"type": "UppercaseString", "source": "LAST"},
}
FULL = {"type": "String", "derive": "{first_name} {last_name}", "max_length": 14}
INITIALS = "etl_assets_tests.test_engine.map_functions:initials"


def mapped(fields: dict, columns: dict[str, list[str | None]]) -> pl.DataFrame:
    rows = len(next(iter(columns.values())))
    frame = pl.DataFrame(
        {
            LINE: list(range(2, 2 + rows)),
            SOURCE_FILE: "f.csv",
            "ID": [str(i) for i in range(rows)],
            **columns,
        },
        schema_overrides=dict.fromkeys(columns, pl.String),
    )
    return apply_map(flow_with({**NAMES, **fields}), frame.lazy(), frame.columns)


PEOPLE = {"FIRST": ["mario", "anna", None, "bartolomeo"], "LAST": ["rossi", None, None, "degli esposti"]}


def test_fill_missing_derives_only_where_the_source_value_is_empty() -> None:
    out = mapped({"full_name": FULL}, {**PEOPLE, "FULL_NAME": ["", None, "Dott. Verdi", None]})
    assert out.get_column("full_name").to_list() == [
        "Mario ROSSI",
        "Anna",
        "Dott. Verdi",
        "Bartolomeo DEGLI ESPOSTI",
    ]
    # the derived value is validated as the field's own: too long, told as derived
    assert out.get_column(ERROR_FIELD).to_list() == [None, None, None, "FULL_NAME"]
    assert out.get_column(ERROR_REASON).to_list()[3] == (
        "derived by {first_name} {last_name}: longer than 14: 'Bartolomeo DEGLI ESPOSTI'"
    )


def test_a_derived_field_needs_no_source_column_and_a_given_value_is_told_as_given() -> None:
    out = mapped({"full_name": {**FULL, "required": True}}, PEOPLE)  # no FULL_NAME in the file
    assert out.get_column("full_name").to_list()[:2] == ["Mario ROSSI", "Anna"]
    assert out.get_column(ERROR_REASON).to_list()[2] == (
        "derived by {first_name} {last_name}: required value missing"
    )
    assert flow_with({**NAMES, "full_name": {**FULL, "required": True}}).required_columns == ["ID"]
    given = mapped({"full_name": FULL}, {**PEOPLE, "FULL_NAME": ["Un nome troppo lungo", None, None, None]})
    assert given.get_column(ERROR_REASON).to_list()[0] == "longer than 14: 'Un nome troppo lungo'"


def test_fill_always_overwrites_and_derives_chain_in_dependency_order() -> None:
    fields = {  # declared before what it requires: computed after it
        "greeting": {"type": "UppercaseString", "derive": "Hello, {full_name}!", "fill": "always"},
        "full_name": {**FULL, "fill": "always"},
        "born": {"type": "Date", "format": "%d/%m/%Y", "source": "BORN"},
        "tag": {"type": "String", "derive": "{last_name}-{born}"},
    }
    out = mapped(
        fields,
        {**PEOPLE, "FULL_NAME": ["Given", "Given", None, None], "BORN": ["29/02/2024", None, None, None]},
    )
    assert out.get_column("full_name").to_list()[:3] == ["Mario ROSSI", "Anna", None]
    assert out.get_column("greeting").to_list()[:3] == ["HELLO, MARIO ROSSI!", "HELLO, ANNA!", "HELLO, !"]
    assert out.get_column("tag").to_list()[:2] == ["ROSSI-2024-02-29", "-"]  # a typed date, as ISO text
    assert out.get_column("born").to_list()[0] == date(2024, 2, 29)


def test_a_derive_method_takes_the_fields_its_parameters_name() -> None:
    out = mapped({"initials": {"type": "String", "derive": INITIALS, "pattern": "^M"}}, PEOPLE)
    assert out.get_column("initials").to_list()[0] == "MR"
    assert out.get_column("initials").to_list()[1] is None  # a part missing: nothing derived
    assert out.get_column(ERROR_REASON).to_list()[3] == f"derived by {INITIALS}: does not match ^M: 'BD'"
    flow = flow_with({**NAMES, "initials": {"type": "String", "derive": INITIALS}})
    assert "etl_assets_tests.test_engine.map_functions" in method_modules(flow)


@pytest.mark.parametrize(
    ("fields", "loc", "message"),
    [
        ({"full_name": {"type": "String", "derive": "{first_name} {surname}"}}, "map.full_name.derive",
         "derive '{first_name} {surname}' requires surname: no such map field"),
        ({"full_name": {"type": "String", "derive": "{full_name}!"}}, "map.full_name.derive",
         "derive '{full_name}!' requires the field itself"),
        ({"a": {"type": "String", "derive": "{b}"}, "b": {"type": "String", "derive": "{a}"}},
         "map.a.derive", "derive cycle: a -> b -> a"),
        ({"a": {"type": "String", "derive": "{first_name!r}"}}, "map.a.derive", "is not a field name"),
        ({"a": {"type": "String", "derive": "{first_name"}}, "map.a.derive", "write {{ and }} for a brace"),
        ({"a": {"type": "String", "derive": "etl_assets_tests.test_engine.map_functions:anything"}},
         "map.a.derive", "name each field it takes as a parameter"),
        ({"a": {"type": "String", "derive": "no_such_module:f"}}, "map.a.derive", "cannot be imported"),
    ],
)  # fmt: skip
def test_a_derive_that_does_not_resolve_is_refused_at_its_key(fields: dict, loc: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        flow_with({**NAMES, **fields})
    errors = {".".join(map(str, e["loc"])): e["msg"] for e in caught.value.errors()}
    assert loc in errors and message in errors[loc], errors


def test_the_transform_version_and_the_lineage_know_the_derive() -> None:
    flow = flow_with(
        {**NAMES, "full_name": FULL, "shout": {"type": "String", "derive": "{full_name}!", "fill": "always"}}
    )
    other = flow_with(
        {
            **NAMES,
            "full_name": {**FULL, "derive": "{last_name} {first_name}"},
            "shout": flow.map["shout"].model_dump(),
        }
    )
    always = flow_with(
        {**NAMES, "full_name": {**FULL, "fill": "always"}, "shout": flow.map["shout"].model_dump()}
    )
    versions = {stage_version(f, "transform") for f in (flow, other, always)}
    assert len(versions) == 3
    assert source_columns_of(flow, "full_name") == ["FULL_NAME", "FIRST", "LAST"]
    assert source_columns_of(flow, "shout") == ["FULL_NAME", "FIRST", "LAST"]  # always: not its own SHOUT
    deps = load_lineage(flow).deps_by_column["shout"]
    assert sorted(d.column_name for d in deps) == ["FIRST", "FULL_NAME", "LAST"]  # Dagster sorts them
    assert deps[0].asset_key == dg.AssetKey("sample_extract")
