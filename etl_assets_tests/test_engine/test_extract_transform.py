"""extract's parsing and file faults, transform's duplicates: on bytes as an ERP writes them."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import polars as pl
import pytest

from etl_assets.engine.columns import LINE
from etl_assets.engine.extract import SourceFileError, parse_stream
from etl_assets.engine.record_blocks import BLOCK_BYTES, with_lines
from etl_assets.engine.transform import stage as transform
from etl_assets.engine.transform.stage import Transformed, transform_stage
from etl_assets.model.flow import FlowModel

FLOW = FlowModel.model_validate(
    (
        __import__("yaml").safe_load(
            (Path(__file__).parents[2] / "etl_assets/defs/companies/defs.yaml").read_text()
        )
    )["attributes"]
)
HEADER = "COMPANY_ID;VAT_CODE;NAME;UPDATED_AT"


def parse(data: bytes | str, encoding: str = "utf8", block_size: int = BLOCK_BYTES) -> pl.DataFrame:
    """What extract writes to ``extract.parquet``, block by block, as one frame."""
    flow = FLOW.model_copy(update={"source": FLOW.source.model_copy(update={"encoding": encoding})})
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return pl.concat(list(parse_stream(io.BytesIO(raw), flow, "f.csv", block_size)))


def transformed(tmp_path: Path, extracted: pl.DataFrame) -> tuple[Transformed, pl.DataFrame]:
    extracted.write_parquet(tmp_path / "extract.parquet")
    result = transform_stage(FLOW, tmp_path / "extract.parquet", tmp_path)
    return result, pl.read_parquet(tmp_path / "transform.parquet")


def test_quoted_delimiters_quotes_and_line_breaks_keep_their_source_line() -> None:
    text = (
        HEADER + "\r\n"
        'C1;IT01234567890;"Rossi; ""Caffè"" S.p.A.";01/01/2025 10:00:00\r\n'
        'C2;IT01234567891;"Bianchi\r\nSecond line\r\nThird";01/01/2025 10:00:00\r\n'
        "C3;IT01234567892;Verdi;01/01/2025 10:00:00\r\n"
    )
    whole = parse(text)
    # values as received: the CRLFs inside the quoted field stay CRLFs
    assert whole["NAME"].to_list() == ['Rossi; "Caffè" S.p.A.', "Bianchi\r\nSecond line\r\nThird", "Verdi"]
    assert whole[LINE].to_list() == [2, 3, 6]
    # blocks of any size cut between records, never inside a quoted field
    for block_size in (1, 7, 40, 64, 100):
        assert parse(text, block_size=block_size).equals(whole), block_size


def test_a_large_file_parses_the_same_in_blocks() -> None:
    rows = [
        f'C{n};IT{n:011d};"Ditta {n}\r\nvia {n}; ""{n}""";01/01/2025 10:00:00'
        if n % 3 == 0
        else f"C{n};IT{n:011d};D{n};"
        for n in range(3000)
    ]
    text = HEADER + "\r\n" + "\r\n".join(rows) + "\r\n"
    whole = parse(text)
    assert whole.height == 3000
    assert whole[LINE][-1] == 2 + 3000 + 1000 - 1  # every third record spans two lines
    assert parse(text, block_size=4096).equals(whole)


@pytest.mark.parametrize(
    ("block", "lines"),
    [
        (b"1;a\n2;b\n3;c\n", [5, 6, 7]),  # one line a record: counted from the block, no column scanned
        (b"1;a\n2;b\n3;c", [5, 6, 7]),  # the file's last record without its line break
        (b"1;a\n\n3;c\n", [5, 6, 7]),  # a blank line is a row of nulls: still one line a row
        (b'1;"a\r\nb"\n2;b\n3;"c\n\nd"\n', [5, 7, 8]),  # line breaks quoted in values
        (b'1;"a\nb"', [5]),
        (b'"1";"a ""x""\r\ny"\r\n"";""\r\n3;"\n"\n', [5, 7, 8]),  # escaped quotes, empty quoted
    ],
)
def test_line_numbers_from_the_block_equal_those_counted_in_the_values(
    block: bytes, lines: list[int]
) -> None:
    frame = pl.read_csv(b"K;V\n" + block, separator=";", infer_schema=False, has_header=True)
    from_block = with_lines(frame, "f.csv", 5, block)
    assert from_block[LINE].to_list() == lines
    assert from_block.equals(with_lines(frame, "f.csv", 5))  # the values counted: the same lines


@pytest.mark.parametrize(
    ("data", "encoding", "name"),
    [
        (b"\xef\xbb\xbf" + (HEADER + "\nC1;IT1;Perù;\n").encode(), "utf8", "Perù"),
        ((HEADER + "\nC1;IT1;Perù;\n").encode(), "utf8", "Perù"),
        ((HEADER + "\nC1;IT1;Perù;\n").encode("cp1252"), "cp1252", "Perù"),
    ],
)
def test_utf8_with_or_without_bom_and_cp1252(data: bytes, encoding: str, name: str) -> None:
    frame = parse(data, encoding)
    assert frame.columns[0] == "COMPANY_ID"
    assert frame["NAME"].to_list() == [name]


def test_undecodable_bytes_name_the_file_and_line() -> None:
    data = (HEADER + "\nC1;IT1;ok;\nC2;IT2;").encode() + "Perù".encode("cp1252") + b";\n"
    with pytest.raises(SourceFileError, match=r"f\.csv: undecodable bytes at line 3 .*is it cp1252"):
        parse(data)


def test_empty_file_fails() -> None:
    with pytest.raises(SourceFileError, match="f.csv: empty file"):
        parse(b"  \r\n")


def test_missing_required_column_fails_naming_it() -> None:
    with pytest.raises(SourceFileError, match="missing required column VAT_CODE"):
        parse("COMPANY_ID;NAME\nC1;x\n")


@pytest.mark.parametrize("bucket_rows", [2_000_000, 1])
def test_exact_duplicates_collapse_and_the_latest_update_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bucket_rows: int
) -> None:
    # one bucket, or a bucket a row (the way a file of many millions of rows is settled)
    monkeypatch.setattr(transform, "DUPLICATE_BUCKET_ROWS", bucket_rows)
    text = (
        "COMPANY_ID;VAT_CODE;NAME;UPDATED_AT\n"
        "C1;IT01234567890;First;01/01/2025 10:00:00\n"
        "C1;IT01234567890;First;01/01/2025 10:00:00\n"  # exact copy of line 2
        "C2;IT01234567891;Newer;02/01/2025 10:00:00\n"
        "C2;IT01234567891;Older;01/01/2025 10:00:00\n"  # same key, older: rejected
    )
    result, good = transformed(tmp_path, parse(text))
    assert good.select(LINE, "external_id", "name").rows() == [(2, "C1", "First"), (4, "C2", "Newer")]
    assert result.collapsed.rows() == [(3, 2)]
    assert result.rejected_rows == 1
    assert pl.read_parquet(tmp_path / "transform_rejected.parquet").rows() == [
        (5, "COMPANY_ID", "key C2 given twice: line 4 wins with a later UPDATED_AT")
    ]
    assert result.rows_in == 4


def test_extra_columns_are_kept_as_received() -> None:
    frame = parse(HEADER + ";NOTE\nC1;IT01234567890;x;;hello\n")
    assert frame["NOTE"].to_list() == ["hello"]
    assert isinstance(frame, pl.DataFrame)


def test_cp1252_in_blocks_and_an_undecodable_byte_in_a_later_block_names_its_line() -> None:
    rows = "".join(f"C{n};IT{n:011d};Perù {n};\r\n" for n in range(200))
    frame = parse((HEADER + "\r\n" + rows).encode("cp1252"), "cp1252", block_size=256)
    assert frame.height == 200
    assert frame["NAME"][-1] == "Perù 199"
    bad = (HEADER + "\n" + rows).encode("utf-8") + "C9;IT9;Città;\n".encode("cp1252")
    with pytest.raises(SourceFileError, match=r"undecodable bytes at line 202 "):
        parse(bad, block_size=256)


def test_an_unclosed_quote_names_its_line() -> None:
    rows = "".join(f"C{n};IT{n:011d};D{n};\n" for n in range(50))
    text = HEADER + "\n" + rows + 'C50;IT50;"never closed;\nC51;IT51;x;\n'
    with pytest.raises(SourceFileError, match=r"f\.csv: malformed CSV at line 52: "):
        parse(text, block_size=128)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("C;IT1;x;;extra;fields;", "more fields"),
        ('C;IT1;half"quoted;', "could not parse"),
        ('C;"x"y;z;', "parse"),
    ],
)
def test_a_malformed_record_inside_a_large_block_names_its_own_line(bad: str, reason: str) -> None:
    # 3,000 records in one block, one of them malformed: Polars names no line, the fault does
    rows = [f'C{n};IT{n:011d};"Ditta\r\n{n}";\r\n' for n in range(3000)]  # two lines a record
    text = HEADER + "\r\n" + "".join(rows[:1234]) + bad + "\r\n" + "".join(rows[1234:])
    with pytest.raises(SourceFileError, match=rf"malformed CSV at line {2 + 2 * 1234}: .*{reason}"):
        parse(text)


def test_a_header_and_no_record_extracts_no_row_with_its_columns(tmp_path: Path) -> None:
    from datetime import datetime

    from etl_assets.engine.extract import extract_partition
    from etl_assets.resources import FoldersResource
    from etl_assets.resources.files import LocalFilesResource

    flow = FLOW.model_copy(update={"source": FLOW.source.model_copy(update={"settle_seconds": 0.0})})
    (tmp_path / "import").mkdir()
    (tmp_path / "import" / "companies_20260115.csv").write_bytes((HEADER + "\r\n").encode())
    files, folders = LocalFilesResource(root=str(tmp_path / "import")), FoldersResource(home=str(tmp_path))
    result = extract_partition(flow, "2026-01-15", datetime(2026, 1, 15), files, folders)
    assert (result.rows, result.columns) == (0, HEADER.split(";"))
    staged = pl.read_parquet(tmp_path / "data" / "companies" / "2026-01-15" / "extract.parquet")
    assert staged.height == 0
    assert staged.columns == [*HEADER.split(";"), LINE, "_source_file"]


def staged_in_groups(path: Path, frame: pl.DataFrame, rows: int) -> None:
    """``frame`` written as a staged file of ``rows``-row groups (as extract writes blocks)."""
    from etl_assets.engine.staging import StagedWriter

    with StagedWriter(path) as writer:
        for start in range(0, frame.height, rows):
            writer.write(frame.slice(start, rows))


def test_rejected_rows_are_staged_in_line_order_across_batches(tmp_path: Path) -> None:
    text = (
        f"{HEADER}\n"
        "C0;;No VAT;01/01/2025 10:00:00\n"  # line 2: map
        "C1;IT01234567890;Older;01/01/2025 10:00:00\n"  # line 3: loses to line 6
        "C2;IT01234567891;Fine;01/01/2025 10:00:00\n"
        "C3;IT01234567892;Fine;99/99/2025 10:00:00\n"  # line 5: map
        "C1;IT01234567890;Newer;02/01/2025 10:00:00\n"
        "C4;bad;Fine;01/01/2025 10:00:00\n"  # line 7: map
    )
    staged_in_groups(tmp_path / "extract.parquet", parse(text), rows=1)  # a batch a row
    result = transform_stage(FLOW, tmp_path / "extract.parquet", tmp_path)
    rejected = pl.read_parquet(tmp_path / "transform_rejected.parquet")
    assert rejected.get_column(LINE).to_list() == [2, 3, 5, 7]
    assert rejected.get_column("_error_field").to_list() == [
        "VAT_CODE",
        "COMPANY_ID",
        "UPDATED_AT",
        "VAT_CODE",
    ]
    assert result.rejected_rows == 4
    assert not (tmp_path / "transform_failed.parquet").exists()


def test_the_staged_catcher_writes_the_same_file_a_batch_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from etl_assets.engine import catcher

    rows = "".join(f"C{n};{f'IT{n:011d}' if n % 3 else 'x'};Ditta {n};\n" for n in range(60))
    extracted = parse(f"{HEADER}\n{rows}")
    staged_in_groups(tmp_path / "extract.parquet", extracted, rows=7)
    transform_stage(FLOW, tmp_path / "extract.parquet", tmp_path)
    rejected = pl.read_parquet(tmp_path / "transform_rejected.parquet")
    assert rejected.height == 20
    source = lambda lines: catcher.source_rows(tmp_path / "extract.parquet", lines)  # noqa: E731
    whole = catcher.catch("transform", "p", rejected, source, tmp_path / "whole.csv", ";")
    monkeypatch.setattr(catcher, "CATCH_BATCH_ROWS", 3)  # and the staged file's groups of 7
    staged = catcher.catch_staged(
        "transform", "p", tmp_path / "transform_rejected.parquet", source, tmp_path / "staged.csv", ";"
    )
    assert (tmp_path / "staged.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()
    assert (staged.count, whole.count) == (20, 20)
    assert staged.rows.equals(whole.rows.head(catcher.PREVIEW_ROWS))
    assert not list(tmp_path.glob("*.part"))
    # nothing rejected: no error file, an old one removed
    empty = tmp_path / "empty.parquet"
    rejected.head(0).write_parquet(empty)
    none = catcher.catch_staged("transform", "p", empty, source, tmp_path / "staged.csv", ";")
    assert (none.count, none.path) == (0, None)
    assert not (tmp_path / "staged.csv").exists()


def test_a_file_that_fails_to_parse_is_still_kept_checksummed_and_backed_up(tmp_path: Path) -> None:
    # the checksum and the backup are made on a thread while the file is parsed: a parse
    # failure must still wait for them (nothing received is ever lost)
    import hashlib
    from datetime import datetime

    from etl_assets.engine.extract import extract_partition
    from etl_assets.resources import FoldersResource
    from etl_assets.resources.files import LocalFilesResource

    flow = FLOW.model_copy(update={"source": FLOW.source.model_copy(update={"settle_seconds": 0.0})})
    rows = "".join(f"C{n};IT{n:011d};Ditta {n};01/01/2025 10:00:00\n" for n in range(20_000))
    data = (HEADER + "\n" + rows + 'C1;IT1;"never closed;x\n').encode()
    (tmp_path / "import").mkdir()
    source = tmp_path / "import" / "companies_20260115.csv"
    source.write_bytes(data)
    files, folders = LocalFilesResource(root=str(tmp_path / "import")), FoldersResource(home=str(tmp_path))
    with pytest.raises(SourceFileError, match=r"companies_20260115\.csv: malformed CSV at line 20002"):
        extract_partition(flow, "2026-01-15", datetime(2026, 1, 15), files, folders)
    stage = tmp_path / "data" / "companies" / "2026-01-15"
    digest = hashlib.sha256(data).hexdigest()
    assert (stage / "raw" / "companies_20260115.csv").read_bytes() == data
    assert (stage / "raw" / "companies_20260115.csv.sha256").read_text().split()[0] == digest
    backups = list((tmp_path / "backup" / "companies").rglob("companies_20260115.csv"))
    assert [b.read_bytes() == data for b in backups] == [True]
    assert sorted(p.name for p in stage.iterdir()) == ["raw"]  # no extract.parquet, no .part
    assert source.read_bytes() == data
    # the threads that read ahead and kept the file have all stopped
    assert not [t.name for t in threading.enumerate() if t.name.startswith(("prefetch", "keep"))]


@pytest.mark.parametrize("nul_at", [None, 3, 39])  # none; in the first block; in the last
def test_a_nul_byte_anywhere_in_the_file_keeps_the_maps_nul_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nul_at: int | None
) -> None:
    """Extract tags a file without a NUL byte: transform then spares the map the search of every
    value. A NUL in any block leaves the tag off, and its row is rejected for the NUL."""
    from datetime import datetime

    from etl_assets.engine import record_blocks
    from etl_assets.engine.extract import extract_partition
    from etl_assets.engine.staging import NUL_FREE_TAG, staged_tags
    from etl_assets.resources import FoldersResource
    from etl_assets.resources.files import LocalFilesResource

    monkeypatch.setattr(record_blocks, "BLOCK_BYTES", 200)  # blocks of a few records
    flow = FLOW.model_copy(update={"source": FLOW.source.model_copy(update={"settle_seconds": 0.0})})
    names = [f"Ditta\x00{n}" if n == nul_at else f"Ditta {n}" for n in range(40)]
    rows = "".join(f"C{n};IT{n:011d};{name};01/01/2025 10:00:00\n" for n, name in enumerate(names))
    (tmp_path / "import").mkdir()
    (tmp_path / "import" / "companies_20260115.csv").write_bytes(f"{HEADER}\n{rows}".encode())
    files, folders = LocalFilesResource(root=str(tmp_path / "import")), FoldersResource(home=str(tmp_path))
    extract_partition(flow, "2026-01-15", datetime(2026, 1, 15), files, folders)
    stage = tmp_path / "data" / "companies" / "2026-01-15"
    assert (staged_tags(stage / "extract.parquet").get(NUL_FREE_TAG) == "true") is (nul_at is None)
    result = transform_stage(FLOW, stage / "extract.parquet", stage)
    rejected = pl.read_parquet(stage / "transform_rejected.parquet")
    if nul_at is None:
        assert (result.good_rows, rejected.height) == (40, 0)
    else:
        assert (result.good_rows, result.rejected_rows) == (39, 1)
        assert rejected.row(0) == (nul_at + 2, "NAME", "holds a NUL byte: no database text stores it")
