"""Corrected rejects sent back: an operator corrects rows of an error file and resubmits it;
the corrected rows are loaded once however often the file is sent, the still-wrong ones come
back with their reasons, and a tampered file is refused whole; in the ledger each file sent back
is a data object of its own, linked to the delivery it corrects. Real PostgreSQL, real runs."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import dagster as dg
import polars as pl
import pytest

from etl_assets.cli import main
from etl_assets.definitions import build_definitions
from etl_assets.orchestration import resubmission
from etl_assets.settings import load_settings
from etl_assets_tests.test_flows.conftest import FlowEnv, companies_csv
from etl_assets_tests.test_flows.test_companies import BAD, DAY, FILE, GOOD
from etl_assets_tests.test_flows.test_hooks import calls, hooked_flow
from etl_assets_tests.test_flows.test_offers import OFFERS_HEADER

CORRECTIONS = {"C4": ("FOUNDED", "28/02/2019"), "C5": ("EMAIL", "posta@posta.it")}


def corrected(path: Path, keep: set[str] | None = None) -> pl.DataFrame:
    """The error file with C4 and C5 corrected (C6 left wrong), the rows not in ``keep`` left out."""
    rows = pl.read_csv(path, separator=";", infer_schema=False)
    for company, (column, value) in CORRECTIONS.items():
        rows = rows.with_columns(
            pl.when(pl.col("COMPANY_ID") == company)
            .then(pl.lit(value))
            .otherwise(pl.col(column))
            .alias(column)
        )
    return rows.filter(pl.col("COMPANY_ID").is_in(sorted(keep or {"C4", "C5", "C6"})))


def write(rows: pl.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows.write_csv(path, separator=";")
    return path


@contextmanager
def own_dagster_home(flow_env: FlowEnv) -> Iterator[Path]:
    """The CLI's runs recorded in a DAGSTER_HOME of the test's own, set inside flow_env's
    instance and unset before it ends (monkeypatch would restore, after flow_env's teardown,
    the instance's deleted folder and leave it to the next test of the process)."""
    dagster_home = flow_env.home / "dagster_home"
    dagster_home.mkdir(parents=True, exist_ok=True)
    with mock.patch.dict(os.environ, {"DAGSTER_HOME": str(dagster_home)}):
        yield dagster_home


@pytest.fixture
def rejected_day(flow_env: FlowEnv) -> Iterator[FlowEnv]:
    """A partition whose transform rejected four rows (C4, C5, C6 and an older C1)."""
    with own_dagster_home(flow_env):
        flow_env.put(FILE, companies_csv(*GOOD, *BAD))
        assert flow_env.run(DAY).success
        yield flow_env


def test_corrected_rows_load_once_still_wrong_come_back(rejected_day: FlowEnv, capsys) -> None:
    env = rejected_day
    errors = env.error_file(DAY, "transform")
    original = errors.read_bytes()
    write(corrected(errors), errors)  # corrected in place, as an operator would

    assert main(["resubmit", str(errors)]) == 0
    out = capsys.readouterr().out
    assert "resubmission 1 of companies 2026-01-15 transform: 3 rows submitted, 2 resolved" in out
    assert "2 of 4 rejects of companies 2026-01-15 transform resolved" in out
    rows = env.query(
        "select external_id, email, founded::text from accounts where external_id in ('C4','C5','C6') order by 1"
    )
    assert rows == [("C4", None, "2019-02-28"), ("C5", "posta@posta.it", None)]

    still_wrong = errors.with_name("transform.resubmission-1.csv")
    again = pl.read_csv(still_wrong, separator=";", infer_schema=False)
    assert again.columns == pl.read_csv(original, separator=";", infer_schema=False).columns
    assert again.select("COMPANY_ID", "error_step", "error_field", "error_reason", "source_line").rows() == [
        ("C6", "transform", "VAT_CODE", "required value missing", "8")
    ]
    # the run's one e-mail (the delivery's run sent the first): the still-wrong rows attached
    mail = env.smtp.wait_for(2)[1]
    assert mail["Subject"] == f"[etl_assets][test] companies {DAY}: 1 rows rejected"
    (attached,) = mail.iter_attachments()
    assert attached.get_filename() == f"companies_{DAY}_transform.resubmission-1.csv"
    assert attached.get_payload(decode=True) == still_wrong.read_bytes()
    with dg.DagsterInstance.get() as instance:  # a run of the UI's, tagged
        (run,) = instance.get_runs(
            dg.RunsFilter(tags={"etl_assets/resubmission": f"companies/{DAY}/transform.csv"})
        )
    assert run.job_name == "resubmit" and run.status == dg.DagsterRunStatus.SUCCESS
    resolved = env.query("select step, source_line, resubmission from etl_resolved_rejects order by 2")
    assert resolved == [("transform", 6, 1), ("transform", 7, 1)]

    # the ledger: the file sent back is an object of its own, linked to the partition's delivery
    [(delivery,)] = env.query("select id from etl_data_objects where kind = 'delivery'")
    [(resubmitted, checksum, name, rows, origin, kept)] = env.query(RESUBMISSIONS)
    assert (name, rows, origin) == ("transform.csv", 3, delivery)
    assert (
        checksum
        == hashlib.sha256(errors.read_bytes()).hexdigest()
        == hashlib.sha256(Path(kept).read_bytes()).hexdigest()
    )
    assert f"ledger: data object {resubmitted} (etl-assets ledger show companies {DAY})" in out
    assert ledger_stages(env, run.run_id) == [
        ("transform", resubmitted, 3, 2, 1, "succeeded"),
        ("load", resubmitted, 2, 2, 0, "succeeded"),
        ("link", resubmitted, 2, 2, 0, "succeeded"),
    ]
    object_ids = (
        "select external_id, etl_object_id from accounts where external_id in ('C1', 'C4', 'C5') order by 1"
    )
    assert env.query(object_ids) == [("C1", delivery), ("C4", resubmitted), ("C5", resubmitted)]
    assert main(["ledger", "show", "companies", DAY]) == 0
    shown = capsys.readouterr().out
    assert f"object {resubmitted}  partition {DAY}  transform.csv  resubmission of object {delivery}" in shown
    assert "rejects of the partition's last run, resolved by resubmissions:" in shown
    assert "  transform  rejected        4  resolved        2" in shown
    assert main(["ledger", "stale", "companies"]) == 0  # a resubmission's stages stale nothing
    assert capsys.readouterr().out.strip() == "companies: no stale partitions"

    before = env.query("select external_id, etl_loaded_at from accounts order by 1")
    assert main(["resubmit", str(errors)]) == 0  # the same file again: nothing loaded twice
    out = capsys.readouterr().out
    assert "3 rows submitted, 0 resolved, 2 resolved before (skipped), 1 still wrong" in out
    assert env.query("select external_id, etl_loaded_at from accounts order by 1") == before
    assert env.query("select count(*) from etl_resolved_rejects") == [(2,)]
    assert [r[0] for r in env.query(RESUBMISSIONS)] == [resubmitted]  # the same bytes: the same object
    assert env.query(object_ids) == [("C1", delivery), ("C4", resubmitted), ("C5", resubmitted)]

    # the still-wrong row corrected in its own file: resolved, the file of origin unchanged
    fixed = pl.read_csv(still_wrong, separator=";", infer_schema=False).with_columns(
        pl.lit("IT00000000006").alias("VAT_CODE")
    )
    assert main(["resubmit", str(write(fixed, still_wrong))]) == 0
    assert "4 rejects of companies 2026-01-15 transform resolved" in capsys.readouterr().out
    assert env.query("select vat_code from accounts where external_id = 'C6'") == [("IT00000000006",)]
    assert env.query("select count(*) from accounts") == [(7,)]  # C1..C7, none twice
    [_, (fixed_id, *_, origin, _)] = env.query(RESUBMISSIONS)
    assert origin == delivery
    assert env.query("select etl_object_id from accounts where external_id = 'C6'") == [(fixed_id,)]


RESUBMISSIONS = (
    "select id, checksum, name, rows, origin_object_id, raw_path from etl_data_objects "
    "where kind = 'resubmission' order by id"
)


def ledger_stages(env: FlowEnv, run_id: str) -> list[tuple]:
    return env.query(
        "select stage, object_id, rows_in, rows_out, rows_rejected, status from etl_data_object_stages "
        f"where run_id = '{run_id}' order by started_at"
    )


def refusal(path: Path, capsys) -> str:
    assert main(["resubmit", str(path)]) == 1
    return capsys.readouterr().err


def test_tampered_files_are_refused_and_nothing_loads(rejected_day: FlowEnv, tmp_path: Path, capsys) -> None:
    env = rejected_day
    errors = env.error_file(DAY, "transform")
    rows = corrected(errors)
    before = env.query("select external_id, etl_loaded_at from accounts order by 1")

    renamed = write(rows.rename({"EMAIL": "E_MAIL"}), tmp_path / "a" / "companies" / DAY / "transform.csv")
    err = refusal(renamed, capsys)
    assert "columns not in the error file of companies: E_MAIL; columns missing: EMAIL" in err
    mail = env.smtp.wait_for(2)[1]  # a refused run fails, and says why in its e-mail
    assert mail["Subject"].startswith(f"[etl_assets][test] companies {DAY} failed: resubmission refused")
    assert "columns missing: EMAIL" in mail.get_body().get_content()

    extra = rows.head(1).with_columns(pl.lit("C8").alias("COMPANY_ID"), pl.lit("3").alias("source_line"))
    added = write(pl.concat([rows, extra]), tmp_path / "b" / "companies" / DAY / "transform.csv")
    assert "source lines 3 were not rejected by transform of companies 2026-01-15" in refusal(added, capsys)

    twice = write(pl.concat([rows, rows.head(1)]), tmp_path / "c" / "companies" / DAY / "transform.csv")
    assert "source lines given twice: 6" in refusal(twice, capsys)

    offers = f"{OFFERS_HEADER};error_step;error_field;error_reason;source_file;source_line\r\n"
    offers += "O1;IT00000000004;Offerta;10,00;EUR;open;;;transform;AMOUNT;bad;offers_20260115-1000.csv;6\r\n"
    offers_file = tmp_path / "d" / "companies" / DAY / "transform.csv"  # an offers error file
    offers_file.parent.mkdir(parents=True)
    offers_file.write_text(offers, encoding="utf-8")
    assert "columns not in the error file of companies: OFFER_ID, COMPANY_VAT" in refusal(offers_file, capsys)

    other_day = write(
        rows.with_columns(pl.lit("companies_20260114.csv").alias("source_file")),
        tmp_path / "f" / "companies" / DAY / "transform.csv",
    )
    err = refusal(other_day, capsys)
    assert "source lines 6, 7, 8: source_file is not companies_20260115.csv" in err

    elsewhere = tmp_path / "g" / "offers" / "2026-01-15-10-00" / "transform.csv"
    elsewhere.parent.mkdir(parents=True)
    shutil.copy(errors, elsewhere)  # a companies error file put in an offers partition's place
    assert "partition 2026-01-15-10:00 of offers has no staged data" in refusal(elsewhere, capsys)

    link_rows = write(rows, tmp_path / "e" / "companies" / DAY / "link.csv")  # rejected by transform
    assert "were not rejected by link of companies 2026-01-15" in refusal(link_rows, capsys)

    assert env.query("select external_id, etl_loaded_at from accounts order by 1") == before
    assert env.query("select to_regclass('etl_resolved_rejects') is null") == [(True,)]


def test_a_file_dropped_into_resubmit_runs_once_and_is_kept(rejected_day: FlowEnv, monkeypatch) -> None:
    """The sensor takes a settled file aside and asks for a run of the resubmit job, tagged."""
    env = rejected_day
    monkeypatch.setattr(resubmission, "SETTLE_SECONDS", 0.0)
    dropped = write(
        corrected(env.error_file(DAY, "transform")),
        env.home / "resubmit" / "companies" / DAY / "transform.csv",
    )
    with env.defs_state():
        defs = build_definitions(load_settings("test"))
        sensor = defs.resolve_sensor_def("resubmit_sensor")

        def tick() -> dg.SensorExecutionData:
            context = dg.build_sensor_context(
                instance=env.instance, resources=defs.resources, definitions=defs
            )
            return sensor.evaluate_tick(context)

        (request,) = tick().run_requests
        assert not dropped.exists()  # moved aside, not deleted
        (taken,) = (env.home / "resubmit" / ".taken").glob(f"*/companies/{DAY}/transform.csv")
        assert request.tags["etl_assets/resubmission"] == f"companies/{DAY}/transform.csv"
        assert tick().run_requests == []  # asked for once
        run = defs.resolve_job_def("resubmit").execute_in_process(
            run_config=request.run_config, instance=env.instance, tags=request.tags, raise_on_error=False
        )
    assert run.success and taken.exists()
    assert env.query("select source_line from etl_resolved_rejects order by 1") == [(6,), (7,)]
    (observed,) = [
        e.asset_observation_data.asset_observation
        for e in run.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    ]
    assert observed.asset_key == dg.AssetKey("companies_load") and observed.partition == DAY
    assert (observed.metadata["kind"].value, observed.metadata["resolved"].value) == ("resubmission", 2)


def test_a_corrected_link_reject_is_linked_and_resolved_in_the_links_transaction(
    rejected_day: FlowEnv, capsys
) -> None:
    env = rejected_day
    errors = env.error_file(DAY, "link")
    rows = pl.read_csv(errors, separator=";", infer_schema=False)
    assert rows["COMPANY_ID"].to_list() == ["C7"]  # its parent IT99999999999 is unknown
    write(rows.with_columns(pl.lit("IT00000000001").alias("PARENT_VAT")), errors)
    assert main(["resubmit", str(errors)]) == 0
    assert "1 of 1 rejects of companies 2026-01-15 link resolved" in capsys.readouterr().out
    assert env.query(
        "select p.external_id from accounts a join accounts p on p.id = a.parent_account_id "
        "where a.external_id = 'C7'"
    ) == [("C1",)]
    assert env.query("select step, source_line from etl_resolved_rejects") == [("link", 9)]
    [(resubmitted, origin)] = env.query(
        "select id, origin_object_id from etl_data_objects where kind = 'resubmission'"
    )
    assert env.query("select etl_object_id from accounts where external_id = 'C7'") == [(resubmitted,)]
    assert env.query(
        f"select stage from etl_data_object_stages where object_id = {resubmitted} order by 1"
    ) == [
        ("link",),
        ("load",),
        ("transform",),
    ]
    assert not errors.with_name("link.resubmission-1.csv").exists()  # nothing still wrong


def test_a_new_delivery_has_new_rejects_not_taken_for_resolved(rejected_day: FlowEnv, capsys) -> None:
    env = rejected_day
    errors = env.error_file(DAY, "transform")
    assert main(["resubmit", str(write(corrected(errors, {"C4"}), errors))]) == 0
    # the client sends the day again: another faulty row at line 6, where C4 was
    other = "C9;IT00000000009;Nuova S.r.l.;;;;IT;;;;;;30/02/2019;14/01/2026 09:00:00"
    env.put(FILE, companies_csv(*GOOD, other, *BAD[1:]))
    assert env.run(DAY).success
    rows = pl.read_csv(errors, separator=";", infer_schema=False)
    assert rows.filter(pl.col("source_line") == "6")["COMPANY_ID"].to_list() == ["C9"]
    fixed = rows.filter(pl.col("COMPANY_ID") == "C9").with_columns(pl.lit("28/02/2019").alias("FOUNDED"))
    assert main(["resubmit", str(write(fixed, errors))]) == 0
    assert "1 rows submitted, 1 resolved, 0 resolved before" in capsys.readouterr().out
    assert env.query("select founded::text from accounts where external_id = 'C9'") == [("2019-02-28",)]


def test_a_resubmissions_load_calls_on_load_commit_once_per_file(
    flow_env: FlowEnv, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The file sent back is the commit (its sha256): sent twice, the hook is called once."""
    with own_dagster_home(flow_env):
        hooked_flow(flow_env.home / "flows", {"on_load_commit": "hook_calls:record"}, source=flow_env.folder)
        log = flow_env.home / "hook_calls.jsonl"
        monkeypatch.setenv("HOOK_LOG", str(log))
        monkeypatch.delitem(sys.modules, "hook_calls", raising=False)  # this test's module, not another's
        flow_env.put(FILE, companies_csv(*GOOD, *BAD))
        assert flow_env.run(DAY, job="hooked_job").success
        assert len(calls(log, "on_load_commit")) == 1

        errors = flow_env.home / "errors" / "hooked" / DAY / "transform.csv"
        write(corrected(errors), errors)
        assert main(["resubmit", str(errors)]) == 0
        capsys.readouterr()
        [first, resubmitted] = calls(log, "on_load_commit")
        assert resubmitted["commit_id"].split(":")[0] == hashlib.sha256(errors.read_bytes()).hexdigest()
        assert resubmitted["counts"]["inserted"] == 2 and resubmitted["staged_file"].endswith(
            "resubmission-1/load.parquet"
        )
        assert resubmitted["run_id"] and resubmitted["run_id"] != first["run_id"]
        assert main(["resubmit", str(errors)]) == 0  # the same file again: no second call
        assert len(calls(log, "on_load_commit")) == 2
