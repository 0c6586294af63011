"""A flow's source: one of a file, a database table or a Python generator."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from etl_assets.model.flow import FlowModel

MAP = {"code": {"type": "String", "required": True}}
TARGET = {"table": "things", "key": "code"}
API = "etl_assets_tests.test_flows.api_source:fetch_people"


def flow(source: dict, **more: object) -> FlowModel:
    return FlowModel.model_validate(
        {"name": "things", "source": source, "map": MAP, "target": TARGET, **more}
    )


def test_each_kind_of_source() -> None:
    assert flow({"file": "t_{start:%Y%m%d}.csv", "folder": "/in"}).source.kind == "file"
    table = flow({"database": {"connector": "crm", "table": "contacts"}}).source
    assert table.kind == "database" and table.database.watermark == "updated_at"
    assert table.database.overlap_seconds == 5
    generated = flow({"python": API, "options": {"base_url": "http://x"}}).source
    assert generated.kind == "python" and generated.options == {"base_url": "http://x"}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"folder": "/in"}, "a source is one of file (with folder), database or python; given: []"),
        (
            {"file": "a.csv", "folder": "/in", "python": API},
            "a source is one of file (with folder), database or python; given: ['file', 'python']",
        ),
        ({"file": "a.csv"}, "a file source needs its folder"),
        ({"python": "fetch"}, "python needs 'module:function'"),
        ({"python": "etl_assets_tests.test_flows.api_source:nothing"}, "nothing is not a function of"),
        ({"python": "shutil:copyfile"}, "source.python (shutil:copyfile) is called as function(context)"),
        ({"database": {"connector": "crm", "table": "contacts"}, "options": {"a": 1}}, "options are"),
        ({"database": {"connector": "crm", "table": "Contacts"}}, "'Contacts' is not an identifier"),
    ],
)
def test_a_source_refused_says_why(source: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        flow(source)


def test_a_table_has_no_file_to_wait_for() -> None:
    with pytest.raises(ValidationError, match="sensor: a database source has no file to wait for"):
        flow({"database": {"connector": "crm", "table": "contacts"}}, sensor={})
