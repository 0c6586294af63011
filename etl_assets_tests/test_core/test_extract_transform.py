"""extract's parsing and file faults, transform's duplicates: on bytes as an ERP writes them."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from etl_assets.core.extract import SourceFileError, decode, parse
from etl_assets.core.flow_model import FlowModel
from etl_assets.core.maps import LINE
from etl_assets.core.transform import transform_partition

FLOW = FlowModel.model_validate(
    (
        __import__("yaml").safe_load(
            (Path(__file__).parents[2] / "etl_assets/defs/companies/defs.yaml").read_text()
        )
    )["attributes"]
)
HEADER = "COMPANY_ID;VAT_CODE;NAME;UPDATED_AT"


def test_quoted_delimiters_quotes_and_line_breaks_keep_their_source_line() -> None:
    text = decode(
        (
            HEADER + "\r\n"
            'C1;IT01234567890;"Rossi; ""Caffè"" S.p.A.";01/01/2025 10:00:00\r\n'
            'C2;IT01234567891;"Bianchi\r\nSecond line\r\nThird";01/01/2025 10:00:00\r\n'
            "C3;IT01234567892;Verdi;01/01/2025 10:00:00\r\n"
        ).encode("utf-8"),
        "utf8",
        "f.csv",
    )
    frame = parse(text, FLOW, "f.csv")
    assert frame["NAME"].to_list() == ['Rossi; "Caffè" S.p.A.', "Bianchi\nSecond line\nThird", "Verdi"]
    assert frame[LINE].to_list() == [2, 3, 6]


@pytest.mark.parametrize(
    ("data", "encoding", "name"),
    [
        (b"\xef\xbb\xbf" + (HEADER + "\nC1;IT1;Perù;\n").encode(), "utf8", "Perù"),
        ((HEADER + "\nC1;IT1;Perù;\n").encode(), "utf8", "Perù"),
        ((HEADER + "\nC1;IT1;Perù;\n").encode("cp1252"), "cp1252", "Perù"),
    ],
)
def test_utf8_with_or_without_bom_and_cp1252(data: bytes, encoding: str, name: str) -> None:
    frame = parse(decode(data, encoding, "f.csv"), FLOW, "f.csv")
    assert frame.columns[0] == "COMPANY_ID"
    assert frame["NAME"].to_list() == [name]


def test_undecodable_bytes_name_the_file_and_line() -> None:
    data = (HEADER + "\nC1;IT1;ok;\nC2;IT2;").encode() + "Perù".encode("cp1252") + b";\n"
    with pytest.raises(SourceFileError, match=r"f\.csv: undecodable bytes at line 3 .*is it cp1252"):
        decode(data, "utf8", "f.csv")


def test_empty_file_fails() -> None:
    with pytest.raises(SourceFileError, match="f.csv: empty file"):
        decode(b"  \r\n", "utf8", "f.csv")


def test_missing_required_column_fails_naming_it() -> None:
    with pytest.raises(SourceFileError, match="missing required column VAT_CODE"):
        parse("COMPANY_ID;NAME\nC1;x\n", FLOW, "f.csv")


def test_exact_duplicates_collapse_and_the_latest_update_wins() -> None:
    text = (
        "COMPANY_ID;VAT_CODE;NAME;UPDATED_AT\n"
        "C1;IT01234567890;First;01/01/2025 10:00:00\n"
        "C1;IT01234567890;First;01/01/2025 10:00:00\n"  # exact copy of line 2
        "C2;IT01234567891;Newer;02/01/2025 10:00:00\n"
        "C2;IT01234567891;Older;01/01/2025 10:00:00\n"  # same key, older: rejected
    )
    result = transform_partition(FLOW, parse(text, FLOW, "f.csv"))
    assert result.good.select(LINE, "external_id", "name").rows() == [(2, "C1", "First"), (4, "C2", "Newer")]
    assert result.collapsed.rows() == [(3, 2)]
    assert result.rejected.rows() == [
        (5, "COMPANY_ID", "key C2 given twice: line 4 wins with a later UPDATED_AT")
    ]
    assert result.rows_in == 4


def test_extra_columns_are_kept_as_received() -> None:
    frame = parse(HEADER + ";NOTE\nC1;IT01234567890;x;;hello\n", FLOW, "f.csv")
    assert frame["NOTE"].to_list() == ["hello"]
    assert isinstance(frame, pl.DataFrame)
