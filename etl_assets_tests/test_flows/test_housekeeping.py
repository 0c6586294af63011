"""Housekeeping on the real sshd and a real ETL_HOME: what it moves, deletes and leaves."""

from __future__ import annotations

import os
import time
from pathlib import Path

from etl_assets.definitions import build_definitions
from etl_assets.settings import load_settings
from etl_assets_tests.test_flows.conftest import FlowEnv, companies_csv

ROW = "C1;IT00000000001;Ditta S.r.l.;;;;IT;;;;;;;14/01/2026 10:00:00"


def aged(path: Path, days: float, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    past = time.time() - days * 86_400
    os.utime(path, (past, past))
    return path


def test_housekeeping_archives_processed_files_and_deletes_only_what_is_past_retention(
    flow_env: FlowEnv,
) -> None:
    flow_env.put("companies_20260115.csv", companies_csv(ROW))
    assert flow_env.run("2026-01-15").success
    flow_env.put("companies_20260116.csv", companies_csv(ROW))  # arrived, not loaded yet
    flow_env.put("readme.txt", b"not a flow's file")

    home = flow_env.home
    old_error = aged(home / "errors/companies/2025-10-01/transform.csv", 100)
    new_error = aged(home / "errors/companies/2026-01-10/transform.csv", 10)
    old_stage = aged(home / "data/companies/2025-12-01/extract.parquet", 40)
    stranger = aged(home / "data/notes.txt", 400)
    old_mail = aged(home / "logs/outbox/20251001T000000_abc.eml", 40)
    unsent = aged(home / "logs/unsent/20251001T000000_abc_companies.eml", 400)
    old_backup = aged(home / "backup/companies/2025/09/companies_20250901.csv", 100)
    odd_backup = aged(home / "backup/companies/2025/09/readme.txt", 100)

    defs = build_definitions(load_settings("test"))
    result = defs.resolve_job_def("housekeeping").execute_in_process(instance=flow_env.instance)
    assert result.success
    summary = result.output_for_node("tidy_up")

    folder = flow_env.sshd.root / flow_env.folder.lstrip("/")
    assert (folder / "processed" / "companies_20260115.csv").read_bytes() == companies_csv(ROW)
    assert not (folder / "companies_20260115.csv").exists()
    assert (folder / "companies_20260116.csv").exists()  # not loaded: never moved
    assert (folder / "readme.txt").exists()
    assert summary["archived_sources"] == 1
    assert summary["sources_not_yet_processed"] == 1

    assert (
        not old_error.exists()
        and not old_stage.exists()
        and not old_mail.exists()
        and not old_backup.exists()
    )
    assert new_error.exists() and stranger.exists() and unsent.exists() and odd_backup.exists()
    assert (
        summary["removed_errors"],
        summary["removed_data"],
        summary["removed_logs"],
        summary["removed_backup"],
    ) == (
        1,
        1,
        1,
        1,
    )
    assert summary["unaccounted_files_left"] == 2  # data/notes.txt and the backup's readme.txt
    # what the run loaded is still there: raw file, backup, staged data
    assert (home / "data/companies/2026-01-15/raw/companies_20260115.csv").exists()
    assert list((home / "backup/companies").glob("*/*/companies_20260115.csv"))


def test_housekeeping_never_touches_a_source_whose_backup_is_missing(flow_env: FlowEnv) -> None:
    flow_env.put("companies_20260115.csv", companies_csv(ROW))
    assert flow_env.run("2026-01-15").success
    for copy in (flow_env.home / "backup").rglob("companies_20260115.csv"):
        copy.unlink()
    defs = build_definitions(load_settings("test"))
    result = defs.resolve_job_def("housekeeping").execute_in_process(instance=flow_env.instance)
    assert result.output_for_node("tidy_up")["archived_sources"] == 0
    assert (flow_env.sshd.root / flow_env.folder.lstrip("/") / "companies_20260115.csv").exists()


def test_housekeeping_deletes_processed_sources_where_the_settings_say_so(
    flow_env: FlowEnv, write_settings
) -> None:
    settings = (flow_env.home.parent / "settings.yaml").read_text()
    write_settings(settings + "housekeeping:\n  processed: delete\n")
    flow_env.put("companies_20260115.csv", companies_csv(ROW))
    assert flow_env.run("2026-01-15").success
    flow_env.put("companies_20260116.csv", companies_csv(ROW))  # not loaded: stays
    defs = build_definitions(load_settings("test"))
    summary = (
        defs.resolve_job_def("housekeeping")
        .execute_in_process(instance=flow_env.instance)
        .output_for_node("tidy_up")
    )
    folder = flow_env.sshd.root / flow_env.folder.lstrip("/")
    assert summary["deleted_sources"] == 1 and summary["archived_sources"] == 0
    assert not (folder / "companies_20260115.csv").exists() and not (folder / "processed").exists()
    assert (folder / "companies_20260116.csv").exists()
    # the bytes are still on our side: raw copy and backup
    assert list((flow_env.home / "backup/companies").glob("*/*/companies_20260115.csv"))
