"""Derived columns through real Dagster runs on a real PostgreSQL: ``fill: missing`` keeps the
file's value and derives the rest, ``fill: always`` overwrites it, a derived value that fails
the field's validation is rejected into the error file with a reason naming the derive; a
derive over a field the map lacks, or a cycle, is refused at its declaration's line."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from etl_assets.definitions import build_definitions
from etl_assets.model.declarations import DeclarationError
from etl_assets.settings import load_settings
from etl_assets_tests.test_flows.conftest import HEADER, FlowEnv
from etl_assets_tests.test_flows.test_companies import GOOD
from etl_assets_tests.test_orchestration.test_flow_dirs import client_flow

DAY = "2026-01-15"
LABEL = '    label:        {type: String, derive: "{name} ({city})", max_length: 30}\n'
CODE = '    code:         {type: UppercaseString, derive: "{country}-{external_id}", fill: always}\n'
LONG = "C8;IT00000000008;Una Ragione Sociale Molto Lunga S.r.l.;;roma;;IT;;;;;;;14/01/2026 09:00:00"


def derived_flow(folder: Path, fields: str, source: str = "/outbound/companies") -> Path:
    """The companies sample as client flow ``labelled`` (table ``labelled``), with ``fields``
    (map lines) added to its map."""
    path = client_flow(folder, "labelled")
    text = path.read_text(encoding="utf-8").replace("folder: /outbound/companies", f"folder: {source}")
    marker = "  target:\n"
    path.write_text(text.replace(marker, fields + marker, 1), encoding="utf-8")
    return path


def test_derived_where_missing_kept_where_given_overwritten_always_and_rejected_when_invalid(
    flow_env: FlowEnv,
) -> None:
    derived_flow(flow_env.home / "flows", LABEL + CODE, source=flow_env.folder)
    rows = [f"{GOOD[0]};Rossi HQ;XX", f"{GOOD[1]};;", f"{GOOD[2]};;yy", f"{LONG};;"]
    text = "\r\n".join([f"{HEADER};LABEL;CODE", *rows]) + "\r\n"
    flow_env.put("companies_20260115.csv", text.encode("utf-8"))
    result = flow_env.run(DAY, job="labelled_job")
    assert result.success  # one rejection, within warn_limit

    assert flow_env.query("select external_id, label, code from labelled order by external_id") == [
        ("C1", "Rossi HQ", "IT-C1"),  # the file's label kept; its code overwritten
        ("C2", 'Rossi; "Caffè" S.r.l. (Forlì)', "IT-C2"),  # derived from the typed city
        ("C3", "Bianchi S.n.c. (Cantù)", "IT-C3"),
    ]
    errors = pl.read_csv(
        flow_env.home / "errors" / "labelled" / DAY / "transform.csv", separator=";", infer_schema=False
    )
    assert errors.select("COMPANY_ID", "LABEL", "error_field", "error_reason").rows() == [
        (
            "C8",
            None,
            "LABEL",
            "derived by {name} ({city}): longer than 30: 'Una Ragione Sociale Molto Lunga S.r.l. (Roma)'",
        )
    ]


def test_a_file_without_the_derived_column_is_derived_throughout(flow_env: FlowEnv) -> None:
    derived_flow(flow_env.home / "flows", LABEL.replace("max_length: 30", "required: true"), flow_env.folder)
    text = "\r\n".join([HEADER, GOOD[2]]) + "\r\n"  # no LABEL column, yet label is required
    flow_env.put("companies_20260115.csv", text.encode("utf-8"))
    assert flow_env.run(DAY, job="labelled_job").success
    assert flow_env.query("select label from labelled") == [("Bianchi S.n.c. (Cantù)",)]


@pytest.mark.parametrize(
    ("fields", "key", "message"),
    [
        (
            '    label:        {type: String, derive: "{name} {surname}"}\n',
            "map.label.derive",
            "derive '{name} {surname}' requires surname: no such map field",
        ),
        (
            '    label:        {type: String, derive: "{tag}"}\n'
            '    tag:          {type: String, derive: "{label}!"}\n',
            "map.label.derive",
            "derive cycle: label -> tag -> label",
        ),
    ],
)
def test_a_derive_over_a_missing_field_or_a_cycle_is_refused_at_its_line(
    isolated_env: Path, write_settings, monkeypatch: pytest.MonkeyPatch, fields: str, key: str, message: str
) -> None:
    write_settings("dev: {}\n")
    monkeypatch.setenv("ETL_ENV", "dev")
    path = derived_flow(isolated_env / "flows", fields)
    line = next(n for n, x in enumerate(path.read_text().splitlines(), 1) if x.startswith("    label:"))
    with pytest.raises(DeclarationError) as caught:
        build_definitions(load_settings("dev"))
    assert f"{path}:{line}: {key}: Value error, {message}" in str(caught.value)
