"""File names from outside are data: a bad one is refused, shown escaped, never used."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from etl_assets.resources.files import LocalFilesResource
from etl_assets.resources.names import name_fault, shown


@pytest.mark.parametrize(
    ("raw", "fault"),
    [
        (b"companies_20260115.csv", None),
        ("società_20260115.csv".encode(), None),
        (b"companies_\xff\xfe.csv", "not valid UTF-8"),
        (b"companies_\x00.csv", "holds a NUL"),
        (b"companies_\x1b[31m.csv", "holds a control character"),
        (b"companies\\20260115.csv", "holds a path separator"),
        (b"..", "holds '..'"),
        (b"a..b.csv", "holds '..'"),
    ],
)
def test_which_names_are_refused(raw: bytes, fault: str | None) -> None:
    assert name_fault(raw) == fault


def test_a_refused_name_is_shown_escaped() -> None:
    assert shown(b"companies_\xff\xfe.csv") == "'companies_\\xff\\xfe.csv'"
    assert shown(b"Ctl\x07Bell") == "'Ctl\\x07Bell'"


def test_the_import_folder_skips_a_bad_name_and_lists_the_rest(tmp_path: Path) -> None:
    (tmp_path / "companies_20260115.csv").write_bytes(b"x")
    with open(os.path.join(os.fsencode(tmp_path), b"companies_\xff\xfe.csv"), "wb") as handle:
        handle.write(b"y")
    listing = LocalFilesResource(root=str(tmp_path)).list_files(str(tmp_path))
    assert [f.name for f in listing] == ["companies_20260115.csv"]
    assert listing.refused == [f"'companies_\\xff\\xfe.csv' in {tmp_path}: not valid UTF-8, skipped"]
