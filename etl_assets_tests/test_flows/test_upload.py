"""``etl-assets upload``: a file checked at the door (name, encoding, required columns, a dry
run of the map) and, accepted, placed on the SFTP server where the companies extract reads it,
and recorded in the ledger (the run that extracts it joins the same data object)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from etl_assets.cli import main
from etl_assets.model.declarations import declared_flows
from etl_assets.orchestration.upload import upload as upload_file
from etl_assets.resources import DatabaseResource
from etl_assets.resources.files import LocalFilesResource
from etl_assets.resources.folders import FoldersResource
from etl_assets_tests.test_flows.conftest import HEADER, FlowEnv, companies_csv

DAY = "2026-01-15"
NAME = "companies_20260115.csv"
GOOD = [
    "C1;IT00000000001;Holding Rossi S.p.A.;;Milano;;IT;;;;;;;14/01/2026 10:00:00",
    "C2;IT00000000002;Rossi Caffè S.r.l.;;Forlì;;IT;;;IT00000000001;;;;14/01/2026 11:00:00",
]
BAD_DATE = "C3;IT00000000003;Data Errata S.r.l.;;;;IT;;;;;;31/02/2019;14/01/2026 09:00:00"
BAD_MAIL = "C4;IT00000000004;Posta S.r.l.;;;;IT;posta.at.it;;;;;;14/01/2026 09:00:00"


def upload(
    flow_env: FlowEnv, capsys: pytest.CaptureFixture[str], file: Path, *options: str
) -> tuple[int, str, str]:
    """``etl-assets upload companies FILE ...``: exit status, stdout, stderr."""
    with flow_env.defs_state():
        status = main(["upload", "companies", str(file), *options])
    out = capsys.readouterr()
    return status, out.out, out.err


def remote(flow_env: FlowEnv) -> dict[str, bytes]:
    """The files in the flow's SFTP folder, as the server holds them."""
    folder = flow_env.sshd.root / flow_env.folder.lstrip("/")
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".keep"}


def test_a_good_file_is_placed_and_the_next_run_loads_it(
    flow_env: FlowEnv, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = companies_csv(*GOOD, BAD_DATE)
    (tmp_path / NAME).write_bytes(data)
    status, out, err = upload(flow_env, capsys, tmp_path / NAME)
    assert status == 0, err
    assert f"{NAME}: companies partition {DAY}, 3 rows" in out
    assert f"would reject 1 rows: {NAME}:4: FOUNDED:" in out
    assert remote(flow_env) == {NAME: data}  # placed whole, under its name, nothing else left

    # in the ledger before its run: the object, and an 'upload' row (the row the map would reject)
    objects = "select id, checksum, name, size, rows, kind, raw_path from etl_data_objects order by id"
    [(object_id, checksum, name, size, rows, kind, placed_at)] = flow_env.query(objects)
    assert (name, size, rows, kind) == (NAME, len(data), 3, "delivery")
    assert placed_at.endswith(f"{flow_env.folder}/{NAME}")
    assert f"ledger: data object {object_id} (etl-assets ledger show companies {DAY})" in out
    stages = "select stage, run_id, object_id, rows_in, rows_out, rows_rejected, status from etl_data_object_stages"
    [(stage, run_id, *counts)] = flow_env.query(stages + " order by started_at")
    assert (stage, run_id.startswith("upload:"), counts) == (
        "upload",
        True,
        [object_id, 3, 2, 1, "succeeded"],
    )
    assert main(["ledger", "show", "companies", DAY]) == 0
    shown = capsys.readouterr().out
    assert f"object {object_id}  partition {DAY}  {NAME}" in shown and run_id in shown

    # its run extracts the same bytes: the same object, kept where extract keeps it; the rows its
    result = flow_env.run(DAY)
    assert result.success
    assert flow_env.query("select external_id from accounts order by 1") == [("C1",), ("C2",)]
    [(same_id, same_checksum, *_, kept)] = flow_env.query(objects)
    assert (same_id, same_checksum) == (object_id, checksum)
    assert Path(kept).read_bytes() == data
    ran = flow_env.query(stages + f" where run_id = '{result.run_id}' order by started_at")
    assert [(r[0], r[2]) for r in ran] == [(s, object_id) for s in ("extract", "transform", "load", "link")]
    assert flow_env.query("select distinct etl_object_id from accounts") == [(object_id,)]

    # a second delivery of the day waits for --replace; the first is backed up before it goes
    corrected = companies_csv(*GOOD, BAD_DATE.replace("31/02", "28/02"))
    (tmp_path / NAME).write_bytes(corrected)
    status, out, err = upload(flow_env, capsys, tmp_path / NAME)
    assert status == 1 and "already waiting at" in err and "--replace" in err
    assert remote(flow_env) == {NAME: data}
    status, out, err = upload(flow_env, capsys, tmp_path / NAME, "--replace")
    assert status == 0, err
    assert remote(flow_env) == {NAME: corrected}
    backups = list((flow_env.home / "backup" / "companies" / "2026" / "01").iterdir())
    assert data in [b.read_bytes() for b in backups] and "backed up at" in out


@pytest.mark.parametrize(
    ("name", "data", "options", "reason"),
    [
        ("companies-2026-01-15.csv", companies_csv(*GOOD), (), "not a companies file name: expected"),
        (NAME, companies_csv(*GOOD), ("--partition", "2026-01-16"), "reads companies_20260116.csv"),
        ("companies_20990115.csv", companies_csv(*GOOD), (), "partition 2099-01-15 is outside"),
        (
            NAME,
            (HEADER + "\r\n" + GOOD[1] + "\r\n").encode("cp1252"),
            (),
            "undecodable bytes at line 2",
        ),
        (
            NAME,
            b"COMPANY_ID;VAT_CODE;CITY\r\nC1;IT00000000001;Milano\r\n",
            (),
            "missing required column NAME",
        ),
        (NAME, companies_csv(*[BAD_MAIL.replace("C4", f"E{i}") for i in range(11)]), (), "above"),
    ],
    ids=["name", "partition", "outside", "encoding", "column", "too-many-rejected"],
)
def test_a_bad_file_is_refused_with_the_reason_and_nothing_is_placed(
    flow_env: FlowEnv,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    name: str,
    data: bytes,
    options: tuple[str, ...],
    reason: str,
) -> None:
    (tmp_path / name).write_bytes(data)
    status, _, err = upload(flow_env, capsys, tmp_path / name, *options)
    assert status == 1
    refused = [line for line in err.splitlines() if line.startswith("etl-assets: refused: ")]
    assert refused and any(reason in line and name in line for line in refused), err
    assert remote(flow_env) == {}


def test_a_dry_run_counts_rejections_by_field_and_places_nothing(
    flow_env: FlowEnv, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / NAME).write_bytes(companies_csv(*GOOD, BAD_DATE, BAD_MAIL, BAD_MAIL.replace("C4", "C5")))
    status, out, err = upload(flow_env, capsys, tmp_path / NAME, "--dry-run")
    assert status == 0, err
    assert f"would reject 1 rows: {NAME}:4: FOUNDED:" in out
    assert f"would reject 2 rows: {NAME}:5: EMAIL:" in out
    assert "dry run: accepted, nothing placed" in out
    assert remote(flow_env) == {}
    assert main(["upload", "nosuchflow", str(tmp_path / NAME)]) == 2


def test_in_dev_the_file_lands_whole_in_the_import_folder(tmp_path: Path) -> None:
    """No SFTP in dev: the extract reads ETL_HOME/import, and the upload goes there."""
    (flow,) = [f.flow for f in declared_flows([]) if f.flow.name == "companies"]
    home = tmp_path / "etl_home"
    files = LocalFilesResource(root=str(home / "import"))
    data = companies_csv(*GOOD)
    (tmp_path / NAME).write_bytes(data)
    done = upload_file(flow, tmp_path / NAME, None, files, FoldersResource(home=str(home)), "Europe/Rome")
    assert done.check.accepted and done.placed is not None
    assert done.placed.location == str(home / "import" / NAME)
    assert {p.name: p.read_bytes() for p in (home / "import").iterdir()} == {NAME: data}


def test_a_target_database_down_places_the_file_and_says_it_is_not_in_the_ledger(tmp_path: Path) -> None:
    """The ledger is best effort: the file is placed, the line says why it is not recorded."""
    (flow,) = [f.flow for f in declared_flows([]) if f.flow.name == "companies"]
    home = tmp_path / "etl_home"
    files, folders = LocalFilesResource(root=str(home / "import")), FoldersResource(home=str(home))
    (tmp_path / NAME).write_bytes(companies_csv(*GOOD))
    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    down = DatabaseResource(driver="postgresql", port=port, connect_timeout=2)
    done = upload_file(flow, tmp_path / NAME, None, files, folders, "Europe/Rome", database=down)
    assert done.placed is not None and (home / "import" / NAME).is_file()
    assert done.recorded is not None and done.recorded.object_id is None
    warning = done.recorded.warning or ""
    assert "placed, but not in the ledger: the target database refused it" in warning
    assert f"the run of companies {DAY} records the delivery when it extracts it" in warning
    assert str(port) in warning

    # a database that answers (SQLite, as in dev): recorded
    sqlite = DatabaseResource(sqlite_file=str(tmp_path / "target.db"))
    done = upload_file(
        flow, tmp_path / NAME, None, files, folders, "Europe/Rome", replace=True, database=sqlite
    )
    assert done.recorded is not None and done.recorded.object_id == 1 and done.recorded.warning is None
