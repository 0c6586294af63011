"""The companies flow end to end: sshd -> extract -> transform -> PostgreSQL -> link,
error files and one e-mail per run, through real Dagster runs."""

from __future__ import annotations

import threading
import time

import dagster as dg
import polars as pl
import pyarrow.parquet as pq
import pytest

from etl_assets.engine import record_blocks
from etl_assets.engine.link import linker
from etl_assets.engine.load import upsert as loader
from etl_assets.engine.transform import stage as transform
from etl_assets_tests.test_flows.conftest import HEADER, FlowEnv, companies_csv, materializations

DAY = "2026-01-15"
FILE = "companies_20260115.csv"

GOOD = [
    "C1;IT00000000001;Holding Rossi S.p.A.;Via Roma, 1;milano;20121;it;Info@Rossi.it;+39 02 1234567;;1.234.567,89;120;01/02/1990;14/01/2026 10:00:00",
    # parent C1 arrives in the same file, after its child would be loaded
    'C2;IT00000000002;"Rossi; ""Caffè"" S.r.l.";"Via Garibaldi, 2\r\nScala B";Forlì;47121;IT;bar@rossi.it;;IT00000000001;12.500,00;8;15/06/2001;14/01/2026 11:00:00',
    "C3;IT00000000003;Bianchi S.n.c.;;Cantù;22063;IT;;;IT00000000002;0,50;;;14/01/2026 09:00:00",
]
BAD = [
    "C4;IT00000000004;Data Errata S.r.l.;;;;IT;;;;;;31/02/2019;14/01/2026 09:00:00",  # bad date
    "C5;IT00000000005;Posta S.r.l.;;;;IT;posta.at.it;;;;;;14/01/2026 09:00:00",  # bad e-mail
    "C6;;Senza Partita IVA;;;;IT;;;;;;;14/01/2026 09:00:00",  # missing VAT
    "C7;IT00000000007;Figlia Orfana S.r.l.;;;;IT;;;IT99999999999;;;;14/01/2026 09:00:00",  # unknown parent
    "C1;IT00000000001;Holding Rossi (vecchia);;;;IT;;;;;;;01/01/2020 08:00:00",  # older duplicate key
]
EXACT_COPY = GOOD[2]  # collapses into the first


@pytest.fixture(params=["one batch", "a batch a row or two"])
def batches(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The same partition read, settled, loaded and linked in batches of one or two rows
    (a file of millions of rows goes through these same paths, batch by batch)."""
    if request.param != "one batch":
        monkeypatch.setattr(record_blocks, "BLOCK_BYTES", 64)  # a block holds one or two records
        monkeypatch.setattr(transform, "DUPLICATE_BUCKET_ROWS", 2)
        monkeypatch.setattr(loader, "LOAD_BATCH_ROWS", 2)
        monkeypatch.setattr(linker, "LINK_BATCH_ROWS", 3)
    return request.param


def test_one_partition_end_to_end(flow_env: FlowEnv, batches: str) -> None:
    flow_env.put(FILE, companies_csv(*GOOD, *BAD, EXACT_COPY, bom=True))
    result = flow_env.run(DAY)
    assert result.success  # 4 transform rejections <= warn_limit 10: warn, not fail
    staged = flow_env.error_file(DAY, "transform").parents[3] / "data" / "companies" / DAY
    row_groups = {n: pq.ParquetFile(staged / f"{n}.parquet").num_row_groups for n in ("extract", "load")}
    assert row_groups == ({"extract": 1, "load": 1} if batches == "one batch" else {"extract": 9, "load": 2})

    rows = flow_env.query(
        "select a.external_id, a.vat_code, a.name, a.city, a.country, a.email, a.revenue::text, "
        "a.employees, a.founded::text, p.external_id from accounts a "
        "left join accounts p on p.id = a.parent_account_id order by a.external_id"
    )
    assert rows == [
        (
            "C1",
            "IT00000000001",
            "Holding Rossi S.p.A.",
            "Milano",
            "IT",
            "info@rossi.it",
            "1234567.89",
            120,
            "1990-02-01",
            None,
        ),
        (
            "C2",
            "IT00000000002",
            'Rossi; "Caffè" S.r.l.',
            "Forlì",
            "IT",
            "bar@rossi.it",
            "12500.00",
            8,
            "2001-06-15",
            "C1",
        ),
        ("C3", "IT00000000003", "Bianchi S.n.c.", "Cantù", "IT", None, "0.50", None, None, "C2"),
        ("C7", "IT00000000007", "Figlia Orfana S.r.l.", None, "IT", None, None, None, None, None),
    ]
    assert flow_env.query("select address from accounts where external_id = 'C2'") == [
        ("Via Garibaldi, 2\r\nScala B",)  # as received: the CRLF in the quoted field
    ]

    transform_errors = pl.read_csv(flow_env.error_file(DAY, "transform"), separator=";", infer_schema=False)
    assert transform_errors.columns == [
        *HEADER.split(";"),
        "error_step",
        "error_field",
        "error_reason",
        "source_file",
        "source_line",
    ]
    assert transform_errors.select("COMPANY_ID", "error_field", "error_reason", "source_line").rows() == [
        ("C4", "FOUNDED", "not a date in format %d/%m/%Y: '31/02/2019'", "6"),
        ("C5", "EMAIL", "not an e-mail address: 'posta.at.it'", "7"),
        ("C6", "VAT_CODE", "required value missing", "8"),
        ("C1", "COMPANY_ID", "key C1 given twice: line 2 wins with a later UPDATED_AT", "10"),
    ]
    assert set(transform_errors["source_file"]) == {FILE}
    assert transform_errors.row(0, named=True)["FOUNDED"] == "31/02/2019"  # as received

    link_errors = flow_env.error_file(DAY, "link").read_text(encoding="utf-8").splitlines()
    assert link_errors[1].startswith("C7;IT00000000007;Figlia Orfana S.r.l.;")
    assert link_errors[1].endswith(
        ";link;PARENT_VAT;unknown PARENT_VAT IT99999999999: no accounts.vat_code matches;companies_20260115.csv;9"
    )
    assert len(link_errors) == 2
    assert not flow_env.error_file(DAY, "load").exists()

    messages = flow_env.smtp.wait_for(1)
    time.sleep(0.3)
    assert len(flow_env.smtp.messages()) == 1  # one e-mail per run
    message = messages[0]
    assert message["Subject"] == f"[etl_assets][test] companies {DAY}: 5 rows rejected"
    attachments = {part.get_filename(): part.get_content() for part in message.iter_attachments()}
    assert set(attachments) == {f"companies_{DAY}_transform.csv", f"companies_{DAY}_link.csv"}
    as_bytes = {k: v if isinstance(v, bytes) else v.encode() for k, v in attachments.items()}
    assert as_bytes[f"companies_{DAY}_transform.csv"] == flow_env.error_file(DAY, "transform").read_bytes()

    def metadata(step: str) -> dict:
        return materializations(result, f"companies_{step}")[0].metadata

    assert metadata("extract")["rows_in"].value == 9
    assert metadata("extract")["sha256"].value
    assert metadata("transform")["rejected"].value == 4
    assert metadata("transform")["collapsed_duplicates"].value == 1
    assert metadata("load")["inserted"].value == 4
    assert metadata("link")["rejected"].value == 1
    assert "Figlia Orfana" in metadata("link")["rejected_preview"].value
    checks = {(c.asset_key.to_user_string(), c.check_name): c for c in result.get_asset_check_evaluations()}
    assert checks[("companies_load", "reconciliation")].passed
    assert not checks[("companies_transform", "rejected_rows")].passed


def test_rerun_changes_nothing_and_a_corrected_file_updates(flow_env: FlowEnv) -> None:
    flow_env.put(FILE, companies_csv(*GOOD, BAD[0]))
    first = flow_env.run(DAY)
    assert first.success
    snapshot = "select * from accounts order by id"
    before = flow_env.query(snapshot)
    steps = [f"companies_{step}" for step in ("extract", "transform", "load", "link")]

    def data_versions(result: dg.ExecuteInProcessResult) -> list[str]:
        return [materializations(result, step)[0].tags["dagster/data_version"] for step in steps]

    # the UI marks none of the steps stale: each made by the current code from its parent's data
    assert [flow_env.stale_status(step, DAY) for step in steps] == ["FRESH"] * 4

    again = flow_env.run(DAY)
    assert again.success
    assert data_versions(again) == data_versions(first)  # the same file, the same data
    assert [flow_env.stale_status(step, DAY) for step in steps] == ["FRESH"] * 4
    assert flow_env.query(snapshot) == before  # nothing doubles, nothing rewritten
    load = materializations(again, "companies_load")[0].metadata
    assert (load["inserted"].value, load["updated"].value, load["unchanged"].value) == (0, 0, 3)

    corrected = BAD[0].replace("31/02/2019", "28/02/2019")
    renamed = GOOD[2].replace("Bianchi S.n.c.", "Bianchi & Figli S.n.c.")
    flow_env.put(FILE, companies_csv(GOOD[0], GOOD[1], renamed, corrected))
    fixed = flow_env.run(DAY)
    assert fixed.success
    assert [a != b for a, b in zip(data_versions(fixed), data_versions(first), strict=True)] == [True] * 4
    assert [flow_env.stale_status(step, DAY) for step in steps] == ["FRESH"] * 4
    load = materializations(fixed, "companies_load")[0].metadata
    assert (load["inserted"].value, load["updated"].value, load["unchanged"].value) == (1, 1, 2)
    assert flow_env.query("select name from accounts where external_id = 'C3'") == [
        ("Bianchi & Figli S.n.c.",)
    ]
    assert flow_env.query("select founded::text from accounts where external_id = 'C4'") == [("2019-02-28",)]
    assert not flow_env.error_file(DAY, "transform").exists()  # nothing rejected any more
    assert flow_env.query("select count(*) from accounts") == [(4,)]


def test_more_rejections_than_warn_limit_block_the_load(flow_env: FlowEnv) -> None:
    bad_dates = [
        f"D{i};IT1000000000{i};Ditta {i};;;;IT;;;;;;32/01/2020;14/01/2026 09:00:00" for i in range(11)
    ]
    flow_env.put(FILE, companies_csv(GOOD[0], *bad_dates))
    result = flow_env.run(DAY)
    assert not result.success
    assert flow_env.query("select count(*) from pg_tables where tablename = 'accounts'") == [(0,)]
    message = flow_env.smtp.wait_for(1)[0]
    assert message["Subject"].startswith(
        f"[etl_assets][test] companies {DAY} failed: transform check rejected_rows"
    )
    assert [p.get_filename() for p in message.iter_attachments()] == [f"companies_{DAY}_transform.csv"]


@pytest.mark.parametrize(
    ("data", "fault"),
    [
        (None, f"{FILE}: missing: no such file in"),
        (b"", f"{FILE}: empty file"),
        (
            HEADER.encode() + b"\nC1;IT00000000001;Perm\xf9;;;;;;;;;;;\n",
            f"{FILE}: undecodable bytes at line 2",
        ),
        (b"COMPANY_ID;NAME\nC1;x\n", f"{FILE}: missing required column VAT_CODE"),
    ],
    ids=["missing", "empty", "undecodable", "missing-column"],
)
def test_file_level_faults_fail_extract_and_load_nothing(
    flow_env: FlowEnv, data: bytes | None, fault: str
) -> None:
    if data is not None:
        flow_env.put(FILE, data)
    result = flow_env.run(DAY)
    assert not result.success
    failure = result.failure_data_for_node("companies_steps")
    assert failure is not None and fault in failure.error.message
    assert flow_env.query("select count(*) from pg_tables where tablename = 'accounts'") == [(0,)]
    message = flow_env.smtp.wait_for(1)[0]
    assert message["Subject"].startswith(f"[etl_assets][test] companies {DAY} failed: {fault}")
    if data:
        kept = flow_env.home / "data" / "companies" / DAY / "raw" / FILE
        assert kept.read_bytes() == data  # the raw file is kept as received


def test_a_file_still_growing_is_refused(flow_env: FlowEnv) -> None:
    flow_env.put(FILE, companies_csv(GOOD[0]))
    remote = flow_env.sshd.root / flow_env.folder.lstrip("/") / FILE

    done = threading.Event()

    def slow_upload() -> None:
        """The client's upload goes on: a row every 0.2 s until the run is over."""
        while not done.wait(0.2):
            with open(remote, "ab") as handle:
                handle.write(GOOD[1].encode() + b"\r\n")

    writer = threading.Thread(target=slow_upload)
    writer.start()
    result = flow_env.run(DAY)
    done.set()
    writer.join()
    assert not result.success
    assert "still being uploaded" in result.failure_data_for_node("companies_steps").error.message


def test_an_email_smtp_refused_is_kept_and_sent_once_by_a_later_run(flow_env: FlowEnv) -> None:
    flow_env.put(FILE, companies_csv(GOOD[0], BAD[0]))
    flow_env.smtp.stop()
    try:
        assert flow_env.run(DAY).success  # a mail fault does not fail the load
    finally:
        flow_env.smtp.start()
    kept = list((flow_env.home / "logs" / "unsent").glob("*.eml"))
    assert len(kept) == 1
    assert b"Subject: [etl_assets][test] companies 2026-01-15: 1 rows rejected" in kept[0].read_bytes()

    flow_env.put(
        "companies_20260116.csv", companies_csv(GOOD[1].replace("IT00000000001", ""))
    )  # a clean file
    assert flow_env.run("2026-01-16").success
    (message,) = flow_env.smtp.wait_for(1)
    assert message["Subject"] == f"[etl_assets][test] companies {DAY}: 1 rows rejected"
    assert [p.get_filename() for p in message.iter_attachments()] == [f"companies_{DAY}_transform.csv"]
    assert list((flow_env.home / "logs" / "unsent").glob("*.eml")) == []
    assert flow_env.run("2026-01-16").success  # and it is not sent again
    time.sleep(0.5)
    assert len(flow_env.smtp.messages()) == 1


def test_a_nul_byte_in_a_field_rejects_its_row_and_loads_the_rest(flow_env: FlowEnv) -> None:
    """PostgreSQL stores no NUL in text (its COPY refuses the whole batch): the row is caught in
    transform with its field and reason, the good rows load, and the error file keeps the
    value as received."""
    nul = "C9;IT00000000009;Nul\x00Byte S.r.l.;;;;IT;;;;;;;14/01/2026 09:00:00"
    orphan_free = GOOD[2].replace(";IT00000000002;", ";;")  # C3 without its parent C2
    flow_env.put(FILE, companies_csv(GOOD[0], nul, orphan_free))
    result = flow_env.run(DAY)
    assert result.success
    assert flow_env.query("select external_id from accounts order by 1") == [("C1",), ("C3",)]
    transform = materializations(result, "companies_transform")[0].metadata
    assert transform["rejected"].value == 1
    error_file = flow_env.error_file(DAY, "transform").read_bytes()
    (row,) = error_file.splitlines()[1:]
    assert row.startswith(b"C9;IT00000000009;Nul\x00Byte S.r.l.;")  # as received
    assert b";transform;NAME;holds a NUL byte: no database text stores it;" in row


def test_a_crlf_inside_a_quoted_field_is_kept_as_received_in_the_error_file(flow_env: FlowEnv) -> None:
    bad = 'C8;IT00000000008;"Once upon \r\na time";;;;IT;;;;;;31/02/2019;14/01/2026 09:00:00'
    flow_env.put(FILE, companies_csv(GOOD[0], bad, GOOD[2].replace(";IT00000000002;", ";;")))
    assert flow_env.run(DAY).success
    error_file = flow_env.error_file(DAY, "transform").read_bytes()
    assert b'"Once upon \r\na time"' in error_file  # the value's bytes, CRLF and all
    rows = pl.read_csv(flow_env.error_file(DAY, "transform"), separator=";", infer_schema=False)
    assert rows["NAME"].to_list() == ["Once upon \r\na time"]
    assert rows["source_line"].to_list() == ["3"]  # the header is line 1, C1 line 2
    assert flow_env.query("select external_id from accounts order by 1") == [("C1",), ("C3",)]
